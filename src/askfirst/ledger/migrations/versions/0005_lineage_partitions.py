"""On PostgreSQL, the lineage becomes a table partitioned by snapshot.

A build then copies its lineage into a table of its own with no index, builds the key
in one sorted pass and attaches the table as the snapshot's partition: far cheaper than
inserting two million keys one by one into a shared B-tree. The key includes the counts,
so that a look-up reads the index alone. Lineage recorded before this revision becomes
one partition holding every snapshot registered so far. SQLite keeps one table (its bulk
insert is fast enough as it is, and a table without rowids already holds each row in its
key).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = """
    snapshot INTEGER NOT NULL,
    subject_id VARCHAR(255) NOT NULL,
    author_records BIGINT NOT NULL,
    mention_records BIGINT NOT NULL,
    mention_keys TEXT,
    CONSTRAINT {pkey} PRIMARY KEY (snapshot, subject_id){include}"""
_INCLUDE = " INCLUDE (author_records, mention_records)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE lineage RENAME TO lineage_0004")
    # The key gains the counts (a look-up then reads the index alone), so it is built
    # again for the rows already there.
    op.execute("ALTER TABLE lineage_0004 DROP CONSTRAINT lineage_pkey")
    op.execute(
        "ALTER TABLE lineage_0004 ADD CONSTRAINT lineage_0004_pkey "
        f"PRIMARY KEY (snapshot, subject_id){_INCLUDE}"
    )
    op.execute(
        f"CREATE TABLE lineage ({_COLUMNS.format(pkey='lineage_pkey', include=_INCLUDE)}) "
        "PARTITION BY LIST (snapshot)"
    )
    # Every lineage row belongs to a registered snapshot (both go in one transaction),
    # so the registry's numbers bound the old rows without a scan of them to find out.
    held = [int(n) for (n,) in op.get_bind().execute(sa.text("SELECT id FROM snapshots"))]
    if held:
        bounds = ", ".join(str(n) for n in sorted(held))
        op.execute(f"ALTER TABLE lineage ATTACH PARTITION lineage_0004 FOR VALUES IN ({bounds})")
    else:
        op.execute("DROP TABLE lineage_0004")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE TABLE lineage_plain ({_COLUMNS.format(pkey='lineage_plain_pkey', include='')})"
    )
    op.execute("INSERT INTO lineage_plain SELECT * FROM lineage")
    op.execute("DROP TABLE lineage CASCADE")
    op.execute("ALTER TABLE lineage_plain RENAME TO lineage")
    op.execute("ALTER TABLE lineage RENAME CONSTRAINT lineage_plain_pkey TO lineage_pkey")
