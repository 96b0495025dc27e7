"""Verification: recompute the hash chain from the first event and compare projections.

Finds any event edited, deleted, inserted or reordered in the database and names the
first bad seq; a head row that does not match the last event (events cut off the end);
and, given a head recorded earlier outside the database, a history rewritten wholesale.

Everything is read in one read transaction. On a long ledger the chain is checked in
worker processes, a range of seq each, in the same snapshot (``chain`` says how), while
this process rebuilds and compares the projections; the ranges are joined at their
seams, so the report is the one a single pass gives. Workers are only a way to go
faster: a range none of them answered is checked here, and leaving verify, however it
ends, stops them.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import starmap
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from askfirst.ledger import chain, projections, store
from askfirst.ledger.events import EventType, Head
from askfirst.ledger.tables import events, ledger_head, notices

# What verify proves, and what it does not: the registry of snapshots, models and tasks and
# the outbox are plain tables beside the chain, so an edit there is not found by verify.
COVERS = (
    "the events' hash chain, their projections (subjects, choices, notices, authority) "
    "and the published notices' terms"
)
DOES_NOT_COVER = "snapshots, lineage, models, retraining tasks and the outbox"


@dataclass
class VerifyReport:
    """What ``verify`` found. ``ok`` only when the chain and every projection agree."""

    events_checked: int = 0
    head: Head | None = None
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    projection_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.projection_problems


# Rows before this seq are not events (the read has always started here).
_BEFORE_ALL = -(1 << 62)
_PAGE = 10_000  # rows per fetch: memory stays flat however long the ledger
RANGE = 100_000  # seq per range a worker checks
_MAX_RANGES = 4_096  # a seq tampered far out widens the ranges rather than multiply them
PARALLEL_FROM = 300_000  # smaller ledgers are checked in this process alone
_WHY = {
    chain.TYPE: "a field holds a value of the wrong type: it was edited",
    chain.MISSING: "missing: the events {expected}..{before} were deleted, or seq numbers "
    "were changed",
    chain.BACKWARDS: "seq repeats or goes backwards",
    chain.LINK: "prev_hash does not match the hash of the event before: an event was "
    "inserted, deleted or reordered",
    chain.CONTENT: "its content does not match its hash: the event was edited",
    chain.TIME: "recorded before the event ahead of it: events were reordered",
}


def _parse_expected(expected: str) -> tuple[int | None, str]:
    """HASH, SEQ:HASH, or 'SEQ HASH' as ``askfirst ledger head`` prints it."""
    expected = ":".join(expected.split())
    if ":" in expected:
        seq, _, digest = expected.partition(":")
        if not seq.isdigit():
            raise ValueError(f"expected head {expected!r}: use HASH, SEQ:HASH or 'SEQ HASH'")
        return int(seq), digest.lower()
    return None, expected.strip().lower()


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read transaction, so that appends during verification are not seen half-way."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _pages(
    conn: Connection, columns: Sequence[str], after: int, upto: int | None = None
) -> Iterator[list[Any]]:
    """The events' ``columns`` in seq order, a page of rows at a time, from after seq
    ``after`` up to ``upto`` (to the end when None), read in ``conn``'s transaction."""
    postgres = conn.dialect.name == "postgresql"
    sql, params = chain.select(after, upto, postgres, columns)
    return chain.pages(conn.connection.driver_connection, postgres, sql, params)


def verify(
    engine: Engine,
    expected_head: str | None = None,
    *,
    workers: int | None = None,
    range_size: int = RANGE,
) -> VerifyReport:
    """Recompute the chain of the ledger on ``engine`` and compare its projections.

    On a long ledger the hashes are recomputed in ``workers`` other processes (by default
    one per CPU beside this one's, at most two), ranges of ``range_size`` seq each, while
    this process rebuilds the projections; ``workers=0`` does it all here. The report is
    the same.
    """
    report = VerifyReport()
    want_seq, want_hash = _parse_expected(expected_head) if expected_head else (None, None)
    rebuild = projections.Rebuild()
    with _snapshot(engine) as conn, _Chain(conn, want_hash, workers, range_size) as checking:
        checking.read(rebuild)
        row = conn.execute(
            select(ledger_head.c.seq, ledger_head.c.hash, ledger_head.c.recorded_at)
        ).one()
        head = Head(row.seq, row.hash, row.recorded_at)
        # compared while the workers (if any) still hash
        report.projection_problems = rebuild.mismatches(conn) + _terms_problems(conn)
        runs = checking.runs()

    # Join the runs at their seams: each run's first event is checked against the last
    # event of the run before (the genesis state before the first).
    state, found_expected, first_bad = chain.START, None, None
    for count, first, after, problem, found in runs:
        report.events_checked += count
        if found is not None:
            found_expected = found
        if first_bad is None and first is not None:
            first_bad = chain.problem(state, first) or problem
            if first_bad is None and after is not None:
                state = after
    report.head = head

    def bad(seq: int, why: str) -> None:
        report.first_bad_seq = seq
        report.problems.append(f"seq {seq}: {why}")

    if first_bad is not None:
        seq, what, expected, found_seq = first_bad
        bad(
            seq,
            _WHY[what].format(
                expected=expected, before=found_seq - 1 if what == chain.MISSING else 0
            ),
        )
    last_seq, prev = state[0] - 1, state[1]
    if report.first_bad_seq is None and (head.seq != last_seq or head.hash != prev):
        if head.seq > last_seq:
            bad(
                last_seq + 1,
                f"missing: the ledger head is seq {head.seq} but the events end at "
                f"{last_seq}: events were cut off the end",
            )
        else:
            bad(
                head.seq + 1,
                f"the ledger head is seq {head.seq} ({head.hash[:12]}...) but the events "
                f"end at seq {last_seq}",
            )
    if want_hash is not None and (
        found_expected is None or (want_seq is not None and found_expected != want_seq)
    ):
        where = f"seq {want_seq}" if want_seq is not None else "any seq"
        report.problems.append(
            f"the expected head {want_hash[:16]}... is not at {where} in this ledger: the "
            "history up to it was rewritten or cut"
        )
    return report


Summary = tuple[int, chain.Edge | None, chain.State | None, chain.Problem | None, Any]


class _Chain:
    """Checking the chain of the events ``conn`` sees: in worker processes, a range of
    seq each, while :meth:`read` rebuilds the projections here; or, on a short ledger
    (or with no worker), here alone in the same pass."""

    def __init__(
        self, conn: Connection, want_hash: str | None, workers: int | None, range_size: int
    ) -> None:
        self._conn, self._want = conn, want_hash
        ranges = _ranges(conn, range_size) if workers != 0 else None
        where = _where(conn) if ranges else None
        if workers is None:
            workers = _cpus() if ranges and len(ranges) * range_size >= PARALLEL_FROM else 0
        self._ranges = ranges if ranges and where and workers > 0 else None
        self._pool = (
            _Workers(where, self._ranges, want_hash, min(workers, len(self._ranges)))
            if where and self._ranges
            else None
        )
        self._here: Summary | None = None

    def __enter__(self) -> _Chain:
        if self._pool is not None:
            try:
                self._pool.__enter__()
            except BaseException as e:
                self._pool.__exit__(type(e), e, e.__traceback__)
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.__exit__(*exc)

    def read(self, rebuild: projections.Rebuild) -> None:
        """Feed every event to ``rebuild`` (and, here alone, to the one run)."""
        add = rebuild.add
        if self._pool is None:
            run = chain.Run(self._want)
            for rows in _pages(self._conn, chain.COLUMNS, _BEFORE_ALL):
                for r in rows:
                    add(*r[:7])
                run.feed(rows)
            self._here = run.summary()
            return
        for rows in _pages(self._conn, chain.COLUMNS[:7], _BEFORE_ALL):
            deque(starmap(add, rows), maxlen=0)

    def runs(self) -> list[Summary]:
        """The runs' summaries in seq order (after :meth:`read`): what the workers
        answered, and here what none answered (one could not start, or stopped)."""
        if self._pool is None or self._ranges is None:
            assert self._here is not None
            return [self._here]
        summaries = self._pool.results()
        for k, summary in enumerate(summaries):
            if summary is None:
                after, upto = self._ranges[k]
                run = chain.Run(self._want)
                for rows in _pages(self._conn, chain.COLUMNS, after, upto):
                    run.feed(rows)
                summaries[k] = run.summary()
        return [s for s in summaries if s is not None]


def _cpus() -> int:
    """Workers for a long ledger: one per CPU beside this process's own, at most two
    (this process rebuilding the projections is the slower half already with one)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(0, min(n - 1, 2))


def _ranges(conn: Connection, size: int) -> list[tuple[int, int]] | None:
    """Ranges of seq (after, upto] that hold every event, or None when the seq numbers
    are not all integers (a tampered SQLite file: checked in one run, here)."""
    lo = conn.execute(text(f"SELECT min(seq) FROM events WHERE seq > {_BEFORE_ALL}")).scalar()
    hi = conn.execute(text("SELECT max(seq) FROM events")).scalar()
    if type(lo) is not int or type(hi) is not int or hi < lo:
        return None
    width = max(size, -(-(hi - lo + 1) // _MAX_RANGES))
    bounds = [*range(lo - 1 + width, hi, width), hi]
    return list(zip([_BEFORE_ALL, *bounds[:-1]], bounds, strict=True))


def _where(conn: Connection) -> dict[str, Any] | None:
    """How a worker reads the same events as ``conn``: the database, and on PostgreSQL
    the snapshot ``conn``'s transaction exports (None: a worker cannot, e.g. in memory)."""
    if conn.dialect.name == "postgresql":
        snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
        database = store._libpq_uri(conn.engine)
        return {"kind": "postgresql", "database": database, "snapshot": snapshot}
    name = conn.engine.url.database
    if not name or name == ":memory:" or not Path(name).is_file():
        return None
    # SQLite has no snapshot to share, but the events in ``conn``'s snapshot are the same
    # in any later one: appends only add events after its last seq, where no range reaches.
    return {"kind": "sqlite", "database": f"{Path(name).resolve().as_uri()}?mode=ro"}


class _Workers:
    """Worker processes (``python -P chain.py``) checking ranges while this process
    reads; each range goes to whichever worker is free. Leaving the block stops them."""

    def __init__(
        self, where: dict[str, Any], ranges: list[tuple[int, int]], want: str | None, n: int
    ) -> None:
        self._where = {**where, "parent": os.getpid()}
        self._ranges, self._want, self._n = ranges, want, n
        self._answers: list[Summary | None] = [None] * len(ranges)
        self._next = iter(range(len(ranges)))
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> _Workers:
        try:
            for _ in range(self._n):
                # Started from this thread: a worker is killed when the thread that
                # started it ends (prctl's parent-death signal), not only the process.
                proc = subprocess.Popen(
                    [sys.executable, "-P", chain.__file__],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                self._procs.append(proc)
        except OSError:  # no process to start: what no worker takes is checked here
            pass
        for proc in self._procs:
            thread = threading.Thread(target=self._feed, args=(proc,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _take(self) -> int | None:
        with self._lock:
            return next(self._next, None)

    def _feed(self, proc: subprocess.Popen[bytes]) -> None:
        """Hand ``proc`` ranges, two ahead so that it never waits, until none is left."""
        inp, out = proc.stdin, proc.stdout
        assert inp is not None and out is not None
        asked: deque[int] = deque()
        try:
            chain.send(inp, self._where)
            while True:
                while len(asked) < 2 and (k := self._take()) is not None:
                    chain.send(inp, (*self._ranges[k], self._want))
                    asked.append(k)
                if not asked:
                    break
                self._answers[asked.popleft()] = chain.receive(out)
        except (OSError, EOFError, ValueError, pickle.UnpicklingError):
            pass  # the ranges it did not answer stay None: checked in the first process
        finally:
            with suppress(OSError):
                inp.close()  # the end of its input: the worker exits

    def results(self) -> list[Summary | None]:
        for thread in self._threads:
            thread.join()
        return list(self._answers)

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.poll() is None and exc[0] is not None:
                proc.kill()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join()
        for proc in self._procs:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


def _terms_problems(conn: Connection) -> list[str]:
    """Each published notice's terms against the ``notice-published`` event that vouches
    for them (its value is their SHA-256): terms edited, moved or gone are named."""
    vouched = {
        seq: (purpose, version, value)
        for seq, purpose, version, value in conn.execute(
            select(events.c.seq, events.c.purpose, events.c.notice_version, events.c.value).where(
                events.c.type == EventType.PUBLISHED
            )
        )
    }
    problems = []
    rows = conn.execute(
        select(notices.c.purpose, notices.c.version, notices.c.seq, notices.c.terms, notices.c.hash)
    )
    for purpose, version, seq, terms, digest in rows:
        what = f"notices: the terms of {purpose!r} version {version}"
        event = vouched.pop(seq, None)
        if event is None:
            problems.append(f"{what} name seq {seq}, which published no notice")
        elif event != (purpose, version, f"sha256:{digest}"):
            problems.append(f"{what} do not match the event that published them (seq {seq})")
        elif hashlib.sha256(terms.encode()).hexdigest() != digest:
            problems.append(f"{what} were edited since they were published (seq {seq})")
    for seq, (purpose, version, _) in sorted(vouched.items()):
        problems.append(
            f"notices: the terms published at seq {seq} ({purpose!r} version {version}) are gone"
        )
    return problems
