"""Server-side sessions: the cookie carries a random id, the table its SHA-256.

Signing out, changing the password or closing the account deletes the rows, so an old
cookie replayed afterwards is a signed-out visitor's. Cookies made before this revision
carry no session id and are treated as signed out.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_sessions_account", "sessions", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_account", table_name="sessions")
    op.drop_table("sessions")
