"""``verify`` in ranges: the chain checked in worker processes, joined at the seams.

A long ledger's hashes are recomputed by worker processes, a range of seq each, while the
first process rebuilds the projections; each range's first event is checked against the
last event of the range before. These tests make the ranges tiny (a few events) so that
seams fall everywhere, and hold the report to the one a single pass in one process
gives, for tampers at and beside the seams, for any single-row tamper, for workers that
cannot start, and for events appended while verify runs. A verify that is killed leaves
no worker and no file behind. And the faster canonical encoding is byte for byte the
JSON encoder's that every hash so far was computed with.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from askfirst import Ledger, NewEvent, SubjectIn, VerifyReport, open_ledger
from askfirst.ledger import chain, verify
from askfirst.ledger.events import event_hash
from conftest import fresh_pg_url, publish_all

GENAI = "genai-training"
EVENT_COLUMNS = (
    "seq", "type", "subject_id", "purpose", "value", "notice_version", "actor", "source",
    "recorded_at", "prev_hash", "hash",
)  # fmt: skip


# ---- the canonical encoding ----------------------------------------------------------------


def reference_hash(*fields: Any) -> str:
    """The encoding every hash in every ledger so far was computed with."""
    blob = json.dumps([1, *fields], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class Kind(StrEnum):
    CHOICE = "choice"
    QUOTED = 'say "no"\\'


TEXT = st.text()  # any code point: quotes, backslashes, control characters, surrogates
INTS = st.integers() | st.integers(-(2**63), 2**63 - 1)
ANY_VALUE = (
    TEXT | INTS | st.none() | st.booleans() | st.floats() | st.sampled_from(list(Kind))
)  # fmt: skip


@settings(max_examples=2000, deadline=None)
@given(
    seq=INTS,
    typ=TEXT | st.sampled_from(list(Kind)),
    subject=TEXT,
    purpose=TEXT | st.none(),
    value=TEXT | st.none(),
    version=INTS | st.none(),
    actor=TEXT,
    source=TEXT,
    at=INTS,
    prev=TEXT,
)
def test_event_hash_is_the_json_encoders_for_any_event(
    seq: int,
    typ: str,
    subject: str,
    purpose: str | None,
    value: str | None,
    version: int | None,
    actor: str,
    source: str,
    at: int,
    prev: str,
) -> None:
    fields = (seq, typ, subject, purpose, value, version, actor, source, at, prev)
    assert_same_hash(fields)


@settings(max_examples=1000, deadline=None)
@given(st.lists(ANY_VALUE, min_size=10, max_size=10))
def test_event_hash_is_the_json_encoders_for_any_values_at_all(fields: list[Any]) -> None:
    """Whatever a tampered SQLite column holds (a float, a bool, text where a number
    belongs): the same bytes as the JSON encoder, or the same error."""
    assert_same_hash(tuple(fields))


def assert_same_hash(fields: tuple[Any, ...]) -> None:
    try:
        want: Any = reference_hash(*fields)
    except (TypeError, ValueError) as e:  # a surrogate cannot be UTF-8
        want = type(e)
    try:
        got: Any = event_hash(*fields)
    except (TypeError, ValueError) as e:
        got = type(e)
    assert got == want


def test_event_hash_of_a_known_event_never_changes() -> None:
    """Pinned: a ledger written by any version of askfirst verifies in every later one."""
    fields = (7, "choice", "m1", GENAI, "grant", 1, "m1", "web", 1_767_225_600_000_000, "0" * 64)
    assert event_hash(*fields) == reference_hash(*fields)
    # computed by the encoder before this one (json.JSONEncoder, at 3f1f700)
    assert event_hash(*fields) == (
        "2479cf3e1f48735610d9daf47714b3ef9b93a8c4ee1eab1d2dc95fd890b0db43"
    )


# ---- ledgers for the ranges ----------------------------------------------------------------


def choice(subject: str, action: str = "grant") -> NewEvent:
    return NewEvent(
        type="choice", subject=subject, actor=subject, source="test", purpose=GENAI, value=action
    )


def fill(led: Ledger, subjects: int = 6, choices: int = 12) -> int:
    """A ledger of a few dozen events of several kinds; its head's seq."""
    led.register(
        [SubjectIn(id=f"m{i}", jurisdiction="US") for i in range(subjects)],
        since=datetime.now(UTC) - timedelta(days=5),
    )
    publish_all(led)
    actions = itertools.cycle(["grant", "withdraw", "object"])
    led.append_many([choice(f"m{k % subjects}", next(actions)) for k in range(choices)])
    return led.head().seq


def run_sql(led: Ledger, sql: str, **params: Any) -> None:
    with led.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def event_row(led: Ledger, seq: int) -> dict[str, Any]:
    with led.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM events WHERE seq = :s"), {"s": seq}).one()
    return dict(row._mapping)


def in_ranges(led: Ledger, size: int = 5, workers: int = 2, **kw: Any) -> VerifyReport:
    return verify.verify(led.engine, workers=workers, range_size=size, **kw)


def alone(led: Ledger, **kw: Any) -> VerifyReport:
    return verify.verify(led.engine, workers=0, **kw)


def as_tuple(report: VerifyReport) -> tuple[Any, ...]:
    return astuple(report)


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    fill(ledger)
    return ledger


def test_ranges_verify_a_clean_ledger_as_one_pass_does(filled: Ledger) -> None:
    n = filled.head().seq
    for size in (1, 2, 5, n - 1, n, n + 10):
        report = in_ranges(filled, size)
        assert report.ok, (size, report.problems, report.projection_problems)
        assert report.events_checked == n
        assert as_tuple(report) == as_tuple(alone(filled))
    head = filled.head()
    assert in_ranges(filled, expected_head=f"{head.seq}:{head.hash}").ok


def test_the_ledger_is_long_enough_for_seams(filled: Ledger) -> None:
    assert filled.head().seq >= 20  # at least four ranges of five


# A range (after, upto] of size 5 starts at 1, 6, 11, 16, ...: 10 ends one, 11 starts one.
LAST, FIRST = 10, 11


def changed(column: str, value: Any) -> Any:
    if value is None:
        return 1 if column == "notice_version" else "edited"
    if isinstance(value, int):
        return value + 1
    if len(value) == 64:
        return value[:-1] + ("0" if value[-1] != "0" else "1")
    return value + "!"


@pytest.mark.parametrize("seq", [LAST, FIRST])
@pytest.mark.parametrize("column", [c for c in EVENT_COLUMNS if c != "seq"])
def test_an_edit_on_either_side_of_a_seam_is_found_at_its_seq(
    filled: Ledger, seq: int, column: str
) -> None:
    old = event_row(filled, seq)[column]
    run_sql(
        filled, f"UPDATE events SET {column} = :v WHERE seq = :s", v=changed(column, old), s=seq
    )
    report = in_ranges(filled)
    assert report.first_bad_seq == seq
    assert report.problems[0].startswith(f"seq {seq}:")
    assert as_tuple(report) == as_tuple(alone(filled))


@pytest.mark.parametrize("seq", [LAST, FIRST])
def test_an_event_deleted_at_a_seam_is_found(filled: Ledger, seq: int) -> None:
    run_sql(filled, "DELETE FROM events WHERE seq = :s", s=seq)
    report = in_ranges(filled)
    assert report.first_bad_seq == seq
    assert "missing" in report.problems[0]
    assert as_tuple(report) == as_tuple(alone(filled))


def test_a_whole_range_deleted_is_found(filled: Ledger) -> None:
    """The range 11..15 holds no event at all: the next range's first event shows it."""
    run_sql(filled, "DELETE FROM events WHERE seq BETWEEN 11 AND 15")
    report = in_ranges(filled)
    assert report.first_bad_seq == 11
    assert report.problems[0].startswith("seq 11: missing: the events 11..15 were deleted")
    assert as_tuple(report) == as_tuple(alone(filled))


def test_events_swapped_across_a_seam_are_found(filled: Ledger) -> None:
    a, b = event_row(filled, LAST), event_row(filled, FIRST)
    sets = ", ".join(f"{c} = :{c}" for c in EVENT_COLUMNS[1:])
    run_sql(filled, "UPDATE events SET hash = :h WHERE seq = :s", h="0" * 64, s=FIRST)
    run_sql(filled, f"UPDATE events SET {sets} WHERE seq = {LAST}", **{**b, "seq": LAST})
    run_sql(filled, f"UPDATE events SET {sets} WHERE seq = {FIRST}", **{**a, "seq": FIRST})
    report = in_ranges(filled)
    assert report.first_bad_seq == LAST
    assert as_tuple(report) == as_tuple(alone(filled))


def test_a_rewrite_from_a_seam_on_passes_the_chain_but_not_an_expected_head(
    filled: Ledger,
) -> None:
    """A consistent rewrite from the first event of a range: every range is right in
    itself and at its seams, as in one pass; an expected head recorded before shows it."""
    recorded = filled.head()
    run_sql(filled, "UPDATE events SET value = 'grant' WHERE seq = (SELECT max(seq) FROM events)")
    prev = event_row(filled, FIRST - 1)["hash"]
    for seq in range(FIRST, recorded.seq + 1):
        row = event_row(filled, seq)
        digest = event_hash(*[row[c] for c in EVENT_COLUMNS[:-2]], prev)
        run_sql(filled, "UPDATE events SET prev_hash = :p, hash = :h WHERE seq = :s",
                p=prev, h=digest, s=seq)  # fmt: skip
        prev = digest
    run_sql(filled, "UPDATE ledger_head SET hash = :h", h=prev)
    assert in_ranges(filled).problems == []
    against = in_ranges(filled, expected_head=recorded.hash)
    assert any("rewritten or cut" in p for p in against.problems)
    assert as_tuple(against) == as_tuple(alone(filled, expected_head=recorded.hash))


def test_an_edited_projection_is_named_as_in_one_pass(filled: Ledger) -> None:
    run_sql(filled, "UPDATE subject_state SET status = 'deceased' WHERE subject_id = 'm1'")
    report = in_ranges(filled)
    assert report.problems == []
    assert [p.split(":")[0] for p in report.projection_problems] == ["subject_state"]
    assert as_tuple(report) == as_tuple(alone(filled))


# ---- any single-row tamper: the ranges say what one pass says --------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def new_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """A factory of URLs to empty databases, one per hypothesis example."""
    if request.param == "sqlite":
        counter = itertools.count()
        yield lambda: f"sqlite:///{tmp_path / f'ledger{next(counter)}.db'}"
        return
    admin = request.getfixturevalue("pg_admin")
    schemas: list[str] = []

    def make() -> str:
        url, schema = fresh_pg_url(admin)
        schemas.append(schema)
        return url

    yield make
    with admin.begin() as conn:
        for schema in schemas:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


VALUE = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=32
)


def test_any_single_row_tamper_is_reported_by_the_ranges_as_by_one_pass(
    new_url: Callable[[], str], request: pytest.FixtureRequest
) -> None:
    on_sqlite = "sqlite" in request.node.callspec.id

    @settings(
        max_examples=25 if on_sqlite else 10,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(size=st.integers(1, 8), data=st.data())
    def check(size: int, data: st.DataObject) -> None:
        with open_ledger(new_url(), create=True) as led:
            n = fill(led, subjects=3, choices=6)
            seq = data.draw(st.integers(1, n), label="seq")
            column = data.draw(st.sampled_from(EVENT_COLUMNS), label="column")
            old = event_row(led, seq)[column]
            with led.engine.connect() as conn:
                others = [v for (v,) in conn.execute(sa.text(f"SELECT {column} FROM events"))]
            if column in ("seq", "recorded_at", "notice_version"):
                value = data.draw(st.integers(-5, n + 5) | st.sampled_from(others))
            else:
                value = data.draw(VALUE | st.sampled_from(others))
            assume(value != old and (column != "seq" or value not in others))
            assume(column != "hash" or value not in others)
            run_sql(led, f"UPDATE events SET {column} = :v WHERE seq = :s", v=value, s=seq)
            one = alone(led)
            assert not one.ok
            assert as_tuple(in_ranges(led, size)) == as_tuple(one)

    check()


# ---- workers that cannot help, and appends during verify -------------------------------------


def test_ranges_no_worker_took_are_checked_here(
    filled: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers are only a way to go faster: with none able to start, or every one
    stopping at once (here: a database they cannot open), the report is the same."""
    run_sql(filled, "UPDATE events SET actor = 'mallory' WHERE seq = :s", s=FIRST)
    want = as_tuple(alone(filled))
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert as_tuple(in_ranges(filled)) == want
    monkeypatch.undo()
    where = verify._where

    def nowhere(conn: Any) -> dict[str, Any] | None:
        found = where(conn)
        return None if found is None else {**found, "database": "file:/nonexistent/x.db?mode=ro"}

    monkeypatch.setattr(verify, "_where", nowhere)
    assert as_tuple(in_ranges(filled)) == want


def test_events_appended_while_verify_runs_are_not_half_seen(
    filled: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append between verify's start and its workers' reads is not seen by either: the
    report is the one of the ledger as it was when verify began."""
    before = filled.head()
    start = verify._Workers.__enter__

    def append_then_start(self: Any) -> Any:
        filled.append_many([choice("m1", "withdraw"), choice("m2", "grant")])
        return start(self)

    monkeypatch.setattr(verify._Workers, "__enter__", append_then_start)
    report = in_ranges(filled, size=3)
    assert report.ok, (report.problems, report.projection_problems)
    assert report.events_checked == before.seq and report.head == before
    assert filled.head().seq == before.seq + 2


# ---- a killed verify leaves nothing behind ---------------------------------------------------

KILLED = textwrap.dedent(
    """
    import sys
    from askfirst.ledger import store, verify
    verify.verify(store.create(sys.argv[1]), workers=2, range_size=50)
    """
)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_killed_verify_leaves_no_worker_and_no_file(ledger: Ledger, tmp_path: Path) -> None:
    fill(ledger, subjects=2_000, choices=2_000)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": os.pathsep.join(sys.path)}
    url = ledger.engine.url.render_as_string(hide_password=False)
    for _ in range(3):  # killed while its workers run, whatever they are doing
        proc = subprocess.Popen([sys.executable, "-c", KILLED, url], env=env)
        workers: list[int] = []
        deadline = time.monotonic() + 60
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            workers = children_of(proc.pid)
            time.sleep(0.005)
        assert len(workers) == 2, "the workers did not start"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(alive(w) for w in workers)
        assert list(scratch.iterdir()) == []
    assert alone(ledger).ok


def test_a_worker_ends_when_its_input_ends_or_its_parent_is_gone(filled: Ledger) -> None:
    """Where there is no parent-death signal (not Linux), a worker still ends: at the end
    of its input; and one that finds its parent gone before it could ask for the signal
    leaves at once."""
    where = verify._where
    with filled.engine.connect() as conn, conn.begin():
        place = where(conn)
        assert place is not None
        for parent, code in ((os.getpid(), 0), (1, 1)):
            worker = subprocess.Popen(
                [sys.executable, "-P", chain.__file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert worker.stdin is not None and worker.stdout is not None
            chain.send(worker.stdin, {**place, "parent": parent})
            if code == 0:
                chain.send(worker.stdin, (0, 5, None))
                count, *_ = chain.receive(worker.stdout)
                assert count == 5
            worker.stdin.close()
            assert worker.wait(timeout=30) == code
            worker.stdout.close()
