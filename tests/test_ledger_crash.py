"""Many writers at once, and a writer killed with SIGKILL: nothing acknowledged is lost.

Writers are real threads and real processes, each process with its own ``Ledger`` on
the same database; the crash test kills a real child process. SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import IO

import pytest

from askfirst import Ledger, NewEvent, SubjectIn, open_ledger
from askfirst.ledger.events import GENESIS

GENAI = "genai-training"
TIMEOUT = 120  # seconds; only a guard against a hang, never a timing assertion


def choice(subject: str, j: int, source: str) -> NewEvent:
    return NewEvent(
        type="choice",
        subject=subject,
        actor=subject,
        source=source,
        purpose=GENAI,
        value=("grant", "withdraw")[j % 2],
    )


def assert_complete(led: Ledger, acked: dict[str, int]) -> None:
    """Every acknowledged append is stored once, at its seq; the chain is whole."""
    evs = led.events(limit=1_000_000)
    assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
    assert all(a.hash == b.prev_hash for a, b in itertools.pairwise(evs))
    assert evs[0].prev_hash == GENESIS
    counts = Counter(e.source for e in evs)
    assert {source: counts[source] for source in acked} == dict.fromkeys(acked, 1)
    at = {e.source: e.seq for e in evs}
    assert {source: at[source] for source in acked} == acked
    assert led.head().seq == evs[-1].seq
    report = led.verify()
    assert report.ok, report.problems + report.projection_problems


# ---- many writers ---------------------------------------------------------------------------

THREADS, PER_THREAD = 8, 40


def test_writer_threads_lose_nothing(ledger: Ledger) -> None:
    ledger.register([SubjectIn(id=f"w{i}") for i in range(THREADS)])
    start = threading.Barrier(THREADS)
    acked: dict[str, int] = {}
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            start.wait(TIMEOUT)
            for j in range(PER_THREAD):
                acked[f"t{i}-{j}"] = ledger.append(choice(f"w{i}", j, f"t{i}-{j}")).seq
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(acked) == THREADS * PER_THREAD
    assert_complete(ledger, acked)
    assert ledger.head().seq == 2 * THREADS + THREADS * PER_THREAD


WRITER = """
import sys
from askfirst import NewEvent, open_ledger
url, i, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open_ledger(url) as led:
    print("ready", flush=True)
    sys.stdin.readline()
    for j in range(n):
        ev = led.append(NewEvent(type="choice", subject=f"w{i}", actor=f"w{i}",
                                 source=f"p{i}-{j}", purpose="genai-training",
                                 value=("grant", "withdraw")[j % 2]))
        print(f"p{i}-{j}", ev.seq, flush=True)
"""
PROCESSES, PER_PROCESS = 4, 60


def test_writer_processes_lose_nothing(ledger: Ledger, db_url: str) -> None:
    ledger.register([SubjectIn(id=f"w{i}") for i in range(PROCESSES)])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, db_url, str(i), str(PER_PROCESS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        for p in procs:  # every writer has its ledger open before any starts
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    acked = {
        source: int(seq)
        for out, _ in outputs
        for source, seq in (line.split() for line in out.splitlines())
    }
    assert len(acked) == PROCESSES * PER_PROCESS
    assert_complete(ledger, acked)


# ---- killed mid-stream --------------------------------------------------------------------

CRASHER = """
import itertools, sys
from askfirst import NewEvent, open_ledger
with open_ledger(sys.argv[1]) as led:
    for j in itertools.count():
        ev = led.append(NewEvent(type="choice", subject="m1", actor="m1",
                                 source=f"crash-{j}", purpose="genai-training",
                                 value=("grant", "withdraw")[j % 2]))
        print(f"crash-{j}", ev.seq, flush=True)
"""
ACKS_BEFORE_KILL = 300


def _lines(stream: IO[str], out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


@pytest.mark.parametrize("run", [1, 2])
def test_acknowledged_appends_survive_sigkill(ledger: Ledger, db_url: str, run: int) -> None:
    ledger.register([SubjectIn(id="m1")])
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHER, db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    acked: dict[str, int] = {}
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(acked) < ACKS_BEFORE_KILL + run * 37:  # a different moment each run
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            assert line is not None, f"the writer stopped early: {proc.stderr.read()}"
            source, seq = line.split()
            acked[source] = int(seq)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    # lines printed after the last one read were acknowledged too; a last line the kill
    # cut short (no newline yet) was not: its append may or may not have committed
    while (line := lines.get(timeout=TIMEOUT)) is not None:
        if not line.endswith("\n"):
            assert lines.get(timeout=TIMEOUT) is None, "only the last line can be cut"
            break
        source, seq = line.split()
        acked[source] = int(seq)

    with open_ledger(db_url) as after:
        assert_complete(after, acked)
        stored = [e.source for e in after.events(limit=1_000_000) if e.type == "choice"]
        # at most the one append in flight when killed was committed without being printed
        assert stored[: len(acked)] == [f"crash-{j}" for j in range(len(acked))]
        assert len(stored) - len(acked) in (0, 1)
