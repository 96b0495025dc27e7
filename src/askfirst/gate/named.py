"""Names that became protected after a snapshot was built: find them in its files.

A build looks for the names of the subjects protected at its ledger head (people who
objected, members who died). When a case later protects someone — a person's objection,
a member's death — the snapshots built before hold their names in others' records, and
the lineage does not know it. :func:`reach_named` reads each live snapshot's own files
for those names (DuckDB, one pass per snapshot, whole words, any case), records what it
found in the lineage as mentions, and carries the subject's "no" back exactly as a
withdrawal would: the snapshots go stale, their models get tasks, their partners notices.

For an erasure it runs *before* the approval, while the names are still known: the
lineage then holds the mentions, and the erasure's own reach-back finds them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
from sqlalchemy import select

from askfirst import propagation
from askfirst.ledger import Ledger, store
from askfirst.ledger.events import Event
from askfirst.ledger.tables import events, lineage, snapshots, subjects
from askfirst.propagation import Propagated


def _pattern(names: list[str]) -> str:
    """An RE2 pattern for any of ``names`` as whole words in lower-cased text."""
    words = sorted({" ".join(n.lower().split()) for n in names if n.strip()}, key=len)
    alternatives = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in reversed(words))
    return rf"(^|[^\pL\pN_])({alternatives})($|[^\pL\pN_])"


def _count(files: list[Path], pattern: str) -> int:
    con = duckdb.connect()
    try:
        row = con.execute(
            "SELECT count(*) FROM read_parquet(?) WHERE regexp_matches(lower(text), ?)",
            [[str(f) for f in files], pattern],
        ).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def record_named(ledger: Ledger, subject: str) -> list[int]:
    """Record, in the lineage, the live snapshots whose records name ``subject`` (by a
    name of theirs) where the lineage did not know it yet; returns those snapshots."""
    with ledger.engine.connect() as conn:
        names_json = conn.execute(select(subjects.c.names).where(subjects.c.id == subject)).scalar()
        live = conn.execute(
            select(snapshots.c.id, snapshots.c.path).where(snapshots.c.status == "live")
        ).all()
        known = set(
            conn.execute(
                select(lineage.c.snapshot).where(lineage.c.subject_id == subject)
            ).scalars()
        )
    names = json.loads(names_json or "[]")
    if not names:
        return []
    pattern = _pattern(names)
    found: dict[int, int] = {}
    for snap, path in live:
        if snap in known:
            continue
        files = sorted((Path(path) / "data").rglob("*.parquet"))
        if files and (n := _count(files, pattern)):
            found[snap] = n
    if found:
        with store.write(ledger.engine) as conn:
            conn.execute(
                lineage.insert(),
                [
                    {"snapshot": s, "subject_id": subject, "author_records": 0,
                     "mention_records": n, "mention_keys": None}
                    for s, n in found.items()
                ],
            )  # fmt: skip
    return sorted(found)


def reach_named(ledger: Ledger, subject: str) -> Propagated:
    """:func:`record_named`, then carry the subject's last end of use (their objection,
    their death) back to the snapshots found, as the append that recorded it would have."""
    record_named(ledger, subject)
    with store.write(ledger.engine) as conn:
        rows = conn.execute(
            select(events).where(events.c.subject_id == subject).order_by(events.c.seq)
        ).all()
        ends = [e for e in (Event.from_row(r) for r in rows) if propagation.may_end_use(e)]
        if not ends:
            return Propagated()
        return propagation.propagate(conn, ledger.policy, ends)
