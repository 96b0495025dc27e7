"""Benchmark of batch decisions at a past time (issue 18): the state-setting events kept
as columns in the process (``askfirst.ledger.history``) against the database's own fold.

    python bench/decisions.py                  # 1M subjects, SQLite then PostgreSQL (~15 min)
    python bench/decisions.py --quick          # 20k subjects
    python bench/decisions.py --only sqlite
    python bench/decisions.py --json bench/out/decisions.json

The data are bench/ledger.py's (the registered subjects and 200k imported choices), built
once on SQLite and kept in bench/out/; PostgreSQL gets a copy in a fresh schema. On each
database, ``decide_many`` for every subject of ``genai-training``:

1. at T = t0 + 50 days by the database's fold (``state.historic_sql``, the path before:
   the baseline);
2. at T from a ledger opened afresh: its first call reads every state-setting event;
3. warm, at three past times, best of 5, taking turns with ``evaluate_many`` alone on
   the same state (the rules' own cost: the floor under any way of reading the state);
4. after 1,000 and then 100,000 more choices imported by another connection: the first
   call, which reads just those, and the calls after it;
5. now (the current-state tables), for reference.

Every past-time answer is compared whole with the database fold's (each row), and 50
subjects with ``decide()``. Memory: the columns' bytes per event (``History.stats``) and
the process's resident memory before and after they were read.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.table import Table

import ledger as ledger_bench  # bench/ledger.py: its data, databases and machine notes
from askfirst import Ledger, decide, decide_many, load_policy, open_ledger, times
from askfirst.decisions import read_state
from askfirst.ledger import history, store, tables
from askfirst.ledger.imports import import_events
from askfirst.rules import Context, evaluate_many

PURPOSE = ledger_bench.PURPOSE
TARGET = 1_000_000.0  # subjects/s at a past time, in-process (issue 18)
OUT = Path(__file__).parent / "out"
DAY = timedelta(days=1)
console = ledger_bench.console


@dataclass
class Figure:
    db: str
    name: str
    rate: float | None  # subjects/s
    seconds: float | None = None
    cpu: float | None = None  # CPU seconds of this process (DuckDB's threads included)
    baseline: float | None = None
    baseline_name: str = ""
    note: str = ""

    @property
    def vs_baseline(self) -> float | None:
        return self.rate / self.baseline if self.rate and self.baseline else None


@dataclass
class Run:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        extra = f" ({fig.vs_baseline:.2f}x {fig.baseline_name})" if fig.vs_baseline else ""
        rate = f"{fig.rate:,.0f} subjects/s" if fig.rate else "-"
        console.log(f"[{fig.db}] {fig.name}: {rate}{extra} {fig.note}")
        return fig


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


# ---- the data ----------------------------------------------------------------------------------


def cached_ledger(subjects: int, choices: int) -> tuple[Path, datetime]:
    """bench/ledger.py's ledger (registered subjects, imported choices) as a SQLite file
    in bench/out/, built on first use for this schema; and its t0."""
    OUT.mkdir(exist_ok=True)
    # One file per schema: a ledger made by a later migration cannot be opened earlier.
    path = OUT / f"decisions-{subjects}-{choices}-{store.head_revision()}.db"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path, datetime.fromisoformat(json.loads(meta.read_text())["t0"])
    building = path.with_suffix(".building.db")
    for p in OUT.glob(building.name + "*"):
        p.unlink()
    t0 = (times.now() - timedelta(days=200)).replace(microsecond=0)
    console.log(f"building {subjects:,} subjects and {choices:,} choices in {path}")
    with open_ledger(f"sqlite:///{building}", load_policy(), create=True) as led:
        ledger_bench.register_subjects(led, t0, 0, subjects, 50_000)
        import_choices(led, choices, subjects, t0 + DAY, 99 * DAY)
    con = sqlite3.connect(building)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    building.rename(path)
    meta.write_text(json.dumps({"t0": t0.isoformat()}))
    return path, t0


def import_choices(led: Ledger, n: int, subjects: int, start: datetime, span: timedelta) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "choices.jsonl"
        ledger_bench.write_choices(path, n, subjects, start, span)
        return len(import_events(led, path))


def copy_to_postgres(src_path: Path, db: ledger_bench.PostgresDb) -> float:
    """Every row of the SQLite ledger into the fresh schema (after its migrations)."""
    t = time.perf_counter()
    open_ledger(db.url, load_policy(), create=True).close()
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    pg = db.raw()
    try:
        cur = pg.cursor()
        for table in tables.metadata.sorted_tables:
            cols = ", ".join(c.name for c in table.c)
            if table.name == "ledger_head":
                row = src.execute(f"SELECT {cols} FROM ledger_head").fetchone()
                marks = ", ".join(["%s"] * len(table.c))
                cur.execute("DELETE FROM ledger_head")
                cur.execute(f"INSERT INTO ledger_head ({cols}) VALUES ({marks})", row)
                continue
            if not src.execute(f"SELECT 1 FROM {table.name} LIMIT 1").fetchone():
                continue
            cur.execute(f"SELECT 1 FROM {table.name} LIMIT 1")
            if cur.fetchone():
                raise RuntimeError(f"{table.name} is not empty in a fresh schema")
            with cur.copy(f"COPY {table.name} ({cols}) FROM STDIN") as cp:
                for row in src.execute(f"SELECT {cols} FROM {table.name}"):
                    cp.write_row(row)
        pg.commit()
        pg.autocommit = True
        cur.execute("ANALYZE")
    finally:
        src.close()
        pg.close()
    return time.perf_counter() - t


# ---- the measurements -----------------------------------------------------------------------


def in_database(led: Ledger, at: int) -> pa.Table:
    """decide_many for everyone at ``at`` as before: the state folded by the database."""
    p = led.policy.purpose(PURPOSE)
    return evaluate_many(read_state(led, p, at, in_database=True), Context(led.policy, p, at))


def spot_check(led: Ledger, table: pa.Table, at: datetime, k: int) -> int:
    rng = random.Random(5)
    rows = table.take(sorted(rng.sample(range(table.num_rows), min(k, table.num_rows))))
    bad = 0
    for r in rows.to_pylist():
        d = decide(led, r["subject"], PURPOSE, at)
        bad += (d.allowed, str(d.reason), d.event_seq) != (
            r["allowed"],
            r["reason"],
            r["event_seq"],
        )
    return bad


def bench_database(name: str, url: str, n: int, t0: datetime, run: Run, quick: bool) -> None:
    t_main = t0 + 50 * DAY
    at_main = times.to_micros(t_main)
    with open_ledger(url) as writer:
        # 1. the database's fold (the baseline), best of 2
        best: tuple[pa.Table, float, float] | None = None
        for _ in range(2):
            out = timed(lambda: in_database(writer, at_main))
            best = out if best is None or out[1] < best[1] else best
        assert best is not None
        want, db_dt, db_cpu = best
        run.add(
            Figure(
                name,
                f"database fold at {t_main:%Y-%m-%d} (before)",
                n / db_dt,
                db_dt,
                db_cpu,
                note=f"{want.num_rows:,} rows",
            )
        )
        baseline = n / db_dt

        # 2. a ledger opened afresh: the first call reads the events
        led = open_ledger(url)
        try:
            rss0 = rss_mib()
            got, dt, cpu = timed(lambda: decide_many(led, PURPOSE, at=t_main))
            rss1 = rss_mib()
            stats = history.of(led.engine).stats()
            same = got.equals(want)
            bad = spot_check(led, got, t_main, 50)
            if not same or bad:
                run.notes.append(
                    f"{name}: first call differs from the database fold "
                    f"(whole table equal: {same}; decide() mismatches: {bad})"
                )
            run.add(
                Figure(
                    name,
                    "columns, first call (reads every state event)",
                    n / dt,
                    dt,
                    cpu,
                    baseline,
                    "database fold",
                    note=f"equal to the fold: {same}; decide() agrees on {50 - bad}/50",
                )
            )
            per_event = stats.used_bytes / max(stats.events, 1)
            run.notes.append(
                f"{name}: columns hold {stats.events:,} events of {stats.subjects:,} subjects in "
                f"{stats.used_bytes / 2**20:.1f} MiB ({per_event:.1f} bytes/event; "
                f"{stats.allocated_bytes / 2**20:.1f} MiB allocated); process RSS "
                f"{rss0:.0f} -> {rss1:.0f} MiB over the first call"
            )

            # 3. warm, three times, taking turns with evaluate_many alone
            p = led.policy.purpose(PURPOSE)
            rounds = 3 if quick else 5
            for days in (10, 50, 90):
                t_at = t0 + days * DAY
                at = times.to_micros(t_at)
                state = read_state(led, p, at)
                warm: list[tuple[float, float]] = []
                floor: list[tuple[float, float]] = []
                fold: list[float] = []
                for _ in range(rounds):
                    _, f_dt, f_cpu = timed(
                        lambda at=at, state=state: evaluate_many(state, Context(led.policy, p, at))
                    )
                    floor.append((f_dt, f_cpu))
                    _, s_dt, _ = timed(lambda at=at: read_state(led, p, at))
                    fold.append(s_dt)
                    got, w_dt, w_cpu = timed(lambda t_at=t_at: decide_many(led, PURPOSE, at=t_at))
                    warm.append((w_dt, w_cpu))
                w_dt, w_cpu = min(warm)
                f_dt, f_cpu = min(floor)
                note = (
                    f"best of {rounds}: {w_dt:.3f} s (CPU {w_cpu:.3f} s), of which reading "
                    f"the state {min(fold):.3f} s; evaluate_many alone {f_dt:.3f} s "
                    f"(CPU {f_cpu:.3f} s)"
                )
                if days == 50:
                    same = got.equals(want)
                    note += f"; equal to the fold: {same}"
                    if not same:
                        run.notes.append(f"{name}: warm call differs from the database fold")
                run.add(
                    Figure(
                        name,
                        f"columns, warm, at {t_at:%Y-%m-%d}",
                        n / w_dt,
                        w_dt,
                        w_cpu,
                        n / f_dt,
                        "evaluate_many alone",
                        note=note,
                    )
                )
                if days == 50:
                    run.add(
                        Figure(
                            name,
                            "  the same against the database fold",
                            n / w_dt,
                            w_dt,
                            w_cpu,
                            baseline,
                            "database fold",
                        )
                    )

            # 4. events appended by another connection after the columns were read
            start = t0 + 150 * DAY
            for count in (1_000, 100_000) if not quick else (1_000, 10_000):
                added = import_choices(writer, count, n, start, 10 * DAY)
                t_at = start + 5 * DAY
                got, dt, cpu = timed(lambda t_at=t_at: decide_many(led, PURPOSE, at=t_at))
                after = [
                    timed(lambda t_at=t_at: decide_many(led, PURPOSE, at=t_at))[1] for _ in range(3)
                ]
                fold_new, new_dt, _ = timed(
                    lambda t_at=t_at: in_database(writer, times.to_micros(t_at))
                )
                same = got.equals(fold_new)
                bad = spot_check(led, got, t_at, 50)
                if not same or bad:
                    run.notes.append(
                        f"{name}: after {added:,} appended events the columns differ "
                        f"(whole table equal: {same}; decide() mismatches: {bad})"
                    )
                run.add(
                    Figure(
                        name,
                        f"columns, first call after {added:,} more events",
                        n / dt,
                        dt,
                        cpu,
                        n / new_dt,
                        "database fold, same time",
                        note=f"then {min(after):.3f} s warm; equal to the fold: {same}; "
                        f"decide() agrees on {50 - bad}/50",
                    )
                )
                start += 15 * DAY

            # 5. now, for reference
            now = [timed(lambda: decide_many(led, PURPOSE)) for _ in range(3)]
            _, dt, cpu = min(now, key=lambda x: x[1])
            run.add(Figure(name, "reference: now (current-state tables)", n / dt, dt, cpu))
            end = history.of(led.engine).stats()
            run.notes.append(
                f"{name}: at the end the columns hold {end.events:,} events in "
                f"{end.used_bytes / 2**20:.1f} MiB ({end.used_bytes / max(end.events, 1):.1f} "
                f"bytes/event; {end.allocated_bytes / 2**20:.1f} MiB allocated)"
            )
        finally:
            led.close()


def print_table(run: Run, env: dict[str, str], command: str) -> None:
    console.rule("askfirst batch decisions at a past time (issue 18)")
    console.print(f"date: {env['date']}; command: {command}")
    console.print(
        f"machine: {env['nproc']} CPUs, {env['cpu']}, {env['memory']} RAM; "
        f"Python {env['python']}; askfirst from {env['askfirst']}"
    )
    console.print(
        f"load average (1, 5, 15 min): {env['load average at start']} at the start, "
        f"{env['load average at end']} at the end"
    )
    for note in run.notes:
        console.print(note)
    t = Table()
    for col in ("db", "figure", "subjects/s", "x 1M/s", "s", "CPU s", "x baseline", "baseline"):
        t.add_column(col, justify="left" if col in ("db", "figure", "baseline") else "right")
    for f in run.figures:
        t.add_row(
            f.db,
            f.name,
            f"{f.rate:,.0f}" if f.rate else "-",
            f"{f.rate / TARGET:.2f}x" if f.rate else "-",
            f"{f.seconds:.3f}" if f.seconds is not None else "-",
            f"{f.cpu:.3f}" if f.cpu is not None else "-",
            f"{f.vs_baseline:.2f}x" if f.vs_baseline else "-",
            f.baseline_name,
        )
    console.print(t)
    for f in run.figures:
        if f.note:
            console.print(f"[dim]{f.db} · {f.name.strip()}: {f.note}[/]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20k subjects: a smoke run")
    ap.add_argument("--only", choices=["sqlite", "postgres"], help="benchmark one database")
    ap.add_argument("--pg-url", default=ledger_bench.DEFAULT_PG, help="PostgreSQL server")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    n, choices = (20_000, 5_000) if args.quick else (1_000_000, 200_000)
    command = "python bench/decisions.py " + " ".join(argv if argv is not None else sys.argv[1:])
    env = ledger_bench.machine()
    run = Run()
    started = time.perf_counter()
    path, t0 = cached_ledger(n, choices)
    for kind in [args.only] if args.only else ["sqlite", "postgres"]:
        with tempfile.TemporaryDirectory(prefix="askfirst-bench-") as tmp:
            db: ledger_bench.PostgresDb | None = None
            try:
                if kind == "sqlite":
                    work = Path(tmp) / "ledger.db"
                    shutil.copyfile(path, work)
                    url = f"sqlite:///{work}"
                    run.notes.append(f"sqlite: {sqlite3.sqlite_version}, a copy of {path.name}")
                else:
                    db = ledger_bench.PostgresDb(args.pg_url)
                    copied = copy_to_postgres(path, db)
                    url = db.url
                    run.notes.append(f"postgres: {db.describe()}; copied in {copied:.0f} s")
                bench_database(kind, url, n, t0, run, args.quick)
            except Exception as e:  # one database failing still reports the other
                console.print_exception()
                run.notes.append(f"{kind}: failed: {type(e).__name__}: {e}"[:300])
            finally:
                if db is not None:
                    db.close()
    env["elapsed"] = f"{time.perf_counter() - started:.0f} s"
    env["load average at end"] = ledger_bench.load_average()
    print_table(run, env, command.strip())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = [asdict(f) | {"vs_baseline": f.vs_baseline} for f in run.figures]
        data = {"env": env, "command": command.strip(), "notes": run.notes, "figures": figures}
        args.json.write_text(json.dumps(data, indent=2))
    return 1 if any("failed" in n or "differ" in n for n in run.notes) else 0


if __name__ == "__main__":
    sys.exit(main())
