"""Notices: published versions of a purpose's terms, members' e-mail, the mail outbox.

``notices`` holds each published version's terms (canonical JSON) beside its
``notice-published`` event, whose value is the terms' SHA-256: the text sits outside
the chain and the chain vouches for it. ``subjects.email`` is personal, kept outside the
chain like names, and erasable. ``mail`` is the outbox of notices sent by e-mail, one
row per (subject, purpose, version); ``one_click`` remembers the one-click "no" links
that were used, so that each works once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notices",
        sa.Column("purpose", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("published_at", sa.BigInteger(), nullable=False),
        sa.Column("terms", sa.Text(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    with op.batch_alter_table("subjects") as t:
        t.add_column(sa.Column("email", sa.String(320)))
    op.create_table(
        "mail",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("sent_at", sa.BigInteger()),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index("ix_mail_due", "mail", ["sent_at", "next_attempt_at"])
    op.create_table(
        "one_click",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("used_at", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger()),
    )


def downgrade() -> None:
    op.drop_table("one_click")
    op.drop_index("ix_mail_due", table_name="mail")
    op.drop_table("mail")
    with op.batch_alter_table("subjects") as t:
        t.drop_column("email")
    op.drop_table("notices")
