"""Benchmark of withdrawals that reach back (issue 5): propagation latency, rebuild throughput.

Generates its own data. In the same run it measures:

1. Propagation latency: the time from a withdrawal to the end of its transaction, i.e. the
   duration of ``Ledger.append`` of a ``choice withdraw genai-training``, which marks the
   snapshots holding the subject stale, records the withdrawal against each and opens a
   task for every model version trained on one of them (``askfirst.propagation``).
   The registry holds SNAPSHOTS snapshots of SUBJECTS subjects each (every subject in every
   snapshot: the worst case for the one who withdraws; one in four subjects is also a kept
   mention, with two shard keys), recorded with ``askfirst.lineage.record`` from a
   synthetic lineage table and manifest, and MODELS model versions registered on 2-10
   snapshots each (a third of them with 16 shards, a third with 256). Only the subjects
   who withdraw are registered in the ledger (propagation reads the lineage by subject id
   and the withdrawer's own events; it never reads other subjects). Before every timed
   withdrawal the snapshots are set back to ``live`` (and on PostgreSQL, whose test server
   runs without autovacuum, their table is vacuumed), so each one does the whole work:
   SNAPSHOTS stale marks, SNAPSHOTS withdrawal rows and one task per (model, snapshot).
   Baseline, interleaved in the same process: the same append by a granted subject in
   no snapshot (which still runs the lineage look-up and finds nothing).
2. Rebuild throughput: a snapshot of a generated corpus (bench/gate.py's ledger and corpus
   with 5 % mentions) is built, one author withdraws, then ``rebuild_snapshot`` and a fresh
   ``build_snapshot`` of the same corpus and as-of time into a new folder are timed
   (records/s), in alternating order over ROUNDS rounds.

    python bench/reachback.py                       # 100 x 2M lineage; 2M-record corpus
    python bench/reachback.py --pg                  # and propagation on PostgreSQL too
    python bench/reachback.py --records 20000000 --authors 2000000   # full-size rebuild
    python bench/reachback.py --quick               # smoke run

Each withdrawal pair is timed until --withdrawals are done or --budget seconds are spent
(at least 3 pairs), so a slow path still ends. --pg defaults to 100 x 200,000 (recording
200 M rows by COPY would take most of an hour on a small machine).

The SQLite lineage database is cached in bench/out/ (recording 200 M lineage rows takes
minutes); each run clears the tasks and withdrawals of earlier runs and grants again to the
subjects it withdraws. PostgreSQL runs in a fresh schema, dropped at the end. The rebuild
works on a copy of bench/gate.py's cached ledger, so that ledger is left as it was.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

import askfirst
import askfirst.propagation
from askfirst import Ledger, NewEvent, SubjectIn, load_policy, open_ledger, times
from askfirst.gate.manifest import LedgerHeadRef, SnapshotManifest
from askfirst.gate.rebuild import rebuild_snapshot
from askfirst.lineage import record, shard_key
from askfirst.models import register_model
from gate import OUT, PG_SERVER, PURPOSE, T0, log, make_corpus, make_ledger, sid

TARGET_MS = 50.0


# ---- the lineage registry ------------------------------------------------------------------


def lineage_rows(subjects: int) -> pa.Table:
    """One row per subject: an author of 1-20 records; one in four also a kept mention."""
    mention = [i % 4 == 0 for i in range(subjects)]
    return pa.table(
        {
            "subject_id": pa.array([sid(i) for i in range(subjects)]),
            "author_records": pa.array([1 + i % 20 for i in range(subjects)], pa.int64()),
            "mention_records": pa.array([2 if m else 0 for m in mention], pa.int64()),
            "mention_keys": pa.array(
                [
                    json.dumps([shard_key(f"a{i}"), shard_key(f"b{i}")]) if m else None
                    for i, m in enumerate(mention)
                ],
                pa.string(),
            ),
        }
    )


def fake_manifest(k: int, subjects: int) -> SnapshotManifest:
    return SnapshotManifest(
        snapshot_id=f"{k:064x}",
        purpose=PURPOSE,
        purpose_version=1,
        as_of=times.iso(T0),
        policy_hash="0" * 64,
        ledger_head=LedgerHeadRef(seq=0, hash="0" * 64),
        engine="duckdb",
        on_mention="redact",
        corpus="bench",
        input_records=0,
        output_records=0,
        excluded={},
        redacted_mentions=0,
        subjects_as_author=subjects,
        subjects_as_mention=subjects // 4,
        files=[],
        started_at=times.iso(T0),
        finished_at=times.iso(T0),
    )


def model_plan(snapshots: int, count: int) -> list[tuple[str, str, list[int], int | None]]:
    """``count`` model versions (name, version, snapshot numbers, shards): 5 versions of
    each model name, each trained on 2-10 snapshots."""
    rng = random.Random(5)
    out = []
    for m in range(count):
        on = sorted(
            rng.sample(range(snapshots), rng.randint(min(2, snapshots), min(10, snapshots)))
        )
        out.append((f"model-{m // 5}", f"v{m % 5 + 1}", on, (None, 16, 256)[m % 3]))
    return out


def fill(led: Ledger, kind: str, snapshots: int, subjects: int, models: int) -> dict[str, Any]:
    """Record the snapshots' lineage and register the models; returns recording figures."""
    rows = lineage_rows(subjects)
    rates = []
    started = time.perf_counter()
    for k in range(snapshots):
        t = time.perf_counter()
        record(led, fake_manifest(k, subjects), f"/bench/{k}", rows)
        rates.append(subjects / (time.perf_counter() - t))
        if k % 10 == 9 or k == snapshots - 1:
            log(f"lineage ({kind}): {k + 1} snapshots, last {rates[-1]:,.0f} subjects/s")
    for name, version, on, shards in model_plan(snapshots, models):
        ids = [f"{k:064x}" for k in on]
        register_model(led, name, version, ids, owner="ml@example.org", shards=shards)
    return {
        "record_s": time.perf_counter() - started,
        "record_median_subjects_per_s": statistics.median(rates),
    }


def sqlite_registry(snapshots: int, subjects: int, models: int) -> tuple[str, dict[str, Any]]:
    """The cached SQLite database with the registry filled (built on first use)."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"reachback-{snapshots}x{subjects}-{models}.db"
    if path.exists():
        return f"sqlite:///{path}", {"cached": True}
    tmp = Path(f"{path}.building")
    for p in OUT.glob(f"{tmp.name}*"):
        p.unlink()
    log(f"recording {snapshots} x {subjects:,} lineage rows (cached afterwards in {path})")
    with open_ledger(f"sqlite:///{tmp}", load_policy(), create=True) as led:
        figures = fill(led, "sqlite", snapshots, subjects, models)
        with led.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{tmp}{suffix}")
        if src.exists():
            src.rename(f"{path}{suffix}")
    return f"sqlite:///{path}", {"cached": False, **figures}


@contextmanager
def pg_registry(snapshots: int, subjects: int, models: int) -> Iterator[tuple[str, dict]]:
    """A fresh PostgreSQL schema with the registry filled; dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_SERVER.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{PG_SERVER}?options=-csearch_path%3D{schema}"
    try:
        log(f"recording {snapshots} x {subjects:,} lineage rows in PostgreSQL schema {schema}")
        with open_ledger(url, load_policy(), create=True) as led:
            figures = fill(led, "postgres", snapshots, subjects, models)
            with led.engine.begin() as conn:  # what autovacuum would have done by now
                conn.exec_driver_sql("ANALYZE")
        yield url, {"schema": schema, **figures}
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


# ---- propagation latency --------------------------------------------------------------------


def withdrawer(k: int, subjects: int, count: int) -> str:
    """The k-th subject to withdraw: spread over the lineage, every other one also a
    kept mention (ids divisible by 4)."""
    step = max(4, subjects // count // 4 * 4)
    return sid((k * step + (k % 2)) % subjects)


def bystander(k: int) -> str:
    return f"x{k:08d}"  # in no snapshot


def prepare_subjects(led: Ledger, ids: list[str]) -> None:
    """Register the subjects that are not yet, and grant genai-training to all of them."""
    with led.engine.connect() as conn:
        known = {
            r[0]
            for r in conn.execute(
                sa.text("SELECT subject_id FROM subject_state WHERE subject_id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)
                ),
                {"ids": ids},
            )
        }
    new = [SubjectIn(id=s, jurisdiction="DE") for s in ids if s not in known]
    if new:
        led.register(new, source="bench")
    led.append_many(
        [
            NewEvent(
                type="choice", subject=s, purpose=PURPOSE, value="grant", actor=s, source="bench"
            )
            for s in ids
        ]
    )


def clear_reach(led: Ledger) -> None:
    """Forget the effects of earlier runs' withdrawals (tasks, withdrawals, notices)."""
    with led.engine.begin() as conn:
        for table in ("tasks", "withdrawals", "outbox"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    set_live(led)


def set_live(led: Ledger) -> None:
    """Every snapshot live again (each withdrawal then marks them all stale)."""
    with led.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE snapshots SET status = 'live', stale_since = NULL WHERE status <> 'live'"
        )
    if led.engine.dialect.name == "postgresql":
        # A snapshot turns stale once in real life; set back to live before every timed
        # withdrawal here, its table would fill with dead rows (this server runs without
        # autovacuum) and the planner would start scanning it in parallel.
        with led.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM snapshots")


def withdraw(led: Ledger, subject: str) -> float:
    """Milliseconds of one withdrawal's append, transaction and propagation included."""
    ev = NewEvent(
        type="choice",
        subject=subject,
        purpose=PURPOSE,
        value="withdraw",
        actor=subject,
        source="bench",
    )
    t = time.perf_counter()
    led.append(ev)
    return (time.perf_counter() - t) * 1000


def reached(led: Ledger, subject: str) -> tuple[int, int, int]:
    """(withdrawal rows, open tasks, stale snapshots) after ``subject`` withdrew."""
    with led.engine.connect() as conn:
        w = conn.execute(
            sa.text("SELECT count(*) FROM withdrawals WHERE subject_id = :s"), {"s": subject}
        ).scalar_one()
        t = conn.execute(
            sa.text("SELECT count(*) FROM tasks WHERE subject_id = :s AND status = 'open'"),
            {"s": subject},
        ).scalar_one()
        s = conn.execute(
            sa.text("SELECT count(*) FROM snapshots WHERE status = 'stale'")
        ).scalar_one()
    return int(w), int(t), int(s)


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "median_ms": statistics.median(ordered),
        "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max_ms": ordered[-1],
        "min_ms": ordered[0],
    }


def propagation(
    url: str,
    kind: str,
    sizes: tuple[int, int, int],
    n: int,
    *,
    warmup: int,
    profile: int,
    budget_s: float,
) -> dict[str, Any]:
    """Time ``n`` withdrawals of subjects in every snapshot against as many of subjects in
    none, interleaved (fewer if ``budget_s`` runs out first, at least 3 of each)."""
    snapshots, subjects, models = sizes
    expected_tasks = sum(len(on) for _, _, on, _ in model_plan(snapshots, models))
    total = n + warmup + profile
    targets = [withdrawer(k, subjects, total) for k in range(total)]
    bases = [bystander(k) for k in range(total)]
    out: dict[str, Any] = {}
    with open_ledger(url, load_policy(), create=True) as led:
        clear_reach(led)
        prepare_subjects(led, targets + bases)
        hit: list[float] = []
        miss: list[float] = []
        started = time.perf_counter()
        for k in range(n + warmup):
            if len(hit) >= 3 and time.perf_counter() - started > budget_s:
                log(f"  time budget of {budget_s:.0f} s spent after {len(hit)} withdrawals")
                break
            # Interleaved, in alternating order; the snapshots are live before each one.
            order = [(targets[k], hit), (bases[k], miss)]
            for subject, into in order if k % 2 == 0 else order[::-1]:
                set_live(led)
                ms = withdraw(led, subject)
                if k >= warmup:
                    into.append(ms)
                w, t, s = reached(led, subject)
                if into is hit:  # the whole work was done
                    assert (w, t, s) == (snapshots, expected_tasks, snapshots), (subject, w, t, s)
                else:
                    assert (w, t, s) == (0, 0, 0), (subject, w, t, s)
            if k >= warmup and kind.startswith("sqlite") and len(hit) <= 5:
                log(f"  withdrawal {len(hit)}: {hit[-1]:,.1f} ms, baseline {miss[-1]:,.1f} ms")
        out.update(
            withdrawals=len(hit),
            warmup=warmup,
            work_per_withdrawal={
                "stale_marks": snapshots,
                "withdrawal_rows": snapshots,
                "tasks_opened": expected_tasks,
            },
            hit=summary(hit),
            baseline_in_no_snapshot=summary(miss),
            hit_ms=hit,
            baseline_ms=miss,
        )
        out["ratio_median_vs_baseline"] = (
            out["hit"]["median_ms"] / out["baseline_in_no_snapshot"]["median_ms"]
        )
        out["median_vs_target"] = out["hit"]["median_ms"] / TARGET_MS
        log(
            f"propagation ({kind}, {snapshots} x {subjects:,}, {models} models, "
            f"{len(hit)} withdrawals): median {out['hit']['median_ms']:,.1f} ms, "
            f"p95 {out['hit']['p95_ms']:,.1f} ms, max {out['hit']['max_ms']:,.1f} ms; "
            f"baseline median {out['baseline_in_no_snapshot']['median_ms']:,.1f} ms "
            f"({out['ratio_median_vs_baseline']:.2f}x); target {TARGET_MS:.0f} ms "
            f"({out['median_vs_target']:.2f}x target)"
        )
        if profile:
            out["profile"] = profile_path(led, targets[n + warmup :])
    return out


class TimedConnection:
    """The connection propagate() is given, timing each statement it runs, rows fetched
    included (SQLite does the work of a SELECT as its rows are fetched)."""

    def __init__(self, conn: Any, into: dict[str, list[float]]) -> None:
        self._conn = conn
        self._into = into

    def execute(self, statement: Any, *args: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        result = self._conn.execute(statement, *args, **kw)
        if result.returns_rows:
            result = result.freeze()()
        spent = time.perf_counter() - t
        if isinstance(statement, sa.Insert):  # str() would name every column of the table
            rows = len(args[0]) if args and isinstance(args[0], list) else 1
            text = f"INSERT INTO {statement.table.name} ({rows} rows)"
        else:
            text = " ".join(str(statement).split())[:160]
        self._into[text].append(spent)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def profile_path(led: Ledger, subjects: list[str]) -> dict[str, Any]:
    """Where a withdrawal's time goes: propagate() against the whole append, the time of
    each SQL statement propagate runs, a cProfile of the appends, the plan of the look-up
    of the subject's snapshots."""
    stmts: dict[str, list[float]] = defaultdict(list)
    real = askfirst.propagation.propagate
    spent: list[float] = []

    def timed(conn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return real(TimedConnection(conn, stmts), *a, **kw)
        finally:
            spent.append((time.perf_counter() - t) * 1000)

    # Half the withdrawals with statement timings, half under cProfile (not both at once:
    # cProfile's overhead would swell the statements' times).
    half = (len(subjects) + 1) // 2
    totals = []
    askfirst.propagation.propagate = timed
    try:
        for s in subjects[:half]:
            set_live(led)
            totals.append(withdraw(led, s))
    finally:
        askfirst.propagation.propagate = real
    prof = cProfile.Profile()
    for s in subjects[half:]:
        set_live(led)
        prof.enable()
        withdraw(led, s)
        prof.disable()
    runs = half
    profiled = max(1, len(subjects) - half)
    by_stmt = sorted(
        ((sum(v) * 1000 / runs, len(v) / runs, k) for k, v in stmts.items()),
        reverse=True,
    )
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative")
    top = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in sorted(
        stats.stats.items(), key=lambda kv: kv[1][3], reverse=True
    )[:25]:
        top.append(
            {
                "function": f"{Path(file).name}:{line}:{fn}",
                "calls_per_append": nc / profiled,
                "cum_ms_per_append": ct * 1000 / profiled,
                "own_ms_per_append": tt * 1000 / profiled,
            }
        )
    plan = explain_lookup(led, subjects[0])
    log(
        f"  profile over {runs} withdrawals: append median {statistics.median(totals):.1f} ms, "
        f"of which propagate() {statistics.median(spent):.1f} ms"
    )
    for ms, calls, text in by_stmt[:8]:
        log(f"    {ms:9.2f} ms  x{calls:.0f}  {text}")
    shown = plan if len(plan) <= 10 else [*plan[:6], "...", *plan[-2:]]
    log(f"  plan of the look-up of the subject's snapshots: {' / '.join(shown)}")
    return {
        "append_median_ms": statistics.median(totals),
        "propagate_median_ms": statistics.median(spent),
        "statements_ms_per_append": [{"ms": ms, "calls": c, "sql": t} for ms, c, t in by_stmt[:12]],
        "cprofile_top": top,
        "lineage_lookup_plan": plan,
    }


def explain_lookup(led: Ledger, subject: str) -> list[str]:
    """The plan of propagate's look-up of one subject in the lineage of held snapshots."""
    with led.engine.connect() as conn:
        ids = sorted(r.id for r in conn.execute(askfirst.lineage.HELD_SNAPSHOTS))
        pg = led.engine.dialect.name == "postgresql"
        if pg:  # the numbers joined, one partition probed each (see propagation._lineage_of)
            sql = askfirst.propagation._LINEAGE_OF_PG.text.replace(
                ":ids", "'{" + ",".join(map(str, ids)) + "}'"
            ).replace(":sid", f"'{subject}'")
        else:
            q = askfirst.propagation._LINEAGE_OF.params(ids=ids, sid=subject)
            sql = str(q.compile(dialect=led.engine.dialect, compile_kwargs={"literal_binds": True}))
        prefix = "EXPLAIN ANALYZE " if pg else "EXPLAIN QUERY PLAN "
        return [" ".join(str(c) for c in row) for row in conn.exec_driver_sql(prefix + sql)]


# ---- rebuild throughput ---------------------------------------------------------------------


def ledger_copy(authors: int) -> tuple[str, Path]:
    """A copy of bench/gate.py's cached ledger, to be changed by this run and deleted."""
    src = make_ledger(authors)
    path = Path(src.removeprefix("sqlite:///"))
    dst = OUT / "scratch" / f"reachback-ledger-{authors}.db"
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
        if Path(f"{path}{suffix}").exists():
            shutil.copyfile(f"{path}{suffix}", f"{dst}{suffix}")
    return f"sqlite:///{dst}", dst


def granted_author(k: int) -> str:
    """An author bench/gate.py's ledger has granted genai-training to."""
    i = 3 + 100 * k  # i % 10 < 7 and i % 100 < 98
    return sid(i)


def timed_build(
    led: Ledger, corpus: Path, out: Path, as_of: datetime | None
) -> tuple[float, SnapshotManifest]:
    t = time.perf_counter()
    m = askfirst.build_snapshot(led, PURPOSE, corpus, out, as_of=as_of)
    return time.perf_counter() - t, m


def timed_rebuild(led: Ledger, snapshot_id: str) -> tuple[float, SnapshotManifest]:
    t = time.perf_counter()
    (done,) = rebuild_snapshot(led, snapshot_id)
    return time.perf_counter() - t, done.new


def rebuild_figures(records: int, authors: int, rounds: int) -> dict[str, Any]:
    corpus = make_corpus(records, authors, 0.05)
    url, db = ledger_copy(authors)
    work = OUT / "scratch" / "reachback-snapshots"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out: dict[str, Any] = {"records": records, "authors": authors, "rounds": []}
    try:
        with open_ledger(url, load_policy(), create=True) as led:
            for r in range(rounds):
                base = work / f"round{r}"
                base_s, first = timed_build(led, corpus, base, None)
                kept = first.output_records
                log(f"rebuild round {r + 1}: first build {base_s:.1f} s, {kept:,} records kept")
                author = granted_author(r)
                withdraw_ms = withdraw(led, author)
                as_of = times.parse(first.as_of)

                if r % 2 == 0:
                    rb_s, rb = timed_rebuild(led, first.snapshot_id)
                    fr_s, fr = timed_build(led, corpus, work / f"round{r}.fresh", as_of)
                else:
                    fr_s, fr = timed_build(led, corpus, work / f"round{r}.fresh", as_of)
                    rb_s, rb = timed_rebuild(led, first.snapshot_id)
                assert rb.output_records == fr.output_records < first.output_records
                assert rb.snapshot_id == fr.snapshot_id
                assert not (base / "data").exists()
                one = {
                    "order": "rebuild first" if r % 2 == 0 else "fresh build first",
                    "withdrawn_author": author,
                    "withdraw_append_ms": withdraw_ms,
                    "first_build_s": base_s,
                    "rebuild_s": rb_s,
                    "fresh_build_s": fr_s,
                    "input_records": rb.input_records,
                    "output_records_before": first.output_records,
                    "output_records_after": rb.output_records,
                    "rebuild_records_per_s": rb.input_records / rb_s,
                    "fresh_records_per_s": fr.input_records / fr_s,
                    "rebuild_vs_fresh": (rb.input_records / rb_s) / (fr.input_records / fr_s),
                }
                out["rounds"].append(one)
                log(
                    f"  rebuild {rb_s:.1f} s ({one['rebuild_records_per_s']:,.0f} records/s), "
                    f"fresh build {fr_s:.1f} s ({one['fresh_records_per_s']:,.0f} records/s): "
                    f"{one['rebuild_vs_fresh']:.2f}x; {first.output_records - rb.output_records:,} "
                    "records of the withdrawn author left out"
                )
                for folder in work.iterdir():  # keep the disk free; the registry does not care
                    shutil.rmtree(folder / "data", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    rb = sum(x["rebuild_s"] for x in out["rounds"])
    fr = sum(x["fresh_build_s"] for x in out["rounds"])
    n = sum(x["input_records"] for x in out["rounds"])
    out.update(
        rebuild_records_per_s=n / rb,
        fresh_records_per_s=n / fr,
        rebuild_vs_fresh=fr / rb,
    )
    return out


def for_screen(value: Any) -> Any:
    """The result without the long lists (they are in --json)."""
    if isinstance(value, dict):
        long = ("cprofile_top", "hit_ms", "baseline_ms")
        return {k: for_screen(v) for k, v in value.items() if k not in long}
    return value


# ---- main ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshots", type=int, default=100)
    ap.add_argument("--subjects", type=int, default=2_000_000, help="in each snapshot")
    ap.add_argument("--models", type=int, default=50, help="model versions")
    ap.add_argument("--withdrawals", type=int, default=50, help="timed, and as many baselines")
    ap.add_argument("--warmup", type=int, default=1, help="untimed withdrawal pairs first")
    ap.add_argument("--budget", type=float, default=900, help="seconds for the timed withdrawals")
    ap.add_argument("--profile", type=int, default=4, help="extra withdrawals profiled (0: none)")
    ap.add_argument("--pg", action="store_true", help="propagation on PostgreSQL too")
    ap.add_argument("--pg-snapshots", type=int, default=100)
    ap.add_argument("--pg-subjects", type=int, default=200_000)
    ap.add_argument("--skip-sqlite", action="store_true", help="no propagation on SQLite")
    ap.add_argument("--records", type=int, default=2_000_000, help="corpus for the rebuild")
    ap.add_argument("--authors", type=int, default=200_000, help="ledger for the rebuild")
    ap.add_argument("--rounds", type=int, default=2, help="rebuild rounds")
    ap.add_argument("--skip-rebuild", action="store_true")
    ap.add_argument("--skip-propagation", action="store_true")
    ap.add_argument("--quick", action="store_true", help="10 x 20k lineage; 200k records")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.snapshots, args.subjects, args.models, args.withdrawals = 10, 20_000, 10, 10
        args.pg_snapshots, args.pg_subjects, args.profile = 10, 20_000, 4
        args.records, args.authors = 200_000, 20_000
    OUT.mkdir(exist_ok=True)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "target_ms": TARGET_MS,
    }
    if not args.skip_propagation:
        if not args.skip_sqlite:
            url, built = sqlite_registry(args.snapshots, args.subjects, args.models)
            result["propagation_sqlite"] = {
                "snapshots": args.snapshots,
                "subjects_per_snapshot": args.subjects,
                "models": args.models,
                "registry": built,
                **propagation(
                    url,
                    "sqlite",
                    (args.snapshots, args.subjects, args.models),
                    args.withdrawals,
                    warmup=args.warmup,
                    profile=args.profile,
                    budget_s=args.budget,
                ),
            }
        if args.pg:
            with pg_registry(args.pg_snapshots, args.pg_subjects, args.models) as (url, built):
                result["propagation_postgres"] = {
                    "snapshots": args.pg_snapshots,
                    "subjects_per_snapshot": args.pg_subjects,
                    "models": args.models,
                    "registry": built,
                    **propagation(
                        url,
                        "postgres",
                        (args.pg_snapshots, args.pg_subjects, args.models),
                        args.withdrawals,
                        warmup=args.warmup,
                        profile=args.profile,
                        budget_s=args.budget,
                    ),
                }
    if not args.skip_rebuild:
        log("rebuild against a fresh build")
        result["rebuild"] = rebuild_figures(args.records, args.authors, args.rounds)
    print(json.dumps(for_screen(result), indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
