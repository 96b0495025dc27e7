"""Benchmark of ``askfirst ledger verify`` (issue 18: at least 150,000 events/s).

Generates its own ledger through the library (``Ledger.register`` in chunks, then choice
events with ``append_many``) in a SQLite file, copies it with ``COPY`` into a fresh
PostgreSQL schema (dropped at the end), and times ``verify`` on each database against a
baseline measured in the same run on the same database: reading every event into Python
through the raw driver (the same pages ``bench/ledger.py`` reads). The two take turns,
``--repeat`` times, so that the load of this shared machine falls on both alike; the
figures are medians.

    python bench/verify.py                        # 1M subjects, 2.32M events (~10 min)
    python bench/verify.py --subjects 50000       # a smoke run
    python bench/verify.py --ledger /tmp/v.db     # keep the SQLite ledger; reuse it next time
    python bench/verify.py --workers auto,0       # also verify in one process (workers=0)

``--workers`` is passed to ``verify`` when it takes it (this bench also runs against an
older ``src/`` by PYTHONPATH, whose verify has no workers; it runs as it is).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import askfirst
from askfirst import NewEvent, SubjectIn, load_policy, open_ledger, times
from askfirst.ledger import store, tables
from askfirst.ledger import verify as verify_module

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TARGET = 150_000.0
PURPOSE = "genai-training"
JURISDICTIONS = ["DE", "FR", "US", "US-CA", "IN", "GB", "BR", "NL", "CH", None]
EVENTS_PAGE = (
    "SELECT seq, type, subject_id, purpose, value, notice_version, actor, source, "
    "recorded_at, prev_hash, hash FROM events WHERE seq > {after} ORDER BY seq LIMIT 250000"
)
# What verify reads besides the events, copied to PostgreSQL with them.
COPIED = ["events", "subject_state", "choice_state", "notice_state", "authority_state", "notices"]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ---- the ledger ---------------------------------------------------------------------------


def subject(i: int) -> SubjectIn:
    """Subject ``i``: as bench/ledger.py's (jurisdictions, birth dates, statuses, pages)."""
    birth = datetime(1996 + i % 18, 1 + i % 12, 1 + i % 28).date() if i % 10 == 0 else None
    return SubjectIn(
        id=f"s{i:07d}",
        kind="organization" if i % 50 == 1 else "member",
        jurisdiction=JURISDICTIONS[i % len(JURISDICTIONS)],
        birth_date=birth,
        status={97: "deceased", 98: "closed"}.get(i % 100, "active"),
    )


def generate(path: Path, subjects: int, choices: int) -> None:
    """Register ``subjects`` subjects and append ``choices`` choices, through the library."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rng = random.Random(2)
    with open_ledger(f"sqlite:///{path}", load_policy(), create=True) as led:
        for start in range(0, subjects, 50_000):
            led.register([subject(i) for i in range(start, min(subjects, start + 50_000))],
                         since=t0)  # fmt: skip
            log(f"registered {min(subjects, start + 50_000):,} subjects")
        first = times.to_micros(t0 + timedelta(days=1))
        step = times.to_micros(t0 + timedelta(days=100)) - first
        for start in range(0, choices, 50_000):
            batch = []
            for k in range(start, min(choices, start + 50_000)):
                i = rng.randrange(subjects)
                while i % 100 in (97, 98):  # deceased and closed subjects choose nothing
                    i = rng.randrange(subjects)
                r = rng.random()
                action = "grant" if r < 0.6 else "withdraw" if r < 0.9 else "object"
                actor = "staff:dpo" if action == "withdraw" and rng.random() < 0.1 else f"s{i:07d}"
                batch.append(NewEvent(type="choice", subject=f"s{i:07d}", actor=actor,
                                      source="bench", purpose=PURPOSE, value=action,
                                      recorded_at=first + step * k // choices))  # fmt: skip
            led.append_many(batch)
        log(f"appended {choices:,} choices; head {led.head().seq:,}")


@contextmanager
def postgres_copy(server: str, source: Path) -> Iterator[str]:
    """A fresh schema holding a copy of the SQLite ledger ``source``; dropped at the end."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(store.normalize_url(server))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = f"{server}?options=-csearch_path%3D{schema}"
    try:
        with open_ledger(url, load_policy(), create=True) as led:
            if led.head().seq != 0:
                raise RuntimeError("a new PostgreSQL ledger is not empty")
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        with psycopg.connect(url) as pg, pg.cursor() as cur:
            for table in COPIED:
                cols = ", ".join(c.name for c in tables.metadata.tables[table].c)
                with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                    for row in src.execute(f"SELECT {cols} FROM {table}"):
                        cp.write_row(row)
            head = src.execute("SELECT seq, hash, recorded_at FROM ledger_head").fetchone()
            cur.execute("UPDATE ledger_head SET seq = %s, hash = %s, recorded_at = %s", head)
            pg.commit()
            pg.autocommit = True
            cur.execute("ANALYZE")
        src.close()
        yield url
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


# ---- measuring ----------------------------------------------------------------------------


def read_events(kind: str, url: str) -> int:
    """The baseline: every event read into Python through the raw driver."""
    if kind == "sqlite":
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
    else:
        import psycopg

        conn = psycopg.connect(url)
    n, after = 0, 0
    try:
        cur = conn.cursor()
        while True:
            cur.execute(EVENTS_PAGE.format(after=after))
            rows = cur.fetchall()
            if not rows:
                return n
            n, after = n + len(rows), rows[-1][0]
    finally:
        conn.close()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """(result, wall s, CPU s of this process, CPU s of its children that ended)."""
    t, c, k = time.perf_counter(), time.process_time(), children_cpu()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c, children_cpu() - k


def peak_rss_reset() -> None:
    """Start this process's peak RSS (VmHWM) afresh (Linux)."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """This process's peak RSS since :func:`peak_rss_reset`, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load() -> float:
    return os.getloadavg()[0]


def measure(kind: str, url: str, workers: list[str], repeat: int) -> list[dict[str, Any]]:
    takes_workers = "workers" in inspect.signature(verify_module.verify).parameters
    engine = store.create(url)
    figures = []
    try:
        for mode in workers if takes_workers else ["(as it is)"]:
            kw = {} if mode in ("auto", "(as it is)") else {"workers": int(mode)}
            rates, bases, ratios, cpus, kids, loads, rss = [], [], [], [], [], [], []
            for _ in range(repeat):
                n, dt_base, _, _ = timed(lambda: read_events(kind, url))
                peak_rss_reset()
                report, dt, cpu, kid = timed(lambda kw=kw: verify_module.verify(engine, **kw))
                rss.append(peak_rss_mib())
                if not report.ok:
                    raise RuntimeError(f"verify failed: {report.problems[:2]}")
                if report.events_checked != n:
                    raise RuntimeError(f"verify checked {report.events_checked}, read {n}")
                rates.append(n / dt)
                bases.append(n / dt_base)
                ratios.append(dt_base / dt)
                cpus.append(cpu)
                kids.append(kid)
                loads.append(load())
                log(f"{kind} workers={mode}: {n / dt:,.0f} events/s in {dt:.1f} s "
                    f"(this process {cpu:.1f} s CPU, peak RSS {rss[-1]:,.0f} MiB; workers "
                    f"{kid:.1f} s CPU), read "
                    f"{n / dt_base:,.0f}/s, {dt_base / dt:.2f}x; load {loads[-1]:.1f}")  # fmt: skip
            figures.append({
                "db": kind, "workers": mode, "events": n,
                "verify_events_per_s": statistics.median(rates),
                "baseline_events_per_s": statistics.median(bases),
                "vs_baseline": statistics.median(ratios),
                "vs_target": statistics.median(rates) / TARGET,
                "cpu_s_this_process": statistics.median(cpus),
                "cpu_s_workers": statistics.median(kids),
                "peak_rss_mib_this_process": max(rss),
                "peak_rss_mib_largest_worker": resource.getrusage(
                    resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                "load_1min": loads,
                "runs": rates,
            })  # fmt: skip
    finally:
        engine.dispose()
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=1_000_000)
    ap.add_argument("--choices", type=int, help="choice events (default: subjects / 5)")
    ap.add_argument("--ledger", type=Path, help="the SQLite ledger to use, made if missing")
    ap.add_argument("--only", choices=["sqlite", "postgres"])
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    ap.add_argument("--workers", default="auto", help="comma-separated: auto, 0, 1, 2...")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    env = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": str(os.cpu_count()),
        "python": sys.version.split()[0],
        "askfirst": str(Path(askfirst.__file__).parent),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, cwd=Path(askfirst.__file__).parent).stdout.strip(),
        "load at start": f"{load():.2f}",
    }  # fmt: skip
    log(f"askfirst from {env['askfirst']} ({env['commit']}); load {env['load at start']}")
    workers = args.workers.split(",")
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="askfirst-bench-verify-") as tmp:
        path = args.ledger or Path(tmp) / "ledger.db"
        if not path.exists():
            generate(path, args.subjects, args.choices or args.subjects // 5)
        if args.only != "postgres":
            figures += measure("sqlite", f"sqlite:///{path}", workers, args.repeat)
        if args.only != "sqlite":
            with postgres_copy(args.pg_url, path) as url:
                log("copied to PostgreSQL")
                figures += measure("postgres", url, workers, args.repeat)
    env["load at end"] = f"{load():.2f}"
    env["elapsed"] = f"{time.perf_counter() - started:.0f} s"
    print()
    print("| db | verify workers | events | verify events/s | x target | read events/s | x read "
          "| CPU s, this process | CPU s, workers | peak RSS MiB, this process |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for f in figures:
        print(f"| {f['db']} | {f['workers']} | {f['events']:,} | {f['verify_events_per_s']:,.0f} "
              f"| {f['vs_target']:.2f}x | {f['baseline_events_per_s']:,.0f} "
              f"| {f['vs_baseline']:.2f}x | {f['cpu_s_this_process']:.1f} "
              f"| {f['cpu_s_workers']:.1f} | {f['peak_rss_mib_this_process']:,.0f} |")  # fmt: skip
    print(f"\nmedians of {args.repeat} turns each; {json.dumps(env)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": env, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
