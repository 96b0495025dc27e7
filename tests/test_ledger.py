"""The consent ledger: appending, registering, importing JSONL, and the schema.

Every test runs on a fresh SQLite file and again on a fresh PostgreSQL schema. "Writes
nothing" is checked by comparing every ledger table, row by row, before and after.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from askfirst import (
    Event,
    InputError,
    Ledger,
    NewEvent,
    NotAuthorized,
    StorageError,
    SubjectIn,
    UnknownPurpose,
    UnknownSubject,
    load_policy,
    open_ledger,
)
from askfirst.gate.manifest import LedgerHeadRef, SnapshotManifest
from askfirst.ledger import tables
from askfirst.ledger.events import GENESIS, event_hash
from askfirst.ledger.imports import import_events, import_subjects
from askfirst.ledger.store import MIGRATIONS
from askfirst.lineage import list_snapshots, record, snapshots_of
from askfirst.times import iso, to_micros
from conftest import publish_all

GENAI = "genai-training"
RESEARCH = "third-party-research"
LEDGER_TABLES = (
    "events",
    "ledger_head",
    "subjects",
    "subject_state",
    "choice_state",
    "notice_state",
    "authority_state",
    "notices",
)
# Tables outside the chain: sign-in accounts, API tokens, the demo platform's content, and
# the gate's snapshot registry and lineage, notices' mail, cases and their evidence, names.
OTHER_TABLES = (
    "accounts",
    "api_tokens",
    "sessions",
    "content",
    "snapshots",
    "lineage",
    "withdrawals",
    "models",
    "model_snapshots",
    "tasks",
    "recipients",
    "deliveries",
    "outbox",
    "mail",
    "one_click",
    "signin_links",
    "cases",
    "case_steps",
    "evidence",
    "former_names",
    "forgotten_names",
)


# ---- helpers ------------------------------------------------------------------------------


def choice(
    subject: str,
    action: str = "grant",
    *,
    actor: str | None = None,
    purpose: str = GENAI,
    version: int | None = None,
    at: int | None = None,
) -> NewEvent:
    return NewEvent(
        type="choice",
        subject=subject,
        actor=actor or subject,
        source="test",
        purpose=purpose,
        value=action,
        notice_version=version,
        recorded_at=at,
    )


def fact(type: str, subject: str, value: str | None = None, **kw: Any) -> NewEvent:
    return NewEvent(type=type, subject=subject, actor="system", source="test", value=value, **kw)


def all_events(led: Ledger) -> list[Event]:
    return led.events(limit=1_000_000)


def table_rows(led: Ledger, name: str) -> list[tuple[Any, ...]]:
    table = tables.metadata.tables[name]
    with led.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.select(table)))


def snapshot(led: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every ledger table: equal before and after means nothing was written."""
    return {name: table_rows(led, name) for name in LEDGER_TABLES}


def assert_chained(evs: list[Event]) -> None:
    """The events form one chain from the genesis hash, seq 1, 2, 3, ..."""
    assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
    prev = GENESIS
    for e in evs:
        assert e.prev_hash == prev, f"seq {e.seq} does not point at the event before"
        assert e.hash == event_hash(*astuple(e)[:-1])  # fields in hashing order
        prev = e.hash


def days_ago(n: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=n)


@pytest.fixture
def people(ledger: Ledger) -> Ledger:
    """m1 (DE) and m2 (US) active, m3 closed, m4 deceased; registered two days ago, after
    the purposes' notices were published."""
    publish_all(ledger, at=to_micros(days_ago(3)))
    ledger.register(
        [
            SubjectIn(id="m1", jurisdiction="DE", handle="purplecat", names=["Purple Cat"]),
            SubjectIn(id="m2", jurisdiction="US"),
            SubjectIn(id="m3", status="closed"),
            SubjectIn(id="m4"),
        ],
        since=days_ago(2),
    )
    ledger.append(fact("status", "m4", "deceased"))
    return ledger


# ---- appending ------------------------------------------------------------------------------


def test_appended_events_form_a_chain_and_head_follows(people: Ledger) -> None:
    before = all_events(people)
    appended = [
        people.append(choice("m1", "grant")),
        people.append(choice("m2", "object", purpose=RESEARCH)),
        people.append(fact("gpc", "m2", "1")),
        *people.append_many(
            [fact("notice-delivered", "m1", purpose=GENAI), choice("m1", "withdraw")]
        ),
    ]
    evs = all_events(people)
    assert evs == before + appended
    assert_chained(evs)
    assert [e.seq for e in appended] == list(range(len(before) + 1, len(evs) + 1))
    assert all(a.recorded_at <= b.recorded_at for a, b in itertools.pairwise(evs))
    head = people.head()
    assert (head.seq, head.hash, head.recorded_at) == (
        evs[-1].seq,
        evs[-1].hash,
        evs[-1].recorded_at,
    )
    # the choice is bound to the purpose's current notice version when none is given
    assert appended[0].notice_version == load_policy().purpose(GENAI).version


def test_empty_ledger_head_is_genesis(ledger: Ledger) -> None:
    head = ledger.head()
    assert (head.seq, head.hash) == (0, GENESIS)
    assert ledger.append_many([]) == []
    assert ledger.head().seq == 0


def test_register_records_each_subjects_starting_state(ledger: Ledger) -> None:
    since = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
    evs = ledger.register(
        [
            SubjectIn(
                id="m1",
                jurisdiction="de",
                handle="@PurpleCat",
                names=["Purple Cat"],
                birth_date="2010-02-28",
            ),
            SubjectIn(id="org1", kind="organization", jurisdiction="US-CA"),
            SubjectIn(id="p1", kind="person", status="deceased", minor=False),
        ],
        since=since,
    )
    assert evs == all_events(ledger)
    assert_chained(evs)
    assert {e.recorded_at for e in evs} == {to_micros(since)}
    assert [(e.subject, e.type, e.value) for e in evs] == [
        ("m1", "subject", "member"),
        ("m1", "jurisdiction", "DE"),
        ("m1", "minor", "until:2028-02-28"),
        ("org1", "subject", "organization"),
        ("org1", "jurisdiction", "US-CA"),
        ("p1", "subject", "person"),
        ("p1", "jurisdiction", ""),
        ("p1", "minor", "false"),
        ("p1", "status", "deceased"),
    ]
    assert table_rows(ledger, "subjects") == [
        ("m1", "purplecat", '["Purple Cat"]', None),
        ("org1", None, "[]", None),
        ("p1", None, "[]", None),
    ]
    assert table_rows(ledger, "subject_state") == [
        # id, kind, registered_seq, jurisdiction, seq, status, seq, minor, seq, gpc_seq
        ("m1", "member", 1, "DE", 2, "active", None, "until:2028-02-28", 3, None),
        ("org1", "organization", 4, "US-CA", 5, "active", None, None, None, None),
        ("p1", "person", 6, "", 7, "deceased", 9, "false", 8, None),
    ]
    assert ledger.subject_exists("m1") and not ledger.subject_exists("m9")
    assert [e.type for e in ledger.subject_events("org1")] == ["subject", "jurisdiction"]


def test_projections_follow_the_events(people: Ledger) -> None:
    grant = people.append(choice("m1", "grant"))
    research = people.append(choice("m1", "grant", purpose=RESEARCH))
    notice = people.append(fact("notice-delivered", "m1", purpose=GENAI))
    people.append(fact("notice-delivered", "m1", purpose=GENAI))  # a repeat keeps the first
    withdraw = people.append(choice("m1", "withdraw", actor="staff:alice"))
    gpc = people.append(fact("gpc", "m2", "1"))
    moved = people.append(fact("jurisdiction", "m2", "IN"))
    closed = people.append(fact("status", "m2", "closed"))
    assert withdraw.actor == "staff:alice"

    assert table_rows(people, "choice_state") == [
        ("m1", GENAI, "withdraw", 1, withdraw.seq),
        ("m1", RESEARCH, "grant", 1, research.seq),
    ]
    assert grant.seq < withdraw.seq
    assert table_rows(people, "notice_state") == [("m1", GENAI, 1, notice.seq, notice.recorded_at)]
    m2 = next(r for r in table_rows(people, "subject_state") if r[0] == "m2")
    assert m2[3:] == ("IN", moved.seq, "closed", closed.seq, None, None, gpc.seq)


def test_staff_may_stop_a_use_and_a_closed_member_may_withdraw(people: Ledger) -> None:
    """The positive side of the authority rules: these are accepted and recorded."""
    evs = people.append_many(
        [
            choice("m2", "object", actor="staff:bob"),
            choice("m3", "withdraw"),
            choice("m4", "object", actor="staff:carol"),
        ]
    )
    assert [(e.subject, e.value, e.actor) for e in all_events(people)[-3:]] == [
        ("m2", "object", "staff:bob"),
        ("m3", "withdraw", "m3"),
        ("m4", "object", "staff:carol"),
    ]
    assert people.head().hash == evs[-1].hash


def test_given_times_are_kept_when_in_order(ledger: Ledger) -> None:
    ledger.register([SubjectIn(id="m1")], since=days_ago(3))
    head = ledger.head()
    same = ledger.append(choice("m1", at=head.recorded_at))
    later = ledger.append(choice("m1", "withdraw", at=head.recorded_at + 5_000_000))
    assert (same.recorded_at, later.recorded_at) == (head.recorded_at, head.recorded_at + 5_000_000)
    assert ledger.head().recorded_at == later.recorded_at


# Each bad event: (what to append, error class, fragments the message must contain).
BadCase = Callable[[Ledger], tuple[NewEvent, type[InputError], tuple[str, ...]]]
BAD_EVENTS: dict[str, BadCase] = {
    "unknown-subject": lambda led: (
        choice("ghost"),
        UnknownSubject,
        ("'ghost'", "askfirst subjects import"),
    ),
    "unknown-subject-fact": lambda led: (fact("gpc", "ghost", "1"), UnknownSubject, ("'ghost'",)),
    "unknown-purpose": lambda led: (
        choice("m1", purpose="ad-targeting"),
        UnknownPurpose,
        ("'ad-targeting'", GENAI, RESEARCH),
    ),
    "unknown-purpose-notice": lambda led: (
        fact("notice-delivered", "m1", purpose="ad-targeting"),
        UnknownPurpose,
        ("'ad-targeting'",),
    ),
    "choice-notice-version-above-current": lambda led: (
        choice("m1", version=2),
        InputError,
        ("notice version 2", f"'{GENAI}'", "current one is 1"),
    ),
    "notice-version-above-current": lambda led: (
        fact("notice-delivered", "m1", purpose=GENAI, notice_version=7),
        InputError,
        ("notice version 7", "current one is 1"),
    ),
    "recorded-before-head": lambda led: (
        choice("m1", at=led.head().recorded_at - 1),
        InputError,
        (iso(led.head().recorded_at - 1), "goes back before the ledger head"),
    ),
    "recorded-in-future": lambda led: (
        choice("m1", at=to_micros(datetime.now(UTC) + timedelta(hours=1))),
        InputError,
        ("in the future",),
    ),
    "grant-by-another-member": lambda led: (
        choice("m1", actor="m2"),
        NotAuthorized,
        ("'m2'", "'m1'", "grant"),
    ),
    "grant-by-staff": lambda led: (
        choice("m1", actor="staff:alice"),
        NotAuthorized,
        ("'staff:alice'", "'m1'"),
    ),
    "withdraw-by-another-member": lambda led: (
        choice("m1", "withdraw", actor="m2"),
        NotAuthorized,
        ("'m2'", "'m1'"),
    ),
    "grant-for-closed": lambda led: (choice("m3"), InputError, ("'m3'", "closed")),
    "grant-for-deceased": lambda led: (choice("m4"), InputError, ("'m4'", "deceased")),
    "no-actor": lambda led: (choice("m1", actor=" "), InputError, ("actor",)),
    "register-again": lambda led: (
        fact("subject", "m1", "member"),
        InputError,
        ("'m1'", "already registered"),
    ),
}


@pytest.mark.parametrize("position", ["alone", "third-in-batch"])
@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
def test_bad_event_is_refused_and_nothing_is_written(
    people: Ledger, case: str, position: str
) -> None:
    before = snapshot(people)
    head = people.head()
    bad, error, fragments = BAD_EVENTS[case](people)
    batch = [bad] if position == "alone" else [choice("m1"), fact("gpc", "m2", "1"), bad]
    with pytest.raises(error) as info:
        if position == "alone":
            people.append(bad)
        else:
            people.append_many(batch)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert info.value.index == len(batch) - 1
    assert people.head() == head
    assert snapshot(people) == before


def test_closed_then_grant_in_one_batch_is_refused(people: Ledger) -> None:
    """A status change earlier in the same batch counts for the events after it."""
    before = snapshot(people)
    with pytest.raises(InputError, match="'m1' is closed") as info:
        people.append_many([fact("status", "m1", "closed"), choice("m1", "grant")])
    assert info.value.index == 1
    assert snapshot(people) == before


def test_register_twice_is_refused_and_writes_nothing(people: Ledger) -> None:
    before = snapshot(people)
    with pytest.raises(InputError, match="'m2' is already registered") as info:
        people.register([SubjectIn(id="m9"), SubjectIn(id="m2")])
    assert info.value.index == 1
    assert snapshot(people) == before


# Values the ledger stores (and hashes forever) without a check. Each should be refused.
INVALID_VALUES = {
    "event-type": fact("bogus", "m1", "x"),
    "choice-action": choice("m1", "maybe"),
    "status": fact("status", "m1", "zombie"),
    "jurisdiction": fact("jurisdiction", "m1", "XX"),
    "minor": fact("minor", "m1", "perhaps"),
    "gpc": fact("gpc", "m1", "0"),
    "notice-version-0": choice("m1", version=0),
    "notice-version-negative": choice("m1", version=-1),
    "subject-kind": fact("subject", "m9", "alien"),
}


@pytest.mark.parametrize("case", sorted(INVALID_VALUES))
def test_invalid_event_values_are_refused(people: Ledger, case: str) -> None:
    before = snapshot(people)
    with pytest.raises(InputError):
        people.append(INVALID_VALUES[case])
    assert snapshot(people) == before


def test_another_member_cannot_declare_someone_deceased(people: Ledger) -> None:
    before = snapshot(people)
    with pytest.raises(NotAuthorized):
        people.append(
            NewEvent(type="status", subject="m1", actor="m2", source="web", value="deceased")
        )
    assert snapshot(people) == before


# ---- importing JSONL -----------------------------------------------------------------------


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


T0 = "2026-03-01T12:00:00Z"
T1 = "2026-03-02T12:00:00Z"
T2 = "2026-03-03T12:00:00Z"


@pytest.fixture
def registered(ledger: Ledger) -> Ledger:
    publish_all(ledger, at=to_micros(datetime(2026, 1, 31, tzinfo=UTC)))
    ledger.register(
        [SubjectIn(id="m1", handle="purplecat"), SubjectIn(id="m2")],
        since=datetime(2026, 2, 1, tzinfo=UTC),
    )
    return ledger


def test_import_events_appends_every_line(registered: Ledger, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            {
                "type": "choice",
                "subject": "m1",
                "purpose": GENAI,
                "action": "grant",
                "recorded_at": T0,
            },
            "",
            {"type": "notice-delivered", "subject": "m2", "purpose": GENAI, "recorded_at": T1},
            {
                "type": "choice",
                "subject": "m1",
                "purpose": GENAI,
                "action": "withdraw",
                "recorded_at": T2,
                "actor": "staff:eve",
            },
            {"type": "gpc", "subject": "m2", "recorded_at": T2},
            {"type": "status", "subject": "m2", "status": "deceased", "recorded_at": T2},
        ],
    )
    evs = import_events(registered, path)
    assert evs == all_events(registered)[-5:]
    assert_chained(all_events(registered))
    assert [(e.type, e.subject, e.value, e.actor, iso(e.recorded_at)) for e in evs] == [
        ("choice", "m1", "grant", "m1", T0),
        ("notice-delivered", "m2", None, "system", T1),
        ("choice", "m1", "withdraw", "staff:eve", T2),
        ("gpc", "m2", "1", "m2", T2),
        ("status", "m2", "deceased", "system", T2),
    ]


GOOD_CHOICE = {"type": "choice", "subject": "m1", "purpose": GENAI, "action": "grant"}

# name -> (lines of the file, the line the error must name, fragments of the message)
BAD_EVENT_FILES: dict[str, tuple[list[Any], int, tuple[str, ...]]] = {
    "bad-json": ([GOOD_CHOICE, GOOD_CHOICE, '{"type": "gpc", "subject": "m1"'], 3,
                 ("not valid JSON",)),
    "not-an-object": ([GOOD_CHOICE, "[1, 2]"], 2, ("JSON object",)),
    "unknown-field": ([GOOD_CHOICE, {**GOOD_CHOICE, "colour": "blue"}], 2, ("colour",)),
    "missing-field": ([GOOD_CHOICE, {"type": "choice", "subject": "m1", "action": "grant"}], 2,
                      ("purpose",)),
    "unknown-type": ([{"type": "vote", "subject": "m1"}], 1, ("type",)),
    "bad-action": ([GOOD_CHOICE, {**GOOD_CHOICE, "action": "maybe"}], 2, ("action",)),
    "bad-time": ([{**GOOD_CHOICE, "recorded_at": "yesterday"}], 1, ("recorded_at",)),
    "time-without-zone": ([{**GOOD_CHOICE, "recorded_at": "2026-03-01T12:00:00"}], 1,
                          ("recorded_at", "time zone")),
    "time-goes-back": ([{**GOOD_CHOICE, "recorded_at": T1}, "",
                        {"type": "gpc", "subject": "m2", "recorded_at": T2},
                        {**GOOD_CHOICE, "action": "withdraw", "recorded_at": T0}], 4,
                       ("goes back",)),
    "before-ledger-head": ([{**GOOD_CHOICE, "recorded_at": "2026-01-01T00:00:00Z"}], 1,
                           ("goes back before the ledger head",)),
    "unknown-subject": ([GOOD_CHOICE, "", "", {**GOOD_CHOICE, "subject": "ghost"}], 4,
                        ("'ghost'",)),
    "unknown-purpose": ([GOOD_CHOICE, {**GOOD_CHOICE, "purpose": "ads"}], 2, ("'ads'",)),
    "not-authorized": ([GOOD_CHOICE, {**GOOD_CHOICE, "actor": "m2"}], 2, ("'m2'",)),
    "bad-jurisdiction": ([{"type": "jurisdiction", "subject": "m1", "jurisdiction": "XX"}], 1,
                         ("'XX'",)),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_EVENT_FILES))
def test_bad_events_file_names_the_line_and_stores_nothing(
    registered: Ledger, tmp_path: Path, case: str
) -> None:
    lines, lineno, fragments = BAD_EVENT_FILES[case]
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    before = snapshot(registered)
    with pytest.raises(InputError) as info:
        import_events(registered, path)
    message = str(info.value)
    assert message.startswith(f"{path} line {lineno}: ")
    detail = message.removeprefix(f"{path} line {lineno}: ")
    for fragment in fragments:
        assert fragment in detail
    assert snapshot(registered) == before


def test_empty_or_missing_events_file_is_refused(registered: Ledger, tmp_path: Path) -> None:
    before = snapshot(registered)
    empty = write_jsonl(tmp_path / "empty.jsonl", ["", ""])
    with pytest.raises(InputError, match="no lines"):
        import_events(registered, empty)
    with pytest.raises(InputError, match="cannot read"):
        import_events(registered, tmp_path / "absent.jsonl")
    assert snapshot(registered) == before


def test_import_subjects_registers_every_line(ledger: Ledger, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "subjects.jsonl",
        [
            {
                "id": "m1",
                "kind": "member",
                "jurisdiction": "DE",
                "handle": "purplecat",
                "names": ["Purple Cat"],
                "birth_date": "1990-04-01",
            },
            {"id": "acme", "kind": "organization", "jurisdiction": "US"},
            "",
            {"id": "p1", "kind": "person", "status": "deceased"},
        ],
    )
    since = datetime(2026, 2, 1, tzinfo=UTC)
    evs = import_subjects(ledger, path, since=since)
    assert evs == all_events(ledger)
    assert {e.recorded_at for e in evs} == {to_micros(since)}
    assert [r[:3] for r in table_rows(ledger, "subject_state")] == [
        ("acme", "organization", 4),
        ("m1", "member", 1),
        ("p1", "person", 6),
    ]
    assert table_rows(ledger, "subjects")[1] == ("m1", "purplecat", '["Purple Cat"]', None)


M1 = {"id": "m1", "handle": "purplecat"}
BAD_SUBJECT_FILES: dict[str, tuple[list[Any], int, tuple[str, ...]]] = {
    "bad-json": ([M1, "{'id': 'm2'}"], 2, ("not valid JSON",)),
    "unknown-field": ([M1, {"id": "m2", "phone": "+1 555 0100"}], 2, ("phone",)),
    "missing-field": ([M1, {"kind": "member"}], 2, ("id",)),
    "bad-jurisdiction": ([M1, {"id": "m2"}, {"id": "m3", "jurisdiction": "XX"}], 3,
                         ("jurisdiction", "'XX'")),
    "bad-kind": ([{"id": "m2", "kind": "robot"}], 1, ("kind",)),
    "bad-birth-date": ([{"id": "m2", "birth_date": "1990-02-30"}], 1, ("birth_date",)),
    "duplicate-id": ([M1, {"id": "m2"}, "", {"id": "m2"}], 4, ("'m2'", "twice")),
    "duplicate-handle": ([M1, {"id": "m2", "handle": "@PurpleCat"}], 2,
                         ("'purplecat'", "twice")),
    "handle-taken": ([{"id": "m2"}, {"id": "m3", "handle": "taken"}], 2,
                     ("'taken'", "already taken")),
    "already-registered": ([M1, {"id": "old"}], 2, ("'old'", "already registered")),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_SUBJECT_FILES))
def test_bad_subjects_file_names_the_line_and_stores_nothing(
    ledger: Ledger, tmp_path: Path, case: str
) -> None:
    ledger.register([SubjectIn(id="old", handle="taken")])
    lines, lineno, fragments = BAD_SUBJECT_FILES[case]
    path = write_jsonl(tmp_path / "subjects.jsonl", lines)
    before = snapshot(ledger)
    with pytest.raises(InputError) as info:
        import_subjects(ledger, path)
    message = str(info.value)
    assert message.startswith(f"{path} line {lineno}: ")
    detail = message.removeprefix(f"{path} line {lineno}: ")
    for fragment in fragments:
        assert fragment in detail
    assert snapshot(ledger) == before


def test_subjects_since_before_the_head_is_refused(registered: Ledger, tmp_path: Path) -> None:
    """The head was recorded on 2026-02-01; a registration may not be dated earlier."""
    path = write_jsonl(tmp_path / "subjects.jsonl", [{"id": "m7"}, {"id": "m8"}])
    before = snapshot(registered)
    with pytest.raises(InputError) as info:
        import_subjects(registered, path, since=datetime(2026, 1, 1, tzinfo=UTC))
    assert str(path) in str(info.value)
    assert "line 1:" in str(info.value)
    assert "goes back before the ledger head" in str(info.value)
    assert snapshot(registered) == before


# ---- schema and migrations ------------------------------------------------------------------


@pytest.fixture
def empty_db(db_url: str) -> Iterator[sa.Engine]:
    """An engine on the empty database behind ``db_url``, to look at what is there."""
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    yield engine
    engine.dispose()


def test_open_with_create_makes_the_schema(db_url: str, empty_db: sa.Engine) -> None:
    assert sa.inspect(empty_db).get_table_names() == []
    with open_ledger(db_url, create=True) as led:
        assert (led.head().seq, led.head().hash) == (0, GENESIS)
    assert set(sa.inspect(empty_db).get_table_names()) == {
        *LEDGER_TABLES,
        *OTHER_TABLES,
        "alembic_version",
    }


def test_open_with_create_twice_keeps_the_data(db_url: str) -> None:
    with open_ledger(db_url, create=True) as led:
        led.register([SubjectIn(id="m1")])
        led.append(choice("m1"))
        before = snapshot(led)
    with open_ledger(db_url, create=True) as led:
        assert snapshot(led) == before
        led.append(choice("m1", "withdraw"))
        assert_chained(all_events(led))
    with open_ledger(db_url) as led:
        assert led.head().seq == 4


def test_tables_metadata_matches_the_migrated_schema(db_url: str, empty_db: sa.Engine) -> None:
    open_ledger(db_url, create=True).close()
    with empty_db.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": tables.described}
        )
        assert compare_metadata(context, tables.metadata) == []
        # the comparison does look at this schema: a column the database lacks shows up
        changed = sa.MetaData()
        for table in tables.metadata.sorted_tables:
            table.to_metadata(changed)
        changed.tables["events"].append_column(sa.Column("extra", sa.Integer))
        diff = compare_metadata(context, changed)
        assert [(d[0], d[3].name) for d in diff] == [("add_column", "extra")]


def manifest(n: int) -> SnapshotManifest:
    """A snapshot registry entry of no interest beyond its lineage."""
    return SnapshotManifest(
        snapshot_id=f"{n:064x}",
        purpose=GENAI,
        purpose_version=1,
        as_of="2026-01-01T00:00:00Z",
        policy_hash="0" * 64,
        ledger_head=LedgerHeadRef(seq=0, hash=GENESIS),
        engine="duckdb",
        on_mention="redact",
        corpus="corpus.jsonl",
        input_records=0,
        output_records=0,
        excluded={},
        redacted_mentions=0,
        subjects_as_author=0,
        subjects_as_mention=0,
        files=[],
        started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:00:00Z",
    )


def lineage_rows(*held: tuple[str, int, int]) -> pa.Table:
    subjects, authors, mentions = zip(*held, strict=True)
    return pa.table(
        {
            "subject_id": pa.array(subjects),
            "author_records": pa.array(authors, pa.int64()),
            "mention_records": pa.array(mentions, pa.int64()),
        }
    )


def held(led: Ledger, subject: str) -> list[tuple[str, int, int]]:
    return [
        (s["snapshot_id"][-1:], s["author_records"], s["mention_records"])
        for s in snapshots_of(led, subject)
    ]


def partitions(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'lineage'::regclass"
                )
            ).scalars()
        )


def test_lineage_recorded_before_partitioning_survives_the_upgrade_and_back(
    db_url: str, empty_db: sa.Engine
) -> None:
    def migrate(to: str, how: Callable[[Config, str], None] = command.upgrade) -> None:
        with empty_db.begin() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            how(cfg, to)

    migrate("0004")
    with empty_db.begin() as conn:
        for n in (1, 2):
            entry = manifest(n)
            conn.execute(
                sa.insert(tables.snapshots).values(
                    snapshot_id=entry.snapshot_id, purpose=GENAI, as_of=0, head_seq=0,
                    head_hash=GENESIS, policy_hash="0" * 64, engine="duckdb",
                    on_mention="redact", corpus="c", path=f"/s/{n}", status="live",
                    created_at=0, manifest=json.dumps(entry.to_json()),
                )
            )  # fmt: skip
        conn.execute(
            sa.insert(tables.lineage),
            [
                {"snapshot": 1, "subject_id": "m1", "author_records": 3, "mention_records": 0},
                {"snapshot": 2, "subject_id": "m1", "author_records": 0, "mention_records": 2},
                {"snapshot": 2, "subject_id": "m2", "author_records": 5, "mention_records": 0},
            ],
        )
    migrate("head")
    with open_ledger(db_url, load_policy()) as led:
        assert held(led, "m1") == [("2", 0, 2), ("1", 3, 0)]
        record(led, manifest(3), "/s/3", lineage_rows(("m1", 1, 1), ("m3", 4, 0)))
        assert held(led, "m1") == [("3", 1, 1), ("2", 0, 2), ("1", 3, 0)]
        assert held(led, "m2") == [("2", 5, 0)]
        assert held(led, "m3") == [("3", 4, 0)]
    if "postgresql" in db_url:
        # the old rows became one partition; the new snapshot's rows have one of their own
        assert partitions(empty_db) == {"lineage_0004", "lineage_3"}
    with empty_db.connect() as conn:
        before = sorted(tuple(r) for r in conn.execute(sa.select(tables.lineage)))
    migrate("0004", command.downgrade)
    with empty_db.connect() as conn:
        assert sorted(tuple(r) for r in conn.execute(sa.select(tables.lineage))) == before
        assert len(before) == 5
    migrate("head")
    with empty_db.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": tables.described}
        )
        assert compare_metadata(context, tables.metadata) == []


def test_lineage_that_cannot_be_recorded_leaves_nothing_behind(
    db_url: str, empty_db: sa.Engine
) -> None:
    with open_ledger(db_url, load_policy(), create=True) as led:
        twice = lineage_rows(("m1", 1, 0), ("m2", 1, 0), ("m1", 2, 0))
        with pytest.raises(StorageError, match="could not record the snapshot's lineage"):
            record(led, manifest(1), "/s/1", twice)

        def fail() -> None:
            raise OSError("the folder could not be moved into place")

        with pytest.raises(OSError, match="moved into place"):
            record(led, manifest(2), "/s/2", lineage_rows(("m1", 1, 0)), before_commit=fail)
        assert list_snapshots(led) == []
        assert held(led, "m1") == []
        if "postgresql" in db_url:
            assert partitions(empty_db) == set()
            assert not [t for t in sa.inspect(empty_db).get_table_names() if t[-1].isdigit()]
        # and the next build records as if nothing had happened
        record(led, manifest(3), "/s/3", lineage_rows(("m1", 1, 0), ("m2", 0, 1)))
        assert held(led, "m1") == [("3", 1, 0)]
        assert held(led, "m2") == [("3", 0, 1)]


def test_open_without_schema_says_to_run_init(db_url: str, empty_db: sa.Engine) -> None:
    with pytest.raises(StorageError, match="askfirst init"):
        open_ledger(db_url)
    assert "events" not in sa.inspect(empty_db).get_table_names()


def test_open_an_out_of_date_schema_says_to_run_init(db_url: str, empty_db: sa.Engine) -> None:
    open_ledger(db_url, create=True).close()
    with empty_db.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(StorageError, match=r"out of date.*askfirst init"):
        open_ledger(db_url)
