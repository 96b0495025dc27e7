"""The ``askfirst`` command, in-process: exit codes and what a user reads.

Main flows run on SQLite and again on PostgreSQL (the ``db_url`` fixture); the error
cases mostly on SQLite. Every failure a user can cause must end with a non-zero exit
code and one line on stderr starting "error:", never a traceback.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from askfirst.cli import app
from askfirst.ledger.events import event_hash
from askfirst.ledger.store import normalize_url

ANSI = re.compile(r"\x1b\[[0-9;]*m")
HEAD_LINE = re.compile(r"^(\d+) ([0-9a-f]{64})$")
DECISION_KEYS = {"subject", "purpose", "at", "allowed", "reason", "event_seq"}
UNREACHABLE_PG = "postgresql://postgres@127.0.0.1:1/x"

SUBJECTS: list[dict[str, object]] = [
    {
        "id": "m1",
        "kind": "member",
        "jurisdiction": "DE",
        "handle": "purplecat",
        "names": ["Purple Cat"],
        "birth_date": "1990-04-01",
    },
    {"id": "m2", "kind": "member", "jurisdiction": "US-CA"},
    {"id": "m3", "kind": "member", "jurisdiction": "US"},
]
SINCE = "2026-01-01T00:00:00Z"
# The JSONL examples of the issue, with the times it left as "..." filled in.
ISSUE_EVENTS: list[dict[str, object]] = [
    {
        "type": "choice",
        "subject": "m1",
        "purpose": "genai-training",
        "action": "withdraw",
        "recorded_at": "2026-03-01T12:00:00Z",
        "actor": "m1",
    },
    {
        "type": "status",
        "subject": "m2",
        "status": "deceased",
        "recorded_at": "2026-03-01T12:00:00Z",
        "actor": "system:registry",  # the platform's own records (one staff alone may not)
    },
    {"type": "gpc", "subject": "m3", "recorded_at": "2026-03-01T12:00:00Z"},
]


def run(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
    """Invoke ``askfirst ARGS`` in-process, with askfirst's environment cleared."""
    full_env: dict[str, str | None] = {
        "ASKFIRST_DATABASE_URL": None,
        "ASKFIRST_POLICY": None,
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    full_env.update(env or {})
    return CliRunner().invoke(app, list(args), env=full_env)


def stdout(res: Result) -> str:
    return ANSI.sub("", res.stdout)


def ok(res: Result) -> str:
    assert res.exit_code == 0, (res.exit_code, res.stdout, res.stderr, res.exception)
    assert res.stderr == ""
    return stdout(res)


def one_line_error(res: Result, *needles: str) -> str:
    """Assert a clean failure: exit != 0, one 'error:' line on stderr, no traceback."""
    assert res.exit_code != 0, res.stdout
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def write_jsonl(path: Path, rows: Sequence[Mapping[str, object] | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def head(db: str) -> tuple[int, str]:
    out = ok(run("ledger", "head", "--db", db)).strip()
    m = HEAD_LINE.match(out)
    assert m, out
    return int(m.group(1)), m.group(2)


def decision(db: str, subject: str, purpose: str, *extra: str) -> dict[str, object]:
    out = ok(
        run("decide", "--subject", subject, "--purpose", purpose, "--json", "--db", db, *extra)
    )
    data: dict[str, object] = json.loads(out)
    assert set(data) == DECISION_KEYS
    return data


def execute_sql(db: str, sql: str) -> None:
    """Change the database behind askfirst's back: sqlite3 for SQLite, else SQLAlchemy."""
    if db.startswith("sqlite:///"):
        with sqlite3.connect(db.removeprefix("sqlite:///")) as lite:
            lite.execute(sql)
        lite.close()
        return
    engine = sa.create_engine(normalize_url(db))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'askfirst.db'}"


@pytest.fixture
def subjects_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "subjects.jsonl", SUBJECTS)


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "events.jsonl", ISSUE_EVENTS)


@pytest.fixture
def ready(sqlite_db: str, subjects_file: Path) -> str:
    """A SQLite ledger holding the three subjects (seq 1..7)."""
    ok(run("init", "--db", sqlite_db))
    ok(run("subjects", "import", str(subjects_file), "--since", SINCE, "--db", sqlite_db))
    return sqlite_db


# ---- the main flow, on SQLite and PostgreSQL --------------------------------------------


def test_main_flow(db_url: str, subjects_file: Path, events_file: Path) -> None:
    out = ok(run("init", "--db", db_url))
    assert "head seq 0" in out
    assert "head seq 0" in ok(run("init", "--db", db_url))  # twice is fine
    assert head(db_url) == (0, "0" * 64)

    out = ok(run("subjects", "import", str(subjects_file), "--since", SINCE, "--db", db_url))
    assert "imported 3 subjects" in out
    assert head(db_url)[0] == 7  # m1: subject, jurisdiction, minor; m2, m3: two each

    out = ok(run("events", "import", str(events_file), "--db", db_url))
    assert "imported 3 events" in out
    assert "8..10" in out

    out = ok(
        run("record", "grant", "--subject", "m1", "--purpose", "genai-training", "--db", db_url)
    )
    m = re.search(r"recorded seq (\d+)", out)
    assert m and int(m.group(1)) == 11, out
    assert "m1 grant genai-training" in out
    seq, digest = head(db_url)
    assert seq == 11
    assert digest[:16] in out

    listed = ok(run("events", "list", "--db", db_url)).splitlines()
    assert len(listed) == 11
    assert [int(line.split()[0]) for line in listed] == list(range(1, 12))
    assert "withdraw" in listed[7] and "genai-training" in listed[7] and "m1" in listed[7]
    assert "deceased" in listed[8] and "system:registry" in listed[8]
    assert "gpc" in listed[9] and "m3" in listed[9]
    assert "2026-03-01T12:00:00Z" in listed[7]

    d = decision(db_url, "m1", "genai-training")
    assert (d["subject"], d["purpose"], d["allowed"], d["reason"], d["event_seq"]) == (
        "m1",
        "genai-training",
        True,
        "granted",
        11,
    )
    d = decision(db_url, "m1", "genai-training", "--at", "2026-03-02T00:00:00Z")
    assert (d["allowed"], d["reason"], d["event_seq"]) == (False, "withdrawn", 8)
    assert d["at"] == "2026-03-02T00:00:00Z"
    d = decision(db_url, "m1", "genai-training", "--at", "2026-02-01T00:00:00Z")
    assert (d["allowed"], d["reason"]) == (False, "no-consent")  # DE is opt-in
    assert decision(db_url, "m2", "genai-training")["reason"] == "deceased"
    assert decision(db_url, "m2", "genai-training")["event_seq"] == 9
    d = decision(db_url, "m3", "third-party-research", "--at", "2026-06-01T00:00:00Z")
    assert (d["allowed"], d["reason"], d["event_seq"]) == (False, "gpc", 10)
    d = decision(db_url, "m3", "genai-training", "--at", "2026-02-01T00:00:00Z")
    assert (d["allowed"], d["reason"]) == (False, "default-off")  # US is opt-out; default off

    out = ok(run("ledger", "verify", "--db", db_url))
    assert out.startswith("ok: 11 events")
    assert digest in out
    ok(run("ledger", "verify", "--expected-head", digest, "--db", db_url))
    ok(run("ledger", "verify", "--expected-head", f"11:{digest}", "--db", db_url))

    # a head kept from earlier still verifies after more events are appended
    ok(run("record", "withdraw", "--subject", "m1", "--purpose", "genai-training", "--db", db_url))
    ok(run("ledger", "verify", "--expected-head", f"11:{digest}", "--db", db_url))
    assert decision(db_url, "m1", "genai-training")["reason"] == "withdrawn"


def test_decide_prints_a_readable_line(ready: str) -> None:
    ok(run("record", "grant", "--subject", "m1", "--purpose", "genai-training", "--db", ready))
    out = ok(run("decide", "--subject", "m1", "--purpose", "genai-training", "--db", ready))
    assert out.startswith("yes: granted")
    assert "ledger event 8" in out
    out = ok(run("decide", "--subject", "m1", "--purpose", "third-party-research", "--db", ready))
    assert out.startswith("no: no-consent")


def test_decide_unknown_subject_is_a_no_not_an_error(ready: str) -> None:
    """DESIGN step 1: an unknown subject is a decision (fail closed), not a crash."""
    out = ok(run("decide", "--subject", "ghost", "--purpose", "genai-training", "--db", ready))
    assert out.startswith("no: unknown-subject")
    d = decision(ready, "ghost", "genai-training")
    assert (d["allowed"], d["reason"], d["event_seq"]) == (False, "unknown-subject", None)


def test_decide_at_a_bare_date_means_its_start_in_utc(ready: str, events_file: Path) -> None:
    ok(run("events", "import", str(events_file), "--db", ready))
    d = decision(ready, "m1", "genai-training", "--at", "2026-03-02")
    assert d["at"] == "2026-03-02T00:00:00Z"
    assert d["reason"] == "withdrawn"


def test_record_json_and_head_json(ready: str) -> None:
    out = ok(
        run(
            "record",
            "object",
            "--subject",
            "m3",
            "--purpose",
            "genai-training",
            "--actor",
            "staff:ann",
            "--json",
            "--db",
            ready,
        )
    )
    ev = json.loads(out)
    assert (ev["seq"], ev["type"], ev["subject"], ev["value"], ev["actor"]) == (
        8,
        "choice",
        "m3",
        "object",
        "staff:ann",
    )
    h = json.loads(ok(run("ledger", "head", "--json", "--db", ready)))
    assert (h["seq"], h["hash"]) == (8, ev["hash"])
    assert decision(ready, "m3", "genai-training")["reason"] == "withdrawn"


def test_staff_may_not_grant_and_others_may_not_choose_for_a_member(ready: str) -> None:
    before = head(ready)
    res = run(
        "record",
        "grant",
        "--subject",
        "m1",
        "--purpose",
        "genai-training",
        "--actor",
        "staff:ann",
        "--db",
        ready,
    )
    one_line_error(res, "staff:ann", "m1")
    res = run(
        "record",
        "withdraw",
        "--subject",
        "m1",
        "--purpose",
        "genai-training",
        "--actor",
        "m3",
        "--db",
        ready,
    )
    one_line_error(res, "'m3'", "'m1'")
    assert head(ready) == before


def test_events_list_filters(ready: str) -> None:
    ok(run("record", "grant", "--subject", "m2", "--purpose", "genai-training", "--db", ready))
    lines = ok(run("events", "list", "--subject", "m2", "--db", ready)).splitlines()
    assert [int(line.split()[0]) for line in lines] == [4, 5, 8]
    lines = ok(run("events", "list", "--after", "5", "--limit", "2", "--db", ready)).splitlines()
    assert [int(line.split()[0]) for line in lines] == [6, 7]
    data = json.loads(ok(run("events", "list", "--json", "--subject", "m1", "--db", ready)))
    assert [e["type"] for e in data] == ["subject", "jurisdiction", "minor"]
    assert data[2]["value"] == "until:2008-04-01"


def test_events_list_on_an_empty_ledger_prints_nothing(sqlite_db: str) -> None:
    ok(run("init", "--db", sqlite_db))
    assert ok(run("events", "list", "--db", sqlite_db)) == ""


# ---- all-or-nothing imports -------------------------------------------------------------


def test_subjects_import_bad_line_stores_nothing(db_url: str, tmp_path: Path) -> None:
    ok(run("init", "--db", db_url))
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            SUBJECTS[0],
            SUBJECTS[1],
            {"id": "x", "kind": "robot"},
        ],
    )
    res = run("subjects", "import", str(bad), "--db", db_url)
    one_line_error(res, "line 3", "kind")
    assert head(db_url) == (0, "0" * 64)
    assert ok(run("events", "list", "--db", db_url)) == ""
    assert decision(db_url, "m1", "genai-training")["reason"] == "unknown-subject"


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"id": "x", "jurisdiction": "Atlantis"}', "jurisdiction"),
        ('{"id": "x", "birth_date": "1990-02-30"}', "birth_date"),
        ('{"id": "x", "colour": "red"}', "colour"),
        ('{"id": "m1"}', "'m1'"),  # appears twice in the file
        ('{"id": "x", "handle": "@PurpleCat"}', "purplecat"),  # same handle as m1
        ('{"id": "x",', "not valid JSON"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_subjects_import_reports_the_bad_line(
    ready: str, tmp_path: Path, line: str, needle: str
) -> None:
    before = head(ready)
    path = tmp_path / "more.jsonl"
    path.write_text('{"id": "m9"}\n\n' + line + "\n", "utf-8")
    one_line_error(run("subjects", "import", str(path), "--db", ready), "line 3", needle)
    assert head(ready) == before


def test_subjects_import_of_an_already_registered_subject_is_refused(
    ready: str, tmp_path: Path, subjects_file: Path
) -> None:
    before = head(ready)
    path = write_jsonl(tmp_path / "again.jsonl", [{"id": "m4"}, SUBJECTS[1]])
    one_line_error(run("subjects", "import", str(path), "--db", ready), "line 2", "'m2'")
    one_line_error(
        run("subjects", "import", str(subjects_file), "--db", ready),
        "line 1",
        "'purplecat'",
        "taken",
    )
    assert head(ready) == before


def test_events_import_bad_line_stores_nothing(
    db_url: str, subjects_file: Path, tmp_path: Path
) -> None:
    ok(run("init", "--db", db_url))
    ok(run("subjects", "import", str(subjects_file), "--since", SINCE, "--db", db_url))
    before = head(db_url)
    rows = [*ISSUE_EVENTS[:2], {**ISSUE_EVENTS[2], "subject": "nobody"}]
    path = write_jsonl(tmp_path / "bad-events.jsonl", rows)
    one_line_error(run("events", "import", str(path), "--db", db_url), "line 3", "nobody")
    assert head(db_url) == before
    assert decision(db_url, "m2", "genai-training")["reason"] != "deceased"


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"type": "status", "subject": "m2", "status": "deceased"}, "a death"),
        (
            {
                "type": "authority",
                "subject": "m2",
                "action": "grant",
                "role": "representative",
                "delegate": "m1",
            },
            "a representative",
        ),
        ({"type": "status", "subject": "m2", "status": "erased"}, "an erasure"),
    ],
)
@pytest.mark.parametrize("actor", ["staff:registrar", "m1", "system"])
def test_one_person_alone_cannot_record_a_death_a_representative_or_an_erasure(
    db_url: str, subjects_file: Path, tmp_path: Path, row: dict[str, str], needle: str, actor: str
) -> None:
    """Rule 13: these need a case that one reviewer proposed and another approved; the
    platform's own import may record a death or a representative it established itself,
    never an erasure (only a case deletes what is personal)."""
    ok(run("init", "--db", db_url))
    ok(run("subjects", "import", str(subjects_file), "--since", SINCE, "--db", db_url))
    before = head(db_url)
    path = write_jsonl(tmp_path / "one.jsonl", [{**row, "actor": actor}])
    result = run("events", "import", str(path), "--db", db_url)
    if actor == "system" and needle != "an erasure":
        ok(result)
        return
    if actor == "m1":  # a member may not record a status or an authority at all
        one_line_error(result, "line 1", "'m1'")
    else:
        one_line_error(result, "line 1", needle, "case", "approved")
    assert head(db_url) == before
    assert decision(db_url, "m2", "genai-training")["reason"] not in ("deceased", "erased")


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        (
            {"type": "choice", "subject": "m1", "purpose": "face-id", "action": "grant"},
            "face-id",
        ),
        (
            {"type": "choice", "subject": "m1", "purpose": "genai-training", "action": "maybe"},
            "action",
        ),
        ({"type": "teleport", "subject": "m1"}, "type"),
        (
            {"type": "gpc", "subject": "m1", "recorded_at": "2025-12-31T00:00:00Z"},
            "before the ledger head",
        ),
        ({"type": "gpc", "subject": "m1", "recorded_at": "2999-01-01T00:00:00Z"}, "future"),
        ({"type": "gpc", "subject": "m1", "recorded_at": "last tuesday"}, "recorded_at"),
        ({"type": "gpc", "subject": "m1", "recorded_at": "2026-03-01T12:00:00"}, "time zone"),
        (
            {
                "type": "choice",
                "subject": "m1",
                "purpose": "genai-training",
                "action": "grant",
                "actor": "m2",
            },
            "'m2'",
        ),
    ],
)
def test_events_import_reports_the_bad_line(
    ready: str, tmp_path: Path, row: dict[str, object], needle: str
) -> None:
    before = head(ready)
    path = write_jsonl(tmp_path / "e.jsonl", [ISSUE_EVENTS[2], row])
    one_line_error(run("events", "import", str(path), "--db", ready), "line 2", needle)
    assert head(ready) == before


def test_empty_import_file_is_an_error(ready: str, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", "utf-8")
    one_line_error(run("events", "import", str(path), "--db", ready), "no lines")
    one_line_error(run("subjects", "import", str(path), "--db", ready), "no lines")


# ---- verification -----------------------------------------------------------------------


def test_verify_names_the_first_edited_event(
    db_url: str, subjects_file: Path, events_file: Path
) -> None:
    ok(run("init", "--db", db_url))
    ok(run("subjects", "import", str(subjects_file), "--since", SINCE, "--db", db_url))
    ok(run("events", "import", str(events_file), "--db", db_url))
    ok(run("ledger", "verify", "--db", db_url))
    execute_sql(db_url, "UPDATE events SET value = 'grant' WHERE seq = 8")
    res = run("ledger", "verify", "--db", db_url)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert "seq 8" in res.stderr
    assert "first bad seq: 8" in res.stderr
    assert all(line.startswith(("error: ", "first bad seq")) for line in res.stderr.splitlines())


def test_verify_names_the_first_deleted_event(ready: str) -> None:
    execute_sql(ready, "DELETE FROM events WHERE seq = 5")
    res = run("ledger", "verify", "--db", ready)
    assert res.exit_code == 1
    assert "first bad seq: 5" in res.stderr


def test_verify_finds_events_cut_off_the_end(ready: str) -> None:
    execute_sql(ready, "DELETE FROM events WHERE seq = 7")
    res = run("ledger", "verify", "--db", ready)
    assert res.exit_code == 1
    assert "first bad seq: 7" in res.stderr


def test_verify_finds_a_projection_edited_by_hand(ready: str) -> None:
    ok(run("record", "grant", "--subject", "m1", "--purpose", "genai-training", "--db", ready))
    ok(run("ledger", "verify", "--db", ready))
    execute_sql(ready, "DELETE FROM choice_state WHERE subject_id = 'm1'")
    res = run("ledger", "verify", "--db", ready)
    assert res.exit_code == 1
    assert "choice_state" in res.stderr
    assert "m1" in res.stderr


def test_verify_with_a_wrong_expected_head_fails(ready: str) -> None:
    res = run("ledger", "verify", "--expected-head", "ab" * 32, "--db", ready)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert res.stderr.startswith("error: ")
    assert "abababababababab" in res.stderr
    _, digest = head(ready)
    # the right hash, at the wrong seq
    res = run("ledger", "verify", "--expected-head", f"3:{digest}", "--db", ready)
    assert res.exit_code == 1


def test_verify_with_expected_head_catches_a_history_rewritten_wholesale(ready: str) -> None:
    """Re-chaining every hash after an edit fools verify alone, not --expected-head."""
    seq, kept = head(ready)
    path = ready.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT seq, type, subject_id, purpose, value, notice_version, actor, source, "
            "recorded_at FROM events ORDER BY seq"
        ).fetchall()
        prev = "0" * 64
        for seq_, typ, subj, purp, val, nv, actor, _source, at in rows:
            source = "forged" if seq_ == 2 else _source
            digest = event_hash(seq_, typ, subj, purp, val, nv, actor, source, at, prev)
            conn.execute(
                "UPDATE events SET source = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (source, prev, digest, seq_),
            )
            prev = digest
        conn.execute("UPDATE ledger_head SET hash = ? WHERE id = 1", (prev,))
    conn.close()
    assert head(ready) == (seq, prev) and prev != kept
    ok(run("ledger", "verify", "--db", ready))  # a consistent forgery passes alone
    res = run("ledger", "verify", "--expected-head", kept, "--db", ready)
    assert res.exit_code == 1
    assert "rewritten" in res.stderr


# ---- policy check -----------------------------------------------------------------------


def test_policy_check_shipped_policy() -> None:
    out = ok(run("policy", "check"))
    assert "valid" in out
    assert "genai-training" in out
    assert "third-party-research" in out
    assert "message" in out and "security" in out and "payment" in out


def test_policy_check_names_every_purpose_at_80_columns() -> None:
    out = stdout(run("policy", "check", env={"COLUMNS": "80"}))
    assert "genai-training" in out
    assert "third-party-research" in out


def test_policy_check_custom_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[purposes.ads-research]\ntitle = "Ads"\nversion = 1\ncategories = ["post"]\n'
        'default = "on"\ngrace_days = 45\n[jurisdictions]\nopt_out = ["US"]\n',
        "utf-8",
    )
    out = ok(run("policy", "check", str(path)))
    assert "ads-research" in out
    assert "45 days" in out
    assert "genai-training" not in out


def test_policy_check_bad_file_is_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[purposes.genai-training]\ntitle = "x"\nversion = 1\ncategories = ["post", "message"]\n',
        "utf-8",
    )
    res = run("policy", "check", str(path))
    assert res.exit_code == 1
    one_line_error(res, str(path), "purposes.genai-training.categories", "'message'")
    assert res.stdout == ""


def test_policy_check_opt_out_in_the_eea_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "eea.toml"
    path.write_text(
        '[purposes.p]\ntitle = "x"\nversion = 1\ncategories = ["post"]\ndefault = "on"\n'
        '[jurisdictions]\nopt_out = ["US", "FR"]\n',
        "utf-8",
    )
    res = run("policy", "check", str(path))
    assert res.exit_code == 1
    one_line_error(res, "jurisdictions.opt_out", "'FR'", "'p'")


def test_policy_check_bad_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[purposes.x\n", "utf-8")
    assert run("policy", "check", str(path)).exit_code == 1
    one_line_error(run("policy", "check", str(path)), "not valid TOML")
    missing = tmp_path / "missing.toml"
    res = run("policy", "check", str(missing))
    assert res.exit_code == 1
    one_line_error(res, str(missing))


def test_commands_use_the_policy_from_option_or_environment(ready: str, tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[purposes.ads-research]\ntitle = "Ads"\nversion = 1\ncategories = ["post"]\n', "utf-8"
    )
    # the shipped policy has no such purpose
    one_line_error(
        run("record", "grant", "--subject", "m3", "--purpose", "ads-research", "--db", ready),
        "'ads-research'",
    )
    ok(
        run(
            "record",
            "grant",
            "--subject",
            "m3",
            "--purpose",
            "ads-research",
            "--policy",
            str(path),
            "--db",
            ready,
        )
    )
    out = ok(
        run(
            "decide",
            "--subject",
            "m3",
            "--purpose",
            "ads-research",
            "--json",
            "--db",
            ready,
            env={"ASKFIRST_POLICY": str(path)},
        )
    )
    assert json.loads(out)["reason"] == "granted"
    bad = tmp_path / "bad.toml"
    bad.write_text('[purposes.x]\ntitle = "x"\nversion = 1\ncategories = ["payment"]\n', "utf-8")
    res = run(
        "decide",
        "--subject",
        "m3",
        "--purpose",
        "x",
        "--db",
        ready,
        env={"ASKFIRST_POLICY": str(bad)},
    )
    one_line_error(res, "purposes.x.categories", "'payment'")


# ---- bad input: one line, non-zero, nothing written -------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["decide", "--subject", "m1", "--purpose", "face-id"], ["'face-id'", "genai-training"]),
        (["record", "grant", "--subject", "m1", "--purpose", "face-id"], ["'face-id'"]),
        (
            ["record", "grant", "--subject", "ghost", "--purpose", "genai-training"],
            ["'ghost'", "askfirst subjects import"],
        ),
        (
            [
                "record",
                "withdraw",
                "--subject",
                "ghost",
                "--purpose",
                "genai-training",
                "--actor",
                "staff:ann",
            ],
            ["'ghost'"],
        ),
        (
            ["decide", "--subject", "m1", "--purpose", "genai-training", "--at", "yesterday"],
            ["--at", "'yesterday'", "ISO 8601"],
        ),
        (
            ["decide", "--subject", "m1", "--purpose", "genai-training", "--at", "2026-13-01"],
            ["--at"],
        ),
        (
            [
                "decide",
                "--subject",
                "m1",
                "--purpose",
                "genai-training",
                "--at",
                "2026-03-01T12:00:00",
            ],
            ["--at", "time zone"],
        ),
        (["subjects", "import", "no-such-file.jsonl"], ["no-such-file.jsonl"]),
        (["events", "import", "no-such-file.jsonl"], ["no-such-file.jsonl"]),
        (["subjects", "import", "s.jsonl", "--since", "soon"], ["--since", "'soon'"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    ready: str, args: list[str], needles: list[str]
) -> None:
    before = head(ready)
    one_line_error(run(*args, "--db", ready), *needles)
    assert head(ready) == before


UNINITIALISED_COMMANDS = [
    ["ledger", "head"],
    ["ledger", "verify"],
    ["events", "list"],
    ["events", "import", "EVENTS"],
    ["subjects", "import", "SUBJECTS"],
    ["record", "grant", "--subject", "m1", "--purpose", "genai-training"],
    ["decide", "--subject", "m1", "--purpose", "genai-training"],
]


@pytest.mark.parametrize("args", UNINITIALISED_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_commands_on_a_database_never_initialised_say_run_init(
    db_url: str, args: list[str], subjects_file: Path, events_file: Path
) -> None:
    files = {"EVENTS": str(events_file), "SUBJECTS": str(subjects_file)}
    res = run(*[files.get(a, a) for a in args], "--db", db_url)
    one_line_error(res, "askfirst init")


def test_sqlite_database_in_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'nope' / 'askfirst.db'}"
    one_line_error(run("init", "--db", db), "does not exist")
    one_line_error(run("ledger", "head", "--db", db), "does not exist")


def test_unsupported_database_url_is_one_line() -> None:
    one_line_error(run("ledger", "head", "--db", "mysql://root@localhost/x"), "sqlite")


@pytest.mark.parametrize(
    "args",
    [["init"], ["ledger", "head"], ["decide", "--subject", "m1", "--purpose", "genai-training"]],
)
def test_unreachable_postgres_fails_without_a_traceback(args: list[str]) -> None:
    res = run(*args, "--db", UNREACHABLE_PG)
    assert res.exit_code == 1
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    assert res.stderr.startswith("error: ")
    assert "127.0.0.1" in res.stderr.splitlines()[0]


@pytest.mark.parametrize("args", [["init"], ["ledger", "head"]])
def test_unreachable_postgres_error_is_one_line(args: list[str]) -> None:
    one_line_error(run(*args, "--db", UNREACHABLE_PG), "127.0.0.1")


# ---- where the database comes from ------------------------------------------------------


def test_database_url_from_the_environment(tmp_path: Path, subjects_file: Path) -> None:
    path = tmp_path / "from-env.db"
    env = {"ASKFIRST_DATABASE_URL": f"sqlite:///{path}"}
    ok(run("init", env=env))
    assert path.exists()
    ok(run("subjects", "import", str(subjects_file), env=env))
    assert ok(run("ledger", "head", env=env)).startswith("7 ")
    assert (
        json.loads(
            ok(run("decide", "--subject", "m1", "--purpose", "genai-training", "--json", env=env))
        )["reason"]
        == "no-consent"
    )


def test_db_option_wins_over_the_environment(ready: str, tmp_path: Path) -> None:
    env = {"ASKFIRST_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    assert ok(run("ledger", "head", "--db", ready, env=env)).startswith("7 ")
    one_line_error(run("ledger", "head", env=env), "askfirst init")


def test_default_database_is_a_file_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ok(run("init"))
    assert (tmp_path / "askfirst.db").exists()
    assert ok(run("ledger", "head")).startswith("0 ")


def test_help_lists_the_commands() -> None:
    res = run("--help")
    assert res.exit_code == 0
    for command in ("init", "policy", "subjects", "record", "events", "ledger", "decide"):
        assert command in res.stdout


def test_ledger_verify_says_what_it_does_not_check(tmp_path: Path) -> None:
    """Verify proves the chain and its projections only; a snapshot set back from stale
    to live is not found by it, so it says plainly what it leaves out (issue 15)."""
    db = f"sqlite:///{tmp_path / 'v.db'}"
    assert run("init", "--db", db).exit_code == 0
    result = run("ledger", "verify", "--db", db)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("ok: 0 events")
    assert "not checked: snapshots, lineage, models, retraining tasks and the outbox" in lines[1]
