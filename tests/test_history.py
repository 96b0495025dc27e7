"""The events kept as columns (``ledger.history``) give the state the database folds.

Hypothesis writes a random history in two parts, reads the columns between them (so the
second part reaches them as events after their head), and holds every subject's state
from the columns, for every purpose, at times around the events and at both heads (the
columns then hold more than the pinned head), to the database's own fold
(``state.historic_sql``) and to ``State.fold`` of each subject's events (what
``decide()`` reads). Examples below show the columns noticing a different database.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from askfirst import EventType, Ledger, NewEvent, SubjectIn, decide_many, open_ledger
from askfirst.decisions import read_state
from askfirst.ledger import history, store
from askfirst.ledger import state as st_
from askfirst.ledger.events import Head
from askfirst.rules import Context, evaluate_many
from conftest import publish_all
from test_decisions import (
    BASE_US,
    DAY,
    POLICY,
    SPECS,
    SUBJECT_IDS,
    at_dt,
    fresh_ledger,
    steps,
    subject_ins,
)

Plan = list[tuple[str, str, dict[str, Any], int]]


def write(
    ledger: Ledger, plan: Plan, registrations: dict[str, SubjectIn], t: int, status: dict[str, str]
) -> tuple[int, list[int]]:
    """Append ``plan`` from time ``t`` on (registering each subject at its first step, as
    ``test_decisions.write_history`` does); the time reached and each step's time."""
    stamps = []
    for kind, sid, d, gap in plan:
        t += gap
        stamps.append(t)
        if sid not in status:
            ledger.register([registrations[sid]], since=at_dt(t))
            status[sid] = registrations[sid].status
            continue
        base: dict[str, Any] = {"subject": sid, "source": "test", "recorded_at": t}
        if kind == "choice":
            action = d["action"]
            if action == "grant" and status[sid] in ("closed", "deceased"):
                action = "object"  # the ledger refuses grants for them
            actor = "staff:ann" if d["staff"] and action != "grant" else sid
            new = NewEvent(type=EventType.CHOICE, actor=actor, purpose=d["purpose"],
                           value=action, notice_version=d["version"], **base)  # fmt: skip
        elif kind == "notice":
            new = NewEvent(type=EventType.NOTICE, actor="system", purpose=d["purpose"],
                           notice_version=d["version"], **base)  # fmt: skip
        elif kind == "gpc":
            new = NewEvent(type=EventType.GPC, actor=sid, value="1", **base)
        else:
            new = NewEvent(type=kind, actor="system", value=d["value"], **base)
            if kind == "status":
                status[sid] = d["value"]
        ledger.append(new)
    return t, stamps


def rows(table: Any) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: r["subject_id"])


def check_state(ledger: Ledger, head: Head, t: int) -> None:
    """For every purpose: the columns' state of everyone at ``t`` up to ``head`` equals
    the database's fold, and each subject's equals ``State.fold`` of its events."""
    for name in sorted(SPECS):
        p = POLICY.purpose(name)
        got = rows(history.state_at(ledger.engine, head, p.name, p.version, t))
        sql = st_.historic_sql(p.name, p.version, t, "", head.seq)
        want = rows(store.read_arrow(ledger.engine, sql, st_.arrow_schema()))
        assert got == want, f"{name} at {at_dt(t).isoformat()}, head {head.seq}"
        for r in got:
            evs = [e for e in ledger.subject_events(r["subject_id"], until=t) if e.seq <= head.seq]
            folded = asdict(st_.State.fold(evs, p.name, p.version))
            assert folded == {k: v for k, v in r.items() if k != "subject_id"}, r["subject_id"]


def candidate_times(stamps: Sequence[int]) -> list[int]:
    out = {BASE_US - DAY}
    for t in stamps:
        out.update((t - 1, t, t + 1))
    return sorted(out)


def _property(backend: str, pg_admin: sa.Engine | None, data: st.DataObject) -> None:
    registrations = {sid: data.draw(subject_ins(sid), label=sid) for sid in SUBJECT_IDS}
    plan = data.draw(steps(), label="steps")
    cut = data.draw(st.integers(0, len(plan)), label="columns read after step")
    with fresh_ledger(backend, pg_admin) as ledger:
        status: dict[str, str] = {}
        t, first = write(ledger, plan[:cut], registrations, BASE_US, status)
        before = ledger.head()
        history.state_at(ledger.engine, before, "feed-ranking", 1, t)  # read the columns
        _, second = write(ledger, plan[cut:], registrations, t, status)
        after = ledger.head()
        times = candidate_times(first + second)
        picked = data.draw(
            st.lists(st.sampled_from(times), min_size=1, max_size=3, unique=True), label="times"
        )
        # The events written since reach the columns; the head pinned before still counts
        # only what came before it.
        for at in [*picked, after.recorded_at]:
            check_state(ledger, after, at)
        for at in [*[x for x in picked if x <= before.recorded_at], before.recorded_at]:
            check_state(ledger, before, at)
        # decide_many for everyone at a past time reads the columns: the same decisions.
        name = data.draw(st.sampled_from(sorted(SPECS)), label="purpose")
        p, at = POLICY.purpose(name), picked[0]
        sql = read_state(ledger, p, at, in_database=True)
        want = evaluate_many(sql, Context(POLICY, p, at))
        assert decide_many(ledger, name, at=at_dt(at)).to_pylist() == want.to_pylist()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_columns_equal_the_database_for_any_history_sqlite(data: st.DataObject) -> None:
    _property("sqlite", None, data)


@pytest.mark.postgres
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_columns_equal_the_database_for_any_history_postgres(
    pg_admin: sa.Engine, data: st.DataObject
) -> None:
    _property("postgres", pg_admin, data)


# ---- examples ----------------------------------------------------------------------------------


def _ledger_with(path: Path, grants: Sequence[str]) -> Ledger:
    ledger = open_ledger(f"sqlite:///{path}", POLICY, create=True)
    publish_all(ledger, at=BASE_US - 100 * DAY)
    ledger.register([SubjectIn(id=s, jurisdiction="US") for s in ("a", "b")], since=at_dt(BASE_US))
    for i, sid in enumerate(grants):
        ledger.append(
            NewEvent(type=EventType.CHOICE, subject=sid, actor=sid, source="test",
                     purpose="feed-ranking", value="grant", recorded_at=BASE_US + (i + 1) * DAY)
        )  # fmt: skip
    return ledger


def _granted(table: Any) -> list[str]:
    return [r["subject_id"] for r in table.to_pylist() if r["choice_action"] == "grant"]


def test_columns_read_from_another_database_are_read_again() -> None:
    """One history asked about a database that is not the one it read (the same number
    of events, or more, or fewer) starts again, and answers for the one asked about."""
    with tempfile.TemporaryDirectory() as d:
        one = _ledger_with(Path(d) / "one.db", ["a"])
        two = _ledger_with(Path(d) / "two.db", ["b"])
        three = _ledger_with(Path(d) / "three.db", ["b", "a"])
        try:
            h = history.History()
            late = BASE_US + 10 * DAY
            for ledger, granted in ((one, ["a"]), (two, ["b"]), (three, ["a", "b"]),
                                    (one, ["a"])):  # fmt: skip
                view = h.view(ledger.engine, ledger.head())
                state = history.fold(view, "feed-ranking", 1, late, ledger.head().seq)
                assert sorted(_granted(state)) == granted
        finally:
            for ledger in (one, two, three):
                ledger.close()


def test_a_withdrawal_after_the_columns_were_read_counts_at_a_later_time(tmp_path: Path) -> None:
    """What a member says after a decision for everyone was made reaches the next one,
    and does not change the answer for a time before it."""
    ledger = _ledger_with(tmp_path / "l.db", ["a", "b"])
    try:
        before = at_dt(BASE_US + 5 * DAY)
        first = decide_many(ledger, "feed-ranking", at=before).to_pylist()
        assert [r["reason"] for r in first] == ["granted", "granted"]
        ledger.append(
            NewEvent(type=EventType.CHOICE, subject="a", actor="a", source="test",
                     purpose="feed-ranking", value="withdraw", recorded_at=BASE_US + 6 * DAY)
        )  # fmt: skip
        ledger.append(
            NewEvent(type=EventType.CHOICE, subject="b", actor="b", source="test",
                     purpose="feed-ranking", value="withdraw", recorded_at=BASE_US + 8 * DAY)
        )  # fmt: skip
        assert decide_many(ledger, "feed-ranking", at=before).to_pylist() == first
        later = decide_many(ledger, "feed-ranking", at=at_dt(BASE_US + 7 * DAY)).to_pylist()
        assert [(r["subject"], r["reason"]) for r in later] == [("a", "withdrawn"),
                                                                ("b", "granted")]  # fmt: skip
    finally:
        ledger.close()
