"""What the gate takes from the ledger: decisions pinned to one head, and the directory.

A build reads the ledger before it reads the corpus: the head it runs against, every
subject's decision for the purpose, and the names that are looked for in every record
(those of protected subjects). The handles and names of everyone else, which only a
record that may mention someone needs, are read when the first such record comes (see
:class:`Directory`). Engines (DuckDB and Spark) only ever see these Arrow tables, so
they give the same answers.

Reaching back (DESIGN.md): for a purpose that reaches back, a subject counts as yes only
if the decision is yes at the as-of time *and* at the head the build runs against. The
reason recorded for a no is the one at the as-of time, or else the one at the head.
"""

from __future__ import annotations

import functools
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.engine import Engine

from askfirst import times
from askfirst.decisions import (
    _duckdb,
    decisions_at_head,
    decisions_pinned,
    release_duckdb,
    side_queries,
    subject_halves,
)
from askfirst.errors import InputError
from askfirst.ledger import store
from askfirst.ledger.ledger import Head, Ledger
from askfirst.policy import Purpose

DECISIONS_SCHEMA = pa.schema(
    [
        ("subject", pa.string()),
        ("allowed", pa.bool_()),
        ("reason", pa.string()),
        ("event_seq", pa.int64()),
    ]
)
DIRECTORY_SCHEMA = pa.schema(
    [
        ("subject", pa.string()),
        ("handle", pa.string()),
        ("names", pa.string()),  # a JSON array of strings
        ("protected", pa.int64()),  # 1: names are looked for in every record
    ]
)
_DIRECTORY_SQL = "SELECT id AS subject, handle, names FROM subjects"
# Protected subjects (people without accounts who objected, deceased members): their
# names are looked for in every record.
_NAMES_SQL = (
    "SELECT s.id AS subject, s.handle, s.names, 1 AS protected FROM subjects s "
    "JOIN subject_state t ON t.subject_id = s.id "
    "WHERE t.kind = 'person' OR t.status = 'deceased'"
)


class Directory:
    """Every subject's handle and names, read once a build needs them: when the first
    record that may mention someone comes (:meth:`start`), in a second process on a
    big SQLite ledger while the build goes on, and taken at the first mention query
    (:meth:`table`). A corpus that mentions no one never reads them.

    Handles and names are outside the chain, so no head pins them; a subject
    registered after the build's head is in no decision, and so is redacted.
    """

    def __init__(self, engine: Engine, aside: bool) -> None:
        self._engine, self._aside = engine, aside
        self._stack = ExitStack()
        self._pending: store.Pending | None = None

    def start(self) -> None:
        """Begin reading (once)."""
        if self._pending is None:
            query = [(_DIRECTORY_SQL, DIRECTORY_SCHEMA.remove(3))]
            self._pending = self._stack.enter_context(
                store.read_later(self._engine, query, aside=self._aside)
            )

    def table(self) -> pa.Table:
        """``subject, handle, names`` for every subject (waits for the read)."""
        self.start()
        assert self._pending is not None
        try:
            (rows,) = self._pending.result()
        finally:
            self.close()
        return rows

    def with_protected(self, names: pa.Table) -> pa.Table:
        """The whole directory in DIRECTORY_SCHEMA, protected subjects marked."""
        rows = self.table()
        flag = pc.cast(pc.is_in(rows.column("subject"), names.column("subject")), pa.int64())
        return rows.append_column(DIRECTORY_SCHEMA.field("protected"), flag)

    def close(self) -> None:
        """Stop a read still running (a build that failed, or did not need it)."""
        self._stack.close()


@dataclass
class Consent:
    """Everything a gate engine needs to know about the subjects, for one build."""

    purpose: Purpose
    as_of: int
    head: Head
    policy_hash: str
    decisions: pa.Table  # DECISIONS_SCHEMA, one row per subject known at the head
    names: pa.Table  # DIRECTORY_SCHEMA: the protected subjects, whose names are looked for
    directory: Directory  # everyone's handles and names, read when needed

    def release(self) -> None:
        """Let go of the decisions once an engine has loaded them, so that a build does
        not hold a second copy of them while it streams."""
        self.decisions = DECISIONS_SCHEMA.empty_table()


def combine(at_as_of: pa.Table, at_head: pa.Table) -> pa.Table:
    """Yes only where both are yes; the reason is the first no (as-of time, then head)."""
    con = _duckdb()
    con.register("t_", at_as_of)
    con.register("h_", at_head)
    try:
        return (
            con.sql("""
SELECT h.subject,
  coalesce(t.allowed, false) AND h.allowed AS allowed,
  CASE WHEN NOT coalesce(t.allowed, false) THEN coalesce(t.reason, 'unknown-subject')
       ELSE h.reason END AS reason,
  CASE WHEN NOT coalesce(t.allowed, false) THEN t.event_seq ELSE h.event_seq END AS event_seq
FROM h_ h LEFT JOIN t_ t ON t.subject = h.subject ORDER BY h.subject""")
            .to_arrow_table()
            .cast(DECISIONS_SCHEMA)
        )
    finally:
        con.unregister("t_")
        con.unregister("h_")


# With this many subjects, a build reads in a second process (SQLite; see
# ``store.read_later``) the choices and notices while it reads the subjects, and the
# directory while it reads the corpus.
ASIDE_SUBJECTS = 100_000


def gather(ledger: Ledger, purpose: str, as_of: datetime | None = None) -> Consent:
    """Pin the head and read the decisions and names a build of ``purpose`` needs."""
    p = ledger.policy.purpose(purpose)
    head = ledger.head()
    at = times.to_micros(as_of) if as_of is not None else times.to_micros(times.now())
    if at > times.to_micros(times.now()):
        raise InputError(f"as-of {times.iso(at)} is in the future")
    aside = store.has_rows(ledger.engine, "subjects", ASIDE_SUBJECTS)
    # The decisions at the head come from the current-state tables. On a big SQLite
    # ledger, their choices and notices are read in a second process with the
    # protected names, and half of ``subject_state`` in a third, while the other half
    # is read here.
    head_needed = at >= head.recorded_at or p.reaches_back
    side = side_queries(p) if head_needed else []
    names_query = (_NAMES_SQL, DIRECTORY_SCHEMA)
    split = aside and head_needed and ledger.engine.dialect.name == "sqlite"
    here, there = subject_halves(ledger) if split else (None, None)
    with (
        store.read_later(ledger.engine, [*side, names_query], aside=aside) as read,
        store.read_later(ledger.engine, [there] if there else [], aside=bool(there)) as half,
    ):

        @functools.cache
        def tables() -> list[pa.Table]:
            return read.result()  # the side queries' tables, then the names

        def side_tables() -> list[pa.Table]:
            return tables()[: len(side)] + half.result()

        def at_head(t: int) -> pa.Table:
            if here is None:
                return decisions_at_head(ledger, p, head, t, side_tables)
            return decisions_at_head(ledger, p, head, t, side_tables, here[0])

        if at >= head.recorded_at:
            # Nothing was recorded after the as-of time.
            decisions = at_head(at)
        elif not p.reaches_back:
            decisions = decisions_pinned(ledger, p, head, at)
        else:
            decisions = combine(decisions_pinned(ledger, p, head, at), at_head(head.recorded_at))
        names = tables()[-1]
        decisions = decisions.cast(DECISIONS_SCHEMA)
    release_duckdb()  # what the reads cached is not needed while the build streams
    directory = Directory(ledger.engine, aside)
    return Consent(p, at, head, ledger.policy.hash, decisions, names, directory)
