"""Rebuilding a snapshot against today's ledger, and retiring the old one.

A rebuild runs the gate again with the old snapshot's corpus, as-of time, purpose, mention
rule and engine, against the ledger as it is now — so every withdrawal made since is
honoured. The new snapshot records what it was rebuilt from; the old one is marked
retired in the same transaction, and then its data files are deleted. Its manifest stays,
with a ``retired.json`` beside it, for the record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from askfirst import lineage, times
from askfirst.errors import InputError
from askfirst.gate.build import build, retire_files
from askfirst.gate.manifest import SnapshotManifest
from askfirst.ledger.ledger import Ledger
from askfirst.ledger.tables import snapshots

_GENERATION = re.compile(r"^(?P<base>.*)\.r(?P<n>\d+)$")


@dataclass(frozen=True)
class Rebuilt:
    """One rebuild: the snapshot retired, the new one, and where it is."""

    old_id: str
    new: SnapshotManifest
    path: Path
    deleted_files: int

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old_id,
            "new": self.new.snapshot_id,
            "path": str(self.path),
            "deleted_files": self.deleted_files,
            "output_records": self.new.output_records,
            "excluded": {k: v for k, v in self.new.excluded.items() if v},
        }


def next_folder(old: Path) -> Path:
    """Where a rebuild of ``old`` goes: ``NAME.r2``, ``NAME.r3``, ... beside it."""
    m = _GENERATION.match(old.name)
    base, n = (m["base"], int(m["n"]) + 1) if m else (old.name, 2)
    while (old.parent / f"{base}.r{n}").exists():
        n += 1
    return old.parent / f"{base}.r{n}"


def rebuild_snapshot(
    ledger: Ledger,
    snapshot_id: str,
    *,
    out: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    key_dir: str | Path | None = None,
) -> list[Rebuilt]:
    """Rebuild every copy of ``snapshot_id`` still holding data (one, usually); with
    erased subjects, the names key is read from ``key_dir`` (see ``build_snapshot``)."""
    with ledger.engine.connect() as conn:
        rows = [r for r in lineage.resolve(conn, snapshot_id) if r.status != "retired"]
    if not rows:
        raise InputError(f"snapshot {snapshot_id!r} is already retired; nothing to rebuild")
    if out is not None and len(rows) > 1:
        raise InputError(f"snapshot {snapshot_id!r} has {len(rows)} copies; leave out --out")
    return [_rebuild(ledger, row, out, progress, key_dir) for row in rows]


def rebuild_stale(
    ledger: Ledger,
    *,
    progress: Callable[[int], None] | None = None,
    key_dir: str | Path | None = None,
) -> list[Rebuilt]:
    """Rebuild every stale snapshot, oldest first."""
    q = select(snapshots).where(snapshots.c.status == "stale").order_by(snapshots.c.id)
    with ledger.engine.connect() as conn:
        rows = conn.execute(q).all()
    return [_rebuild(ledger, row, None, progress, key_dir) for row in rows]


def _rebuild(
    ledger: Ledger,
    row: Any,
    out: str | Path | None,
    progress: Callable[[int], None] | None,
    key_dir: str | Path | None,
) -> Rebuilt:
    old_path = Path(row.path)
    target = Path(out) if out is not None else next_folder(old_path)
    corpus = Path(row.corpus)
    if not corpus.exists():
        raise InputError(
            f"snapshot {row.snapshot_id[:16]}: its corpus {corpus} is gone, so it cannot be "
            "rebuilt; it stays stale"
        )
    manifest = build(
        ledger,
        row.purpose,
        corpus,
        target,
        as_of=times.from_micros(row.as_of),
        engine=row.engine,
        on_mention=row.on_mention,
        progress=progress,
        replaces=row.id,
        key_dir=key_dir,
    )
    deleted = retire_files(old_path, row.snapshot_id, manifest.snapshot_id)
    return Rebuilt(row.snapshot_id, manifest, target, deleted)
