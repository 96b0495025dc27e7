"""Decisions: may subject S's data be used for purpose P at time T, and why.

The rules themselves are in :mod:`askfirst.rules`; this module reads what they need
from the ledger and applies them. :func:`decide` folds one subject's events (the hot
path of a single request); :func:`decide_many` reads many subjects' state as Arrow
columns and applies the rules as one DuckDB query (the gate and the batch API);
:func:`decisions_at` does the same counting only the events up to a pinned head, and
:func:`decisions_for_use` adds reaching back (yes at the as-of time and at the head).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from askfirst import times
from askfirst.ledger import state as st
from askfirst.ledger import store
from askfirst.ledger.events import Head
from askfirst.ledger.ledger import Ledger
from askfirst.policy import Purpose
from askfirst.rules import (
    ALLOWED,
    EXPLAIN,
    Context,
    Reason,
    both_yes,
    duckdb_tables,
    evaluate,
    evaluate_many,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ALLOWED",
    "EXPLAIN",
    "Decision",
    "Reason",
    "decide",
    "decide_many",
    "decisions_at",
    "decisions_for_use",
]


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


def _micros(at: datetime | None) -> int:
    return times.to_micros(at if at is not None else times.now())


def decide(ledger: Ledger, subject: str, purpose: str, at: datetime | None = None) -> Decision:
    """The decision for one subject; ``at`` defaults to now."""
    p = ledger.policy.purpose(purpose)
    t = _micros(at)
    state = st.State.fold(ledger.subject_events(subject, until=t), p.name, p.version)
    reason, seq = evaluate(state, Context(ledger.policy, p, t))
    return Decision(subject, purpose, times.from_micros(t), reason in ALLOWED, reason, seq)


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
        state = read_state(ledger, p, None, subjects)
        t = _micros(None)
    else:
        t = _micros(at)
        state = read_state(ledger, p, t, subjects)
    return evaluate_many(state, Context(ledger.policy, p, t), subjects)


def decisions_at(ledger: Ledger, purpose: Purpose, head: Head, at: int) -> pa.Table:
    """Decisions for every subject known at ``at``, counting only events up to ``head``.

    The gate pins the ledger head when a build starts, so that appends landing during
    the build change nothing and a rebuild against the same head gives the same answer.
    """
    return evaluate_many(
        read_state(ledger, purpose, at, until=head), Context(ledger.policy, purpose, at)
    )


def decisions_for_use(ledger: Ledger, purpose: Purpose, head: Head, at: int) -> pa.Table:
    """The decisions a snapshot of ``purpose`` as of ``at`` uses, against ``head``: for a
    purpose that reaches back, yes only where yes at ``at`` and at the head too
    (DESIGN.md), so that a withdrawal made since counts; otherwise those at ``at``."""
    as_of = decisions_at(ledger, purpose, head, at)
    if not purpose.reaches_back or at >= head.recorded_at:
        return as_of
    return both_yes(as_of, decisions_at(ledger, purpose, head, head.recorded_at))


# ---- reading the state -----------------------------------------------------------------------

_LIST_LIMIT = 50_000  # longer lists load every subject and filter in DuckDB
# With this many subjects, the current-state tables are read aside (store.read_later).
ASIDE_SUBJECTS = 100_000


def read_state(
    ledger: Ledger,
    purpose: Purpose,
    at: int | None,
    subjects: Sequence[str] | None = None,
    *,
    until: Head | None = None,
) -> pa.Table:
    """Every (or the listed) subject's state for ``purpose`` as of ``at`` (None: now),
    counting only the events up to ``until`` when given, as Arrow (``state.arrow_schema``).

    When nothing was recorded after ``at`` (and ``until`` is still the head), the
    current-state tables answer. They are one state only if no append landed while they
    were read: when one did, they are read once more, and then the events up to the head
    taken before answer instead.
    """
    head = until or ledger.head()
    for _ in range(1 if until is not None else 2):
        if at is not None and at < head.recorded_at:
            break
        state = _read_current(ledger, purpose, subjects)
        after = ledger.head()
        if after.seq == head.seq:
            return state
        if until is not None:
            break
        head = after
    # Events were recorded after ``at`` (or kept landing while the tables were read).
    t = at if at is not None else head.recorded_at
    return _read_listed(
        ledger,
        lambda where: st.historic_sql(purpose.name, purpose.version, t, where, head.seq),
        subjects,
    )


def _read_current(ledger: Ledger, purpose: Purpose, subjects: Sequence[str] | None) -> pa.Table:
    """The current-state tables: for a list, one joined query; for everyone, each table
    scanned once and joined in DuckDB (cheaper than the database looking up two rows per
    subject), on a big ledger read aside."""
    if subjects is not None and len(subjects) <= _LIST_LIMIT:
        return _read_listed(
            ledger, lambda where: st.current_sql(purpose.name, purpose.version, where), subjects
        )
    schema = st.arrow_schema()
    queries = st.current_queries(purpose.name, purpose.version)
    import pyarrow as pa

    def part(*names: str) -> pa.Schema:
        return pa.schema([schema.field(n) for n in ("subject_id", *names)])

    parts = [
        (queries["subjects"], part(*st.SUBJECT_COLUMNS)),
        (queries["choices"], part("choice_action", "choice_version", "choice_seq")),
        (queries["notices"], part("notice_seq", "notice_at")),
    ]
    aside = store.has_rows(ledger.engine, "subject_state", ASIDE_SUBJECTS)
    with store.read_later(ledger.engine, parts, aside=aside) as pending:
        subject, choices, notices = pending.result()
    with duckdb_tables(s_=subject, c_=choices, n_=notices) as con:
        joined = con.sql(
            "SELECT s.*, c.* EXCLUDE (subject_id), n.* EXCLUDE (subject_id) FROM s_ s "
            "LEFT JOIN c_ c USING (subject_id) LEFT JOIN n_ n USING (subject_id)"
        ).to_arrow_table()
    return joined.select(schema.names).cast(schema)


def _read_listed(
    ledger: Ledger, sql: Callable[[str], str], subjects: Sequence[str] | None
) -> pa.Table:
    """Run a state query (``sql(where)``) for every subject, or for a list of them."""
    import pyarrow as pa

    schema = st.arrow_schema()
    if subjects is None or len(subjects) > _LIST_LIMIT:
        return store.read_arrow(ledger.engine, sql(""), schema)
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
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    return pa.table(
        [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)],
        schema=schema,
    )
