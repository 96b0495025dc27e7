"""The consent ledger: events, head, subjects and projections.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(64)),
        sa.Column("value", sa.String(255)),
        sa.Column("notice_version", sa.Integer()),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_index("ix_events_subject_seq", "events", ["subject_id", "seq"])
    op.create_index("ix_events_recorded_at", "events", ["recorded_at"])
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(
        sa.table(
            "ledger_head",
            sa.column("id", sa.Integer()),
            sa.column("seq", sa.BigInteger()),
            sa.column("hash", sa.String()),
            sa.column("recorded_at", sa.BigInteger()),
        ),
        [{"id": 1, "seq": 0, "hash": "0" * 64, "recorded_at": 0}],
    )
    op.create_table(
        "subjects",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("handle", sa.String(255), unique=True),
        sa.Column("names", sa.Text(), nullable=False, server_default="[]"),
    )
    op.create_table(
        "subject_state",
        sa.Column("subject_id", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.Column("jurisdiction", sa.String(16)),
        sa.Column("jurisdiction_seq", sa.BigInteger()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_seq", sa.BigInteger()),
        sa.Column("minor", sa.String(32)),
        sa.Column("minor_seq", sa.BigInteger()),
        sa.Column("gpc_seq", sa.BigInteger()),
    )
    op.create_table(
        "choice_state",
        sa.Column("subject_id", sa.String(255), primary_key=True),
        sa.Column("purpose", sa.String(64), primary_key=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("notice_version", sa.Integer()),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "notice_state",
        sa.Column("subject_id", sa.String(255), primary_key=True),
        sa.Column("purpose", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for name in ("notice_state", "choice_state", "subject_state", "subjects", "ledger_head"):
        op.drop_table(name)
    op.drop_index("ix_events_recorded_at", "events")
    op.drop_index("ix_events_subject_seq", "events")
    op.drop_table("events")
