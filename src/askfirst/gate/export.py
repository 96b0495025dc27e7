"""Decisions as a Parquet file, for any engine (Trino, BigQuery, Spark) to join against."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq

from askfirst import times
from askfirst.decisions import decisions_at, decisions_for_use
from askfirst.errors import InputError
from askfirst.ledger.ledger import Ledger


def export_decisions(
    ledger: Ledger,
    purpose: str,
    out: str | Path,
    *,
    at: datetime | None = None,
    for_gate: bool = False,
) -> int:
    """Write ``subject, allowed, reason, event_seq`` for every subject to ``out``.

    The decisions are those at ``at`` (default now). With ``for_gate``, they are the ones
    a snapshot as of ``at`` uses: for a purpose that reaches back, yes only if yes at
    ``at`` and at the ledger head too, so that a withdrawal since still counts — what an
    outside engine filtering a training set should join against. The file's metadata
    names the purpose, the time, the ledger head and the rule. Returns the number of
    subjects written.
    """
    p = ledger.policy.purpose(purpose)
    target = Path(out)
    if not target.parent.is_dir():
        raise InputError(f"{target.parent} does not exist; create it first")
    head = ledger.head()
    t = (
        times.to_micros(at)
        if at is not None
        else max(times.to_micros(times.now()), head.recorded_at)
    )
    table = (decisions_for_use if for_gate else decisions_at)(ledger, p, head, t)
    table = table.replace_schema_metadata(
        {
            "askfirst.purpose": p.name,
            "askfirst.at": times.iso(t),
            "askfirst.ledger_head": f"{head.seq}:{head.hash}",
            "askfirst.policy_hash": ledger.policy.hash,
            "askfirst.rule": "yes at the time and at the head" if for_gate else "at the time",
        }
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return int(table.num_rows)
