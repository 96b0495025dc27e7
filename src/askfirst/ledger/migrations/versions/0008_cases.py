"""Cases: deaths, representatives, objections and erasures, reviewed by two staff.

Staff accounts gain a ``role`` (existing staff become ``admin``), API tokens may belong
to a staff account (and then act as it), and representatives sign in first with a
one-time link. ``cases``, ``case_steps`` and ``evidence`` hold what is personal about a
case outside the chain; each step is a ``case`` event in it. ``former_names`` keeps a
subject's old names protected for a while after a change; ``forgotten_names`` keeps an
erased subject's names as keyed hashes only.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as t:
        t.add_column(sa.Column("role", sa.String(16)))
    op.execute("UPDATE accounts SET role = 'admin' WHERE kind = 'staff'")
    with op.batch_alter_table("api_tokens") as t:
        t.add_column(sa.Column("account_id", sa.Integer()))
    op.create_table(
        "signin_links",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger()),
    )
    op.create_index("ix_signin_links_account", "signin_links", ["account_id"])
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.BigInteger(), nullable=False),
        sa.Column("opened_by", sa.String(255), nullable=False),
        sa.Column("requester_email", sa.String(320)),
        sa.Column("email_verified_at", sa.BigInteger()),
        sa.Column("email", sa.String(320)),
        sa.Column("names", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("link", sa.Text()),
        sa.Column("statement", sa.Text()),
        sa.Column("decided_at", sa.BigInteger()),
        sa.Column("erased_at", sa.BigInteger()),
    )
    op.create_index("ix_cases_status", "cases", ["status", "opened_at"])
    op.create_index("ix_cases_subject", "cases", ["subject_id"])
    op.create_table(
        "case_steps",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
    )
    op.create_index("ix_case_steps_case", "case_steps", ["case_id"])
    op.create_table(
        "evidence",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("case_id", "sha256", name="uq_evidence_case_sha256"),
    )
    op.create_table(
        "former_names",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("until", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_former_names_subject", "former_names", ["subject_id"])
    op.create_index("ix_former_names_value", "former_names", ["value"])
    op.create_table(
        "forgotten_names",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("subject_id", sa.String(255), nullable=False),
        sa.Column("forgotten_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("forgotten_names")
    op.drop_index("ix_former_names_value", table_name="former_names")
    op.drop_index("ix_former_names_subject", table_name="former_names")
    op.drop_table("former_names")
    op.drop_table("evidence")
    op.drop_index("ix_case_steps_case", table_name="case_steps")
    op.drop_table("case_steps")
    op.drop_index("ix_cases_subject", table_name="cases")
    op.drop_index("ix_cases_status", table_name="cases")
    op.drop_table("cases")
    op.drop_index("ix_signin_links_account", table_name="signin_links")
    op.drop_table("signin_links")
    with op.batch_alter_table("api_tokens") as t:
        t.drop_column("account_id")
    with op.batch_alter_table("accounts") as t:
        t.drop_column("role")
