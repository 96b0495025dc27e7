"""Withdrawals that reach back: the model registry, retraining tasks, research partners.

Snapshots learn when they went stale, what they were rebuilt from and into, and when
their data was deleted; lineage learns the shard keys of kept mentions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots") as t:
        t.add_column(sa.Column("stale_since", sa.BigInteger()))
        t.add_column(sa.Column("rebuilt_from", sa.Integer()))
        t.add_column(sa.Column("replaced_by", sa.Integer()))
        t.add_column(sa.Column("retired_at", sa.BigInteger()))
    op.add_column("lineage", sa.Column("mention_keys", sa.Text()))
    op.create_table(
        "withdrawals",
        sa.Column("snapshot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("subject_id", sa.String(255), primary_key=True),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_withdrawals_subject", "withdrawals", ["subject_id"])
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("shards", sa.Integer()),
        sa.Column("registered_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_models_name_version"),
    )
    op.create_table(
        "model_snapshots",
        sa.Column("model", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("snapshot", sa.Integer(), primary_key=True, autoincrement=False),
    )
    op.create_index("ix_model_snapshots_snapshot", "model_snapshots", ["snapshot"])
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.Integer(), nullable=False),
        sa.Column("snapshot", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("shards", sa.Text()),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("opened_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("closed_at", sa.BigInteger()),
        sa.Column("closed_by", sa.String(255)),
        sa.Column("closed_with_model", sa.Integer()),
        sa.Column("note", sa.Text()),
    )
    op.create_index("ix_tasks_status_opened", "tasks", ["status", "opened_at"])
    op.create_index("ix_tasks_subject", "tasks", ["subject_id"])
    op.create_index("ix_tasks_model", "tasks", ["model"])
    op.create_table(
        "recipients",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("snapshot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("recipient", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("delivered_at", sa.BigInteger(), nullable=False),
        sa.Column("recorded_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("recipient", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.BigInteger()),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index("ix_outbox_due", "outbox", ["delivered_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_due", "outbox")
    op.drop_table("outbox")
    op.drop_table("deliveries")
    op.drop_table("recipients")
    op.drop_index("ix_tasks_model", "tasks")
    op.drop_index("ix_tasks_subject", "tasks")
    op.drop_index("ix_tasks_status_opened", "tasks")
    op.drop_table("tasks")
    op.drop_index("ix_model_snapshots_snapshot", "model_snapshots")
    op.drop_table("model_snapshots")
    op.drop_table("models")
    op.drop_index("ix_withdrawals_subject", "withdrawals")
    op.drop_table("withdrawals")
    with op.batch_alter_table("lineage") as t:
        t.drop_column("mention_keys")
    with op.batch_alter_table("snapshots") as t:
        t.drop_column("retired_at")
        t.drop_column("replaced_by")
        t.drop_column("rebuilt_from")
        t.drop_column("stale_since")
