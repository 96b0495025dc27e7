"""Decisions: may subject S's data be used for purpose P at time T, and why.

The rules themselves are in :mod:`askfirst.rules`; this module reads what they need
from the ledger and applies them. :func:`decide` folds one subject's events (the hot
path of a single request); :func:`decide_many` reads many subjects' state as Arrow
columns (at a past time, from the events this process keeps as columns, ``history``)
and applies the rules as one DuckDB query (the gate and the batch API);
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
from askfirst.ledger import history, store
from askfirst.ledger import state as st
from askfirst.ledger.events import Head, check_text
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
    for subject in subjects or ():
        check_text("subject", subject)  # alike on every database: PostgreSQL refuses a NUL
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
# With this many subjects, the bulk reads run in a second process (``store.read_later``),
# which reads through ADBC at a quarter of the CPU time: it pays from about 20k subjects.
ASIDE_SUBJECTS = 20_000
_HEAD_SQL = "SELECT seq AS head_seq, recorded_at AS head_at FROM ledger_head"


def read_state(
    ledger: Ledger,
    purpose: Purpose,
    at: int | None,
    subjects: Sequence[str] | None = None,
    *,
    until: Head | None = None,
    in_database: bool = False,
) -> pa.Table:
    """Every (or the listed) subject's state for ``purpose`` as of ``at`` (None: now),
    counting only the events up to ``until`` when given, as Arrow (``state.arrow_schema``).

    The current-state tables answer when they hold just what is wanted: they are read in
    one transaction with the ledger head they stand for, and serve when that head is
    ``until`` (or no head was pinned) and was recorded no later than ``at``. Otherwise
    the events up to the head answer, folded as of ``at``: for a list of subjects by the
    database; for everyone from the events this process keeps as columns (``history``),
    or by the database too with ``in_database`` (what the columns are tested against).
    """
    head = until or ledger.head()
    if at is None or at >= head.recorded_at:
        state, seen_seq, seen_at = _read_current(ledger, purpose, subjects)
        if (until is None or seen_seq == until.seq) and (at is None or seen_at <= at):
            return state
    # Events were recorded after ``at``, or after the pinned head.
    t = at if at is not None else head.recorded_at
    return _read_events(ledger, purpose, t, head, subjects, in_database)


def _part(schema: pa.Schema, *names: str) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([schema.field(n) for n in names])


def _read_many(ledger: Ledger, queries: list[tuple[str, pa.Schema]]) -> list[pa.Table]:
    """Bulk reads of every subject, in one read transaction (one state of the database);
    on a big ledger in a second process."""
    aside = store.has_rows(ledger.engine, "subject_state", ASIDE_SUBJECTS)
    with store.read_later(ledger.engine, queries, aside=aside) as pending:
        return pending.result()


def _head_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("head_seq", pa.int64()), ("head_at", pa.int64())])


def _read_current(
    ledger: Ledger, purpose: Purpose, subjects: Sequence[str] | None
) -> tuple[pa.Table, int, int]:
    """The current-state tables, and the seq and time of the head they stand for. For a
    list, one joined query; for everyone, each table scanned once (cheaper than the
    database looking up two rows per subject) and joined in DuckDB."""
    import pyarrow as pa

    schema = st.arrow_schema()
    if subjects is not None and len(subjects) <= _LIST_LIMIT:
        # One statement is one state; the head comes with every row.
        def joined(where: str) -> str:
            sql = st.current_sql(purpose.name, purpose.version, where)
            return f"SELECT q.*, h.* FROM ({sql}) q CROSS JOIN ({_HEAD_SQL}) h"

        with_head = pa.schema([*schema, *_head_schema()])
        rows = _read_listed(ledger, joined, subjects, with_head)
        if rows.num_rows == 0:  # no listed subject is known: nothing recorded can change it
            return schema.empty_table(), -1, -1
        seq, at = rows.column("head_seq")[0].as_py(), rows.column("head_at")[0].as_py()
        return rows.select(schema.names), seq, at
    queries = st.current_queries(purpose.name, purpose.version)
    subject, choices, notices, head = _read_many(
        ledger,
        [
            (queries["subjects"], _part(schema, "subject_id", *st.SUBJECT_COLUMNS)),
            (
                queries["choices"],
                _part(schema, "subject_id", "choice_action", "choice_version", "choice_seq"),
            ),
            (queries["notices"], _part(schema, "subject_id", "notice_seq", "notice_at")),
            (_HEAD_SQL, _head_schema()),
        ],
    )
    with duckdb_tables(s_=subject, c_=choices, n_=notices) as con:
        state = con.sql(
            "SELECT s.*, c.* EXCLUDE (subject_id), n.* EXCLUDE (subject_id) FROM s_ s "
            "LEFT JOIN c_ c USING (subject_id) LEFT JOIN n_ n USING (subject_id)"
        ).to_arrow_table()
    seq, at = head.column("head_seq")[0].as_py(), head.column("head_at")[0].as_py()
    return state.select(schema.names).cast(schema), seq, at


def _read_events(
    ledger: Ledger,
    purpose: Purpose,
    at: int,
    until: Head,
    subjects: Sequence[str] | None,
    in_database: bool,
) -> pa.Table:
    """The state folded from the events up to ``until``, as of ``at``."""
    schema = st.arrow_schema()
    if subjects is not None and len(subjects) <= _LIST_LIMIT:
        return _read_listed(
            ledger,
            lambda where: st.historic_sql(purpose.name, purpose.version, at, where, until.seq),
            subjects,
            schema,
        )
    if not in_database:
        return history.state_at(ledger.engine, until, purpose.name, purpose.version, at)
    sql = st.historic_sql(purpose.name, purpose.version, at, "", until.seq)
    (state,) = _read_many(ledger, [(sql, schema)])
    return state


def _read_listed(
    ledger: Ledger, sql: Callable[[str], str], subjects: Sequence[str], schema: pa.Schema
) -> pa.Table:
    """Run a state query ``sql(where)`` for a list of subjects (``where`` picks them)."""
    import pyarrow as pa

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
