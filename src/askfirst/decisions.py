"""Decisions: may subject S's data be used for purpose P at time T, and why.

DESIGN.md's order, in one place, twice: :func:`decide` folds one subject's events and
walks the rules in Python (the hot path of a single request); :func:`decide_many`
gives the same answers for many subjects at once as one DuckDB query over Arrow
columns (the gate and batch API). Tests hold the two to each other and to a
reference written from DESIGN.md alone.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import func, select

from askfirst import times
from askfirst.ledger import store
from askfirst.ledger.events import Event, EventType
from askfirst.ledger.ledger import Head, Ledger
from askfirst.ledger.tables import choice_state, subject_state
from askfirst.policy import Policy, Purpose


class Reason(StrEnum):
    UNKNOWN_SUBJECT = "unknown-subject"
    ACCOUNT_CLOSED = "account-closed"
    DECEASED = "deceased"
    MINOR = "minor"
    WITHDRAWN = "withdrawn"
    GPC = "gpc"
    RECONSENT_NEEDED = "reconsent-needed"
    GRANTED = "granted"
    NO_CONSENT = "no-consent"
    DEFAULT_OFF = "default-off"
    NOTICE_PENDING = "notice-pending"
    DEFAULT_AFTER_NOTICE = "default-after-notice"


ALLOWED = frozenset({Reason.GRANTED, Reason.DEFAULT_AFTER_NOTICE})

EXPLAIN: dict[Reason, str] = {
    Reason.UNKNOWN_SUBJECT: "askfirst does not know this subject, so nothing is used",
    Reason.ACCOUNT_CLOSED: "the account is closed or deactivated",
    Reason.DECEASED: "the member has died",
    Reason.MINOR: "the member is under 18",
    Reason.WITHDRAWN: "they said no",
    Reason.GPC: "their browser sent a Global Privacy Control signal after their last choice",
    Reason.RECONSENT_NEEDED: "they said yes to an earlier, narrower version of this purpose",
    Reason.GRANTED: "they said yes",
    Reason.NO_CONSENT: "where they live, consent is needed first, and they have not given it",
    Reason.DEFAULT_OFF: "they made no choice and this purpose is off by default",
    Reason.NOTICE_PENDING: "the current notice was not delivered to them long enough ago",
    Reason.DEFAULT_AFTER_NOTICE: "they were told, had time to say no, and did not",
}
DAY_US = 86_400 * times.MICROS


@dataclass(frozen=True)
class Decision:
    """Allowed or not, with the reason and the seq of the ledger event it rests on."""

    subject: str
    purpose: str
    at: datetime
    allowed: bool
    reason: Reason
    event_seq: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "purpose": self.purpose,
            "at": times.iso(self.at),
            "allowed": self.allowed,
            "reason": str(self.reason),
            "event_seq": self.event_seq,
        }


@dataclass
class SubjectState:
    """What the rules read about one subject, for one purpose, as of one time."""

    registered_seq: int | None = None
    jurisdiction: str | None = None
    jurisdiction_seq: int | None = None
    status: str = "active"
    status_seq: int | None = None
    minor: str | None = None
    minor_seq: int | None = None
    gpc_seq: int | None = None
    choice_action: str | None = None
    choice_version: int | None = None
    choice_seq: int | None = None
    notice_seq: int | None = None
    notice_at: int | None = None

    @classmethod
    def fold(cls, evs: Sequence[Event], purpose: Purpose) -> SubjectState:
        """The state after ``evs`` (one subject's events, in seq order)."""
        s = cls()
        for e in evs:
            if e.type == EventType.SUBJECT:
                s.registered_seq = e.seq
            elif e.type == EventType.JURISDICTION:
                s.jurisdiction, s.jurisdiction_seq = e.value, e.seq
            elif e.type == EventType.STATUS:
                s.status, s.status_seq = e.value or "active", e.seq
            elif e.type == EventType.MINOR:
                s.minor, s.minor_seq = e.value, e.seq
            elif e.type == EventType.GPC:
                s.gpc_seq = e.seq
            elif e.type == EventType.CHOICE and e.purpose == purpose.name:
                s.choice_action, s.choice_version, s.choice_seq = (
                    e.value,
                    e.notice_version,
                    e.seq,
                )
            elif (
                e.type == EventType.NOTICE
                and e.purpose == purpose.name
                and e.notice_version == purpose.version
                and s.notice_seq is None
            ):
                s.notice_seq, s.notice_at = e.seq, e.recorded_at
        return s


def _is_minor(value: str | None, at: int) -> bool:
    if value == "true":
        return True
    if value and value.startswith("until:"):
        return at < times.to_micros(times.parse(value[6:]))
    return False


def evaluate(
    s: SubjectState, policy: Policy, purpose: Purpose, at: int
) -> tuple[Reason, int | None]:
    """DESIGN.md's order for one subject: the first rule that applies is the reason."""
    if s.registered_seq is None:
        return Reason.UNKNOWN_SUBJECT, None
    if s.status in ("closed", "deactivated"):
        return Reason.ACCOUNT_CLOSED, s.status_seq
    if s.status == "deceased":
        return Reason.DECEASED, s.status_seq
    if _is_minor(s.minor, at):
        return Reason.MINOR, s.minor_seq
    gpc = s.gpc_seq if purpose.honours_gpc else None
    if gpc is not None and (s.choice_seq is None or gpc > s.choice_seq):
        return Reason.GPC, gpc
    if s.choice_seq is not None:
        if s.choice_action in ("withdraw", "object"):
            return Reason.WITHDRAWN, s.choice_seq
        if s.choice_version not in purpose.grant_versions:
            return Reason.RECONSENT_NEEDED, s.choice_seq
        return Reason.GRANTED, s.choice_seq
    if policy.regime(s.jurisdiction) == "opt-in":
        return Reason.NO_CONSENT, s.jurisdiction_seq
    if purpose.default == "off":
        return Reason.DEFAULT_OFF, s.jurisdiction_seq
    if s.notice_at is None or s.notice_at > at - purpose.grace_days * DAY_US:
        return Reason.NOTICE_PENDING, s.notice_seq
    return Reason.DEFAULT_AFTER_NOTICE, s.notice_seq


def _micros(at: datetime | None) -> int:
    return times.to_micros(at if at is not None else times.now())


def decide(ledger: Ledger, subject: str, purpose: str, at: datetime | None = None) -> Decision:
    """The decision for one subject; ``at`` defaults to now."""
    p = ledger.policy.purpose(purpose)
    t = _micros(at)
    state = SubjectState.fold(ledger.subject_events(subject, until=t), p)
    reason, seq = evaluate(state, ledger.policy, p, t)
    return Decision(subject, purpose, times.from_micros(t), reason in ALLOWED, reason, seq)


# ---- many at once ---------------------------------------------------------------------

_STATE_COLUMNS = [
    ("subject_id", pa.string()),
    ("registered_seq", pa.int64()),
    ("jurisdiction", pa.string()),
    ("jurisdiction_seq", pa.int64()),
    ("status", pa.string()),
    ("status_seq", pa.int64()),
    ("minor", pa.string()),
    ("minor_seq", pa.int64()),
    ("gpc_seq", pa.int64()),
    ("choice_action", pa.string()),
    ("choice_version", pa.int64()),
    ("choice_seq", pa.int64()),
    ("notice_seq", pa.int64()),
    ("notice_at", pa.int64()),
]
STATE_SCHEMA = pa.schema(_STATE_COLUMNS)
RESULT_SCHEMA = pa.schema(
    [
        ("subject", pa.string()),
        ("allowed", pa.bool_()),
        ("reason", pa.string()),
        ("event_seq", pa.int64()),
    ]
)


def _current_sql(p: Purpose, where: str) -> str:
    # p.name is a policy key (checked against a strict pattern) and version an int.
    return f"""
SELECT s.subject_id, s.registered_seq, s.jurisdiction, s.jurisdiction_seq, s.status,
       s.status_seq, s.minor, s.minor_seq, s.gpc_seq, c.action AS choice_action,
       c.notice_version AS choice_version, c.seq AS choice_seq, n.seq AS notice_seq,
       n.recorded_at AS notice_at
FROM subject_state s
LEFT JOIN choice_state c ON c.subject_id = s.subject_id AND c.purpose = '{p.name}'
LEFT JOIN notice_state n ON n.subject_id = s.subject_id AND n.purpose = '{p.name}'
     AND n.version = {int(p.version)}
{where.replace("subject_id", "s.subject_id")}"""


def _historic_sql(p: Purpose, at: int, where: str, until_seq: int | None = None) -> str:
    filt = where.replace("WHERE", "AND")
    if until_seq is not None:
        filt += f" AND seq <= {int(until_seq)}"
    return f"""
WITH last AS (
  SELECT e.subject_id, e.type, e.value, e.notice_version, e.seq FROM events e
  JOIN (SELECT max(seq) AS seq FROM events
        WHERE recorded_at <= {int(at)} {filt}
          AND (type IN ('subject', 'status', 'jurisdiction', 'minor', 'gpc')
               OR (type = 'choice' AND purpose = '{p.name}'))
        GROUP BY subject_id, type) l ON e.seq = l.seq),
notice AS (
  SELECT subject_id, min(seq) AS seq, min(recorded_at) AS recorded_at FROM events
  WHERE type = 'notice-delivered' AND purpose = '{p.name}'
    AND notice_version = {int(p.version)} AND recorded_at <= {int(at)} {filt}
  GROUP BY subject_id)
SELECT l.subject_id,
  max(CASE WHEN l.type = 'subject' THEN l.seq END) AS registered_seq,
  max(CASE WHEN l.type = 'jurisdiction' THEN l.value END) AS jurisdiction,
  max(CASE WHEN l.type = 'jurisdiction' THEN l.seq END) AS jurisdiction_seq,
  coalesce(max(CASE WHEN l.type = 'status' THEN l.value END), 'active') AS status,
  max(CASE WHEN l.type = 'status' THEN l.seq END) AS status_seq,
  max(CASE WHEN l.type = 'minor' THEN l.value END) AS minor,
  max(CASE WHEN l.type = 'minor' THEN l.seq END) AS minor_seq,
  max(CASE WHEN l.type = 'gpc' THEN l.seq END) AS gpc_seq,
  max(CASE WHEN l.type = 'choice' THEN l.value END) AS choice_action,
  max(CASE WHEN l.type = 'choice' THEN l.notice_version END) AS choice_version,
  max(CASE WHEN l.type = 'choice' THEN l.seq END) AS choice_seq,
  max(n.seq) AS notice_seq, max(n.recorded_at) AS notice_at
FROM last l LEFT JOIN notice n ON n.subject_id = l.subject_id
GROUP BY l.subject_id"""


_SUBJECT_STATE = pa.schema(_STATE_COLUMNS[:9])
_CHOICES = pa.schema(
    [
        ("subject_id", pa.string()),
        ("choice_action", pa.string()),
        ("choice_version", pa.int64()),
        ("choice_seq", pa.int64()),
    ]
)
_NOTICES = pa.schema(
    [("subject_id", pa.string()), ("notice_seq", pa.int64()), ("notice_at", pa.int64())]
)


def _read_current_all(ledger: Ledger, p: Purpose) -> pa.Table:
    """Every subject's current state: three plain table scans, joined in DuckDB.

    Scanning each table once is cheaper than SQLite looking up two rows per subject.
    The three reads are one state only if no append landed in between; when one did,
    they are read again (and at last by one query, which is always consistent).
    """
    for _ in range(3):
        before = ledger.head().seq
        state = _scan_current(ledger, p)
        if ledger.head().seq == before:
            return state
    return store.read_arrow(ledger.engine, _current_sql(p, ""), STATE_SCHEMA)


def side_queries(p: Purpose) -> list[tuple[str, pa.Schema]]:
    """The reads of the current state besides ``subject_state``: every subject's choice
    and notice for ``p`` (the gate runs them in a process of their own; see
    :func:`decisions_at_head`)."""
    return [
        (
            "SELECT subject_id, action AS choice_action, notice_version AS choice_version, "
            f"seq AS choice_seq FROM choice_state WHERE purpose = '{p.name}'",
            _CHOICES,
        ),
        (
            "SELECT subject_id, seq AS notice_seq, recorded_at AS notice_at FROM notice_state "
            f"WHERE purpose = '{p.name}' AND version = {int(p.version)}",
            _NOTICES,
        ),
    ]


_SUBJECTS_SQL = (
    "SELECT subject_id, registered_seq, jurisdiction, jurisdiction_seq, status, "
    "status_seq, minor, minor_seq, gpc_seq FROM subject_state"
)


def subject_halves(ledger: Ledger) -> tuple[tuple[str, pa.Schema], tuple[str, pa.Schema]]:
    """``subject_state`` as two reads of about half the rows each (by SQLite rowid), for
    two processes: see :func:`decisions_at_head`."""
    with ledger.engine.connect() as conn:
        top = int(conn.exec_driver_sql("SELECT max(rowid) FROM subject_state").scalar() or 0)
    mid = top // 2
    return (
        (f"{_SUBJECTS_SQL} WHERE rowid <= {mid}", _SUBJECT_STATE),
        (f"{_SUBJECTS_SQL} WHERE rowid > {mid}", _SUBJECT_STATE),
    )


def _read_subjects(ledger: Ledger, sql: str = _SUBJECTS_SQL) -> pa.Table:
    return store.read_arrow(ledger.engine, sql, _SUBJECT_STATE)


def _join_state(subject: pa.Table, choices: pa.Table, notices: pa.Table) -> pa.Table:
    con = _duckdb()
    for name, table in (("s_", subject), ("c_", choices), ("n_", notices)):
        con.register(name, table)
    try:
        joined = con.sql(
            "SELECT s.*, c.choice_action, c.choice_version, c.choice_seq, n.notice_seq, "
            "n.notice_at FROM s_ s LEFT JOIN c_ c USING (subject_id) "
            "LEFT JOIN n_ n USING (subject_id)"
        ).to_arrow_table()
    finally:
        for name in ("s_", "c_", "n_"):
            con.unregister(name)
    return joined.select(STATE_SCHEMA.names).cast(STATE_SCHEMA)


def _scan_current(ledger: Ledger, p: Purpose) -> pa.Table:
    subject = _read_subjects(ledger)
    choices, notices = (store.read_arrow(ledger.engine, q, s) for q, s in side_queries(p))
    return _join_state(subject, choices, notices)


def decisions_at_head(
    ledger: Ledger,
    purpose: Purpose,
    head: Head,
    at: int,
    side: Callable[[], list[pa.Table]],
    subjects: str = _SUBJECTS_SQL,
) -> pa.Table:
    """What :func:`decisions_pinned` gives for an ``at`` at or after the head's time, with
    the :func:`side_queries` read elsewhere meanwhile: ``side()`` waits for their tables,
    and may give, after them, rows of ``subject_state`` read elsewhere too (those the
    query ``subjects``, read here, leaves out: see :func:`subject_halves`).

    ``head`` must have been taken before those reads began: if anything was appended
    since, the reads may not be one state, and the decisions are read from the events
    up to ``head`` instead.
    """
    subject = _read_subjects(ledger, subjects)
    choices, notices, *rest = side()
    if rest:
        subject = pa.concat_tables([subject, *rest])
    if at >= head.recorded_at and ledger.head().seq == head.seq:
        return evaluate_many(_join_state(subject, choices, notices), ledger.policy, purpose, at)
    # The head moved: the current tables are past it now, so the events up to it answer.
    return _pinned_from_events(ledger, purpose, head, at)


_LIST_LIMIT = 50_000  # longer lists load every subject and filter in DuckDB


def _read(
    ledger: Ledger,
    sql: Callable[[str], str],
    subjects: Sequence[str] | None,
    current: Purpose | None = None,
) -> pa.Table:
    """Run a state query for every subject or for a list; ``current`` marks the
    current-state query of that purpose, which is read table by table for everyone."""
    if current is not None and (subjects is None or len(subjects) > _LIST_LIMIT):
        return _read_current_all(ledger, current)
    if subjects is None or len(subjects) > _LIST_LIMIT:
        return store.read_arrow(ledger.engine, sql(""), STATE_SCHEMA)
    ids = sorted(set(subjects))
    # One parameter for the whole list: a JSON array on SQLite, an array on PostgreSQL.
    param: str | list[str] = ids
    if ledger.engine.dialect.name == "sqlite":
        where, param = "WHERE subject_id IN (SELECT value FROM json_each(:ids))", json.dumps(ids)
    else:
        where = "WHERE subject_id = ANY(%(ids)s)"
    with ledger.engine.connect() as conn:
        cur = conn.connection.cursor()
        try:
            cur.execute(sql(where), {"ids": param})
            rows = cur.fetchall()
        finally:
            cur.close()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(STATE_SCHEMA)
    return pa.table(
        [pa.array(col, type=f.type) for col, f in zip(columns, STATE_SCHEMA, strict=True)],
        schema=STATE_SCHEMA,
    )


def load_state(
    ledger: Ledger, purpose: Purpose, at: int, subjects: Sequence[str] | None = None
) -> pa.Table:
    """Every (or the listed) subject's state for ``purpose`` as of ``at``, as Arrow.

    When nothing was recorded after ``at``, the current-state tables answer; otherwise
    the events up to ``at`` do (also when an append lands while the tables are read).
    """
    before = ledger.head()
    if at >= before.recorded_at:
        state = _read(ledger, lambda where: _current_sql(purpose, where), subjects, purpose)
        after = ledger.head()
        if after.seq == before.seq or at >= after.recorded_at:
            return state
    return _read(ledger, lambda where: _historic_sql(purpose, at, where), subjects)


_EVALUATE = """
WITH d AS (
  SELECT q.subject AS subject, s.*, coalesce(r.regime, 'opt-in') AS regime,
    CASE WHEN s.minor = 'true' THEN true
         WHEN s.minor LIKE 'until:%'
           THEN $at < epoch_us(CAST(substr(s.minor, 7) AS TIMESTAMP))
         ELSE false END AS is_minor,
    $gpc AND s.gpc_seq IS NOT NULL AND (s.choice_seq IS NULL OR s.gpc_seq > s.choice_seq)
      AS gpc_wins
  FROM q LEFT JOIN state s ON s.subject_id = q.subject
  LEFT JOIN regimes r ON r.code = s.jurisdiction),
r AS (
  SELECT subject, CASE
    WHEN registered_seq IS NULL THEN 'unknown-subject'
    WHEN status IN ('closed', 'deactivated') THEN 'account-closed'
    WHEN status = 'deceased' THEN 'deceased'
    WHEN is_minor THEN 'minor'
    WHEN gpc_wins THEN 'gpc'
    WHEN choice_seq IS NOT NULL AND choice_action IN ('withdraw', 'object') THEN 'withdrawn'
    WHEN choice_seq IS NOT NULL AND NOT list_contains($versions, choice_version)
      THEN 'reconsent-needed'
    WHEN choice_seq IS NOT NULL THEN 'granted'
    WHEN regime = 'opt-in' THEN 'no-consent'
    WHEN $default_off THEN 'default-off'
    WHEN notice_at IS NULL OR notice_at > $at - $grace THEN 'notice-pending'
    ELSE 'default-after-notice' END AS reason,
    status_seq, minor_seq, gpc_seq, choice_seq, jurisdiction_seq, notice_seq
  FROM d)
SELECT subject, reason IN ('granted', 'default-after-notice') AS allowed, reason,
  CASE reason
    WHEN 'account-closed' THEN status_seq WHEN 'deceased' THEN status_seq
    WHEN 'minor' THEN minor_seq WHEN 'gpc' THEN gpc_seq
    WHEN 'withdrawn' THEN choice_seq WHEN 'reconsent-needed' THEN choice_seq
    WHEN 'granted' THEN choice_seq
    WHEN 'no-consent' THEN jurisdiction_seq WHEN 'default-off' THEN jurisdiction_seq
    WHEN 'notice-pending' THEN notice_seq WHEN 'default-after-notice' THEN notice_seq
  END AS event_seq
FROM r ORDER BY subject
"""


def evaluate_many(
    state: pa.Table,
    policy: Policy,
    purpose: Purpose,
    at: int,
    subjects: Sequence[str] | None = None,
) -> pa.Table:
    """Apply DESIGN.md's order to every row of ``state`` (see :func:`evaluate`)."""
    codes = pc.unique(state.column("jurisdiction")).to_pylist()
    regimes = pa.table(
        {
            "code": [c for c in codes if c is not None],
            "regime": [str(policy.regime(c)) for c in codes if c is not None],
        },
        schema=pa.schema([("code", pa.string()), ("regime", pa.string())]),
    )
    if subjects is None:
        q = pa.table({"subject": state.column("subject_id")})
    else:
        q = pa.table({"subject": pa.array(sorted(set(subjects)), pa.string())})
    con = _duckdb()
    try:
        con.register("state", state)
        con.register("regimes", regimes)
        con.register("q", q)
        result = con.sql(
            _EVALUATE,
            params={
                "at": at,
                "gpc": purpose.honours_gpc,
                "versions": sorted(purpose.grant_versions),
                "default_off": purpose.default == "off",
                "grace": purpose.grace_days * DAY_US,
            },
        ).to_arrow_table()
    finally:
        for name in ("state", "regimes", "q"):
            con.unregister(name)
    return result.cast(RESULT_SCHEMA)


_local = threading.local()


def _duckdb() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB connection (connecting costs more than a query)."""
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "duckdb", None)
    if con is None:
        con = _local.duckdb = duckdb.connect()
    return con


def release_duckdb() -> None:
    """Close this thread's DuckDB connection and the memory it caches (a new one is
    made on next use)."""
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "duckdb", None)
    if con is not None:
        _local.duckdb = None
        con.close()


def decide_many(
    ledger: Ledger,
    purpose: str,
    subjects: Sequence[str] | None = None,
    at: datetime | None = None,
) -> pa.Table:
    """Decisions for the listed subjects (default: every subject known at ``at``).

    Returns an Arrow table ``subject, allowed, reason, event_seq``, sorted by subject;
    a listed subject the ledger does not know is ``unknown-subject``.
    """
    p = ledger.policy.purpose(purpose)
    if at is None:
        # "Now" is taken after the read, so that every event the read saw is before it.
        state = _read(ledger, lambda where: _current_sql(p, where), subjects, p)
        t = _micros(None)
    else:
        t = _micros(at)
        state = load_state(ledger, p, t, subjects)
    return evaluate_many(state, ledger.policy, p, t, subjects)


def decisions_pinned(ledger: Ledger, purpose: Purpose, head: Head, at: int) -> pa.Table:
    """Decisions for every subject known at ``at``, counting only events up to ``head``.

    The gate pins the ledger head when a build starts, so that appends landing during
    the build change nothing and a rebuild against the same head gives the same answer.
    """
    if at >= head.recorded_at:
        state = _read(ledger, lambda where: _current_sql(purpose, where), None, purpose)
        if ledger.head().seq == head.seq:  # nothing was appended while the tables were read
            return evaluate_many(state, ledger.policy, purpose, at)
    return _pinned_from_events(ledger, purpose, head, at)


def _pinned_from_events(ledger: Ledger, purpose: Purpose, head: Head, at: int) -> pa.Table:
    state = _read(ledger, lambda where: _historic_sql(purpose, at, where, head.seq), None)
    return evaluate_many(state, ledger.policy, purpose, at)


# ---- counts for the staff console --------------------------------------------------------


def choice_counts(ledger: Ledger) -> list[dict[str, Any]]:
    """Current choices by purpose, regime and action."""
    q = (
        select(
            choice_state.c.purpose,
            subject_state.c.jurisdiction,
            choice_state.c.action,
            func.count(),
        )
        .join(subject_state, subject_state.c.subject_id == choice_state.c.subject_id)
        .group_by(choice_state.c.purpose, subject_state.c.jurisdiction, choice_state.c.action)
    )
    counts: dict[tuple[str, str, str], int] = {}
    with ledger.engine.connect() as conn:
        for purpose, jurisdiction, action, n in conn.execute(q):
            key = (purpose, str(ledger.policy.regime(jurisdiction)), action)
            counts[key] = counts.get(key, 0) + n
    return [
        {"purpose": p, "regime": r, "action": a, "count": n}
        for (p, r, a), n in sorted(counts.items())
    ]


def decision_counts(ledger: Ledger) -> list[dict[str, Any]]:
    """For each purpose: how many subjects there are, and how many may be used now."""
    out = []
    for name in ledger.policy.purposes:
        allowed = decide_many(ledger, name).column("allowed")
        out.append(
            {
                "purpose": name,
                "subjects": len(allowed),
                "allowed": int(pc.sum(allowed).as_py() or 0),
            }
        )
    return out
