"""Building a snapshot: pin the ledger, run an engine, write the manifest, record lineage.

A build registers itself as ``building`` (with the folder asked for), works in a hidden
folder beside that one, fsyncs it, and then, in one transaction, records the lineage,
renames the folder into place and turns the entry ``live``: a failed build leaves no
folder and no registry entry behind (fail closed). A build killed at any instant leaves
a ``building`` entry and folders that the next build (or ``askfirst snapshot
reconcile``) removes, unless the snapshot was committed: then it is live and whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
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
    key_dir: str | Path | None = None,
) -> SnapshotManifest:
    """Build the snapshot of ``corpus`` for ``purpose`` as of ``as_of`` (default: now)
    into the new folder ``out``; return its manifest.

    ``engine="spark"`` runs the same rules on Apache Spark: on ``spark`` (an existing
    SparkSession) or on a session started for ``spark_master`` (default local[2]).

    Only records whose author may be used (at ``as_of`` and, for a purpose that reaches
    back, at the ledger head too), in a category the purpose may use and created by
    ``as_of``, go in; mentions of anyone who did not say yes are redacted (or, with
    ``on_mention="drop"``, the record is left out).

    Once a subject has been erased, a build needs the names key (``key_dir``, default
    the ``ASKFIRST_KEY_DIR`` setting) to find their names in others' records.
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
        key_dir=key_dir,
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
    key_dir: str | Path | None = None,
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
    reconcile(ledger, [target.parent])  # what a killed build left, finished first
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
    consent = consent_mod.gather(ledger, purpose, as_of, key_dir=key_dir)
    plan = Plan(consent=consent, corpus=found, on_mention=on_mention)
    made = _make_folders(target.parent)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}{_HIDDEN}", dir=target.parent))
    except BaseException:
        _remove_empty(made)
        raise
    token = secrets.token_hex(16)
    lock: int | None = None
    number: int | None = None
    try:
        lock = _take_lock(work, token)
        number = lineage.begin_build(
            ledger,
            purpose=consent.purpose.name,
            as_of=consent.as_of,
            head_seq=consent.head.seq,
            head_hash=consent.head.hash,
            policy_hash=consent.policy_hash,
            engine=engine,
            on_mention=on_mention,
            corpus=str(found.path.resolve()),
            path=str(target.resolve()),
            work=str(work.resolve()),
            token=token,
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        _step("registered")
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
        # Checked on a second thread while the files are synced to disk (CPU beside I/O).
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="askfirst-ids")
        unique = pool.submit(_refuse_duplicates, work, outcome.files, found.path)
        pool.shutdown(wait=False)
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
        _sync_tree(work)
        unique.result()  # a record id twice: refused here, before anything is registered
        _step("written")

        def move_into_place() -> None:
            os.rename(work, target)
            _sync_dir(target.parent)
            _step("moved")

        lineage.record(
            ledger,
            manifest,
            str(target.resolve()),
            lin,
            before_commit=move_into_place,
            replaces=replaces,
            building=number,
        )
        _step("committed")
    except BaseException:
        # What happened is read back from the registry, not guessed: an interruption
        # just after the commit leaves the snapshot live, and its folder stays.
        try:
            _undo(ledger, number, work, target, token)
        except Exception:  # the registry is out of reach: the next reconcile finishes
            pass
        finally:
            _remove_empty(made)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    _drop_lock(target, token)
    return manifest


# ---- a killed build ----------------------------------------------------------------------------
# A build holds an fcntl lock on a file in its hidden folder (the lock dies with the
# process, however it ends) and writes its token in it, so that its folders are known
# again after a rename. Reconciling removes what a build whose lock is free left: its
# hidden folder, its target folder if the snapshot was not committed, and its
# ``building`` entry; files first, the entry last, so that a reconcile killed half-way
# is finished by the next.

_HIDDEN = ".building-"
_LOCK = ".askfirst-build.lock"
_UNLOCKED_GRACE = 600.0  # seconds: a hidden folder without a lock file is that old at least


@dataclass(frozen=True)
class Reconciled:
    """What reconciling removed: ``building`` entries and folders of killed builds."""

    entries: list[int]
    folders: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"entries_removed": self.entries, "folders_removed": self.folders}


def reconcile(ledger: Ledger, folders: Iterable[str | Path] = ()) -> Reconciled:
    """Finish what killed builds left: for each ``building`` entry whose build is gone
    (its lock is free), remove its hidden folder, its target folder unless the snapshot
    was committed, and the entry; delete the data files a killed rebuild left in the
    snapshot it retired; then remove leftover hidden build folders in ``folders`` and
    beside those entries. A build still running is left alone, and so is an entry made
    on another host."""
    entries: list[int] = []
    removed: list[str] = []
    look_in = {Path(f) for f in folders}
    here = socket.gethostname()
    for b in lineage.builds_in_progress(ledger):
        work, target = Path(b.work), Path(b.path)
        look_in.add(target.parent)
        if b.host != here:
            continue
        if _locked(work) or _locked(target):
            continue
        for p in (work, target):
            if p.exists() and _owned(p, b.token):
                removed.append(str(p))
        _undo(ledger, b.id, work, target, b.token)
        entries.append(b.id)
    # a rebuild killed after its commit: the old snapshot is retired, its data files go
    for f in lineage.registered_folders(ledger):
        where = Path(f.path)
        if f.status == "retired" and not f.shared and (where / "data").is_dir():
            retire_files(where, f.snapshot_id, f.replaced_by or "")
            removed.append(str(where / "data"))
        # a build killed just after its commit: its lock file (not in the manifest) goes
        if (where / _LOCK).is_file() and not _locked(where):
            with contextlib.suppress(OSError):
                (where / _LOCK).unlink()
    running = lineage.builds_in_progress(ledger)
    live_work = {Path(b.work) for b in running}
    building_paths = {Path(b.path) for b in running}
    for folder in look_in:
        try:
            hidden = [p for p in folder.iterdir() if p.name.startswith(".") and _HIDDEN in p.name]
        except OSError:
            continue
        for p in folder.iterdir() if folder.is_dir() else ():
            # a build killed just after its commit: the snapshot is whole, its lock file
            # (the one file not in the manifest) goes
            if (
                p not in hidden
                and (p / _LOCK).is_file()
                and p.resolve() not in building_paths
                and not _locked(p)
            ):
                with contextlib.suppress(OSError):
                    (p / _LOCK).unlink()
        for p in hidden:
            if not p.is_dir() or p.resolve() in live_work or _locked(p):
                continue
            if not (p / _LOCK).exists():
                try:  # maybe a build between making the folder and taking its lock
                    if time.time() - p.stat().st_mtime < _UNLOCKED_GRACE:
                        continue
                except OSError:
                    continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(str(p))
    return Reconciled(entries, removed)


def _undo(ledger: Ledger, number: int | None, work: Path, target: Path, token: str) -> None:
    """Remove a build's files, and its entry unless the snapshot was committed."""
    shutil.rmtree(work, ignore_errors=True)
    status = lineage.status_of(ledger, number) if number is not None else None
    if status == lineage.BUILDING or status is None:
        if target.is_dir() and _owned(target, token):
            shutil.rmtree(target, ignore_errors=True)
        if number is not None:
            lineage.drop_build(ledger, number)
    else:  # committed: the snapshot is the registry's; only the lock file goes
        _drop_lock(target, token)


def _take_lock(work: Path, token: str) -> int:
    fd = os.open(work / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, token.encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _locked(folder: Path) -> bool:
    """Whether a running build holds the lock in ``folder``."""
    try:
        fd = os.open(folder / _LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _owned(folder: Path, token: str) -> bool:
    """Whether ``folder`` is the one the build with ``token`` wrote."""
    try:
        return bool(token) and (folder / _LOCK).read_text(encoding="utf-8") == token
    except OSError:
        return False


def _drop_lock(target: Path, token: str) -> None:
    if _owned(target, token):
        with contextlib.suppress(OSError):
            (target / _LOCK).unlink()


def _sync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder``, so that a rename publishes it whole."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name == _LOCK:
                continue
            fd = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_dir(Path(root))


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The test harness's hook (tests/test_build_kill.py): with this variable naming a step,
# the build says so on stderr and waits there, to be killed at that step.
_PAUSE_AT = "ASKFIRST_TEST_PAUSE_AT"


def _step(name: str) -> None:
    if os.environ.get(_PAUSE_AT) == name:
        print(f"askfirst-test: paused at {name}", file=sys.stderr, flush=True)
        time.sleep(600)


def retire_files(folder: Path, old_id: str, new_id: str) -> int:
    """Delete a retired snapshot's data files; keep its manifest, and say why."""
    data = folder / "data"
    deleted = 0
    if data.is_dir():
        deleted = sum(1 for p in data.rglob("*") if p.is_file())
        shutil.rmtree(data)
    if folder.is_dir():
        note = {
            "snapshot_id": old_id,
            "status": "retired",
            "retired_at": times.iso(times.now()),
            "replaced_by": new_id,
            "why": "rebuilt against a later ledger head; its data files were deleted",
        }
        (folder / "retired.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return deleted


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


def _refuse_duplicates(work: Path, files: list[str], corpus: Path) -> None:
    """Refuse a snapshot that would hold a record id twice: the corpus named it twice.

    Read from the written files' one id column (whatever the engine and the corpus's
    format), with DuckDB in its memory bound, spilling into the build's hidden folder."""
    if not files:
        return
    paths = ", ".join("'" + str(work / "data" / f).replace("'", "''") + "'" for f in files)
    spill = work / ".spill-ids"
    con = duckdb.connect(config={"memory_limit": "512MB", "temp_directory": str(spill)})
    try:
        rows = con.execute(
            f"SELECT record_id, count(*) AS n, count(*) OVER () AS ids "
            f"FROM read_parquet([{paths}]) GROUP BY record_id HAVING count(*) > 1 "
            "ORDER BY n DESC, record_id LIMIT 1"
        ).fetchall()
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    if rows:
        record_id, n, ids = rows[0]
        more = ""
        if ids > 1:
            more = f" (and {ids - 1} more id{'s' if ids > 2 else ''} more than once)"
        raise InputError(
            f"corpus {corpus}: record_id {record_id!r} appears {n} times"
            f"{more}; record ids must be unique, so nothing was built"
        )


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
