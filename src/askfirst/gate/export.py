"""Decisions as a Parquet file, for any engine (Trino, BigQuery, Spark) to join against."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq

from askfirst import times
from askfirst.decisions import decisions_pinned
from askfirst.errors import InputError
from askfirst.ledger.ledger import Ledger


def export_decisions(
    ledger: Ledger, purpose: str, out: str | Path, *, at: datetime | None = None
) -> int:
    """Write ``subject, allowed, reason, event_seq`` for every subject to ``out``.

    The file's metadata names the purpose, the time and the ledger head the decisions
    were made against. Returns the number of subjects written.
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
    table = decisions_pinned(ledger, p, head, t)
    table = table.replace_schema_metadata(
        {
            "askfirst.purpose": p.name,
            "askfirst.at": times.iso(t),
            "askfirst.ledger_head": f"{head.seq}:{head.hash}",
            "askfirst.policy_hash": ledger.policy.hash,
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
