"""The ledger's tables: the append-only event chain, its head, and the projections.

``events`` is the truth. ``subject_state``, ``choice_state`` and ``notice_state`` are
projections of it, updated in the same transaction as each append, so that "now"
decisions read one row per subject; ``askfirst ledger verify`` rebuilds them from the
events and reports any row that disagrees. ``subjects`` is the directory (handle and
names), which the gate uses to find mentions; it is not part of the chain, so that a
name can be erased without breaking it.

Times are integer microseconds since 1970-01-01 UTC (see ``askfirst.times``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(32), nullable=False),
    Column("subject_id", String(255), nullable=False),
    Column("purpose", String(64)),
    Column("value", String(255)),
    Column("notice_version", Integer),
    Column("actor", String(255), nullable=False),
    Column("source", String(64), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)
Index("ix_events_subject_seq", events.c.subject_id, events.c.seq)
Index("ix_events_recorded_at", events.c.recorded_at)

ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

subjects = Table(
    "subjects",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("handle", String(255), unique=True),
    Column("names", Text, nullable=False, server_default="[]"),
)

subject_state = Table(
    "subject_state",
    metadata,
    Column("subject_id", String(255), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("registered_seq", BigInteger, nullable=False),
    Column("jurisdiction", String(16)),
    Column("jurisdiction_seq", BigInteger),
    Column("status", String(16), nullable=False),
    Column("status_seq", BigInteger),
    Column("minor", String(32)),
    Column("minor_seq", BigInteger),
    Column("gpc_seq", BigInteger),
)

choice_state = Table(
    "choice_state",
    metadata,
    Column("subject_id", String(255), primary_key=True),
    Column("purpose", String(64), primary_key=True),
    Column("action", String(16), nullable=False),
    Column("notice_version", Integer),
    Column("seq", BigInteger, nullable=False),
)

notice_state = Table(
    "notice_state",
    metadata,
    Column("subject_id", String(255), primary_key=True),
    Column("purpose", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

authority_state = Table(
    "authority_state",
    metadata,
    Column("subject_id", String(255), primary_key=True),
    Column("delegate_id", String(255), primary_key=True),
    Column("role", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)
Index("ix_authority_delegate", authority_state.c.delegate_id)

# ---- outside the chain: sign-in accounts, API tokens, and the demo platform's content --

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(255), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # member / staff
    Column("subject_id", String(255)),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(255), nullable=False),
    Column("subject_id", String(255)),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
)

content = Table(
    "content",
    metadata,
    Column("record_id", String(255), primary_key=True),
    Column("author_id", String(255), nullable=False),
    Column("category", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("text", Text, nullable=False),
    Column("mentions", Text, nullable=False, server_default="[]"),
    Column("public", Boolean, nullable=False, server_default=false()),
)
Index("ix_content_author", content.c.author_id)

# ---- lineage: which snapshots hold whose data ---------------------------------------------

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("snapshot_id", String(64), nullable=False),  # the content hash; copies share it
    Column("purpose", String(64), nullable=False),
    Column("as_of", BigInteger, nullable=False),
    Column("head_seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("policy_hash", String(64), nullable=False),
    Column("engine", String(16), nullable=False),
    Column("on_mention", String(8), nullable=False),
    Column("corpus", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("status", String(16), nullable=False),  # live / stale / retired
    Column("created_at", BigInteger, nullable=False),
    Column("manifest", Text, nullable=False),
)
Index("ix_snapshots_snapshot_id", snapshots.c.snapshot_id)
Index("ix_snapshots_purpose_status", snapshots.c.purpose, snapshots.c.status)

# Keyed by snapshot first, so that a build's rows go in at the end of the index; finding a
# subject's snapshots probes this key once per snapshot (see askfirst.lineage).
lineage = Table(
    "lineage",
    metadata,
    Column("snapshot", Integer, primary_key=True, autoincrement=False),
    Column("subject_id", String(255), primary_key=True),
    Column("author_records", BigInteger, nullable=False),
    Column("mention_records", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
