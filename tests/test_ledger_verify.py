"""``Ledger.verify``: tampering done directly in the database is found and located.

Each test edits the tables with plain SQL, as someone with database access would, then
checks that verification is not ok and names the first bad seq (or the projection table
that disagrees). Every test runs on SQLite and on PostgreSQL.

Most tests verify once, after all their writes: on SQLite a second verify in the same
process can read a stale copy of the database (see
``test_verify_sees_changes_made_after_an_earlier_verify``), and these tests are about
what verify detects, not about that bug.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from askfirst import Event, Ledger, NewEvent, SubjectIn, VerifyReport, notices, open_ledger
from askfirst.ledger.events import GENESIS, event_hash
from conftest import fresh_pg_url, publish_all

GENAI = "genai-training"
RESEARCH = "third-party-research"
EVENT_COLUMNS = (
    "seq", "type", "subject_id", "purpose", "value", "notice_version", "actor", "source",
    "recorded_at", "prev_hash", "hash",
)  # fmt: skip


def choice(
    subject: str, action: str = "grant", *, actor: str | None = None, purpose: str = GENAI
) -> NewEvent:
    return NewEvent(
        type="choice",
        subject=subject,
        actor=actor or subject,
        source="test",
        purpose=purpose,
        value=action,
    )


def fact(type: str, subject: str, value: str | None = None, **kw: Any) -> NewEvent:
    return NewEvent(type=type, subject=subject, actor="system", source="test", value=value, **kw)


def run_sql(led: Ledger, sql: str, **params: Any) -> None:
    with led.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def event_row(led: Ledger, seq: int) -> dict[str, Any]:
    with led.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM events WHERE seq = :s"), {"s": seq}).one()
    return dict(row._mapping)


def all_events(led: Ledger) -> list[Event]:
    return led.events(limit=1_000_000)


def rechain(led: Ledger, start: int) -> None:
    """Recompute every hash from ``start`` on and move the head: a consistent rewrite."""
    prev = event_row(led, start - 1)["hash"] if start > 1 else GENESIS
    for e in all_events(led)[start - 1 :]:
        digest = event_hash(*astuple(e)[:-2], prev)
        run_sql(
            led,
            "UPDATE events SET prev_hash = :p, hash = :h WHERE seq = :s",
            p=prev,
            h=digest,
            s=e.seq,
        )
        prev = digest
    last = all_events(led)[-1]
    run_sql(
        led,
        "UPDATE ledger_head SET seq = :s, hash = :h, recorded_at = :t",
        s=last.seq,
        h=last.hash,
        t=last.recorded_at,
    )


def assert_chain_bad_at(report: VerifyReport, seq: int) -> None:
    assert not report.ok
    assert report.first_bad_seq == seq
    assert report.problems and report.problems[0].startswith(f"seq {seq}:")


@pytest.fixture
def history(ledger: Ledger) -> Ledger:
    """Fourteen events of every kind; the last one is m1's grant. Seq 7 publishes the
    notice delivered at seq 8 (its terms sit beside the chain, which vouches for them)."""
    ledger.register(
        [
            SubjectIn(id="m1", jurisdiction="DE"),
            SubjectIn(id="m2", jurisdiction="US"),
            SubjectIn(id="m3"),
        ],
        since=datetime.now(UTC) - timedelta(days=10),
    )
    notices.publish(ledger, ledger.policy, GENAI, changes="First version.", actor="system")  # 7
    ledger.append_many(
        [
            fact("notice-delivered", "m2", purpose=GENAI),  # 8
            choice("m2", "object", purpose=RESEARCH),  # 9
            fact("gpc", "m3", "1"),  # 10
            choice("m1", "withdraw", actor="staff:alice"),  # 11
            fact("status", "m3", "closed"),  # 12
            fact("jurisdiction", "m2", "IN"),  # 13
        ]
    )
    ledger.append(choice("m1"))  # 14
    assert ledger.head().seq == 14
    return ledger


# ---- a clean ledger ------------------------------------------------------------------------


def test_clean_ledger_verifies(history: Ledger) -> None:
    report = history.verify()
    assert report.ok
    assert (report.first_bad_seq, report.problems, report.projection_problems) == (None, [], [])
    assert report.events_checked == 14
    assert report.head == history.head()
    head = history.head()
    assert history.verify(expected_head=head.hash).ok
    assert history.verify(expected_head=f"{head.seq}:{head.hash}").ok
    # a head recorded earlier is still in the history when nothing was rewritten
    assert history.verify(expected_head=all_events(history)[5].hash).ok


def test_empty_ledger_verifies(ledger: Ledger) -> None:
    report = ledger.verify()
    assert report.ok and report.events_checked == 0


# ---- events edited, deleted, inserted, reordered ------------------------------------------


def changed(value: Any) -> Any:
    if isinstance(value, int):
        return value + 1
    if len(value) == 64:  # a hash: same length, one character different
        return value[:-1] + ("0" if value[-1] != "0" else "1")
    return value + "!"


@pytest.mark.parametrize("column", [c for c in EVENT_COLUMNS if c != "seq"])
def test_edited_field_is_found_at_its_seq(history: Ledger, column: str) -> None:
    old = event_row(history, 9)[column]
    run_sql(history, f"UPDATE events SET {column} = :v WHERE seq = 9", v=changed(old))
    assert_chain_bad_at(history.verify(), 9)


@pytest.mark.parametrize("seq", [1, 7, 13])
def test_deleted_event_is_found(history: Ledger, seq: int) -> None:
    run_sql(history, "DELETE FROM events WHERE seq = :s", s=seq)
    report = history.verify()
    assert_chain_bad_at(report, seq)
    assert "missing" in report.problems[0]


def test_last_event_deleted_is_found_by_the_head(history: Ledger) -> None:
    run_sql(history, "DELETE FROM events WHERE seq = 14")
    report = history.verify()
    assert_chain_bad_at(report, 14)
    assert "cut off the end" in report.problems[0]


def test_last_event_deleted_and_head_moved_back(history: Ledger) -> None:
    """Nothing left in the chain shows it; the projections and an expected head do."""
    recorded = history.head()
    run_sql(history, "DELETE FROM events WHERE seq = 14")
    e13 = event_row(history, 13)
    run_sql(
        history,
        "UPDATE ledger_head SET seq = 13, hash = :h, recorded_at = :t",
        h=e13["hash"],
        t=e13["recorded_at"],
    )
    report = history.verify()
    assert not report.ok
    assert report.problems == [] and report.first_bad_seq is None
    assert any(
        p.startswith("choice_state: row 'm1/genai-training'") for p in report.projection_problems
    )
    against = history.verify(expected_head=recorded.hash)
    assert not against.ok
    assert any("rewritten or cut" in p for p in against.problems)


def forged_grant(seq: int, prev: str, at: int, *, good_hash: bool = True) -> dict[str, Any]:
    row = {
        "seq": seq,
        "type": "choice",
        "subject_id": "m3",
        "purpose": GENAI,
        "value": "grant",
        "notice_version": 1,
        "actor": "m3",
        "source": "web",
        "recorded_at": at,
        "prev_hash": prev,
    }
    row["hash"] = event_hash(*[row[c] for c in EVENT_COLUMNS[:-1]]) if good_hash else "f" * 64
    return row


INSERT = (
    "INSERT INTO events (seq, type, subject_id, purpose, value, notice_version, actor, source, "
    "recorded_at, prev_hash, hash) VALUES (:seq, :type, :subject_id, :purpose, :value, "
    ":notice_version, :actor, :source, :recorded_at, :prev_hash, :hash)"
)


@pytest.mark.parametrize("good_hash", [True, False], ids=["chained", "bad-hash"])
def test_forged_event_after_the_head_is_found(history: Ledger, good_hash: bool) -> None:
    head = history.head()
    run_sql(history, INSERT, **forged_grant(15, head.hash, head.recorded_at, good_hash=good_hash))
    assert_chain_bad_at(history.verify(), 15)


def test_forged_event_with_head_moved_is_found_by_the_projections(history: Ledger) -> None:
    head = history.head()
    row = forged_grant(15, head.hash, head.recorded_at)
    run_sql(history, INSERT, **row)
    run_sql(history, "UPDATE ledger_head SET seq = 15, hash = :h", h=row["hash"])
    report = history.verify()
    assert not report.ok
    assert report.problems == []
    assert report.projection_problems == [
        "choice_state: row 'm3/genai-training' is missing (the events have it)"
    ]


def test_forged_event_inserted_in_the_middle_is_found(history: Ledger) -> None:
    """Events 11..14 move up one seq to make room for a forged grant at 11."""
    e10 = event_row(history, 10)
    run_sql(history, "UPDATE events SET seq = seq + 100 WHERE seq > 10")
    run_sql(history, "UPDATE events SET seq = seq - 99 WHERE seq > 100")
    run_sql(history, INSERT, **forged_grant(11, e10["hash"], e10["recorded_at"]))
    run_sql(history, "UPDATE ledger_head SET seq = 15")
    report = history.verify()
    assert not report.ok
    # The forged event is consistent in itself; the break shows at it or right after it.
    assert report.first_bad_seq in (11, 12)


@pytest.mark.parametrize(("a", "b"), [(8, 9), (7, 12)])
def test_reordered_events_are_found(history: Ledger, a: int, b: int) -> None:
    """Swap the contents of two events, keeping their seq numbers."""
    row_a, row_b = event_row(history, a), event_row(history, b)
    sets = ", ".join(f"{c} = :{c}" for c in EVENT_COLUMNS[1:])
    run_sql(history, "UPDATE events SET hash = :h WHERE seq = :s", h="0" * 64, s=b)
    run_sql(history, f"UPDATE events SET {sets} WHERE seq = {a}", **{**row_b, "seq": a})
    run_sql(history, f"UPDATE events SET {sets} WHERE seq = {b}", **{**row_a, "seq": b})
    assert_chain_bad_at(history.verify(), a)


def test_wholesale_rewrite_is_found_only_against_an_expected_head(history: Ledger) -> None:
    """Event 11 (m1's withdrawal) becomes a grant by m1, and every hash after is redone."""
    recorded = history.head()
    before_edit = event_row(history, 10)["hash"]
    run_sql(history, "UPDATE events SET value = 'grant', actor = 'm1' WHERE seq = 11")
    rechain(history, 11)
    assert history.head().hash != recorded.hash

    report = history.verify()
    assert report.ok, "a consistent rewrite passes the chain check: nothing inside shows it"
    against = history.verify(expected_head=recorded.hash)
    assert not against.ok
    assert any("rewritten or cut" in p for p in against.problems)
    assert not history.verify(expected_head=f"{recorded.seq}:{recorded.hash}").ok
    # the history before the edit is untouched, so a head recorded then still checks out
    assert history.verify(expected_head=f"10:{before_edit}").ok


# ---- projections edited by hand ------------------------------------------------------------

PROJECTION_TAMPERS = {
    "status-changed": ("UPDATE subject_state SET status = 'deceased' WHERE subject_id = 'm1'",
                       "subject_state: row 'm1' disagrees"),
    "subject-row-deleted": ("DELETE FROM subject_state WHERE subject_id = 'm2'",
                            "subject_state: row 'm2' is missing"),
    "choice-row-deleted": ("DELETE FROM choice_state WHERE subject_id = 'm1'",
                           "choice_state: row 'm1/genai-training' is missing"),
    "choice-row-extra": ("INSERT INTO choice_state (subject_id, purpose, action, notice_version, "
                         "seq) VALUES ('m3', 'genai-training', 'grant', 1, 12)",
                         "choice_state: row 'm3/genai-training' has no events behind it"),
    "choice-action-changed": ("UPDATE choice_state SET action = 'grant' WHERE subject_id = 'm2'",
                              "choice_state: row 'm2/third-party-research' disagrees"),
    "notice-row-deleted": ("DELETE FROM notice_state", "notice_state: row 'm2/genai-training/1'"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PROJECTION_TAMPERS))
def test_edited_projection_is_named(history: Ledger, case: str) -> None:
    sql, expected = PROJECTION_TAMPERS[case]
    run_sql(history, sql)
    report = history.verify()
    assert not report.ok
    assert report.problems == [] and report.first_bad_seq is None
    assert len(report.projection_problems) == 1
    assert report.projection_problems[0].startswith(expected)


# ---- regressions ------------------------------------------------------------------------


def test_verify_sees_changes_made_after_an_earlier_verify(history: Ledger) -> None:
    assert history.verify().ok
    history.append(choice("m2", "withdraw", purpose=RESEARCH))
    report = history.verify()
    assert report.ok, report.problems
    assert report.events_checked == 15
    run_sql(history, "UPDATE events SET actor = 'mallory' WHERE seq = 15")
    assert_chain_bad_at(history.verify(), 15)


def test_sqlite_text_in_an_integer_column_is_found_at_its_seq(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with open_ledger(url, create=True) as led:
        led.register([SubjectIn(id=f"m{i}") for i in range(4)])
        run_sql(led, "UPDATE events SET recorded_at = 'yesterday' WHERE seq = 5")
        assert_chain_bad_at(led.verify(), 5)


# ---- any single-row tamper ----------------------------------------------------------------


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


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["grant", "withdraw", "object", "gpc", "notice", "status", "moved"]),
        st.integers(0, 2),
        st.sampled_from([GENAI, RESEARCH]),
    ),
    max_size=12,
)
# Values that fit every column on PostgreSQL (no NUL, at most 32 characters).
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=32
)


def build(led: Ledger, subjects: int, steps: list[tuple[str, int, str]]) -> int:
    publish_all(led)
    led.register([SubjectIn(id=f"s{i}", jurisdiction="US") for i in range(subjects)])
    batch = []
    for what, who, purpose in steps:
        sid = f"s{who % subjects}"
        if what in ("grant", "withdraw", "object"):
            batch.append(choice(sid, what, purpose=purpose))
        elif what == "gpc":
            batch.append(fact("gpc", sid, "1"))
        elif what == "notice":
            batch.append(fact("notice-delivered", sid, purpose=purpose))
        elif what == "status":
            batch.append(fact("status", sid, "deactivated"))
        else:
            batch.append(fact("jurisdiction", sid, "IN"))
    led.append_many(batch)
    return led.head().seq


def new_value(data: st.DataObject, column: str, n: int, others: list[Any]) -> Any:
    if column == "seq":  # a seq no other event has
        return data.draw(st.integers(-3, 0) | st.integers(n + 1, n + 5))
    if column == "recorded_at":
        return data.draw(st.integers(-(2**63), 2**63 - 1) | st.sampled_from(others))
    if column == "notice_version":
        return data.draw(st.none() | st.integers(-(2**31), 2**31 - 1) | st.sampled_from(others))
    if column == "hash":  # unique: never another event's hash
        return data.draw(TEXT)
    nullable = st.none() if column in ("purpose", "value") else st.nothing()
    return data.draw(TEXT | nullable | st.sampled_from(others))


def test_any_single_row_tamper_is_detected(
    new_url: Callable[[], str], request: pytest.FixtureRequest
) -> None:
    on_sqlite = "sqlite" in request.node.callspec.id

    @settings(
        max_examples=60 if on_sqlite else 20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(subjects=st.integers(1, 3), steps=STEPS, data=st.data())
    def check(subjects: int, steps: list[tuple[str, int, str]], data: st.DataObject) -> None:
        with open_ledger(new_url(), create=True) as led:
            n = build(led, subjects, steps)
            events = all_events(led)
            # the untouched ledger is a valid chain (checked without verify, see module doc)
            assert [e.seq for e in events] == list(range(1, n + 1))
            assert all(a.hash == b.prev_hash for a, b in itertools.pairwise(events))

            seq = data.draw(st.integers(1, n), label="seq")
            column = data.draw(st.sampled_from(EVENT_COLUMNS), label="column")
            old = event_row(led, seq)[column]
            with led.engine.connect() as conn:
                others = [v for (v,) in conn.execute(sa.text(f"SELECT {column} FROM events"))]
            value = new_value(data, column, n, [v for v in others if v != old] or [old])
            assume(value != old)
            run_sql(led, f"UPDATE events SET {column} = :v WHERE seq = :s", v=value, s=seq)

            report = led.verify()
            assert not report.ok
            assert report.first_bad_seq is not None
            if column != "seq" or value > n:
                assert report.first_bad_seq == seq

    check()


# ---- the published notices' terms, beside the chain ------------------------------------------

TERMS = "notices: the terms of 'genai-training' version 1"


def test_published_terms_edited_afterwards_are_found(history: Ledger) -> None:
    """A quiet rewording of what members were told (here, of what changed) is named."""
    run_sql(history, "UPDATE notices SET terms = replace(terms, 'First version.', 'Nothing.')")
    report = history.verify()
    assert not report.ok and report.problems == []
    assert report.projection_problems == [f"{TERMS} were edited since they were published (seq 7)"]


def test_published_terms_deleted_or_moved_are_found(history: Ledger) -> None:
    run_sql(history, "UPDATE notices SET seq = 8")
    assert history.verify().projection_problems == [
        f"{TERMS} name seq 8, which published no notice",
        "notices: the terms published at seq 7 ('genai-training' version 1) are gone",
    ]
    run_sql(history, "DELETE FROM notices")
    assert history.verify().projection_problems == [
        "notices: the terms published at seq 7 ('genai-training' version 1) are gone"
    ]


def test_published_terms_and_their_hash_rewritten_together_are_found(history: Ledger) -> None:
    """New terms with their own correct hash still do not match the hash in the chain."""
    import hashlib

    terms = "{}"
    digest = hashlib.sha256(terms.encode()).hexdigest()
    run_sql(history, "UPDATE notices SET terms = :t, hash = :h", t=terms, h=digest)
    assert history.verify().projection_problems == [
        f"{TERMS} do not match the event that published them (seq 7)"
    ]
