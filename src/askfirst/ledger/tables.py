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
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
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
    Column("email", String(320)),  # where notices are mailed; outside the chain, erasable
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

# A published notice's terms (canonical JSON); its ``notice-published`` event at ``seq``
# carries their SHA-256, so the chain vouches for the text kept here.
notices = Table(
    "notices",
    metadata,
    Column("purpose", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("published_at", BigInteger, nullable=False),
    Column("terms", Text, nullable=False),
    Column("hash", String(64), nullable=False),
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

# ---- outside the chain: sign-in accounts and sessions, API tokens, the demo's content ------

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(255), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # member / staff / representative
    Column("subject_id", String(255)),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("role", String(16)),  # staff: reviewer / policy-editor / auditor / admin
)

# One-time sign-in links (a representative's first sign-in): the link carries a random
# secret, this table its SHA-256; each works once, until it expires.
signin_links = Table(
    "signin_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger),
)
Index("ix_signin_links_account", signin_links.c.account_id)

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
    Column("account_id", Integer),  # a staff member's own token: it acts as them, in their role
)

# A signed-in browser's session: the cookie holds a random id, the table its SHA-256, so
# that signing out (or a password change, or closing the account) ends it server-side.
sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("account_id", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
)
Index("ix_sessions_account", sessions.c.account_id)

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
    Column("stale_since", BigInteger),  # when a withdrawal first made it stale
    Column("rebuilt_from", Integer),  # the snapshot this one was rebuilt from
    Column("replaced_by", Integer),  # the snapshot rebuilt from this one
    Column("retired_at", BigInteger),  # when its data files were deleted
)
Index("ix_snapshots_snapshot_id", snapshots.c.snapshot_id)
Index("ix_snapshots_purpose_status", snapshots.c.purpose, snapshots.c.status)

# Keyed by snapshot first, so that a build's rows go in at the end of the index; finding a
# subject's snapshots probes this key once per snapshot (see askfirst.lineage). On
# PostgreSQL each snapshot's rows are a partition of their own, and the key carries the
# counts (INCLUDE), so that a probe reads the index alone, as SQLite's table without
# rowids does. Those storage options are the migrations' (0003, 0005), not repeated
# here: naming them would load both SQL dialects on every command (30 ms of a start-up).
lineage = Table(
    "lineage",
    metadata,
    Column("snapshot", Integer, nullable=False, autoincrement=False),
    Column("subject_id", String(255), nullable=False),
    Column("author_records", BigInteger, nullable=False),
    Column("mention_records", BigInteger, nullable=False),
    # The shard keys of the records that kept a mention of the subject (a JSON array), so
    # that a task can name the shards that hold it; NULL when there are too many to list.
    Column("mention_keys", Text),
    PrimaryKeyConstraint("snapshot", "subject_id"),
)


def described(name: str | None, type_: str, parent_names: object = None) -> bool:
    """Whether a database object is one this metadata describes, for Alembic's
    comparisons: the lineage's partitions (``lineage_<n>``) come and go with snapshots."""
    return not (type_ == "table" and name is not None and name.startswith("lineage_"))


# A withdrawal (or closure, death, ...) that reached a snapshot holding the subject's data.
withdrawals = Table(
    "withdrawals",
    metadata,
    Column("snapshot", Integer, primary_key=True, autoincrement=False),
    Column("subject_id", String(255), primary_key=True),
    Column("event_seq", BigInteger, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)
Index("ix_withdrawals_subject", withdrawals.c.subject_id)

# ---- the model registry and its retraining / unlearning tasks -----------------------------

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("version", String(64), nullable=False),
    Column("owner", String(255)),
    Column("shards", Integer),  # records sharded by shard_key % shards (SISA); NULL: none
    Column("registered_by", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("name", "version", name="uq_models_name_version"),
)

model_snapshots = Table(
    "model_snapshots",
    metadata,
    Column("model", Integer, primary_key=True, autoincrement=False),
    Column("snapshot", Integer, primary_key=True, autoincrement=False),
)
Index("ix_model_snapshots_snapshot", model_snapshots.c.snapshot)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", Integer, nullable=False),
    Column("snapshot", Integer, nullable=False),
    Column("subject_id", String(255), nullable=False),
    Column("role", String(16), nullable=False),  # author / mention / author+mention
    Column("shards", Text),  # a JSON array of shard numbers; NULL: every shard
    Column("event_seq", BigInteger, nullable=False),
    Column("opened_at", BigInteger, nullable=False),
    Column("status", String(8), nullable=False),  # open / closed
    Column("closed_at", BigInteger),
    Column("closed_by", String(255)),
    Column("closed_with_model", Integer),
    Column("note", Text),
)
Index("ix_tasks_status_opened", tasks.c.status, tasks.c.opened_at)
Index("ix_tasks_subject", tasks.c.subject_id)
Index("ix_tasks_model", tasks.c.model)

# ---- research partners: who received which snapshot, and the notices owed to them ---------

recipients = Table(
    "recipients",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("secret", String(128), nullable=False),  # signs the webhooks (HMAC-SHA256)
    Column("created_at", BigInteger, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("snapshot", Integer, primary_key=True, autoincrement=False),
    Column("recipient", Integer, primary_key=True, autoincrement=False),
    Column("delivered_at", BigInteger, nullable=False),
    Column("recorded_by", String(255), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recipient", Integer, nullable=False),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger),
    Column("last_error", Text),
)
Index("ix_outbox_due", outbox.c.delivered_at, outbox.c.next_attempt_at)

# Notices sent by e-mail: one row per (subject, purpose, version), claimed with a lease
# (``next_attempt_at`` moved on) so that two workers never send the same message.
mail = Table(
    "mail",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(255), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("sent_at", BigInteger),
    Column("last_error", Text),
)
Index("ix_mail_due", mail.c.sent_at, mail.c.next_attempt_at)

# One-click "no" links that were used (their SHA-256): each works once.
one_click = Table(
    "one_click",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("used_at", BigInteger, nullable=False),
    Column("seq", BigInteger),
)

# ---- cases: requests from the people around a member, reviewed by staff -------------------

# A case (a death reported, a representative's request, a person's objection, an erasure).
# What is personal (the requester's e-mail, the names, the link, the statement) is kept
# here, outside the chain, and erasable; each step is a ``case`` event in the chain.
cases = Table(
    "cases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # death / representative / objection / erasure
    Column("subject_id", String(255)),  # whom it is about (an objection's person: on approval)
    Column("status", String(16), nullable=False),
    Column("opened_at", BigInteger, nullable=False),
    Column("opened_by", String(255), nullable=False),
    Column("requester_email", String(320)),  # who asked: verified by a link before review
    Column("email_verified_at", BigInteger),
    Column("email", String(320)),  # whom it is for: a representative's sign-in link goes here
    Column("names", Text, nullable=False, server_default="[]"),
    Column("link", Text),
    Column("statement", Text),
    Column("decided_at", BigInteger),
    Column("erased_at", BigInteger),
)
Index("ix_cases_status", cases.c.status, cases.c.opened_at)
Index("ix_cases_subject", cases.c.subject_id)

# Each step of a case, beside its ``case`` event (at ``seq``), whose value carries the
# SHA-256 of the step's details (reason and evidence), so the chain vouches for them.
case_steps = Table(
    "case_steps",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("case_id", Integer, nullable=False),
    Column("step", String(16), nullable=False),  # open / verified / propose / approve / reject
    Column("actor", String(255), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("details", Text, nullable=False),  # canonical JSON: reason, evidence
)
Index("ix_case_steps_case", case_steps.c.case_id)

# A document sent with a case: the bytes are kept outside the database (a folder or an
# S3-compatible bucket, at ``location``); its SHA-256 is in the chain.
evidence = Table(
    "evidence",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("media_type", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("location", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("case_id", "sha256", name="uq_evidence_case_sha256"),
)

# A subject's former names and handles, still protected in others' content until ``until``.
former_names = Table(
    "former_names",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject_id", String(255), nullable=False),
    Column("kind", String(8), nullable=False),  # name / handle
    Column("value", Text, nullable=False),
    Column("until", BigInteger, nullable=False),
)
Index("ix_former_names_subject", former_names.c.subject_id)
Index("ix_former_names_value", former_names.c.value)  # is a handle still someone's?

# An erased subject's names, as keyed hashes of their normalised form: mentions of them in
# others' content are still redacted, and the names themselves are kept nowhere.
forgotten_names = Table(
    "forgotten_names",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("subject_id", String(255), nullable=False),
    Column("forgotten_at", BigInteger, nullable=False),
)
