"""Building a snapshot: pin the ledger, run an engine, write the manifest, record lineage.

A build works in a hidden folder beside the one asked for and renames it into place
only when every file is written and the lineage is in the database, in the same
transaction: a failed build leaves no folder and no registry entry behind (fail closed).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from askfirst import lineage, times
from askfirst.errors import InputError, LedgerCorrupt
from askfirst.gate import consent as consent_mod
from askfirst.gate import corpus as corpus_mod
from askfirst.gate import engine_duckdb, engine_spark
from askfirst.gate.manifest import LedgerHeadRef, SnapshotManifest, snapshot_id
from askfirst.gate.plan import ON_MENTION, OUTPUT_SCHEMA, Plan
from askfirst.ledger.ledger import Ledger
from askfirst.rules import EXCLUSION_REASONS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ENGINES = ("duckdb", "spark")


def build_snapshot(
    ledger: Ledger,
    purpose: str,
    corpus: str | Path,
    out: str | Path,
    *,
    as_of: datetime | None = None,
    engine: str = "duckdb",
    on_mention: str = "redact",
    verify_ledger: bool = False,
    progress: Callable[[int], None] | None = None,
    spark: SparkSession | None = None,
    spark_master: str | None = None,
) -> SnapshotManifest:
    """Build the snapshot of ``corpus`` for ``purpose`` as of ``as_of`` (default: now)
    into the new folder ``out``; return its manifest.

    ``engine="spark"`` runs the same rules on Apache Spark: on ``spark`` (an existing
    SparkSession) or on a session started for ``spark_master`` (default local[2]).

    Only records whose author may be used (at ``as_of`` and, for a purpose that reaches
    back, at the ledger head too), in a category the purpose may use and created by
    ``as_of``, go in; mentions of anyone who did not say yes are redacted (or, with
    ``on_mention="drop"``, the record is left out).
    """
    return build(
        ledger,
        purpose,
        corpus,
        out,
        as_of=as_of,
        engine=engine,
        on_mention=on_mention,
        verify_ledger=verify_ledger,
        progress=progress,
        spark=spark,
        spark_master=spark_master,
    )


def build(
    ledger: Ledger,
    purpose: str,
    corpus: str | Path,
    out: str | Path,
    *,
    as_of: datetime | None = None,
    engine: str = "duckdb",
    on_mention: str = "redact",
    verify_ledger: bool = False,
    progress: Callable[[int], None] | None = None,
    replaces: int | None = None,
    spark: SparkSession | None = None,
    spark_master: str | None = None,
) -> SnapshotManifest:
    """``build_snapshot``; with ``replaces`` (a rebuild), the registry number of the
    snapshot that the new one retires, in the transaction that registers it."""
    if engine not in ENGINES:
        raise InputError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "spark":
        engine_spark.require_pyspark()  # at once, with the install hint
    if on_mention not in ON_MENTION:
        raise InputError(f"on-mention {on_mention!r}: use 'redact' or 'drop'")
    target = Path(out)
    if target.exists():
        raise InputError(f"{target} already exists; a snapshot is built into a new folder")
    if target.parent.exists() and not target.parent.is_dir():
        raise InputError(f"{target.parent} is not a folder")
    found = corpus_mod.find(corpus)
    lineage.check_can_record(ledger)
    started = times.now()
    if verify_ledger:
        report = ledger.verify()
        if not report.ok:
            first = (report.problems or report.projection_problems)[0]
            raise LedgerCorrupt(f"the ledger failed verification, so nothing is built: {first}")
    consent = consent_mod.gather(ledger, purpose, as_of)
    plan = Plan(consent=consent, corpus=found, on_mention=on_mention)
    made = _make_folders(target.parent)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    except BaseException:
        _remove_empty(made)
        raise
    moved = False

    def move_into_place() -> None:
        nonlocal moved
        os.rename(work, target)
        moved = True

    try:
        if engine == "spark":
            outcome = engine_spark.run(plan, work, progress, spark=spark, master=spark_master)
        else:
            outcome = engine_duckdb.run(plan, work, progress)
        excluded = {r: outcome.excluded.get(r, 0) for r in EXCLUSION_REASONS}
        unexpected = set(outcome.excluded) - set(EXCLUSION_REASONS)
        if unexpected:  # a reason nobody named would hide records: refuse
            raise InputError(f"the gate gave unknown reasons {sorted(unexpected)}")
        if outcome.input_records != outcome.output_records + sum(excluded.values()):
            raise InputError("the gate's counts do not add up; nothing was written")
        lin = outcome.lineage
        manifest = SnapshotManifest(
            snapshot_id=snapshot_id(
                purpose=consent.purpose.name,
                as_of=consent.as_of,
                policy_hash=consent.policy_hash,
                head_seq=consent.head.seq,
                head_hash=consent.head.hash,
                on_mention=on_mention,
                records=outcome.output_records,
                digest=outcome.digest,
            ),
            purpose=consent.purpose.name,
            purpose_version=consent.purpose.version,
            as_of=times.iso(consent.as_of),
            policy_hash=consent.policy_hash,
            ledger_head=LedgerHeadRef(seq=consent.head.seq, hash=consent.head.hash),
            engine=engine,
            on_mention=on_mention,
            corpus=str(found.path.resolve()),
            input_records=outcome.input_records,
            output_records=outcome.output_records,
            output_by_category=dict(sorted(outcome.by_category.items())),
            excluded=excluded,
            redacted_mentions=outcome.redacted_mentions,
            subjects_as_author=_count(lin, "author_records"),
            subjects_as_mention=_count(lin, "mention_records"),
            files=[f"data/{name}" for name in outcome.files],
            started_at=times.iso(started),
            finished_at=times.iso(times.now()),
        )
        (work / "manifest.json").write_text(
            json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8"
        )
        lineage.record(
            ledger,
            manifest,
            str(target.resolve()),
            lin,
            before_commit=move_into_place,
            replaces=replaces,
        )
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if moved:  # the transaction failed after the folder moved into place
            shutil.rmtree(target, ignore_errors=True)
        _remove_empty(made)
        raise
    return manifest


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, innermost first."""
    missing: list[Path] = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        missing.append(p)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{folder}: cannot create the folder ({e.strerror or e})") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed build created, so that it leaves nothing behind."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            return


def _count(table: pa.Table, column: str) -> int:
    return int(pc.sum(pc.greater(table.column(column), 0)).as_py() or 0)


def read_snapshot(folder: str | Path) -> tuple[SnapshotManifest, pa.Table]:
    """A built snapshot's manifest and records (for checks and small snapshots)."""
    p = Path(folder)
    try:
        manifest = SnapshotManifest.model_validate_json((p / "manifest.json").read_text())
    except OSError as e:
        raise InputError(f"{p}: no snapshot here ({e.strerror})") from None
    files = [str(p / f) for f in manifest.files]
    if not files:
        return manifest, OUTPUT_SCHEMA.empty_table()
    return manifest, pa.concat_tables(pq.read_table(f, schema=OUTPUT_SCHEMA) for f in files)
