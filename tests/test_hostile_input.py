"""Lax typing and broken input: refused with one clear line, alike on SQLite and PostgreSQL.

Import lines whose JSON types are loose (``"version": true``), whose keys repeat, whose
dates cannot be a birth date, whose ids hold control characters, or whose brackets nest
100,000 deep; and an error that would echo a huge input back whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from askfirst import InputError, Ledger, NewEvent, SubjectIn
from test_cli import ISSUE_EVENTS, SINCE, SUBJECTS, head, ok, one_line_error, run, write_jsonl

GENAI = "genai-training"


@pytest.fixture
def ready(db_url: str, tmp_path: Path) -> str:
    """A ledger (SQLite or PostgreSQL) holding m1, m2 and m3."""
    ok(run("init", "--db", db_url))
    subjects = write_jsonl(tmp_path / "subjects.jsonl", SUBJECTS)
    ok(run("subjects", "import", str(subjects), "--since", SINCE, "--db", db_url))
    return db_url


def import_lines(db: str, tmp_path: Path, what: str, *lines: str) -> str:
    """Import a file of these raw lines; the one error line (nothing was written)."""
    before = head(db)
    path = tmp_path / f"{what}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), "utf-8")
    line = one_line_error(run(what, "import", str(path), "--db", db))
    assert head(db) == before
    return line


GOOD_EVENT = json.dumps(ISSUE_EVENTS[2])


@pytest.mark.parametrize(
    "row",
    [
        {"type": "choice", "subject": "m1", "purpose": GENAI, "action": "grant", "version": True},
        {"type": "notice-delivered", "subject": "m1", "purpose": GENAI, "version": True},
        {"type": "choice", "subject": "m1", "purpose": GENAI, "action": "grant", "version": 1.0},
        {"type": "choice", "subject": "m1", "purpose": GENAI, "action": "grant", "version": "1"},
    ],
    ids=["choice-true", "notice-true", "float", "string"],
)
def test_a_boolean_or_other_non_integer_version_is_refused(
    ready: str, tmp_path: Path, row: dict[str, object]
) -> None:
    line = import_lines(ready, tmp_path, "events", GOOD_EVENT, json.dumps(row))
    assert "line 2" in line and "version" in line and "integer" in line, line


@pytest.mark.parametrize(
    ("what", "line", "key"),
    [
        ("events", '{"type": "gpc", "subject": "m1", "subject": "m2"}', "subject"),
        ("subjects", '{"id": "m9", "jurisdiction": "DE", "jurisdiction": "US"}', "jurisdiction"),
        ("events", '{"type": "gpc", "subject": "m1", "x": {"a": 1, "a": 2}}', "a"),
    ],
)
def test_a_key_given_twice_is_refused_naming_the_key_and_the_line(
    ready: str, tmp_path: Path, what: str, line: str, key: str
) -> None:
    first = GOOD_EVENT if what == "events" else json.dumps({"id": "m8"})
    error = import_lines(ready, tmp_path, what, first, line)
    assert "line 2" in error and f"'{key}'" in error and "twice" in error, error


@pytest.mark.parametrize(
    ("born", "needle"),
    [("2999-01-01", "future"), ("1850-06-01", "1900"), ("0001-01-01", "1900")],
)
def test_a_birth_date_in_the_future_or_long_ago_is_refused(
    ready: str, tmp_path: Path, born: str, needle: str
) -> None:
    row = {"id": "m9", "jurisdiction": "DE", "birth_date": born}
    error = import_lines(ready, tmp_path, "subjects", json.dumps({"id": "m8"}), json.dumps(row))
    assert "line 2" in error and "birth_date" in error and needle in error, error


def test_a_birth_date_of_today_or_of_a_great_age_is_accepted(ledger: Ledger) -> None:
    from datetime import UTC, datetime

    today = datetime.now(UTC).date()
    ledger.register(
        [
            SubjectIn(id="m1", jurisdiction="DE", birth_date=today),
            SubjectIn(id="m2", jurisdiction="DE", birth_date="1905-02-03"),  # type: ignore[arg-type]
        ]
    )


@pytest.mark.parametrize(
    ("what", "row", "field"),
    [
        ("subjects", {"id": "m\u0000x", "jurisdiction": "DE"}, "id"),
        ("subjects", {"id": "m9", "handle": "a\u0000b"}, "handle"),
        ("subjects", {"id": "m9", "names": ["Ann\u0000 Bee"]}, "names"),
        ("subjects", {"id": "m9", "names": ["Ann\u001b[31m Bee"]}, "names"),
        ("events", {"type": "gpc", "subject": "m1\u0000"}, "subject"),
        ("events", {"type": "gpc", "subject": "m1", "actor": "system\u0000"}, "actor"),
        (
            "events",
            {"type": "choice", "subject": "m1", "purpose": "genai\u0000", "action": "grant"},
            "purpose",
        ),
        ("events", {"type": "gpc", "subject": "m1", "source": "x\u0007"}, "source"),
    ],
    ids=["id", "handle", "name-nul", "name-escape", "subject", "actor", "purpose", "source"],
)
def test_a_control_character_in_an_id_or_name_is_refused_on_every_database(
    ready: str, tmp_path: Path, what: str, row: dict[str, object], field: str
) -> None:
    first = GOOD_EVENT if what == "events" else json.dumps({"id": "m8"})
    error = import_lines(ready, tmp_path, what, first, json.dumps(row))
    assert "line 2" in error and field in error and "control character" in error, error


def test_a_nul_in_an_id_given_to_the_library_or_the_command_line_is_refused(
    ledger: Ledger, db_url: str
) -> None:
    ledger.register([SubjectIn(id="m1", jurisdiction="DE")], since=None)
    before = ledger.head()
    bad = NewEvent(type="gpc", subject="m1\x00", actor="system", source="test", value="1")
    with pytest.raises(InputError, match=r"subject .*control character \(U\+0000\)"):
        ledger.append(bad)
    with pytest.raises(InputError, match="control character"):
        ledger.register([SubjectIn.model_construct(id="m\x002", kind="member")])
    assert ledger.head() == before
    for args in (
        ("record", "grant", "--subject", "m1\x00", "--purpose", GENAI),
        ("record", "grant", "--subject", "m1", "--purpose", GENAI, "--actor", "m1\x00"),
        ("decide", "--subject", "m1\x00", "--purpose", GENAI),
        ("events", "list", "--subject", "m1\x1b[2J"),
    ):
        one_line_error(run(*args, "--db", db_url), "control character")
    assert ledger.head() == before


@pytest.mark.parametrize("opening", ["[", '{"a":'], ids=["arrays", "objects"])
def test_100k_nested_brackets_are_one_clear_line_naming_the_line(
    ready: str, tmp_path: Path, opening: str
) -> None:
    for what, first in (("events", GOOD_EVENT), ("subjects", json.dumps({"id": "m8"}))):
        error = import_lines(ready, tmp_path, what, first, opening * 100_000)
        assert "line 2" in error and "nested more than 32 levels deep" in error, error


def test_an_error_does_not_echo_a_huge_input_back_whole(ready: str) -> None:
    huge = "x" * 100_000
    res = run(
        "record", "grant", "--subject", "m1", "--purpose", GENAI, "--actor", huge, "--db", ready
    )
    line = one_line_error(res, "actor")
    assert len(line) < 300, len(line)
    assert "x" * 80 + "…" in line
    res = run("decide", "--subject", "m1", "--purpose", huge, "--db", ready)
    line = one_line_error(res, "purpose")
    assert len(line) < 500 and "x" * 80 + "…" in line, len(line)


def test_a_nul_in_a_subject_id_to_decide_is_refused_alike_on_every_database(
    ledger: Ledger,
) -> None:
    from askfirst import decide, decide_many

    ledger.register([SubjectIn(id="m1", jurisdiction="DE")])
    with pytest.raises(InputError, match=r"control character \(U\+0000\)"):
        decide(ledger, "m1\x00", GENAI)
    with pytest.raises(InputError, match=r"control character \(U\+0000\)"):
        decide_many(ledger, GENAI, ["m1", "m1\x00"])
    assert decide(ledger, "m1", GENAI).reason == "no-consent"  # DE: opt-in
