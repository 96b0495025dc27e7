"""What the gate takes from the ledger: decisions pinned to one head, and the directory.

A build reads the ledger once, before it reads the corpus: the head it runs against,
every subject's decision for the purpose, and the handles and names used to find
mentions. Engines (DuckDB here, Spark later) only ever see these Arrow tables, so they
give the same answers.

Reaching back (DESIGN.md): for a purpose that reaches back, a subject counts as yes only
if the decision is yes at the as-of time *and* at the head the build runs against. The
reason recorded for a no is the one at the as-of time, or else the one at the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from askfirst import times
from askfirst.decisions import (
    _duckdb,
    decisions_at_head,
    decisions_pinned,
    release_duckdb,
    side_queries,
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
_PROTECTED_SQL = (
    "SELECT subject_id AS subject FROM subject_state WHERE kind = 'person' OR status = 'deceased'"
)


@dataclass
class Consent:
    """Everything a gate engine needs to know about the subjects, for one build."""

    purpose: Purpose
    as_of: int
    head: Head
    policy_hash: str
    decisions: pa.Table  # DECISIONS_SCHEMA, one row per subject known at the head
    directory: pa.Table  # DIRECTORY_SCHEMA

    def release(self) -> None:
        """Let go of the decisions and directory once an engine has loaded them, so
        that a build does not hold a second copy of them while it streams."""
        self.decisions = DECISIONS_SCHEMA.empty_table()
        self.directory = DIRECTORY_SCHEMA.empty_table()


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


# With this many subjects, a build reads the directory in a second process while it
# reads the decisions (SQLite; see ``store.read_later``).
ASIDE_SUBJECTS = 100_000
_DIRECTORY_QUERIES = [
    (_DIRECTORY_SQL, DIRECTORY_SCHEMA.remove(3)),
    (_PROTECTED_SQL, pa.schema([("subject", pa.string())])),
]


def _directory(rows: pa.Table, protected: pa.Table) -> pa.Table:
    flag = pc.cast(pc.is_in(rows.column("subject"), protected.column("subject")), pa.int64())
    return rows.append_column(DIRECTORY_SCHEMA.field("protected"), flag)


def gather(ledger: Ledger, purpose: str, as_of: datetime | None = None) -> Consent:
    """Pin the head and read the decisions and directory a build of ``purpose`` needs."""
    p = ledger.policy.purpose(purpose)
    head = ledger.head()
    at = times.to_micros(as_of) if as_of is not None else times.to_micros(times.now())
    if at > times.to_micros(times.now()):
        raise InputError(f"as-of {times.iso(at)} is in the future")
    aside = store.has_rows(ledger.engine, "subjects", ASIDE_SUBJECTS)
    # The decisions at the head come from the current-state tables. On a big SQLite
    # ledger, their choices and notices are read in one second process and the
    # directory in another, while ``subject_state`` is read here.
    head_needed = at >= head.recorded_at or p.reaches_back
    side = side_queries(p) if head_needed else []
    with (
        store.read_later(ledger.engine, _DIRECTORY_QUERIES, aside=aside) as directory_read,
        store.read_later(ledger.engine, side, aside=aside and bool(side)) as side_read,
    ):
        if at >= head.recorded_at:
            # Nothing was recorded after the as-of time.
            decisions = decisions_at_head(ledger, p, head, at, side_read.result)
        elif not p.reaches_back:
            decisions = decisions_pinned(ledger, p, head, at)
        else:
            decisions = combine(
                decisions_pinned(ledger, p, head, at),
                decisions_at_head(ledger, p, head, head.recorded_at, side_read.result),
            )
        directory = _directory(*directory_read.result())
        decisions = decisions.cast(DECISIONS_SCHEMA)
    release_duckdb()  # what the reads cached is not needed while the build streams
    return Consent(p, at, head, ledger.policy.hash, decisions, directory)
