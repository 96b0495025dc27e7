"""Benchmark of the consent ledger (issue 2): appends, import, verify and batch decisions.

Generates its own data, on a SQLite temp file and on a fresh PostgreSQL schema (dropped
at the end), and prints each figure with its ratio to the issue's target and to a
baseline measured in the same run on the same database, because these machines are
shared and noisy and an absolute number alone says little.

    python bench/ledger.py                 # full run (1M subjects per database, ~9 min)
    python bench/ledger.py --quick         # smoke run, small sizes
    python bench/ledger.py --only sqlite   # one database
    python bench/ledger.py --json bench/out/ledger.json

What is measured, per database, in this order on one ledger:

1. register 1M subjects with ``Ledger.register`` in chunks (the append_many path). On
   PostgreSQL only the first 100k are registered through the library (that is the
   figure); the rest are copied from the SQLite build of the same deterministic input
   (same events, same hashes: checked at the seam, and by verify), then ANALYZEd;
2. ``import_events`` of a JSONL file of 200k choice events (baseline: a bare executemany
   of as many rows into an events-shaped table, one transaction);
3. ``Ledger.verify`` over every event (baseline: reading the same rows into Python
   through the raw driver; the note gives the rate of hashing alone);
4. ``decide_many`` for every subject, now (projections) and at a past time (events),
   split into loading the state and ``evaluate_many`` (baseline: reading the rows the
   path needs with ``store.read_arrow``), and a spot check against ``decide``;
5. durable single-event ``Ledger.append`` with 1 and 8 writer processes (baseline: a bare
   INSERT + COMMIT of one row per transaction, same database, same durability settings
   as askfirst's own connections; reference: the same SQL as an append issued through
   the raw driver on the ledger's tables).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

import askfirst
from askfirst import Ledger, NewEvent, SubjectIn, decide, decisions, load_policy, open_ledger, times
from askfirst.ledger import store, tables
from askfirst.ledger.events import event_hash
from askfirst.ledger.imports import import_events

PURPOSE = "genai-training"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_APPEND = {"sqlite": 3_000.0, "postgres": 2_000.0}
TARGET_IMPORT = 30_000.0
TARGET_VERIFY = 150_000.0
TARGET_DECIDE = 1_000_000.0
JURISDICTIONS = ["DE", "FR", "US", "US-CA", "IN", "GB", "BR", "NL", "CH", None]
DAY = timedelta(days=1)

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


@dataclass(frozen=True)
class Sizes:
    subjects: int
    import_events: int
    register_chunk: int
    append_seconds: float
    writers: int
    spot_checks: int
    pg_register: int  # subjects PostgreSQL registers itself; the rest are copied


FULL = Sizes(1_000_000, 200_000, 50_000, 5.0, 8, 200, 100_000)
QUICK = Sizes(20_000, 5_000, 5_000, 1.0, 8, 50, 5_000)


@dataclass
class Figure:
    """One line of the results table. Rates are per second; ``unit`` says of what."""

    backend: str
    name: str
    value: float | None
    unit: str = "events/s"
    target: float | None = None
    baseline: float | None = None
    baseline_name: str = ""
    note: str = ""
    error: str | None = None

    @property
    def vs_target(self) -> float | None:
        return self.value / self.target if self.value and self.target else None

    @property
    def vs_baseline(self) -> float | None:
        return self.value / self.baseline if self.value and self.baseline else None


@dataclass
class Run:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        shown = f"{fig.value:,.0f} {fig.unit}" if fig.value is not None else fig.error
        extra = f" (x{fig.vs_target:.2f} of target)" if fig.vs_target else ""
        console.log(f"[{fig.backend}] {fig.name}: {shown}{extra}")
        return fig


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def timed_cpu(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process). CPU/wall well under 100% on
    a single-threaded step means the step waited: for the disk, the server, or for a
    core taken by someone else on this shared machine."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def load_average() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


# ---- the machine ------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "date": subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip(),
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "askfirst": str(Path(askfirst.__file__).parent),
        "load average at start": load_average(),
        "sqlite": sqlite3.sqlite_version,
    }


# ---- databases ----------------------------------------------------------------------------


SYNC_MODES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@functools.cache
def ledger_synchronous(url: str) -> str:
    """The synchronous mode askfirst's own SQLite connections use (it is configurable)."""
    engine = store.create(url)
    try:
        with engine.connect() as conn:
            return SYNC_MODES[int(conn.exec_driver_sql("PRAGMA synchronous").scalar())]
    finally:
        engine.dispose()


def raw_connect(kind: str, url: str) -> Any:
    """A DB-API connection without askfirst, with the ledger's durability settings."""
    if kind == "sqlite":
        # As askfirst.ledger.store: WAL, the same synchronous mode, BEGIN IMMEDIATE to write.
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={ledger_synchronous(url)}")
        conn.execute("PRAGMA busy_timeout=60000")
        return conn
    import psycopg

    return psycopg.connect(url)


class Database:
    """One fresh database for the run: its URL and a raw DB-API connection for baselines."""

    name: str
    url: str

    def raw(self) -> Any:
        return raw_connect(self.name, self.url)

    def begin_write(self, cur: Any) -> None:
        """Start a write transaction the way the ledger does on this database."""

    def describe(self) -> str:
        return ""

    def close(self) -> None:
        pass


class SqliteDb(Database):
    name = "sqlite"

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="askfirst-bench-")
        self.path = Path(self._dir.name) / "ledger.db"
        self.url = f"sqlite:///{self.path}"

    def begin_write(self, cur: Any) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def describe(self) -> str:
        mode = ledger_synchronous(self.url)
        return (
            f"SQLite {sqlite3.sqlite_version}, WAL, synchronous={mode}, file in {self.path.parent}"
        )

    def close(self) -> None:
        self._dir.cleanup()


class PostgresDb(Database):
    name = "postgres"

    def __init__(self, server: str) -> None:
        self.admin = sa.create_engine(store.normalize_url(server))
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        with self.admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {self.schema}")
        self.url = f"{server}?options=-csearch_path%3D{self.schema}"

    def describe(self) -> str:
        with self.admin.connect() as conn:
            ver = conn.exec_driver_sql("SHOW server_version").scalar()
            fsync = conn.exec_driver_sql("SHOW fsync").scalar()
            sync = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
        return f"PostgreSQL {ver}, fsync={fsync}, synchronous_commit={sync}, schema {self.schema}"

    def close(self) -> None:
        with self.admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.admin.dispose()


BENCH_DDL = [
    # A bare one-row table (the durable-commit floor) and an events-shaped table, same
    # columns and indexes as the ledger's, for the bulk-insert baseline.
    "CREATE TABLE bench_bare (id BIGINT PRIMARY KEY, subject VARCHAR(255) NOT NULL,"
    " payload VARCHAR(255) NOT NULL)",
    "CREATE TABLE bench_events (seq BIGINT PRIMARY KEY, type VARCHAR(32) NOT NULL,"
    " subject_id VARCHAR(255) NOT NULL, purpose VARCHAR(64), value VARCHAR(255),"
    " notice_version INTEGER, actor VARCHAR(255) NOT NULL, source VARCHAR(64) NOT NULL,"
    " recorded_at BIGINT NOT NULL, prev_hash VARCHAR(64) NOT NULL,"
    " hash VARCHAR(64) NOT NULL UNIQUE)",
    "CREATE INDEX bench_ix_subject_seq ON bench_events (subject_id, seq)",
    "CREATE INDEX bench_ix_recorded_at ON bench_events (recorded_at)",
]


def make_database(kind: str, pg_url: str) -> Database:
    return SqliteDb() if kind == "sqlite" else PostgresDb(pg_url)


def create_bench_tables(db: Database) -> None:
    conn = db.raw()
    try:
        cur = conn.cursor()
        for stmt in BENCH_DDL:
            cur.execute(stmt)
        conn.commit()
    finally:
        conn.close()


# ---- data ---------------------------------------------------------------------------------


def sid(i: int) -> str:
    return f"s{i:07d}"


def is_active(i: int) -> bool:
    return i % 100 not in (97, 98)


def subject(i: int) -> SubjectIn:
    """Subject ``i``: a mix of jurisdictions, ages (10% give a birth date) and statuses."""
    birth = date(1996 + i % 18, 1 + i % 12, 1 + i % 28) if i % 10 == 0 else None
    status = {97: "deceased", 98: "closed"}.get(i % 100, "active")
    return SubjectIn(
        id=sid(i),
        kind="organization" if i % 50 == 1 else "member",
        jurisdiction=JURISDICTIONS[i % len(JURISDICTIONS)],
        handle=f"h{i}",
        names=[f"Member {i}"],
        birth_date=birth,
        status=status,
    )


def write_choices(path: Path, n: int, subjects: int, start: datetime, span: timedelta) -> None:
    """``n`` choice events in time order, for random active subjects (never the first)."""
    rng = random.Random(2)
    t0 = times.to_micros(start)
    step = times.to_micros(start + span) - t0
    with path.open("w") as fh:
        for k in range(n):
            i = rng.randrange(1, subjects)
            while not is_active(i):
                i = rng.randrange(1, subjects)
            r = rng.random()
            action = "grant" if r < 0.6 else "withdraw" if r < 0.9 else "object"
            actor = "staff:dpo" if action == "withdraw" and rng.random() < 0.1 else sid(i)
            at = times.iso(t0 + step * k // n)
            line = {
                "type": "choice",
                "subject": sid(i),
                "purpose": PURPOSE,
                "action": action,
                "recorded_at": at,
                "actor": actor,
            }
            fh.write(json.dumps(line) + "\n")


# ---- appends: one writer loop, run in this process or in writer processes ---------------------


def append_loop(
    kind: str,
    db_kind: str,
    url: str,
    writer: int,
    subjects: list[str],
    seconds: float,
    ready: Any = None,
    start: Any = None,
) -> tuple[int, float]:
    """Append (or insert) one event per transaction for ``seconds``; (count, elapsed)."""
    led: Ledger | None = None
    conn: Any = None
    if kind == "ledger":
        led = open_ledger(url)
    else:
        conn = raw_connect(db_kind, url)
        cur = conn.cursor()
    if ready is not None:
        ready.put(writer)
        start.wait()
    n = 0
    t = time.perf_counter()
    deadline = t + seconds
    try:
        while time.perf_counter() < deadline:
            s = subjects[n % len(subjects)]
            action = "grant" if (n // len(subjects)) % 2 == 0 else "withdraw"
            if led is not None:
                led.append(
                    NewEvent(
                        type="choice",
                        subject=s,
                        actor=s,
                        source="bench",
                        purpose=PURPOSE,
                        value=action,
                    )
                )
            elif kind == "bare":
                if db_kind == "sqlite":
                    cur.execute("BEGIN IMMEDIATE")
                cur.execute(
                    "INSERT INTO bench_bare (id, subject, payload) VALUES (%s, %s, %s)"
                    if db_kind == "postgres"
                    else "INSERT INTO bench_bare (id, subject, payload) VALUES (?, ?, ?)",
                    (writer * 10**12 + n, s, action),
                )
                conn.commit() if db_kind == "postgres" else cur.execute("COMMIT")
            else:
                _raw_append(cur, conn, db_kind, s, action)
            n += 1
        return n, time.perf_counter() - t
    finally:
        if led is not None:
            led.close()
        if conn is not None:
            conn.close()


def _raw_append(cur: Any, conn: Any, db_kind: str, s: str, action: str) -> None:
    """What Ledger.append does for one choice, in SQL through the raw driver, on the
    ledger's own tables (so the same table sizes and indexes), chained the same way."""
    pg = db_kind == "postgres"
    q = (lambda sql: sql.replace("?", "%s")) if pg else (lambda sql: sql)
    if not pg:
        cur.execute("BEGIN IMMEDIATE")
    cur.execute(
        "SELECT seq, hash, recorded_at FROM ledger_head WHERE id = 1"
        + (" FOR UPDATE" if pg else "")
    )
    seq, prev, last = cur.fetchone()
    cur.execute(q("SELECT subject_id, status FROM subject_state WHERE subject_id = ?"), (s,))
    cur.fetchall()
    seq += 1
    at = max(last, times.to_micros(times.now()))
    digest = event_hash(seq, "choice", s, PURPOSE, action, 1, s, "bench", at, prev)
    cur.execute(
        q(
            "INSERT INTO events (seq, type, subject_id, purpose, value, notice_version, actor,"
            " source, recorded_at, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        (seq, "choice", s, PURPOSE, action, 1, s, "bench", at, prev, digest),
    )
    cur.execute(
        q("UPDATE ledger_head SET seq = ?, hash = ?, recorded_at = ? WHERE id = 1"),
        (seq, digest, at),
    )
    cur.execute(
        q(
            "INSERT INTO choice_state (subject_id, purpose, action, notice_version, seq)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (subject_id, purpose) DO UPDATE SET"
            " action = excluded.action, notice_version = excluded.notice_version,"
            " seq = excluded.seq"
        ),
        (s, PURPOSE, action, 1, seq),
    )
    conn.commit() if pg else cur.execute("COMMIT")


def _writer_process(args: tuple[Any, ...], ready: Any, start: Any, out: Any) -> None:
    try:
        out.put(("ok", append_loop(*args, ready=ready, start=start)))
    except BaseException as e:
        ready.put(-1)  # so that the parent does not wait for a writer that never started
        out.put(("error", f"{type(e).__name__}: {e}"))


def run_writers(
    kind: str, db: Database, writers: int, pool: list[str], seconds: float
) -> tuple[int, float]:
    """(events written, events/s) of ``writers`` concurrent writer processes."""
    if writers == 1:
        n, elapsed = append_loop(kind, db.name, db.url, 0, pool, seconds)
        return n, n / elapsed
    ctx = mp.get_context("forkserver")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_writer_process,
            args=((kind, db.name, db.url, w + 1, pool[w::writers], seconds), ready, start, out),
        )
        for w in range(writers)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # every writer has its database open before any starts writing
        ready.get(timeout=120)
    start.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [r for tag, r in results if tag == "error"]
    if errors:
        raise RuntimeError(f"{len(errors)} writer(s) failed: {errors[0]}")
    total = sum(n for _, (n, _) in results)
    return total, total / max(el for _, (_, el) in results)


def count_events_after(db: Database, seq: int) -> int:
    """Events stored after ``seq``, as a new connection sees them."""
    conn = db.raw()
    try:
        cur = conn.cursor()
        ph = "%s" if db.name == "postgres" else "?"
        cur.execute(f"SELECT count(*) FROM events WHERE seq > {ph}", (seq,))
        return int(cur.fetchone()[0])
    finally:
        conn.close()


# ---- the run, per database -------------------------------------------------------------------


@contextmanager
def step(run: Run, backend: str, name: str, unit: str = "events/s") -> Iterator[None]:
    """Record a failed measurement as an error line instead of stopping the run."""
    try:
        yield
    except Exception as e:
        traceback.print_exc(limit=3)
        run.add(Figure(backend, name, None, unit, error=f"{type(e).__name__}: {e}"[:300]))


def bench_database(db: Database, sizes: Sizes, run: Run, t0: datetime, snap: Snapshot) -> None:
    b = db.name
    policy = load_policy()
    console.rule(f"{b}: {db.describe()}")
    run.notes.append(f"{b}: {db.describe()}")
    create_bench_tables(db)
    led = open_ledger(db.url, policy, create=True)
    try:
        _bench_ledger(db, led, sizes, run, t0, snap)
    finally:
        led.close()


@dataclass
class Snapshot:
    """A copy of the SQLite ledger right after registration, to fill PostgreSQL from."""

    path: Path
    taken: bool = False


def register_subjects(
    led: Ledger, t0: datetime, lo: int, hi: int, chunk: int
) -> tuple[int, float, float]:
    """Register subjects ``lo``..``hi - 1`` in chunks; (events appended, seconds, CPU s)."""
    events, spent, cpu = 0, 0.0, 0.0
    if lo == 0:
        # Subject 0 comes first, with a birth date and a choice, so that the first rows of
        # every bulk read hold text in the nullable text columns.
        led.register([subject(0)], since=t0)
        led.append(
            NewEvent(type="choice", subject=sid(0), actor=sid(0), source="bench",
                     purpose=PURPOSE, value="grant", recorded_at=times.to_micros(t0))
        )  # fmt: skip
        lo = 1
    for start in range(lo, hi, chunk):
        batch = [subject(i) for i in range(start, min(hi, start + chunk))]
        evs, dt, c = timed_cpu(lambda batch=batch: led.register(batch, since=t0))
        events, spent, cpu = events + len(evs), spent + dt, cpu + c
        console.log(f"registered {start + len(batch):,} subjects ({events:,} events)")
    return events, spent, cpu


def take_snapshot(db: Database, snap: Snapshot) -> None:
    src, dst = db.raw(), sqlite3.connect(snap.path)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    snap.taken = True


def build_snapshot(sizes: Sizes, t0: datetime, snap: Snapshot) -> None:
    """Build the registered ledger on SQLite only to copy it (for ``--only postgres``)."""
    db = SqliteDb()
    try:
        with open_ledger(db.url, load_policy(), create=True) as led:
            register_subjects(led, t0, 0, sizes.subjects, sizes.register_chunk)
        take_snapshot(db, snap)
    finally:
        db.close()


def copy_rest(snap: Snapshot, db: Database, first: int) -> float:
    """Copy subjects ``first``.. (their events and rows) from the snapshot; seconds spent.

    The input is deterministic, so the snapshot's events up to PostgreSQL's head are the
    ones PostgreSQL already holds: checked on the head's hash, then verify checks all.
    """
    t = time.perf_counter()
    src = sqlite3.connect(f"file:{snap.path}?mode=ro", uri=True)
    pg = db.raw()
    try:
        cur = pg.cursor()
        cur.execute("SELECT seq, hash FROM ledger_head WHERE id = 1")
        seq, digest = cur.fetchone()
        mine = src.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
        if mine is None or mine[0] != digest:
            raise RuntimeError(f"the SQLite snapshot differs from PostgreSQL at seq {seq}")
        copies = [("events", "seq > ?", seq), ("subjects", "id >= ?", sid(first))]
        copies += [(t, "subject_id >= ?", sid(first))
                   for t in ("subject_state", "choice_state", "notice_state")]  # fmt: skip
        for table, where, arg in copies:
            cols = ", ".join(c.name for c in tables.metadata.tables[table].c)
            rows = src.execute(f"SELECT {cols} FROM {table} WHERE {where}", (arg,))
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
        head = src.execute("SELECT seq, hash, recorded_at FROM ledger_head WHERE id = 1").fetchone()
        cur.execute("UPDATE ledger_head SET seq = %s, hash = %s, recorded_at = %s WHERE id = 1",
                    head)  # fmt: skip
        pg.commit()
        pg.autocommit = True
        cur.execute("ANALYZE")
    finally:
        src.close()
        pg.close()
    return time.perf_counter() - t


def _bench_ledger(
    db: Database, led: Ledger, sizes: Sizes, run: Run, t0: datetime, snap: Snapshot
) -> None:
    b = db.name
    t_hist = t0 + 50 * DAY
    bare_rate = bare_bulk_insert(db, sizes.import_events)
    bare_name = "bare executemany, events-shaped table, 1 txn"

    # 1. Register subjects: all of them on SQLite; on PostgreSQL the first ones, and the
    # rest copied from the SQLite build (PostgreSQL registers too slowly for the time box).
    n = sizes.subjects if b == "sqlite" else min(sizes.subjects, sizes.pg_register)
    registered, reg_time, reg_cpu = register_subjects(led, t0, 0, n, sizes.register_chunk)
    note = f"{registered:,} events in {reg_time:.0f} s, CPU {reg_cpu / reg_time:.0%}"
    if b == "sqlite" and not snap.taken:
        take_snapshot(db, snap)
    if n < sizes.subjects:
        copied = copy_rest(snap, db, n)
        note += f"; subjects {n:,}.. copied from the SQLite build in {copied:.0f} s"
    run.add(
        Figure(b, f"register {n:,} subjects (append_many path)", registered / reg_time,
               target=TARGET_IMPORT, baseline=bare_rate, baseline_name=bare_name, note=note)
    )  # fmt: skip

    # 2. Import a JSONL file of choice events.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "choices.jsonl"
        write_choices(path, sizes.import_events, sizes.subjects, t0 + DAY, 99 * DAY)
        with step(run, b, f"import_events, {sizes.import_events:,} choices (JSONL)"):
            evs, dt, cpu = timed_cpu(lambda: import_events(led, path))
            run.add(
                Figure(
                    b,
                    f"import_events, {sizes.import_events:,} choices (JSONL)",
                    len(evs) / dt,
                    target=TARGET_IMPORT,
                    baseline=bare_rate,
                    baseline_name=bare_name,
                    note=f"{len(evs):,} events in {dt:.1f} s, CPU {cpu / dt:.0%}",
                )
            )

    # 3. Verify every event.
    with step(run, b, "verify"):
        read_rate, hash_rate = verify_floors(db)
        report, dt, cpu = timed_cpu(led.verify)
        if not report.ok:
            raise RuntimeError(f"verify failed: {report.problems[:2]}")
        n = report.events_checked
        run.add(
            Figure(
                b,
                f"verify, {n:,} events (chain and projections, one pass)",
                n / dt,
                target=TARGET_VERIFY,
                baseline=read_rate,
                baseline_name="read the events into Python (raw driver)",
                note=f"{dt:.1f} s, CPU {cpu / dt:.0%}; hashing alone runs at {hash_rate:,.0f}/s",
            )
        )

    # 4. Decisions for every subject, now and in the past.
    nsub = sizes.subjects
    with step(run, b, "decide_many"):
        floors = decision_floors(led, nsub)
        for label, at in (("now (projections)", None), (f"at {t_hist:%Y-%m-%d} (events)", t_hist)):
            floor, floor_name = floors[at is None]
            (table, eval_dt), dt, cpu = timed_cpu(lambda at=at: decide_many_split(led, at))
            if table.num_rows != nsub:
                raise RuntimeError(f"decide_many gave {table.num_rows} rows for {nsub} subjects")
            bad = spot_check(led, table, at, sizes.spot_checks)
            reasons = pc.value_counts(table.column("reason")).to_pylist()
            top = ", ".join(f"{r['values']} {r['counts']:,}"
                            for r in sorted(reasons, key=lambda r: -r["counts"])[:5])  # fmt: skip
            note = f"{dt:.2f} s, CPU {cpu / dt:.0%}; decide() agrees on "
            note += f"{sizes.spot_checks - bad}/{sizes.spot_checks}"
            run.add(
                Figure(
                    b,
                    f"decide_many {nsub:,} subjects, {label}",
                    nsub / dt,
                    "subjects/s",
                    TARGET_DECIDE,
                    floor,
                    floor_name,
                    note=f"{note} sampled; {top}",
                )
            )
            run.add(
                Figure(
                    b,
                    "  of which loading the state",
                    nsub / (dt - eval_dt),
                    "subjects/s",
                    TARGET_DECIDE,
                    floor,
                    floor_name,
                    note=f"{dt - eval_dt:.2f} s",
                )
            )
            run.add(Figure(b, "  of which evaluate_many", nsub / eval_dt, "subjects/s",
                           TARGET_DECIDE, note=f"{eval_dt:.2f} s"))  # fmt: skip
            if bad:
                run.notes.append(f"{b}: decide() and decide_many disagree on {bad} subjects")

    # 5. Durable single-event appends, 1 and 8 writers, against bare commits.
    pool = [sid(i) for i in range(1, min(sizes.subjects, 80_000)) if is_active(i)]
    target = TARGET_APPEND[b]
    secs = sizes.append_seconds
    for writers in (1, sizes.writers):
        w = f"{writers} writer{'s' if writers > 1 else ''}"
        bare = None
        with step(run, b, f"bare INSERT+COMMIT, {w}", "rows/s"):
            _, bare = run_writers("bare", db, writers, pool, secs)
            run.add(Figure(b, f"bare INSERT+COMMIT, {w} (baseline)", bare, "rows/s"))
        with step(run, b, f"Ledger.append, {w}"):
            head = led.head().seq
            acked, rate = run_writers("ledger", db, writers, pool, secs)
            stored = count_events_after(db, head)
            if stored != acked:
                run.notes.append(f"{b}: {acked} appends acknowledged but {stored} stored")
            run.add(
                Figure(
                    b,
                    f"Ledger.append, {w}",
                    rate,
                    target=target,
                    baseline=bare,
                    baseline_name=f"bare INSERT+COMMIT, {w}",
                    note=f"{acked:,} acknowledged, {stored:,} stored",
                )
            )
        with step(run, b, f"raw-driver append SQL, {w}"):
            _, rate = run_writers("raw", db, writers, pool, secs)
            run.add(
                Figure(
                    b,
                    f"reference: the append's SQL via the raw driver, {w}",
                    rate,
                    target=target,
                    baseline=bare,
                    baseline_name=f"bare INSERT+COMMIT, {w}",
                )
            )


def bare_bulk_insert(db: Database, n: int) -> float:
    """Rows/s of one executemany of ``n`` events-shaped rows, one transaction, raw driver."""
    rows = [
        (
            10**9 + k,
            "choice",
            sid(k),
            PURPOSE,
            "grant",
            1,
            sid(k),
            "bench",
            k,
            "0" * 64,
            f"{k:064x}",
        )
        for k in range(n)
    ]
    conn = db.raw()
    try:
        cur = conn.cursor()
        ph = ", ".join(["%s" if db.name == "postgres" else "?"] * 11)
        t = time.perf_counter()
        db.begin_write(cur)
        cur.executemany(f"INSERT INTO bench_events VALUES ({ph})", rows)
        conn.commit() if db.name == "postgres" else cur.execute("COMMIT")
        rate = n / (time.perf_counter() - t)
        db.begin_write(cur)
        cur.execute("DELETE FROM bench_events")
        conn.commit() if db.name == "postgres" else cur.execute("COMMIT")
        return rate
    finally:
        conn.close()


EVENTS_PAGE = (
    "SELECT seq, type, subject_id, purpose, value, notice_version, actor, source, "
    "recorded_at, prev_hash, hash FROM events WHERE seq > {after} ORDER BY seq LIMIT 250000"
)


def verify_floors(db: Database) -> tuple[float, float]:
    """Events/s of (reading every event into Python, raw driver; hashing 200k of them)."""
    conn = db.raw()
    n, after, sample = 0, 0, []
    try:
        cur = conn.cursor()
        t = time.perf_counter()
        while True:
            cur.execute(EVENTS_PAGE.format(after=after))
            rows = cur.fetchall()
            if not rows:
                break
            n, after = n + len(rows), rows[-1][0]
            if len(sample) < 200_000:
                sample.extend(rows)
        read = n / (time.perf_counter() - t)
    finally:
        conn.close()
    t = time.perf_counter()
    for r in sample:
        event_hash(*r[:10])
    return read, len(sample) / (time.perf_counter() - t)


def decide_many_split(led: Ledger, at: datetime | None) -> tuple[pa.Table, float]:
    """decide_many for every subject, and the seconds of it spent in evaluate_many (the
    rest is loading the state: load_state, or for "now" the projections read)."""
    spent = [0.0]
    inner = decisions.evaluate_many

    def timed_evaluate(*args: Any, **kw: Any) -> pa.Table:
        out, dt = timed(lambda: inner(*args, **kw))
        spent[0] += dt
        return out

    decisions.evaluate_many = timed_evaluate
    try:
        table = decisions.decide_many(led, PURPOSE, at=at)
    finally:
        decisions.evaluate_many = inner
    return table, spent[0]


def decision_floors(led: Ledger, n: int) -> dict[bool, tuple[float, str]]:
    """Subjects/s of just reading what each path reads, through store.read_arrow:
    {current: the subject_state rows, historic: the events' columns}."""
    state_cols = [("subject_id", pa.string()), ("registered_seq", pa.int64()),
                  ("jurisdiction", pa.string()), ("status", pa.string()),
                  ("minor", pa.string()), ("gpc_seq", pa.int64())]  # fmt: skip
    event_cols = [("subject_id", pa.string()), ("type", pa.string()), ("purpose", pa.string()),
                  ("value", pa.string()), ("notice_version", pa.int64()), ("seq", pa.int64()),
                  ("recorded_at", pa.int64())]  # fmt: skip
    out = {}
    for current, table, cols in (
        (True, "subject_state", state_cols),
        (False, "events", event_cols),
    ):
        sql = f"SELECT {', '.join(c for c, _ in cols)} FROM {table}"
        _, dt = timed(lambda sql=sql, cols=cols: store.read_arrow(led.engine, sql, pa.schema(cols)))
        out[current] = (n / dt, f"store.read_arrow({table}), {len(cols)} columns")
    return out


def spot_check(led: Ledger, table: pa.Table, at: datetime | None, k: int) -> int:
    """How many of ``k`` random subjects ``decide`` answers differently from the table."""
    rng = random.Random(5)
    rows = table.take(sorted(rng.sample(range(table.num_rows), k))).to_pylist()
    bad = 0
    for r in rows:
        d = decide(led, r["subject"], PURPOSE, at)
        if (d.allowed, str(d.reason), d.event_seq) != (r["allowed"], r["reason"], r["event_seq"]):
            bad += 1
            if bad <= 3:
                console.log(f"[red]mismatch[/] {r} vs decide(): {d.reason} {d.event_seq}")
    return bad


# ---- output -----------------------------------------------------------------------------------


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" + (f" {unit}" if unit else "")


def _ratio(v: float | None) -> str:
    if v is None:
        return "-"
    return f"[green]{v:.2f}x[/]" if v >= 1 else f"[red]{v:.2f}x[/]"


def print_table(run: Run, env: dict[str, str], command: str) -> None:
    console.rule("askfirst ledger benchmark (issue 2)")
    console.print(f"date: {env['date']}")
    console.print(
        f"machine: {env['nproc']} CPUs, {env['cpu']}, {env['memory']} RAM; Python {env['python']}"
    )
    console.print(f"command: {command}")
    console.print(f"askfirst imported from: {env['askfirst']}")
    console.print(f"load average (1, 5, 15 min): {env['load average at start']} at the start, "
                  f"{env['load average at end']} at the end")  # fmt: skip
    for note in run.notes:
        console.print(note)
    t = Table(show_lines=False)
    for col, just in (
        ("db", "left"),
        ("figure", "left"),
        ("value", "right"),
        ("target", "right"),
        ("x target", "right"),
        ("baseline", "right"),
        ("x baseline", "right"),
        ("baseline is", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for f in run.figures:
        value = _fmt(f.value, f.unit) if f.error is None else f"[red]{f.error}[/]"
        t.add_row(
            f.backend,
            f.name,
            value,
            _fmt(f.target),
            _ratio(f.vs_target),
            _fmt(f.baseline),
            _ratio(f.vs_baseline),
            f.baseline_name,
        )
    console.print(t)
    for f in run.figures:
        if f.note:
            console.print(f"[dim]{f.backend} · {f.name.strip()}: {f.note}[/]")
    missed = [
        f
        for f in run.figures
        if f.vs_target is not None
        and f.vs_target < 1
        and not f.name.startswith(("  ", "reference"))
    ]
    if missed:
        console.print(
            "[red]targets missed:[/] "
            + "; ".join(f"{f.backend} {f.name} ({f.vs_target:.2f}x)" for f in missed)
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    ap.add_argument("--only", choices=["sqlite", "postgres"], help="benchmark one database")
    ap.add_argument(
        "--pg-url", default=DEFAULT_PG, help=f"PostgreSQL server (default {DEFAULT_PG})"
    )
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    command = "python bench/ledger.py " + " ".join(argv if argv is not None else sys.argv[1:])
    env = machine()
    run = Run()
    started = time.perf_counter()
    # One start time for both databases: the same input gives the same events and hashes.
    t0 = (times.now() - timedelta(days=200)).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="askfirst-bench-snap-") as tmp:
        snap = Snapshot(Path(tmp) / "registered.db")
        for kind in [args.only] if args.only else ["sqlite", "postgres"]:
            db: Database | None = None
            try:
                if kind == "postgres" and not snap.taken:
                    build_snapshot(sizes, t0, snap)
                db = make_database(kind, args.pg_url)
                bench_database(db, sizes, run, t0, snap)
            except Exception as e:
                traceback.print_exc()
                run.add(Figure(kind, "run", None, error=f"{type(e).__name__}: {e}"[:300]))
            finally:
                if db is not None:
                    db.close()
    env["elapsed"] = f"{time.perf_counter() - started:.0f} s"
    env["load average at end"] = load_average()
    print_table(run, env, command.strip())
    console.print(f"total time: {env['elapsed']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "env": env,
            "command": command.strip(),
            "sizes": asdict(sizes),
            "notes": run.notes,
            "figures": [
                asdict(f) | {"vs_target": f.vs_target, "vs_baseline": f.vs_baseline}
                for f in run.figures
            ],
        }
        args.json.write_text(json.dumps(data, indent=2))
    return 1 if any(f.error for f in run.figures) else 0


if __name__ == "__main__":
    mp.set_start_method("forkserver")
    mp.set_forkserver_preload(["askfirst", "askfirst.ledger.ledger"])
    sys.exit(main())
