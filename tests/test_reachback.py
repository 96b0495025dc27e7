"""Withdrawals that reach back (issue 5), end to end, on SQLite and again on PostgreSQL.

Every test registers the same small platform (``world``: members who all said yes to
both purposes, but one who never did, and eight more for the concurrency test), writes
one corpus, builds a ``genai-training`` snapshot and registers a model trained on it in
16 shards. Then something ends a member's use — a withdrawal, a withdrawal by someone
only mentioned in other members' posts, a death, an account closure, a GPC signal —
and the tests look at what a user would see: the snapshot's status, the tasks and the
shards they name, the rebuilt snapshot's records and texts, the files left behind, the
registry's links, the reports and the "Your data in AI" story.

The flow runs through the Python library and again through the command line (``Lib``
and ``Cli`` below: the same steps, so that a test reads the same either way).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner, Result

from askfirst import Ledger, NewEvent, SubjectIn, build_snapshot, read_snapshot, snapshots_of
from askfirst.cli import app
from askfirst.data_in_ai import data_in_ai
from askfirst.gate.rebuild import rebuild_snapshot, rebuild_stale
from askfirst.ledger import store
from askfirst.lineage import list_snapshots, shard_key
from askfirst.models import close_task, list_tasks, register_model

GENAI = "genai-training"
RESEARCH = "third-party-research"
SINCE = datetime(2025, 1, 1, tzinfo=UTC)
CREATED = "2025-03-01T09:30:00Z"
SHARDS = 16
R = "[redacted]"

# ---- the platform -------------------------------------------------------------------------

CROWD = [f"w{i}" for i in range(8)]  # authors who all withdraw at once
SUBJECTS = [
    SubjectIn(id="bob", jurisdiction="DE", handle="bob.b", names=["Bob Brown"]),
    SubjectIn(id="cyd", jurisdiction="DE", handle="cyd"),
    SubjectIn(id="fay", jurisdiction="DE", handle="fay"),
    # never writes anything; mentioned by handle (cyd) and by id and name (fay)
    SubjectIn(id="eve", jurisdiction="DE", handle="eve.e", names=["Eve Example"]),
    # writes, and is named in fay's post; dies in a test
    SubjectIn(id="dan", jurisdiction="DE", handle="dan.d", names=["Dan Dean"]),
    SubjectIn(id="cal", jurisdiction="DE", handle="cal"),  # closes the account in a test
    SubjectIn(id="gia", jurisdiction="US-CA", handle="gia"),  # sends GPC in a test
    SubjectIn(id="ann", jurisdiction="DE", handle="ann"),  # never says yes
    SubjectIn(id="zed", jurisdiction="DE", handle="zed"),  # says yes, writes nothing
    *(SubjectIn(id=w, jurisdiction="DE") for w in CROWD),
]
CONSENTING = [s.id for s in SUBJECTS if s.id != "ann"]


def rec(
    record_id: str, author: str, text: str, category: str = "post", mentions: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "author_id": author,
        "category": category,
        "created_at": CREATED,
        "text": text,
        "mentions": list(mentions),
    }


CORPUS = [
    rec("p1", "bob", "Shipped the new release today."),
    rec("p2", "bob", "Hiring again!", category="article"),
    rec("p3", "cyd", "Great talk by @eve.e, thanks!", category="comment"),
    # A member's name counts as a mention when the record lists them (``mentions``); a
    # name alone is looked for only once it is protected (here: once Dan has died).
    rec("p4", "fay", "Lunch with Eve Example and Dan Dean.", mentions=("eve",)),
    rec("p5", "dan", "My last project."),
    rec("p6", "cal", "Moving on."),
    rec("p7", "gia", "Hello from California."),
    rec("p8", "ann", "not for training"),  # no-consent
    rec("p9", "bob", "my one-time code is 123456", category="security"),  # never used
    *(rec(f"q{i}", w, f"note {i}") for i, w in enumerate(CROWD)),
]
AUTHORED = {
    s: [r["record_id"] for r in CORPUS if r["author_id"] == s and r["category"] != "security"]
    for s in {r["author_id"] for r in CORPUS}
}
IN_SNAPSHOT = 15  # every record but p8 and p9
EXCLUDED = {"no-consent": 1, "category-never-used": 1}


def choice(subject: str, value: str, purpose: str = GENAI) -> NewEvent:
    return NewEvent(
        type="choice", subject=subject, purpose=purpose, value=value, actor=subject, source="test"
    )


def status(subject: str, value: str) -> NewEvent:
    return NewEvent(type="status", subject=subject, value=value, actor="system", source="test")


def gpc(subject: str) -> NewEvent:
    return NewEvent(type="gpc", subject=subject, value="1", actor=subject, source="test")


def world(ledger: Ledger) -> None:
    ledger.register(SUBJECTS, since=SINCE)
    ledger.append_many([choice(s, "grant", p) for s in CONSENTING for p in (GENAI, RESEARCH)])


# ---- what ends a use ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ending:
    """An event that ends a subject's use, and what it must leave behind."""

    subject: str
    event: NewEvent
    import_line: dict[str, Any] | None  # how the CLI records it (None: 'askfirst record')
    role: str
    reason: str
    mentioned_by: tuple[str, ...] = ()  # authors of the records that mention the subject

    @property
    def shards(self) -> list[int]:
        authors = [self.subject] if "author" in self.role else []
        return sorted({shard_key(a) % SHARDS for a in [*authors, *self.mentioned_by]})

    @property
    def traces(self) -> list[str]:
        """What of the subject's may not be in a snapshot's texts once they are out."""
        s = next(s for s in SUBJECTS if s.id == self.subject)
        return [f"@{s.handle}", *s.names]


ENDINGS = {
    "withdrawal": Ending("bob", choice("bob", "withdraw"), None, "author", "withdrawn"),
    "mention": Ending(
        "eve", choice("eve", "withdraw"), None, "mention", "withdrawn", ("cyd", "fay")
    ),
    "death": Ending(
        "dan",
        status("dan", "deceased"),
        {"type": "status", "subject": "dan", "status": "deceased"},
        "author",
        "deceased",
    ),
    "closure": Ending(
        "cal",
        status("cal", "closed"),
        {"type": "status", "subject": "cal", "status": "closed"},
        "author",
        "account-closed",
    ),
    "gpc": Ending("gia", gpc("gia"), {"type": "gpc", "subject": "gia"}, "author", "gpc"),
}


# ---- the command line -----------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(*args: str | Path) -> Result:
    env: dict[str, str | None] = {
        "ASKFIRST_DATABASE_URL": None,
        "ASKFIRST_POLICY": None,
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def ok(res: Result) -> str:
    assert res.exit_code == 0, (res.exit_code, res.stdout, res.stderr, res.exception)
    assert res.stderr == ""
    return ANSI.sub("", res.stdout)


def ok_json(res: Result) -> Any:
    return json.loads(ok(res))


def one_line_error(res: Result, *needles: str) -> str:
    assert res.exit_code != 0, res.stdout
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


# ---- the same steps through the library and through the command line -------------------------


class Lib:
    """The steps of the flow, as a Python caller takes them."""

    def __init__(self, ledger: Ledger, db: str, tmp: Path) -> None:
        self.ledger, self.db, self.tmp = ledger, db, tmp

    def build(self, corpus: Path, out: Path, purpose: str = GENAI) -> str:
        return build_snapshot(self.ledger, purpose, corpus, out).snapshot_id

    def register(
        self, name: str, version: str, snapshot: str, shards: int | None = SHARDS
    ) -> dict[str, Any]:
        m = register_model(self.ledger, name, version, [snapshot], shards=shards)
        return {"closed": m["tasks_closed_now"], "opened": m["tasks_opened_now"]}

    def end(self, ending: Ending) -> None:
        self.ledger.append(ending.event)

    def rebuild(self, snapshot: str) -> list[dict[str, Any]]:
        return [r.to_json() for r in rebuild_snapshot(self.ledger, snapshot)]

    def rebuild_stale(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in rebuild_stale(self.ledger)]

    def tasks(self) -> list[dict[str, Any]]:
        return list_tasks(self.ledger, status=None)

    def snapshots(self) -> list[dict[str, Any]]:
        return list_snapshots(self.ledger)


class Cli(Lib):
    """The same steps through ``askfirst`` commands (in-process)."""

    def build(self, corpus: Path, out: Path, purpose: str = GENAI) -> str:
        res = run("snapshot", "build", "--purpose", purpose, "--corpus", corpus, "--out", out,
                  "-q", "--json", "--db", self.db)  # fmt: skip
        return str(ok_json(res)["snapshot_id"])

    def register(
        self, name: str, version: str, snapshot: str, shards: int | None = SHARDS
    ) -> dict[str, Any]:
        extra = ["--shards", str(shards)] if shards is not None else []
        res = run("model", "register", name, version, "--snapshot", snapshot, *extra,
                  "--json", "--db", self.db)  # fmt: skip
        m = ok_json(res)
        return {"closed": m["tasks_closed_now"], "opened": m["tasks_opened_now"]}

    def end(self, ending: Ending) -> None:
        e = ending.event
        if ending.import_line is None:
            assert e.type == "choice" and e.value and e.purpose
            ok(run("record", e.value, "--subject", e.subject, "--purpose", e.purpose,
                   "--db", self.db))  # fmt: skip
            return
        path = self.tmp / f"events-{e.subject}.jsonl"
        path.write_text(json.dumps(ending.import_line) + "\n", "utf-8")
        ok(run("events", "import", path, "--db", self.db))

    def rebuild(self, snapshot: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = ok_json(
            run("snapshot", "rebuild", snapshot, "-q", "--json", "--db", self.db)
        )
        return rows

    def rebuild_stale(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = ok_json(
            run("snapshot", "rebuild", "--stale", "-q", "--json", "--db", self.db)
        )
        return rows

    def tasks(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = ok_json(
            run("task", "list", "--status", "all", "--json", "--db", self.db)
        )
        return rows

    def snapshots(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = ok_json(run("snapshot", "list", "--json", "--db", self.db))
        return rows


# ---- fixtures and small readers --------------------------------------------------------------


@pytest.fixture
def led(ledger: Ledger) -> Ledger:
    world(ledger)
    return ledger


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CORPUS), "utf-8")
    return path


@pytest.fixture
def snaps(tmp_path: Path) -> Path:
    folder = tmp_path / "snapshots"
    folder.mkdir()
    return folder


@pytest.fixture(params=["lib", "cli"])
def via(request: pytest.FixtureRequest, led: Ledger, db_url: str, tmp_path: Path) -> Lib:
    return (Lib if request.param == "lib" else Cli)(led, db_url, tmp_path)


@dataclass
class Trained:
    """A snapshot built and a model (``m`` version 1) registered on it."""

    snapshot: str
    folder: Path


@pytest.fixture
def trained(via: Lib, corpus: Path, snaps: Path) -> Trained:
    folder = snaps / "s1"
    sid = via.build(corpus, folder)
    assert via.register("m", "1", sid) == {"closed": 0, "opened": 0}
    return Trained(sid, folder)


def snapshot_rows(rows: list[dict[str, Any]], snapshot_id: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["snapshot_id"] == snapshot_id]


def status_of(rows: list[dict[str, Any]], snapshot_id: str) -> str:
    (row,) = snapshot_rows(rows, snapshot_id)
    return str(row["status"])


def data_texts(folder: Path) -> dict[str, str]:
    _, table = read_snapshot(folder)
    return dict(
        zip(table.column("record_id").to_pylist(), table.column("text").to_pylist(), strict=True)
    )


def assert_holds(texts: dict[str, str], ending: Ending, present: bool) -> None:
    """Whether the subject's records and traces (handle, names) are in ``texts``."""
    mine = [r for r in AUTHORED.get(ending.subject, []) if r in texts]
    traces = [t for t in ending.traces for text in texts.values() if t in text]
    if present:
        assert mine == AUTHORED.get(ending.subject, []) and (mine or traces)
        if ending.mentioned_by:
            assert traces
    else:
        assert mine == [] and traces == [], (mine, traces)


def open_tasks_of(tasks: list[dict[str, Any]], subject: str) -> list[dict[str, Any]]:
    return [t for t in tasks if t["subject"] == subject and t["status"] == "open"]


# ---- 1, 2: every end of use reaches back ------------------------------------------------------


@pytest.mark.parametrize("kind", ENDINGS)
def test_an_end_of_use_marks_the_snapshot_stale_and_opens_a_task(
    via: Lib, trained: Trained, kind: str
) -> None:
    ending = ENDINGS[kind]
    assert status_of(via.snapshots(), trained.snapshot) == "live"
    assert via.tasks() == []

    via.end(ending)

    assert status_of(via.snapshots(), trained.snapshot) == "stale"
    (task,) = via.tasks()
    assert task["status"] == "open"
    assert task["subject"] == ending.subject
    assert task["snapshot_id"] == trained.snapshot
    assert task["model"]["name"] == "m" and task["model"]["version"] == "1"
    assert task["role"] == ending.role
    assert task["shards"] == ending.shards
    assert f"subject {ending.subject}" in task["what"]
    assert trained.snapshot[:16] in task["what"]
    assert "shards " + ", ".join(map(str, ending.shards)) in task["what"]


@pytest.mark.parametrize("kind", ENDINGS)
def test_a_rebuild_leaves_the_subject_out_and_retires_the_old_snapshot(
    via: Lib, trained: Trained, kind: str
) -> None:
    ending = ENDINGS[kind]
    old_texts = data_texts(trained.folder)
    assert_holds(old_texts, ending, present=True)
    named_in = [  # other members' records that name the subject
        rid
        for rid, text in old_texts.items()
        if rid not in AUTHORED.get(ending.subject, []) and any(t in text for t in ending.traces)
    ]
    old_manifest = (trained.folder / "manifest.json").read_text()
    via.end(ending)

    (done,) = via.rebuild(trained.snapshot)

    assert done["old"] == trained.snapshot
    new_folder = Path(done["path"])
    assert new_folder == trained.folder.parent / "s1.r2"
    texts = data_texts(new_folder)
    assert_holds(texts, ending, present=False)
    # Only the subject went: everyone else's records are still there.
    assert len(texts) == IN_SNAPSHOT - len(AUTHORED.get(ending.subject, []))
    for rid in named_in:  # the records that named them stay, redacted
        assert R in texts[rid] and texts[rid] != old_texts[rid]
    # The old folder keeps its manifest, says why, and its data files are gone.
    assert sorted(p.name for p in trained.folder.iterdir()) == ["manifest.json", "retired.json"]
    assert (trained.folder / "manifest.json").read_text() == old_manifest
    retired = json.loads((trained.folder / "retired.json").read_text())
    assert retired["status"] == "retired"
    assert retired["snapshot_id"] == trained.snapshot
    assert retired["replaced_by"] == done["new"]
    # The registry links old and new.
    rows = via.snapshots()
    (old,) = snapshot_rows(rows, trained.snapshot)
    (new,) = snapshot_rows(rows, done["new"])
    assert (old["status"], old["replaced_by"]) == ("retired", done["new"])
    assert (new["status"], new["rebuilt_from"]) == ("live", trained.snapshot)


@pytest.mark.parametrize("kind", ENDINGS)
def test_the_task_closes_only_when_a_new_version_is_trained_on_the_rebuilt_snapshot(
    via: Lib, trained: Trained, kind: str
) -> None:
    ending = ENDINGS[kind]
    via.end(ending)
    (done,) = via.rebuild(trained.snapshot)
    assert [t["status"] for t in via.tasks()] == ["open"]  # a rebuild alone settles nothing

    # Another model trained on the rebuilt snapshot does not settle m's task either.
    assert via.register("other", "1", done["new"]) == {"closed": 0, "opened": 0}
    assert [t["status"] for t in via.tasks()] == ["open"]

    assert via.register("m", "2", done["new"]) == {"closed": 1, "opened": 0}
    (task,) = via.tasks()
    assert task["status"] == "closed"
    assert task["subject"] == ending.subject
    assert task["closed_at"] is not None
    assert "retrained as m 2" in task["note"]
    assert done["new"][:16] in task["note"]


def test_a_task_closes_through_a_chain_of_rebuilds(led: Ledger, corpus: Path, snaps: Path) -> None:
    first = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    register_model(led, "m", "1", [first], shards=SHARDS)
    led.append(choice("bob", "withdraw"))
    (second,) = rebuild_snapshot(led, first)
    register_model(led, "m", "2", [second.new.snapshot_id], shards=SHARDS)  # settles bob
    led.append(choice("cal", "withdraw"))
    (third,) = rebuild_snapshot(led, second.new.snapshot_id)
    assert [(t["subject"], t["model"]["version"]) for t in list_tasks(led)] == [("cal", "2")]

    m3 = register_model(led, "m", "3", [third.new.snapshot_id], shards=SHARDS)

    assert m3["tasks_closed_now"] == 1
    assert list_tasks(led) == []
    assert [(t["subject"], t["note"].split(" on ")[0]) for t in list_tasks(led, status=None)] == [
        ("bob", "retrained as m 2"),
        ("cal", "retrained as m 3"),
    ]


def test_a_second_end_of_use_by_the_same_subject_opens_no_second_task(
    led: Ledger, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    register_model(led, "m", "1", [sid], shards=SHARDS)
    led.append(choice("bob", "withdraw"))
    first = list_tasks(led)

    led.append(gpc("bob"))
    led.append(status("bob", "closed"))

    assert list_tasks(led) == first
    (held,) = data_in_ai(led, "bob")["snapshots"]
    assert held["withdrawn"]["reason"] == "withdrawn"  # the first end of use is the one told


# ---- 3: what does not reach a snapshot ---------------------------------------------------------


def test_a_withdrawal_for_another_purpose_leaves_the_snapshot_live(
    led: Ledger, corpus: Path, snaps: Path
) -> None:
    genai = build_snapshot(led, GENAI, corpus, snaps / "genai").snapshot_id
    research = build_snapshot(led, RESEARCH, corpus, snaps / "research").snapshot_id
    register_model(led, "m", "1", [genai, research], shards=SHARDS)

    led.append(choice("bob", "withdraw", RESEARCH))

    rows = list_snapshots(led)
    assert status_of(rows, genai) == "live"
    assert status_of(rows, research) == "stale"
    assert [t["snapshot_id"] for t in list_tasks(led)] == [research]


def test_a_withdrawal_by_someone_not_in_the_snapshot_leaves_it_live(
    led: Ledger, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    register_model(led, "m", "1", [sid], shards=SHARDS)

    led.append(choice("zed", "withdraw"))  # said yes, but wrote nothing and is not mentioned
    led.append(choice("ann", "object"))  # never said yes: her record was left out

    assert status_of(list_snapshots(led), sid) == "live"
    assert list_tasks(led, status=None) == []
    assert data_in_ai(led, "zed")["snapshots"] == []


def test_a_grant_never_makes_a_snapshot_stale(led: Ledger, corpus: Path, snaps: Path) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    register_model(led, "m", "1", [sid], shards=SHARDS)

    led.append(choice("bob", "grant"))  # in the snapshot, says yes again
    led.append(choice("ann", "grant"))  # left out of it, says yes now
    led.append(choice("bob", "grant", RESEARCH))

    assert status_of(list_snapshots(led), sid) == "live"
    assert list_tasks(led, status=None) == []


# ---- 4: registering models ---------------------------------------------------------------------


def test_a_model_registered_on_a_stale_snapshot_gets_its_tasks_at_once(
    led: Ledger, db_url: str, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    led.append(choice("bob", "withdraw"))
    led.append(choice("eve", "withdraw"))

    out = ok(run("model", "register", "m", "1", "--snapshot", sid, "--shards", str(SHARDS),
                 "--db", db_url))  # fmt: skip

    assert "warning: opened 2 task(s): a snapshot it names is stale" in out
    tasks = {t["subject"]: t for t in list_tasks(led)}
    assert sorted(tasks) == ["bob", "eve"]
    assert tasks["bob"]["shards"] == ENDINGS["withdrawal"].shards
    assert tasks["eve"]["shards"] == ENDINGS["mention"].shards
    assert {t["model"]["version"] for t in tasks.values()} == {"1"}


def test_registering_on_a_retired_snapshot_is_refused(
    led: Ledger, db_url: str, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    led.append(choice("bob", "withdraw"))
    (done,) = rebuild_snapshot(led, sid)

    res = run("model", "register", "m", "1", "--snapshot", sid, "--db", db_url)

    one_line_error(res, sid[:16], "retired", done.new.snapshot_id[:16])
    assert ok_json(run("model", "list", "--json", "--db", db_url)) == []


def test_a_model_name_and_version_can_be_registered_once(
    led: Ledger, db_url: str, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    ok(run("model", "register", "m", "1", "--snapshot", sid, "--db", db_url))

    res = run("model", "register", "m", "1", "--snapshot", sid, "--shards", "4", "--db", db_url)

    one_line_error(res, "model m version 1 is already registered")
    (model,) = ok_json(run("model", "list", "--json", "--db", db_url))
    assert model["shards"] is None  # the first registration stands


@pytest.mark.parametrize("shards", ["0", "-3", "65537"])
def test_a_shard_count_out_of_range_is_refused(
    led: Ledger, db_url: str, corpus: Path, snaps: Path, shards: str
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id

    res = run("model", "register", "m", "1", "--snapshot", sid, "--shards", shards, "--db", db_url)

    one_line_error(res, f"shards {shards}", "65536")
    assert ok_json(run("model", "list", "--json", "--db", db_url)) == []


def test_a_shard_count_that_is_not_a_number_is_refused(
    led: Ledger, db_url: str, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id

    res = run("model", "register", "m", "1", "--snapshot", sid, "--shards", "many", "--db", db_url)

    assert res.exit_code == 2  # a usage error, told by the option parser
    assert "Traceback" not in res.output and "--shards" in res.stderr
    assert ok_json(run("model", "list", "--json", "--db", db_url)) == []


# ---- 5: closing tasks by hand ------------------------------------------------------------------


@pytest.fixture
def one_task(led: Ledger, corpus: Path, snaps: Path) -> int:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    register_model(led, "m", "1", [sid], shards=SHARDS)
    led.append(choice("bob", "withdraw"))
    (task,) = list_tasks(led)
    return int(task["id"])


def test_task_close_with_a_note_closes_it(led: Ledger, db_url: str, one_task: int) -> None:
    out = ok(run("task", "close", str(one_task), "--note", "unlearned shard 15 by hand",
                 "--actor", "staff:kim", "--db", db_url))  # fmt: skip

    assert f"task {one_task} closed: unlearned shard 15 by hand" in out
    (task,) = list_tasks(led, status=None)
    assert (task["status"], task["note"], task["closed_by"]) == (
        "closed",
        "unlearned shard 15 by hand",
        "staff:kim",
    )
    assert list_tasks(led, status="open") == []


def test_closing_a_task_twice_is_refused(led: Ledger, db_url: str, one_task: int) -> None:
    ok(run("task", "close", str(one_task), "--note", "done", "--db", db_url))

    res = run("task", "close", str(one_task), "--note", "again", "--db", db_url)

    one_line_error(res, f"task {one_task} is already closed")
    (task,) = list_tasks(led, status=None)
    assert task["note"] == "done"


@pytest.mark.parametrize("note", ["", "   "])
def test_closing_a_task_without_a_note_is_refused(
    led: Ledger, db_url: str, one_task: int, note: str
) -> None:
    res = run("task", "close", str(one_task), "--note", note, "--db", db_url)

    one_line_error(res, "--note")
    assert [t["status"] for t in list_tasks(led, status=None)] == ["open"]


def test_closing_a_task_that_does_not_exist_is_refused(db_url: str, one_task: int) -> None:
    res = run("task", "close", str(one_task + 100), "--note", "done", "--db", db_url)

    one_line_error(res, f"no task {one_task + 100}")


def test_task_list_shows_status_and_age_of_every_task(
    led: Ledger, db_url: str, one_task: int
) -> None:
    led.append(choice("cal", "withdraw"))
    close_task(led, one_task, "retrained by hand", actor="staff:kim")

    everything = ok_json(run("task", "list", "--status", "all", "--json", "--db", db_url))
    still_open = ok_json(run("task", "list", "--json", "--db", db_url))
    closed = ok_json(run("task", "list", "--status", "closed", "--json", "--db", db_url))

    assert [(t["subject"], t["status"]) for t in everything] == [
        ("bob", "closed"),
        ("cal", "open"),
    ]  # oldest first
    for t in everything:
        assert isinstance(t["age_days"], int | float) and 0 <= t["age_days"] < 1
        assert t["opened_at"]
    assert [t["subject"] for t in still_open] == ["cal"]
    assert [t["subject"] for t in closed] == ["bob"]
    table = ok(run("task", "list", "--status", "all", "--db", db_url))
    assert "age (days)" in table and "retrain or unlearn: subject cal" in table


def test_task_list_refuses_an_unknown_status(db_url: str, one_task: int) -> None:
    one_line_error(run("task", "list", "--status", "done", "--db", db_url), "open, closed or all")


# ---- 6: rebuilds -------------------------------------------------------------------------------


def test_rebuild_stale_rebuilds_every_stale_snapshot_and_only_those(
    led: Ledger, db_url: str, corpus: Path, snaps: Path
) -> None:
    genai = build_snapshot(led, GENAI, corpus, snaps / "genai").snapshot_id
    research = build_snapshot(led, RESEARCH, corpus, snaps / "research").snapshot_id
    led.append(choice("bob", "withdraw"))  # genai only
    led.append(gpc("gia"))  # both
    before = {r["snapshot_id"]: r["status"] for r in list_snapshots(led)}
    assert before == {genai: "stale", research: "stale"}
    untouched = build_snapshot(led, GENAI, corpus, snaps / "later").snapshot_id

    done = ok_json(run("snapshot", "rebuild", "--stale", "-q", "--json", "--db", db_url))

    assert sorted(d["old"] for d in done) == sorted([genai, research])
    rows = list_snapshots(led)
    assert {r["snapshot_id"]: r["status"] for r in rows if r["status"] != "live"} == {
        genai: "retired",
        research: "retired",
    }
    assert status_of(rows, untouched) == "live"
    for d in done:
        texts = data_texts(Path(d["path"]))
        assert "p7" not in texts  # gia's GPC counts for both purposes
        assert ("p1" in texts) == (d["old"] == research)  # bob withdrew from genai only
    again = ok(run("snapshot", "rebuild", "--stale", "-q", "--db", db_url))
    assert "no stale snapshots" in again


def test_a_rebuild_whose_corpus_is_gone_fails_and_the_snapshot_stays_stale(
    led: Ledger, db_url: str, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    led.append(choice("bob", "withdraw"))
    corpus.unlink()

    for args in ([sid], ["--stale"]):
        res = run("snapshot", "rebuild", *args, "-q", "--db", db_url)
        one_line_error(res, sid[:16], "corpus", "stays stale")

    assert status_of(list_snapshots(led), sid) == "stale"
    assert sorted(p.name for p in snaps.iterdir()) == ["s1"]  # nothing half-built
    assert "p1" in data_texts(snaps / "s1")  # its data is kept until a rebuild succeeds


def test_a_rebuild_against_the_same_ledger_head_gives_the_same_snapshot_id(
    led: Ledger, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    led.append(choice("bob", "withdraw"))
    (first,) = rebuild_snapshot(led, sid)
    first_texts = data_texts(first.path)
    (second,) = rebuild_snapshot(led, first.new.snapshot_id)  # nothing happened in between

    assert first.new.snapshot_id != sid  # bob's withdrawal changed the content
    assert second.new.snapshot_id == first.new.snapshot_id
    assert second.path == snaps / "s1.r3"
    assert data_texts(second.path) == first_texts
    assert not (first.path / "data").exists()


def test_rebuilding_a_retired_snapshot_is_refused(
    led: Ledger, db_url: str, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    led.append(choice("bob", "withdraw"))
    rebuild_snapshot(led, sid)

    res = run("snapshot", "rebuild", sid, "-q", "--db", db_url)

    one_line_error(res, "already retired")


def test_snapshot_rebuild_needs_one_snapshot_or_stale(db_url: str, led: Ledger) -> None:
    one_line_error(run("snapshot", "rebuild", "-q", "--db", db_url), "--stale")
    one_line_error(
        run("snapshot", "rebuild", "abcdef0123", "--stale", "-q", "--db", db_url), "--stale"
    )


# ---- 7: concurrency ----------------------------------------------------------------------------


def test_concurrent_withdrawals_each_reach_the_snapshot(
    led: Ledger, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    register_model(led, "m", "1", [sid], shards=SHARDS)
    start = threading.Barrier(len(CROWD))
    errors: list[BaseException] = []

    def withdraw(subject: str) -> None:
        try:
            start.wait()
            led.append(choice(subject, "withdraw"))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=withdraw, args=(w,)) for w in CROWD]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert status_of(list_snapshots(led), sid) == "stale"
    tasks = list_tasks(led)
    assert sorted(t["subject"] for t in tasks) == CROWD
    assert {t["subject"]: t["shards"] for t in tasks} == {w: [shard_key(w) % SHARDS] for w in CROWD}
    for w in CROWD:
        (held,) = data_in_ai(led, w)["snapshots"]
        assert held["withdrawn"] is not None and held["withdrawn"]["reason"] == "withdrawn"
    assert led.verify().ok


def test_a_withdrawal_made_while_a_snapshot_is_built_reaches_it(
    led: Ledger, corpus: Path, snaps: Path
) -> None:
    appended: list[int] = []

    def withdraw_meanwhile(_records: int) -> None:
        if not appended:
            appended.append(led.append(choice("bob", "withdraw")).seq)

    manifest = build_snapshot(led, GENAI, corpus, snaps / "s1", progress=withdraw_meanwhile)
    assert appended and manifest.ledger_head.seq < appended[0]  # it did land mid-build

    held = snapshots_of(led, "bob")
    assert held, "bob's records are in the snapshot"
    assert [s["status"] for s in held] == ["stale"]


def test_a_model_registered_while_a_withdrawal_commits_still_gets_its_task(
    led: Ledger, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    registered: list[dict[str, Any]] = []
    register = threading.Thread(
        target=lambda: registered.append(register_model(led, "m", "1", [sid], shards=SHARDS))
    )

    with store.write(led.engine) as conn:  # the withdrawal's transaction, still open
        led.append_in(conn, [choice("bob", "withdraw")])
        register.start()
        register.join(2)  # on SQLite it waits for the commit; it may finish here otherwise
    register.join()

    assert registered and status_of(list_snapshots(led), sid) == "stale"
    assert [(t["subject"], t["model"]["name"]) for t in list_tasks(led)] == [("bob", "m")]


# ---- 8: reports and "Your data in AI" -----------------------------------------------------------


def test_report_training_content_writes_markdown_and_json(
    led: Ledger, db_url: str, corpus: Path, snaps: Path, tmp_path: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    register_model(led, "m", "1", [sid], owner="ml@example.com", shards=SHARDS)
    led.append(choice("bob", "withdraw"))
    out = tmp_path / "reports"
    out.mkdir()

    ok(run("report", "training-content", "m", "1", "--out", out, "--db", db_url))

    assert sorted(p.name for p in out.iterdir()) == [
        "training-content-m-1.json",
        "training-content-m-1.md",
    ]
    report = json.loads((out / "training-content-m-1.json").read_text())
    assert report["general_information"]["model"] == {"name": "m", "version": "1"}
    assert report["general_information"]["provider"] == "ml@example.com"
    assert report["general_information"]["training_data_size"] == {
        "records": IN_SNAPSHOT,
        "snapshots": 1,
    }
    (used,) = report["data_sources"]["user_data"]
    assert (used["snapshot_id"], used["purpose"], used["status"]) == (sid, GENAI, "stale")
    by_category = {"article": 1, "comment": 1, "post": 13}
    assert used["records_by_category"] == by_category
    assert report["data_sources"]["records_by_category"] == by_category
    processing = report["data_processing"]
    assert processing["excluded_records_by_reason"] == EXCLUDED
    assert processing["mentions_redacted"] == 0
    assert processing["jurisdictions"] == [
        {"jurisdiction": "DE", "regime": "opt-in", "authors": 13},
        {"jurisdiction": "US-CA", "regime": "opt-out", "authors": 1},
    ]
    assert processing["withdrawals_after_training"] == {"tasks_open": 1, "tasks_closed": 0}
    md = (out / "training-content-m-1.md").read_text()
    assert md.startswith("# Public summary of training content: m 1")
    for line in (
        f"| {sid[:16]} | {GENAI} |",
        "- no-consent: 1",
        "- category-never-used: 1",
        "- post: 13",
        "- DE (opt-in): 13",
        "- US-CA (opt-out): 1",
        "Withdrawals after training: 1 retraining/unlearning task(s) open, 0 closed.",
    ):
        assert line in md, line


def test_report_subject_holds_their_events_snapshots_and_tasks(
    led: Ledger, db_url: str, corpus: Path, snaps: Path, tmp_path: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    register_model(led, "m", "1", [sid], shards=SHARDS)
    led.append(choice("bob", "withdraw"))
    path = tmp_path / "bob.json"

    ok(run("report", "subject", "bob", "--out", path, "--db", db_url))

    report = json.loads(path.read_text())
    assert report["subject"]["id"] == "bob" and report["subject"]["handle"] == "bob.b"
    choices = [(e["purpose"], e["value"]) for e in report["ledger_events"] if e["type"] == "choice"]
    assert choices == [(GENAI, "grant"), (RESEARCH, "grant"), (GENAI, "withdraw")]
    assert [(s["snapshot_id"], s["status"]) for s in report["snapshots"]] == [(sid, "stale")]
    (task,) = report["tasks"]
    assert (task["subject"], task["snapshot_id"], task["status"]) == ("bob", sid, "open")
    assert report["data_in_ai"]["summary"]["retraining_pending"] == 1
    printed = ok_json(run("report", "subject", "bob", "--db", db_url))
    assert printed["tasks"] == report["tasks"]


def test_report_subject_of_an_unknown_subject_is_refused(db_url: str, led: Ledger) -> None:
    one_line_error(run("report", "subject", "nobody", "--db", db_url), "nobody")


def story(ledger: Ledger, subject: str) -> tuple[str, list[str]]:
    (held,) = data_in_ai(ledger, subject)["snapshots"]
    return held["in_words"], [m["in_words"] for m in held["models"]]


def test_data_in_ai_tells_what_happened_after_a_withdrawal(
    led: Ledger, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    register_model(led, "m", "1", [sid], shards=SHARDS)
    assert story(led, "eve") == ("In use.", ["Trained with your data, which you allowed."])
    (held,) = data_in_ai(led, "eve")["snapshots"]
    assert (held["role"], held["mention_records"]) == ("mention", 2)
    assert held["role_in_words"] == "other members' posts that mention you"

    led.append(choice("eve", "withdraw"))
    snapshot_words, model_words = story(led, "eve")
    assert snapshot_words.startswith("Waiting to be rebuilt without your data since ")
    assert [w.split(" since ")[0] for w in model_words] == ["Retraining or unlearning pending"]

    (done,) = rebuild_snapshot(led, sid)
    snapshot_words, model_words = story(led, "eve")
    assert snapshot_words.startswith("Rebuilt without your data on ")
    assert model_words[0].startswith("Retraining or unlearning pending since ")

    register_model(led, "m", "2", [done.new.snapshot_id], shards=SHARDS)
    _, model_words = story(led, "eve")
    assert model_words[0].startswith("Retrained or unlearned without your data on ")
    summary = data_in_ai(led, "eve")["summary"]
    assert summary == {
        "snapshots": 1,
        "snapshots_waiting_for_rebuild": 0,
        "models": 1,
        "retraining_pending": 0,
    }


def test_the_rebuilt_data_has_the_same_columns_and_no_author_ids(
    led: Ledger, corpus: Path, snaps: Path
) -> None:
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    led.append(choice("bob", "withdraw"))
    (done,) = rebuild_snapshot(led, sid)

    _, table = read_snapshot(done.path)

    assert table.schema.names == ["record_id", "category", "created_at", "text", "shard_key"]
    assert table.schema.field("shard_key").type == pa.int32()
    keys = dict(
        zip(
            table.column("record_id").to_pylist(),
            table.column("shard_key").to_pylist(),
            strict=True,
        )
    )
    authors = {r["record_id"]: r["author_id"] for r in CORPUS}
    assert keys == {rid: shard_key(authors[rid]) for rid in keys}


def test_an_objection_approved_later_reaches_the_snapshots_that_name_the_person(
    led: Ledger, corpus: Path, snaps: Path
) -> None:
    """A person without an account who shares a name in a post ("Dan Dean") objects after
    a snapshot was built: the lineage did not know them, so the snapshot's own files are
    read; it goes stale like after a withdrawal, and its rebuild redacts the name."""
    from askfirst import accounts, cases
    from askfirst.gate.named import reach_named

    accounts.create_account(led, "ana", "long-enough-1", kind="staff", role="reviewer")
    other = build_snapshot(led, RESEARCH, corpus, snaps / "research").snapshot_id
    sid = build_snapshot(led, GENAI, corpus, snaps / "s1").snapshot_id
    assert "Dan Dean" in data_texts(snaps / "s1")["p4"]
    case = cases.open_case(led, "objection", actor="system", names=["dan  dean"])
    person = cases.approve(led, case.id, "ana", "namesake").case.subject
    assert person is not None
    assert status_of(list_snapshots(led), sid) == "live"  # nothing in the lineage yet

    done = reach_named(led, person)

    rows = list_snapshots(led)
    assert status_of(rows, sid) == "stale" and status_of(rows, other) == "stale"
    assert done.withdrawals == 2
    assert reach_named(led, person).withdrawals == 0  # once
    (rebuilt,) = rebuild_snapshot(led, sid)
    assert "Dan Dean" not in data_texts(rebuilt.path)["p4"]


def test_an_erasure_leaves_no_trace_in_the_rebuilt_snapshots_or_the_data_folder(
    led: Ledger, db_url: str, corpus: Path, tmp_path: Path
) -> None:
    """Dan asks to be forgotten after a snapshot holding his post, and his name in Fay's,
    was built: approved by two reviewers on the command line, the snapshot is rebuilt
    without him, and nothing under askfirst's data folder (snapshots, keys, evidence) or
    in the database names him any more — yet his name is still redacted."""
    from askfirst import accounts, cases
    from askfirst.ledger.tables import metadata

    data = tmp_path / "askfirst-data"
    keys = data / "keys"
    for name in ("ana", "ben"):
        accounts.create_account(led, name, "long-enough-1", kind="staff", role="reviewer")
    sid = build_snapshot(led, GENAI, corpus, data / "snapshots" / "s1").snapshot_id
    case = cases.open_case(led, "erasure", actor="dan", subject="dan")
    common = ("--db", db_url, "--key-dir", str(keys))
    ok(run("case", "propose", str(case.id), "--staff", "ana", "--reason", "asked", "--db", db_url))
    ok(run("case", "approve", str(case.id), "--staff", "ben", *common))
    assert status_of(list_snapshots(led), sid) == "stale"
    ok(run("snapshot", "rebuild", "--stale", *common))
    traces = ("Dan Dean", "dan.d", "My last project")
    for path in data.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            for trace in traces:
                assert trace.encode() not in blob, (trace, path)
    with led.engine.connect() as conn:
        dump = "\n".join(
            repr(tuple(row)) for t in metadata.sorted_tables for row in conn.execute(t.select())
        )
    for trace in traces:
        assert trace not in dump, trace
    (new,) = [r for r in list_snapshots(led) if r["status"] == "live" and r["purpose"] == GENAI]
    texts = data_texts(Path(new["path"]))
    assert "p5" not in texts and R in texts["p4"]
    assert led.verify().ok
