"""The hash chain: the canonical encoding an event's hash is computed over, and checking
a run of chained events (the part of ``askfirst ledger verify`` that can be shared out).

An event's hash is SHA-256 over a fixed-order JSON array of every stored field and the
previous event's hash, so that changing any field, or the order, changes every hash
after it. Times are hashed as integer microseconds: one spelling per instant.

Each event carries the hash of the one before, so every event's own hash can be checked
apart from the others: ``verify`` checks ranges of seq in worker processes and joins
them at the seams (the first event of a range against the last of the range before).
A worker runs this file by its path (``python -P .../chain.py``), so this module imports
nothing of askfirst and starts in milliseconds. It reads the ranges it is sent, in the
same snapshot of the database as the process that started it, and answers each with a
:class:`Run`'s summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import struct
import sys
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import IO, Any

GENESIS = "0" * 64
ENCODING_VERSION = 1

# Compact JSON, non-ASCII kept as UTF-8: one encoder, made once.
_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# What that encoder writes for one string (the C function it calls itself).
_quote = json.encoder.encode_basestring
_sha256 = hashlib.sha256


def event_hash(
    seq: int,
    type: str,
    subject: str,
    purpose: str | None,
    value: str | None,
    notice_version: int | None,
    actor: str,
    source: str,
    recorded_at: int,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of the canonical encoding of one event and the hash before it."""
    # The array written directly is byte for byte what _CANONICAL writes, when the numbers
    # are ints (a bool or float is written otherwise) and the text is str (_quote raises
    # TypeError on anything else); in about a third of the time. Hashing is hot.
    if (
        seq.__class__ is int
        and recorded_at.__class__ is int
        and (notice_version is None or notice_version.__class__ is int)
    ):
        try:
            blob = (
                f"[{ENCODING_VERSION},{seq},{_quote(type)},{_quote(subject)},"
                f"{'null' if purpose is None else _quote(purpose)},"
                f"{'null' if value is None else _quote(value)},"
                f"{'null' if notice_version is None else notice_version},"
                f"{_quote(actor)},{_quote(source)},{recorded_at},{_quote(prev_hash)}]"
            )
        except TypeError:
            blob = _canonical(
                seq, type, subject, purpose, value, notice_version, actor, source,
                recorded_at, prev_hash,
            )  # fmt: skip
    else:
        blob = _canonical(
            seq, type, subject, purpose, value, notice_version, actor, source, recorded_at,
            prev_hash,
        )  # fmt: skip
    return _sha256(blob.encode()).hexdigest()


def _canonical(*fields: Any) -> str:
    return _CANONICAL.encode([ENCODING_VERSION, *fields])


# ---- checking a run of events -------------------------------------------------------------

# The columns a run reads, in this order: the first seven are what the projections are
# rebuilt from (``projections.Rebuild.add``), so one row serves both.
COLUMNS = (
    "type", "subject_id", "purpose", "value", "notice_version", "seq", "recorded_at",
    "actor", "source", "prev_hash", "hash",
)  # fmt: skip
SEQ, AT, PREV, HASH = (COLUMNS.index(c) for c in ("seq", "recorded_at", "prev_hash", "hash"))

# What can be wrong with an event, in the order it is looked for: the first that applies
# is the one reported (``verify`` words them).
TYPE, MISSING, BACKWARDS, LINK, CONTENT, TIME = (
    "type", "missing", "backwards", "link", "content", "time"
)  # fmt: skip

# Where the chain stands after an event: (the seq expected next, its hash, its time).
State = tuple[int, str, int]
START: State = (1, GENESIS, 0)
# An event as a seam needs it: seq, recorded_at, prev_hash, and whether its own hash is
# right (None when its seq or time is not even an integer).
Edge = tuple[Any, Any, Any, bool | None]
# The first bad event: (the seq to name, what is wrong, the seq expected, the seq found).
Problem = tuple[Any, str, int, Any]


def problem(state: State, edge: Edge) -> Problem | None:
    """What is wrong with the event ``edge`` right after ``state``, or None."""
    expected, prev, last_at = state
    seq, at, prev_hash, hash_ok = edge
    if hash_ok is None:
        return (expected, TYPE, expected, seq)
    if seq > expected:
        return (expected, MISSING, expected, seq)
    if seq < expected:
        return (seq, BACKWARDS, expected, seq)
    if prev_hash != prev:
        return (seq, LINK, expected, seq)
    if not hash_ok:
        return (seq, CONTENT, expected, seq)
    if at < last_at:
        return (seq, TIME, expected, seq)
    return None


def _hash_ok(row: Sequence[Any]) -> bool | None:
    """Whether a row's hash is its content's (None: its seq or time is not an integer)."""
    typ, subj, purp, val, nv, seq, at, actor, src, prev_hash, digest = row
    if seq.__class__ is not int or at.__class__ is not int:
        return None
    try:
        return bool(event_hash(seq, typ, subj, purp, val, nv, actor, src, at, prev_hash) == digest)
    except (TypeError, ValueError):  # a value no event could hold (e.g. bytes): edited
        return False


class Run:
    """Consecutive events (rows of :data:`COLUMNS` in seq order), fed a page at a time:
    each event after the first is checked against the one before it; the first is
    checked by whoever knows the event before the run (see :func:`problem`)."""

    def __init__(self, want_hash: str | None = None) -> None:
        self.want_hash = want_hash
        self.count = 0
        self.first: Edge | None = None
        self.state: State | None = None  # after the last event checked
        self.problem: Problem | None = None  # the first bad event after the first
        self.found: Any = None  # the seq of the last event whose hash is want_hash

    def feed(self, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        self.count += len(rows)
        want = self.want_hash
        if want is not None:
            for row in rows:
                if row[HASH] == want:
                    self.found = row[SEQ]
        if self.first is None:
            row = rows[0]
            hash_ok = _hash_ok(row)
            self.first = (row[SEQ], row[AT], row[PREV], hash_ok)
            # With no integer seq and time, the next event has nothing to be checked
            # against: the seam names this one, and the run stops checking.
            if hash_ok is not None:
                self.state = (row[SEQ] + 1, row[HASH], row[AT])
            rows = rows[1:]
        if self.problem is not None or self.state is None:
            return
        expected, prev, last_at = self.state
        for row in rows:
            typ, subj, purp, val, nv, seq, at, actor, src, prev_hash, digest = row
            # Every check passes (the common case), or the slow path says which fails.
            if (
                seq.__class__ is int
                and at.__class__ is int
                and seq == expected
                and prev_hash == prev
                and at >= last_at
            ):
                try:
                    ok = (
                        event_hash(seq, typ, subj, purp, val, nv, actor, src, at, prev_hash)
                        == digest
                    )
                except (TypeError, ValueError):
                    ok = False
                if ok:
                    expected, prev, last_at = seq + 1, digest, at
                    continue
            self.problem = problem((expected, prev, last_at), (seq, at, prev_hash, _hash_ok(row)))
            break
        self.state = (expected, prev, last_at)

    def summary(self) -> tuple[int, Edge | None, State | None, Problem | None, Any]:
        """What the seams need: (count, first, state after, problem, found)."""
        return (self.count, self.first, self.state, self.problem, self.found)


# ---- the worker process -------------------------------------------------------------------
# Frames on stdin and stdout: a 4-byte length, then a pickle. The first frame in says
# where to read (the database and, on PostgreSQL, the snapshot to read in); each next is
# a range (after, upto, want_hash), answered by its Run's summary. End of input: exit.

_FRAME = struct.Struct("!I")
PAGE = 10_000
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f-]{1,64}")


def send(out: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(data)) + data)
    out.flush()


def receive(inp: IO[bytes]) -> Any:
    """The next frame's object; EOFError at the end of input."""
    head = inp.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError
    (size,) = _FRAME.unpack(head)
    data = inp.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def select(
    after: int, upto: int | None, postgres: bool, columns: Sequence[str] = COLUMNS
) -> tuple[str, tuple[int, ...]]:
    """The query of the events' ``columns`` in seq order, after seq ``after`` and up to
    ``upto`` (to the end when None), and its parameters."""
    mark = "%s" if postgres else "?"
    sql = f"SELECT {', '.join(columns)} FROM events WHERE seq > {mark}"
    if upto is None:
        return f"{sql} ORDER BY seq", (after,)
    return f"{sql} AND seq <= {mark} ORDER BY seq", (after, upto)


def pages(conn: Any, postgres: bool, sql: str, params: Sequence[Any]) -> Iterator[list[Any]]:
    """The rows of ``sql`` on ``conn`` (sqlite3 or psycopg), :data:`PAGE` rows at a time:
    memory stays flat however many there are."""
    if not postgres:
        cur = conn.cursor()
        try:
            cur.execute(sql, params)
            while rows := cur.fetchmany(PAGE):
                yield rows
        finally:
            cur.close()
        return
    import psycopg

    capabilities = getattr(psycopg, "capabilities", None)
    if capabilities is not None and capabilities.has_stream_chunked():
        # The server sends while the rows are read: no round trip per page.
        with conn.cursor(binary=True) as cur:
            stream = cur.stream(sql, params, size=PAGE)
            while rows := list(islice(stream, PAGE)):
                yield rows
        return
    with conn.cursor(name="askfirst_chain", binary=True) as cur:
        cur.execute(sql, params)
        while rows := cur.fetchmany(PAGE):
            yield rows


def _die_with_parent(parent: int) -> None:
    """Be killed when the process that started this one dies, however it dies (Linux);
    elsewhere a worker ends at its next range, when it finds its input closed."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig, sigkill = 1, 9
        libc.prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """Check each range asked for on ``inp``; answer on ``out``."""
    where = receive(inp)
    _die_with_parent(where["parent"])
    postgres = where["kind"] == "postgresql"
    if postgres:
        import psycopg

        snapshot = where["snapshot"]
        if not _SNAPSHOT_ID.fullmatch(snapshot):
            raise ValueError(f"not a snapshot id: {snapshot!r}")
        conn: Any = psycopg.connect(where["database"], autocommit=True)
        conn.execute("SET jit = off")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
    else:
        import sqlite3

        conn = sqlite3.connect(where["database"], uri=True, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("BEGIN")
    try:
        while True:
            try:
                after, upto, want_hash = receive(inp)
            except EOFError:
                return
            run = Run(want_hash)
            for rows in pages(conn, postgres, *select(after, upto, postgres)):
                run.feed(rows)
            send(out, run.summary())
    finally:
        conn.close()


if __name__ == "__main__":
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:  # the process that started this one stopped listening
        os._exit(1)
    except Exception as e:  # the range is checked in the first process instead; say why
        lines = str(e).strip().splitlines()
        raise SystemExit(f"{type(e).__name__}: {lines[0] if lines else ''}") from None
