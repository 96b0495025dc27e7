"""Snapshots built by the gate, and their lineage (which subjects' data each holds).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("snapshot_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("as_of", sa.BigInteger(), nullable=False),
        sa.Column("head_seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("policy_hash", sa.String(64), nullable=False),
        sa.Column("engine", sa.String(16), nullable=False),
        sa.Column("on_mention", sa.String(8), nullable=False),
        sa.Column("corpus", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
    )
    op.create_index("ix_snapshots_snapshot_id", "snapshots", ["snapshot_id"])
    op.create_index("ix_snapshots_purpose_status", "snapshots", ["purpose", "status"])
    op.create_table(
        "lineage",
        sa.Column("snapshot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("subject_id", sa.String(255), primary_key=True),
        sa.Column("author_records", sa.BigInteger(), nullable=False),
        sa.Column("mention_records", sa.BigInteger(), nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("lineage")
    op.drop_index("ix_snapshots_purpose_status", "snapshots")
    op.drop_index("ix_snapshots_snapshot_id", "snapshots")
    op.drop_table("snapshots")
