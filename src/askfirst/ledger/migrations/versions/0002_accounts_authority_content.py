"""Authority (page admins, representatives), accounts, API tokens and demo content.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authority_state",
        sa.Column("subject_id", sa.String(255), primary_key=True),
        sa.Column("delegate_id", sa.String(255), primary_key=True),
        sa.Column("role", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_authority_delegate", "authority_state", ["delegate_id"])
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(255), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(255)),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", sa.String(255), nullable=False),
        sa.Column("subject_id", sa.String(255)),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger()),
    )
    op.create_table(
        "content",
        sa.Column("record_id", sa.String(255), primary_key=True),
        sa.Column("author_id", sa.String(255), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("mentions", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_content_author", "content", ["author_id"])


def downgrade() -> None:
    op.drop_index("ix_content_author", "content")
    op.drop_table("content")
    op.drop_table("api_tokens")
    op.drop_table("accounts")
    op.drop_index("ix_authority_delegate", "authority_state")
    op.drop_table("authority_state")
