"""The gate end to end: a corpus in, a snapshot out, on SQLite and again on PostgreSQL.

Every test registers the same small platform (``world``, all opt-in, so only a grant
makes a yes): members who said yes, who said nothing, who withdrew or sent GPC, who said
yes and withdrew only after the snapshot's as-of time, or said yes only after it; a
minor; a closed and a deceased account; people without an account, named in members'
posts. It then writes a corpus in one format or another, builds a snapshot and looks at
what a user would see: which records are in the Parquet and their texts, the manifest's
counts, the lineage, and, for failures, the exit code, the one-line error and the
folders left behind.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from askfirst import (
    InputError,
    Ledger,
    NewEvent,
    SnapshotManifest,
    StorageError,
    SubjectIn,
    build_snapshot,
    decide,
    load_policy,
    open_ledger,
    read_snapshot,
    snapshots_of,
)
from askfirst.cli import app
from askfirst.lineage import list_snapshots
from conftest import fresh_pg_url

GENAI = "genai-training"
RESEARCH = "third-party-research"
PURPOSES = (GENAI, RESEARCH)

SINCE = datetime(2025, 1, 1, tzinfo=UTC)  # the subjects are registered
GRANTED = datetime(2025, 2, 1, tzinfo=UTC)  # most of them say yes
CHANGED = datetime(2025, 2, 10, tzinfo=UTC)  # some change their mind, close, die
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)  # the snapshots' as-of time
LATER = datetime(2025, 7, 1, tzinfo=UTC)  # events recorded after the as-of time
AS_OF_ISO = "2025-06-01T00:00:00Z"
CREATED = "2025-03-01T09:30:00Z"

# Every reason the manifest counts, always present (DESIGN.md / the issue).
REASONS = {
    "malformed",
    "category-never-used",
    "category-not-allowed",
    "created-after-as-of",
    "unknown-subject",
    "erased",
    "account-closed",
    "deceased",
    "minor",
    "withdrawn",
    "gpc",
    "reconsent-needed",
    "no-consent",
    "default-off",
    "notice-pending",
    "mention-not-consented",
}
OUTPUT_COLUMNS = ["record_id", "category", "created_at", "text", "shard_key"]
R = "[redacted]"


# ---- the platform -----------------------------------------------------------------------

SUBJECTS = [
    # says yes to both purposes
    SubjectIn(id="bob", jurisdiction="DE", handle="bob.b", names=["Bob Brown"]),
    SubjectIn(id="cyd", jurisdiction="DE", handle="cyd", names=["Cyd Cole"]),
    # never says anything: no-consent (opt-in everywhere)
    SubjectIn(id="ann", jurisdiction="DE", handle="anna.k", names=["Anna Keller"]),
    # says yes, but is a minor / closes the account / dies / withdraws / sends GPC
    SubjectIn(id="kid", jurisdiction="DE", handle="kiddo", birth_date=date(2015, 5, 5)),
    SubjectIn(id="shut", jurisdiction="DE", handle="shut"),
    SubjectIn(id="dora", jurisdiction="DE", handle="dora.d", names=["Dora Dean"]),
    SubjectIn(id="wes", jurisdiction="DE", handle="wes"),
    SubjectIn(id="gus", jurisdiction="US-CA", handle="gus"),
    # a person without an account, named in members' posts, who objected
    SubjectIn(id="paul", kind="person", names=["Paul Person"]),
    # another, who never said anything
    SubjectIn(id="zoe", kind="person", names=["Zoë Ørsted"]),
    # says yes, then withdraws after the as-of time (reaching back)
    SubjectIn(id="lou", jurisdiction="DE", handle="lou", names=["Lou Lane"]),
    # says yes only after the as-of time
    SubjectIn(id="tim", jurisdiction="DE", handle="tim"),
    # say yes; some of them say no in a test, after the as-of time
    *(SubjectIn(id=s, jurisdiction="DE") for s in ("eli", "fay", "gil", "hal", "ivy")),
]
LATE_NO_SAYERS = ("eli", "fay", "gil", "hal", "ivy")
SUBJECT_IDS = [s.id for s in SUBJECTS]
# The author decision at AS_OF for a build as of AS_OF (with reaching back).
AUTHOR_REASON = {
    "ann": "no-consent",
    "kid": "minor",
    "shut": "account-closed",
    "dora": "deceased",
    "wes": "withdrawn",
    "gus": "gpc",
    "paul": "withdrawn",
    "lou": "withdrawn",
    "tim": "no-consent",
    "ghost": "unknown-subject",
}


def micros(t: datetime) -> int:
    return int((t - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def choice(subject: str, value: str, at: datetime, purpose: str = GENAI) -> NewEvent:
    return NewEvent(
        type="choice",
        subject=subject,
        purpose=purpose,
        value=value,
        notice_version=1,
        actor=subject,
        source="test",
        recorded_at=micros(at),
    )


def both(subject: str, value: str, at: datetime) -> list[NewEvent]:
    return [choice(subject, value, at, p) for p in PURPOSES]


def status(subject: str, value: str, at: datetime) -> NewEvent:
    return NewEvent(
        type="status",
        subject=subject,
        value=value,
        actor="system",
        source="test",
        recorded_at=micros(at),
    )


def gpc(subject: str, at: datetime) -> NewEvent:
    return NewEvent(
        type="gpc", subject=subject, value="1", actor=subject, source="test", recorded_at=micros(at)
    )


def world(ledger: Ledger) -> Ledger:
    ledger.register(SUBJECTS, since=SINCE)
    events: list[NewEvent] = []
    for s in ("bob", "cyd", "kid", "shut", "dora", "wes", "gus", "lou", *LATE_NO_SAYERS):
        events += both(s, "grant", GRANTED)
    events += both("paul", "object", CHANGED)
    events += both("wes", "withdraw", CHANGED)
    events += [
        gpc("gus", CHANGED),
        status("shut", "closed", CHANGED),
        status("dora", "deceased", CHANGED),
    ]
    events += both("lou", "withdraw", LATER)
    events += both("tim", "grant", LATER)
    ledger.append_many(events)
    return ledger


@pytest.fixture
def led(ledger: Ledger) -> Ledger:
    return world(ledger)


# ---- corpora ----------------------------------------------------------------------------


def rec(
    record_id: str,
    author: str,
    text: str = "hello",
    *,
    category: str = "post",
    created_at: str = CREATED,
    mentions: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "author_id": author,
        "category": category,
        "created_at": created_at,
        "text": text,
        "mentions": list(mentions),
    }


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any] | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """CSV with a header; mentions as a JSON array text (an empty cell: none)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["record_id", "author_id", "category", "created_at", "text", "mentions"])
        for r in rows:
            mentions = json.dumps(r["mentions"]) if r.get("mentions") else ""
            w.writerow(
                [
                    r["record_id"],
                    r["author_id"],
                    r["category"],
                    r["created_at"],
                    r["text"],
                    mentions,
                ]
            )
    return path


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def write_parquet(path: Path, rows: Sequence[Mapping[str, Any]], times: str = "tz") -> Path:
    """``times``: "tz" (timestamp with UTC zone), "naive" (timestamp without a zone,
    which Parquet writers mean as UTC) or "text" (ISO 8601 strings)."""
    created: pa.Array
    if times == "text":
        created = pa.array([r["created_at"] for r in rows], pa.string())
    elif times == "tz":
        created = pa.array([parse_time(r["created_at"]) for r in rows], pa.timestamp("us", "UTC"))
    else:
        naive = [parse_time(r["created_at"]).replace(tzinfo=None) for r in rows]
        created = pa.array(naive, pa.timestamp("us"))
    table = pa.table(
        {
            "record_id": pa.array([r["record_id"] for r in rows], pa.string()),
            "author_id": pa.array([r["author_id"] for r in rows], pa.string()),
            "category": pa.array([r["category"] for r in rows], pa.string()),
            "created_at": created,
            "text": pa.array([r["text"] for r in rows], pa.string()),
            "mentions": pa.array([r["mentions"] for r in rows], pa.list_(pa.string())),
        }
    )
    pq.write_table(table, path)
    return path


# A corpus a platform might hand over: usable records, records that may not be used,
# and mentions to redact. Written in every format, it must give the same snapshot.
CORPUS = [
    rec("p1", "bob", "Shipped the new release today."),
    rec("p2", "cyd", "Great talk by @bob.b and @anna.k, thanks!", category="comment"),
    rec("p3", "bob", "Lunch with Anna Keller.", category="article", mentions=["ann"]),
    rec("p4", "bob", "In memory of Dora Dean.", category="profile"),
    rec("p5", "cyd", "Notes", created_at="2025-03-01T10:30:00+01:00", category="video"),
    rec("p6", "ann", "my own post"),
    rec("p7", "bob", "my 2FA phone is +49 170 000", category="security"),
    rec("p8", "kid", "school trip"),
    rec("p9", "cyd", "from the future", created_at="2025-06-02T00:00:00Z"),
    rec("p10", "cyd", "Cyd meets @cyd and @bob.b", mentions=["bob"]),
]
CORPUS_OUT = {
    "p1": "Shipped the new release today.",
    "p2": f"Great talk by @bob.b and {R}, thanks!",
    "p3": f"Lunch with {R}.",
    "p4": f"In memory of {R}.",
    "p5": "Notes",
    "p10": "Cyd meets @cyd and @bob.b",
}
CORPUS_EXCLUDED = {
    "no-consent": 1,
    "category-never-used": 1,
    "minor": 1,
    "created-after-as-of": 1,
}


# ---- building and reading ---------------------------------------------------------------


def nonzero(manifest: SnapshotManifest | Mapping[str, Any]) -> dict[str, int]:
    excluded = manifest.excluded if isinstance(manifest, SnapshotManifest) else manifest["excluded"]
    return {k: v for k, v in excluded.items() if v}


def check_snapshot(out: Path) -> tuple[SnapshotManifest, pa.Table]:
    """Read a snapshot back and check what holds for every one of them."""
    manifest, table = read_snapshot(out)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest.to_json()
    assert set(manifest.excluded) == REASONS
    assert manifest.input_records == manifest.output_records + sum(manifest.excluded.values())
    assert manifest.output_records == table.num_rows
    assert table.schema.names == OUTPUT_COLUMNS  # no author id, nothing else
    assert table.schema.field("created_at").type == pa.timestamp("us", "UTC")
    files = sorted(p.relative_to(out).as_posix() for p in (out / "data").glob("*.parquet"))
    assert files == sorted(manifest.files)
    keys = table.column("shard_key")
    assert keys.null_count == 0 and all(0 <= k < 65_536 for k in keys.to_pylist())
    for f in files:  # each data file alone holds the same columns
        assert pq.read_schema(out / f).names == OUTPUT_COLUMNS
    ids = table.column("record_id").to_pylist()
    assert len(ids) == len(set(ids))
    leftovers = [p.name for p in out.parent.iterdir() if ".building-" in p.name]
    assert leftovers == []
    return manifest, table


def texts(table: pa.Table) -> dict[str, str]:
    return dict(
        zip(table.column("record_id").to_pylist(), table.column("text").to_pylist(), strict=True)
    )


def build(
    ledger: Ledger,
    corpus: Path,
    out: Path,
    *,
    purpose: str = GENAI,
    as_of: datetime | None = AS_OF,
    on_mention: str = "redact",
) -> tuple[SnapshotManifest, dict[str, str]]:
    manifest = build_snapshot(ledger, purpose, corpus, out, as_of=as_of, on_mention=on_mention)
    again, table = check_snapshot(out)
    assert again == manifest
    return manifest, texts(table)


# ---- the command line -------------------------------------------------------------------

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


def cli_build(db: str, corpus: Path, out: Path, *extra: str) -> Result:
    return run(
        "snapshot", "build", "--purpose", GENAI, "--corpus", corpus, "--out", out,
        "--as-of", AS_OF_ISO, "-q", "--db", db, *extra,
    )  # fmt: skip


def listed(db: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(run("snapshot", "list", "--json", "--db", db)))
    return rows


@pytest.fixture
def snaps(tmp_path: Path) -> Path:
    """The folder snapshots are built in (kept apart from the corpora)."""
    folder = tmp_path / "snapshots"
    folder.mkdir()
    return folder


# ---- formats ----------------------------------------------------------------------------


def write_folder(folder: Path, rows: Sequence[Mapping[str, Any]], formats: Sequence[str]) -> Path:
    """``rows`` spread over one file per format (cycling), some in a subfolder, with a
    README beside them that is not part of the corpus."""
    folder.mkdir()
    (folder / "nested").mkdir()
    (folder / "README.md").write_text("records exported on 2025-06-01\n")
    for k, fmt in enumerate(formats):
        part = [r for i, r in enumerate(rows) if i % len(formats) == k]
        where = folder / "nested" if k % 2 else folder
        if fmt == "jsonl":
            write_jsonl(where / f"part{k}.jsonl", part)
        elif fmt == "ndjson":
            write_jsonl(where / f"part{k}.ndjson", part)
        elif fmt == "csv":
            write_csv(where / f"part{k}.csv", part)
        else:
            write_parquet(where / f"part{k}.parquet", part, fmt.split("-")[1])
    return folder


def write_corpus(tmp_path: Path, fmt: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    if fmt == "jsonl":
        return write_jsonl(tmp_path / "corpus.jsonl", rows)
    if fmt in ("ndjson", "json"):
        return write_jsonl(tmp_path / f"corpus.{fmt}", rows)
    if fmt == "csv":
        return write_csv(tmp_path / "corpus.csv", rows)
    if fmt.startswith("parquet-"):
        return write_parquet(tmp_path / "corpus.parquet", rows, fmt.split("-")[1])
    if fmt == "folder-jsonl":
        return write_folder(tmp_path / "corpus", rows, ["jsonl", "jsonl", "ndjson"])
    if fmt == "folder-parquet-jsonl":
        return write_folder(tmp_path / "corpus", rows, ["parquet-tz", "jsonl", "parquet-text"])
    if fmt == "folder-csv-jsonl-parquet":
        return write_folder(tmp_path / "corpus", rows, ["csv", "jsonl", "parquet-tz"])
    raise AssertionError(fmt)


FORMATS = [
    "json",
    "parquet-tz",
    "parquet-naive",
    "parquet-text",
    "folder-jsonl",
    "folder-parquet-jsonl",
]


def check_same_as_jsonl(led: Ledger, tmp_path: Path, snaps: Path, formats: Sequence[str]) -> None:
    """The same records as JSONL (the reference) and in each of ``formats`` give the same
    records, texts, times, counts and snapshot id."""
    ref_corpus = write_jsonl(tmp_path / "reference.jsonl", CORPUS)
    build_snapshot(led, GENAI, ref_corpus, snaps / "ref", as_of=AS_OF)
    ref, ref_table = check_snapshot(snaps / "ref")
    assert texts(ref_table) == CORPUS_OUT
    assert nonzero(ref) == CORPUS_EXCLUDED
    assert (ref.input_records, ref.output_records) == (len(CORPUS), len(CORPUS_OUT))
    assert ref.redacted_mentions == 3  # anna.k in p2, ann in p3, Dora Dean in p4
    # the video posted at 10:30 in UTC+1 is stored as 09:30 UTC
    ids = ref_table.column("record_id").to_pylist()
    when = dict(zip(ids, ref_table.column("created_at").to_pylist(), strict=True))
    assert when["p5"] == datetime(2025, 3, 1, 9, 30, tzinfo=UTC)

    for fmt in formats:
        where = tmp_path / fmt
        where.mkdir()
        corpus = write_corpus(where, fmt, CORPUS)
        build_snapshot(led, GENAI, corpus, snaps / fmt, as_of=AS_OF)
        manifest, table = check_snapshot(snaps / fmt)
        assert texts(table) == CORPUS_OUT, fmt
        assert table.sort_by("record_id").equals(ref_table.sort_by("record_id")), fmt
        assert manifest.excluded == ref.excluded, fmt
        assert manifest.redacted_mentions == ref.redacted_mentions, fmt
        assert manifest.input_records == ref.input_records, fmt
        assert manifest.snapshot_id == ref.snapshot_id, fmt
        assert manifest.corpus == str(corpus.resolve()), fmt


def test_each_format_gives_the_same_snapshot(led: Ledger, tmp_path: Path, snaps: Path) -> None:
    check_same_as_jsonl(led, tmp_path, snaps, FORMATS)


def test_the_same_records_come_out_however_the_corpus_is_cut_into_batches(
    led: Ledger, tmp_path: Path
) -> None:
    """Records that may mention someone wait and go through the mention step together;
    batches of 4 with the step run every 3 such records, or on 40 bytes of text at a
    time, must give what one batch does."""
    from askfirst.gate import consent as consent_mod
    from askfirst.gate import corpus as corpus_mod
    from askfirst.gate import engine_duckdb
    from askfirst.gate.plan import Plan

    rows = [{**r, "record_id": f"{r['record_id']}-{k}"} for k in range(7) for r in CORPUS]
    corpus = corpus_mod.find(write_jsonl(tmp_path / "c.jsonl", rows))
    outcomes = []
    cuts = (
        ("whole", {}),
        ("cut", {"batch_rows": 4, "mention_rows": 3}),
        ("bytes", {"batch_rows": 9, "mention_bytes": 40}),  # a record or two at a time
    )
    for name, sizes in cuts:
        consent = consent_mod.gather(led, GENAI, AS_OF)
        plan = Plan(consent=consent, corpus=corpus, **sizes)
        out = engine_duckdb.run(plan, tmp_path / name)
        data = pq.read_table(tmp_path / name / "data").sort_by("record_id").to_pylist()
        outcomes.append((out, data))
    (whole, whole_rows), (cut, cut_rows), (by_bytes, by_bytes_rows) = outcomes
    assert cut_rows == whole_rows == by_bytes_rows
    assert by_bytes.digest == whole.digest and by_bytes.lineage.equals(whole.lineage)
    assert by_bytes.redacted_mentions == whole.redacted_mentions
    assert {r["record_id"].split("-")[0]: r["text"] for r in cut_rows} == CORPUS_OUT
    assert len(cut_rows) == 7 * len(CORPUS_OUT)
    assert (cut.output_records, cut.excluded, cut.redacted_mentions, cut.digest) == (
        whole.output_records,
        whole.excluded,
        whole.redacted_mentions,
        whole.digest,
    )
    assert cut.redacted_mentions == 7 * 3
    assert cut.lineage.equals(whole.lineage)


def test_a_big_ledger_reads_its_directory_and_choices_in_other_processes_to_the_same_snapshot(
    led: Ledger, tmp_path: Path, snaps: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from askfirst import decisions as decisions_mod
    from askfirst.ledger import store

    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    plain, out = build(led, corpus, snaps / "one")
    monkeypatch.setattr(decisions_mod, "ASIDE_SUBJECTS", 1)  # every ledger counts as big
    started: list[list[str]] = []

    class Spy(subprocess.Popen[bytes]):
        def __init__(self, args: list[str], **kwargs: Any) -> None:
            started.append(args)
            super().__init__(args, **kwargs)

    monkeypatch.setattr(store.subprocess, "Popen", Spy)
    aside, out_aside = build(led, corpus, snaps / "two")
    # On SQLite the state at the head (the current-state tables), the protected names and
    # the directory really were read by three other processes. (The state at the as-of
    # time comes from the events this process keeps as columns since the first build.)
    assert len(started) == (3 if led.engine.dialect.name == "sqlite" else 0)
    assert out_aside == out == CORPUS_OUT
    assert aside.snapshot_id == plain.snapshot_id
    assert aside.redacted_mentions == plain.redacted_mentions == 3

    # A corpus where no record may mention anyone (no list, no '@', no protected name)
    # never reads the directory: only the state at the head and the names were read aside.
    quiet = write_jsonl(tmp_path / "q.jsonl", [r for r in CORPUS if r["record_id"] in QUIET])
    started.clear()
    _, out_alone = build(led, quiet, snaps / "three")
    assert len(started) == (2 if led.engine.dialect.name == "sqlite" else 0)
    assert out_alone == {k: v for k, v in CORPUS_OUT.items() if k in QUIET}


QUIET = {"p1", "p5", "p6", "p7", "p8", "p9"}  # CORPUS records that mention no one


def test_mentions_that_come_only_after_many_plain_batches_are_still_redacted(
    led: Ledger, tmp_path: Path
) -> None:
    """The directory is read when the first record that may mention someone comes, and
    loaded before the first mention query: late in the stream, the same snapshot."""
    from askfirst.gate import consent as consent_mod
    from askfirst.gate import corpus as corpus_mod
    from askfirst.gate import engine_duckdb
    from askfirst.gate.plan import Plan

    quiet = [r for r in CORPUS if r["record_id"] in QUIET]
    rows = [{**r, "record_id": f"{r['record_id']}-{k}"} for k in range(5) for r in quiet]
    rows += [r for r in CORPUS if r["record_id"] not in QUIET]
    corpus = corpus_mod.find(write_jsonl(tmp_path / "c.jsonl", rows))
    consent = consent_mod.gather(led, GENAI, AS_OF)
    out = engine_duckdb.run(Plan(consent=consent, corpus=corpus, batch_rows=4), tmp_path / "o")
    data = pq.read_table(tmp_path / "o" / "data").to_pylist()
    late = {r["record_id"]: r["text"] for r in data if "-" not in r["record_id"]}
    assert late == {k: v for k, v in CORPUS_OUT.items() if k not in QUIET}
    assert out.redacted_mentions == 3
    assert len(data) == 5 * sum(1 for k in CORPUS_OUT if k in QUIET) + len(late)


@pytest.mark.parametrize("aside", [False, True], ids=["here", "aside"])
@pytest.mark.parametrize("when", ["as-of-before-head", "as-of-now"])
def test_a_withdrawal_landing_after_the_head_is_pinned_waits_for_the_next_build(
    led: Ledger,
    tmp_path: Path,
    snaps: Path,
    monkeypatch: pytest.MonkeyPatch,
    when: str,
    aside: bool,
) -> None:
    """The build pins the ledger head, then reads the current-state tables (on a big
    SQLite ledger, in another process): a withdrawal landing in between must not reach
    this build (it is past the pinned head) — the tables, being past it too, give way
    to the events up to the head."""
    from askfirst import decisions as decisions_mod

    if aside:
        monkeypatch.setattr(decisions_mod, "ASIDE_SUBJECTS", 1)  # every ledger counts as big

    # Before the head, the build combines two reads; at or after it, it reads one.
    as_of = AS_OF if when == "as-of-before-head" else datetime.now(UTC)
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    before, out_before = build(led, corpus, snaps / "before", as_of=as_of)
    read = decisions_mod._read_current

    def append_then_read(ledger: Ledger, *args: Any) -> Any:
        monkeypatch.setattr(decisions_mod, "_read_current", read)  # once
        led.append(choice("bob", "withdraw", datetime.now(UTC)))
        return read(ledger, *args)

    monkeypatch.setattr(decisions_mod, "_read_current", append_then_read)
    during, out = build(led, corpus, snaps / "during", as_of=as_of)
    # Built against the head it pinned, without the withdrawal: the same snapshot ...
    assert during.ledger_head == before.ledger_head
    assert out == out_before and {"p1", "p3", "p4"} <= set(out)  # bob's posts
    assert during.snapshot_id == before.snapshot_id
    # ... and the withdrawal reached it as soon as it was registered.
    (entry,) = [e for e in listed(led.url) if Path(e["path"]).name == "during"]
    assert entry["status"] == "stale"


@pytest.mark.postgres
def test_a_role_that_cannot_attach_lineage_fails_before_the_build_and_writes_nothing(
    pg_admin: sa.Engine, tmp_path: Path, snaps: Path
) -> None:
    """On PostgreSQL a build attaches its lineage as a partition, which takes owning the
    table: a role with only read and write rights is told so before any work is done."""
    import uuid

    url, schema = fresh_pg_url(pg_admin)
    role = f"r_{uuid.uuid4().hex[:12]}"
    try:
        world(open_ledger(url, load_policy(), create=True)).close()
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} NOLOGIN")
            conn.exec_driver_sql(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}")
            conn.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}")
            conn.exec_driver_sql(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
        corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
        as_role = url + f"%20-crole%3D{role}"  # options=-csearch_path=... -crole=...
        with open_ledger(as_role) as led:
            with pytest.raises(StorageError, match=f"role '{role}' cannot record"):
                build_snapshot(led, GENAI, corpus, snaps / "s", as_of=AS_OF)
            assert list(snaps.iterdir()) == []  # no output folder, nothing half-built
            assert listed(url) == []
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {schema}.lineage OWNER TO {role}")
        with open_ledger(as_role) as led:
            built = build_snapshot(led, GENAI, corpus, snaps / "s", as_of=AS_OF)
        assert [e["snapshot_id"] for e in listed(url)] == [built.snapshot_id]
    finally:
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")


def test_a_csv_corpus_gives_the_same_snapshot(led: Ledger, tmp_path: Path, snaps: Path) -> None:
    check_same_as_jsonl(led, tmp_path, snaps, ["csv"])


def test_a_folder_mixing_csv_jsonl_and_parquet_gives_the_same_snapshot(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    check_same_as_jsonl(led, tmp_path, snaps, ["folder-csv-jsonl-parquet"])


def test_a_folder_of_parquet_with_timestamps_and_text_times(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    corpus = write_folder(tmp_path / "corpus", CORPUS, ["parquet-naive", "parquet-text"])
    manifest, out = build(led, corpus, snaps / "s")
    assert out == CORPUS_OUT
    assert nonzero(manifest) == CORPUS_EXCLUDED


def test_snapshot_build_from_the_command_line(led: Ledger, tmp_path: Path, snaps: Path) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS)
    res = cli_build(led.url, corpus, snaps / "cli", "--json")
    printed = json.loads(ok(res))
    manifest, table = check_snapshot(snaps / "cli")
    assert printed == manifest.to_json()
    assert texts(table) == CORPUS_OUT
    assert manifest.as_of == AS_OF_ISO
    assert manifest.ledger_head.seq == led.head().seq
    assert manifest.purpose == GENAI and manifest.engine == "duckdb"

    text = ok(cli_build(led.url, corpus, snaps / "text"))
    # the same corpus, ledger head, policy and as-of time: the same id
    assert text.splitlines()[0] == f"snapshot {manifest.snapshot_id}"
    assert "6 of 10 records" in text
    assert "3 mentions redacted" in text
    assert "excluded minor: 1" in text
    assert "excluded withdrawn" not in text  # reasons with no records are not shown


def test_a_corpus_nobody_may_be_used_from_gives_an_empty_snapshot(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [rec("a", "ann"), rec("k", "kid")])
    manifest, out = build(led, corpus, snaps / "s")
    assert out == {}
    assert nonzero(manifest) == {"no-consent": 1, "minor": 1}
    assert (manifest.subjects_as_author, manifest.subjects_as_mention) == (0, 0)
    assert (snaps / "s" / "manifest.json").is_file()


# ---- malformed rows ---------------------------------------------------------------------

GOOD = [rec("g1", "bob", "fine"), rec("g2", "cyd", "also fine", mentions=["bob"])]


def test_malformed_jsonl_lines_are_counted_and_never_used(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    missing_text = rec("m1", "bob")
    del missing_text["text"]
    missing_author = rec("m2", "bob")
    del missing_author["author_id"]
    bad: list[Mapping[str, Any] | str] = [
        missing_text,
        missing_author,
        rec("", "bob", "empty record id"),
        rec("m4", "bob", created_at="2025-03-01T09:30:00"),  # no zone
        rec("m5", "bob", created_at="yesterday"),
        rec("m6", "bob", created_at="2025-02-30T09:30:00Z"),  # no such day
        {**rec("m7", "bob"), "created_at": 1740821400},  # a number, not ISO text
        {**rec("m8", "bob"), "mentions": "ann"},  # not a list
        {**rec("m9", "bob"), "mentions": [1, 2]},  # not subject ids
        {**rec("m10", "bob"), "record_id": 10},
        "this is not JSON",
        '["an", "array"]',
        '{"record_id": "m13", "author_id": "bob", "text": "cut off',
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", [GOOD[0], *bad, GOOD[1]])
    manifest, out = build(led, corpus, snaps / "s")
    assert out == {"g1": "fine", "g2": "also fine"}
    assert nonzero(manifest) == {"malformed": len(bad)}
    assert manifest.input_records == len(bad) + 2


def test_a_record_without_mentions_or_with_null_mentions_is_not_malformed(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    no_key = rec("a", "bob")
    del no_key["mentions"]
    corpus = write_jsonl(tmp_path / "c.jsonl", [no_key, {**rec("b", "bob"), "mentions": None}])
    manifest, out = build(led, corpus, snaps / "s")
    assert set(out) == {"a", "b"}
    assert nonzero(manifest) == {}


def test_malformed_parquet_rows_are_counted_and_never_used(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    # record_id, author_id, created_at, text, mentions; the first and last are fine
    rows = [
        ("g1", "bob", CREATED, "fine", []),
        ("", "bob", CREATED, "empty record id", []),
        ("m2", "", CREATED, "empty author", []),
        (None, "bob", CREATED, "no record id", []),
        ("m4", "bob", "2025-03-01 09:30:00", "no zone", []),
        ("m5", "bob", None, "no time", []),
        ("m6", "bob", CREATED, None, []),
        ("m7", "bob", CREATED, "a null in the mentions", ["cyd", None]),
        ("g2", "cyd", CREATED, "also fine", ["bob"]),
    ]
    columns = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "record_id": pa.array(columns[0], pa.string()),
            "author_id": pa.array(columns[1], pa.string()),
            "category": pa.array(["post"] * len(rows), pa.string()),
            "created_at": pa.array(columns[2], pa.string()),
            "text": pa.array(columns[3], pa.string()),
            "mentions": pa.array(columns[4], pa.list_(pa.string())),
        }
    )
    pq.write_table(table, tmp_path / "c.parquet")
    manifest, out = build(led, tmp_path / "c.parquet", snaps / "s")
    assert out == {"g1": "fine", "g2": "also fine"}
    assert nonzero(manifest) == {"malformed": len(rows) - 2}
    assert manifest.input_records == len(rows)


def test_a_parquet_corpus_with_nanosecond_zoned_times_is_read(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    table = pq.read_table(write_parquet(tmp_path / "us.parquet", CORPUS))
    created = table.column("created_at").cast(pa.timestamp("ns", "UTC"))
    table = table.set_column(table.schema.get_field_index("created_at"), "created_at", created)
    pq.write_table(table, tmp_path / "ns.parquet")
    assert pq.read_schema(tmp_path / "ns.parquet").field("created_at").type.unit == "ns"
    manifest, out = build(led, tmp_path / "ns.parquet", snaps / "s")
    assert out == CORPUS_OUT
    assert nonzero(manifest) == CORPUS_EXCLUDED


def test_malformed_csv_lines_are_counted_and_never_used(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    good = write_csv(tmp_path / "good.csv", GOOD).read_text().splitlines()
    lines = [
        good[0],  # the header
        good[1],
        f"m1,bob,post,{CREATED},too many,,columns",
        f"m2,bob,post,{CREATED}",  # too few
        f",bob,post,{CREATED},empty record id,",
        "m4,bob,post,2025-03-01T09:30:00,no zone,",
        f'm5,bob,post,{CREATED},mentions not a list,"""ann"""',
        f'm6,bob,post,{CREATED},mentions not ids,"[1, 2]"',
        good[2],
    ]
    corpus = tmp_path / "c.csv"
    corpus.write_text("\n".join(lines) + "\n", "utf-8")
    manifest, out = build(led, corpus, snaps / "s")
    assert out == {"g1": "fine", "g2": "also fine"}
    assert nonzero(manifest) == {"malformed": 6}
    assert manifest.input_records == 8


# ---- failing closed ---------------------------------------------------------------------


def nothing_built(snaps: Path, ledger: Ledger, *keep: str) -> None:
    """No output folder, no hidden building folder, no snapshot registered."""
    assert sorted(p.name for p in snaps.iterdir()) == sorted(keep)
    assert list_snapshots(ledger) == []


def build_args(corpus: Path, out: Path, db: str, **options: str) -> list[str]:
    args = {"--purpose": GENAI, "--as-of": AS_OF_ISO} | options
    flat = [x for kv in args.items() for x in kv]
    paths = ["--corpus", str(corpus), "--out", str(out)]
    return ["snapshot", "build", *paths, *flat, "-q", "--db", db]


def test_bad_options_fail_closed(led: Ledger, tmp_path: Path, snaps: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    cases = [
        ({"--purpose": "ads"}, ["unknown purpose 'ads'", GENAI]),
        ({"--as-of": "2999-01-01T00:00:00Z"}, ["in the future"]),
        ({"--as-of": "last tuesday"}, ["--as-of"]),
        ({"--on-mention": "mask"}, ["on-mention", "'mask'"]),
        ({"--engine": "flink"}, ["engine", "'flink'"]),
    ]
    for options, needles in cases:
        res = run(*build_args(corpus, snaps / "s", led.url, **options))
        one_line_error(res, *needles)
        nothing_built(snaps, led)


def _parquet_without(tmp_path: Path, column: str) -> Path:
    table = pq.read_table(write_parquet(tmp_path / "full.parquet", CORPUS))
    pq.write_table(table.drop_columns([column]), tmp_path / f"no-{column}.parquet")
    return tmp_path / f"no-{column}.parquet"


def test_a_parquet_corpus_missing_a_required_column_fails_closed(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    res = cli_build(led.url, _parquet_without(tmp_path, "text"), snaps / "s")
    one_line_error(res, "missing required column 'text'")
    nothing_built(snaps, led)
    # every missing column is named at once
    table = pq.read_table(write_parquet(tmp_path / "full.parquet", CORPUS))
    pq.write_table(table.select(["text", "mentions", "category"]), tmp_path / "few.parquet")
    res = cli_build(led.url, tmp_path / "few.parquet", snaps / "s")
    one_line_error(res, "missing required column", "'record_id'", "'author_id'", "'created_at'")
    nothing_built(snaps, led)


def test_a_csv_corpus_missing_a_required_column_fails_closed(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    corpus = tmp_path / "c.csv"
    with corpus.open("w", newline="") as f:
        w = csv.DictWriter(f, [k for k in CORPUS[0] if k != "author_id"], extrasaction="ignore")
        w.writeheader()
        for r in CORPUS:
            w.writerow({**r, "mentions": json.dumps(r["mentions"])})
    res = cli_build(led.url, corpus, snaps / "s")
    one_line_error(res, "missing required column", "'author_id'")
    nothing_built(snaps, led)


def test_a_jsonl_corpus_missing_a_required_column_fails_closed(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    """No record has the key: the column is missing, not every record malformed."""
    corpus = write_jsonl(
        tmp_path / "c.jsonl", [{k: v for k, v in r.items() if k != "author_id"} for r in CORPUS]
    )
    res = cli_build(led.url, corpus, snaps / "s")
    one_line_error(res, "missing required column 'author_id'", str(corpus))
    nothing_built(snaps, led)
    with pytest.raises(InputError, match="missing required column 'author_id'"):
        build_snapshot(led, GENAI, corpus, snaps / "lib", as_of=AS_OF)
    nothing_built(snaps, led)
    # every missing column is named at once; one such file in a folder is enough
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", CORPUS)
    write_jsonl(folder / "b.jsonl", [{"text": "hi", "mentions": []}, "not json", "[1, 2]"])
    res = cli_build(led.url, folder, snaps / "s")
    one_line_error(res, "missing required column", "'record_id'", "'created_at'", "b.jsonl")
    nothing_built(snaps, led)


def test_a_jsonl_record_without_a_value_is_malformed_when_others_have_it(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    """The column is there (some record has the key): a record with null, or without the
    key, is excluded as malformed, wherever it is in the file."""
    rows: list[Mapping[str, Any] | str] = [
        {**CORPUS[0], "author_id": None},
        {k: v for k, v in CORPUS[1].items() if k != "author_id"},
        "not json",
        *CORPUS[2:],
    ]
    manifest, _ = build(led, write_jsonl(tmp_path / "c.jsonl", rows), snaps / "s")
    assert manifest.excluded["malformed"] == 3
    assert manifest.input_records == len(CORPUS) + 1
    # a file of nothing but malformed lines has no columns to miss: counted, not refused
    bad = write_jsonl(tmp_path / "bad.jsonl", ["not json", "[1]", "{"])
    manifest, _ = build(led, bad, snaps / "bad")
    assert (manifest.input_records, manifest.excluded["malformed"]) == (3, 3)


def test_a_parquet_column_of_the_wrong_type_fails_closed(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    n = len(CORPUS)
    cases = [
        ("record_id", pa.array(range(n), pa.int64()), "'record_id' is BIGINT"),
        ("text", pa.array([1.5] * n, pa.float64()), "'text' is DOUBLE"),
        ("created_at", pa.array([1740821400] * n, pa.int64()), "'created_at' is BIGINT"),
        ("mentions", pa.array([[1]] * n, pa.list_(pa.int64())), "'mentions' is BIGINT[]"),
        ("mentions", pa.array(["ann"] * n, pa.string()), "'mentions' is VARCHAR"),
    ]
    full = pq.read_table(write_parquet(tmp_path / "full.parquet", CORPUS))
    for k, (column, values, needle) in enumerate(cases):
        table = full.set_column(full.schema.get_field_index(column), column, values)
        pq.write_table(table, tmp_path / f"c{k}.parquet")
        if k == 0:  # from the command line: one line, exit code 1
            res = cli_build(led.url, tmp_path / f"c{k}.parquet", snaps / "s")
            one_line_error(res, needle, "it must be text")
        else:
            with pytest.raises(InputError, match=re.escape(needle)):
                build_snapshot(led, GENAI, tmp_path / f"c{k}.parquet", snaps / "s", as_of=AS_OF)
        nothing_built(snaps, led)


def test_a_folder_with_one_bad_parquet_file_fails_closed(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    """One file of the wrong shape in a folder: nothing is built, not a partial snapshot."""
    folder = write_folder(tmp_path / "corpus", CORPUS, ["parquet-tz", "jsonl"])
    (folder / "zz-broken.parquet").write_bytes(b"PAR1 this is not really parquet")
    res = cli_build(led.url, folder, snaps / "s")
    one_line_error(res, "corpus")
    nothing_built(snaps, led)


def test_bad_paths_fail_closed(led: Ledger, tmp_path: Path, snaps: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    (tmp_path / "c.xlsx").write_text("x")
    cases = [
        (tmp_path / "nope.parquet", snaps / "s", "no such file"),
        (empty, snaps / "s", "holds no"),
        (tmp_path / "c.xlsx", snaps / "s", "unknown format"),
        (corpus, corpus / "s", "not a folder"),
    ]
    for corpus_path, out, needle in cases:
        one_line_error(cli_build(led.url, corpus_path, out), needle)
        nothing_built(snaps, led)
    # an existing --out folder is left exactly as it was
    (snaps / "s").mkdir()
    (snaps / "s" / "keep.txt").write_text("mine")
    one_line_error(cli_build(led.url, corpus, snaps / "s"), "already exists")
    nothing_built(snaps, led, "s")
    assert [p.name for p in (snaps / "s").iterdir()] == ["keep.txt"]
    assert (snaps / "s" / "keep.txt").read_text() == "mine"


def test_the_out_folders_missing_parents_are_made(led: Ledger, tmp_path: Path, snaps: Path) -> None:
    """--out snapshots/2026/12/s makes 2026/12; a build that fails removes them again."""
    broken = write_folder(tmp_path / "broken", CORPUS, ["jsonl"])
    (broken / "zz-broken.parquet").write_bytes(b"PAR1 this is not really parquet")
    one_line_error(cli_build(led.url, broken, snaps / "2026" / "12" / "s"), "corpus")
    nothing_built(snaps, led)
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    ok(cli_build(led.url, corpus, snaps / "2026" / "12" / "s"))
    assert (snaps / "2026" / "12" / "s" / "manifest.json").is_file()


def test_a_ledger_that_is_not_initialised_fails_closed(
    db_url: str, tmp_path: Path, snaps: Path
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    res = cli_build(db_url, corpus, snaps / "s")
    one_line_error(res, "askfirst init")
    assert list(snaps.iterdir()) == []
    # the failed build created no ledger either
    one_line_error(run("snapshot", "list", "--db", db_url), "askfirst init")


def test_a_ledger_that_does_not_exist_fails_closed(tmp_path: Path, snaps: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    missing = tmp_path / "nowhere.db"
    res = cli_build(f"sqlite:///{missing}", corpus, snaps / "s")
    one_line_error(res, "no ledger at")
    assert list(snaps.iterdir()) == []
    assert not missing.exists()
    res = cli_build("postgresql://postgres@127.0.0.1:1/x", corpus, snaps / "s")
    one_line_error(res)
    assert list(snaps.iterdir()) == []


def test_a_tampered_ledger_fails_closed_with_verify(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    """--verify-ledger: an edited event means nothing is built."""
    with led.engine.begin() as conn:
        conn.execute(sa.text("UPDATE events SET value = 'grant' WHERE subject_id = 'wes' "
                             "AND value = 'withdraw'"))  # fmt: skip
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    res = cli_build(led.url, corpus, snaps / "s", "--verify-ledger")
    one_line_error(res, "verification")
    nothing_built(snaps, led)


# ---- categories -------------------------------------------------------------------------


def test_never_used_categories_stay_out_even_when_the_author_said_yes(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    rows = [
        rec("msg", "bob", "private: see you at 8", category="message"),
        rec("2fa", "bob", "+49 170 0000000", category="security"),
        rec("pay", "cyd", "IBAN DE00 0000", category="payment"),
        rec("msg-ann", "ann", "hi", category="message"),  # the category comes first
        rec("ok", "bob", "public post"),
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    for purpose in PURPOSES:
        manifest, out = build(led, corpus, snaps / purpose, purpose=purpose)
        assert out == {"ok": "public post"}
        assert nonzero(manifest) == {"category-never-used": 4}


def test_categories_a_purpose_does_not_list_stay_out(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    rows = [
        rec("vid", "bob", "video transcript", category="video"),
        rec("ai", "cyd", "write me a poem", category="ai-prompt"),
        rec("pod", "bob", "podcast", category="podcast"),  # no purpose lists it
        rec("art", "bob", "an article", category="article"),
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    genai, out = build(led, corpus, snaps / "genai", purpose=GENAI)
    assert set(out) == {"vid", "ai", "art"}
    assert nonzero(genai) == {"category-not-allowed": 1}
    research, out = build(led, corpus, snaps / "research", purpose=RESEARCH)
    assert set(out) == {"art"}
    assert nonzero(research) == {"category-not-allowed": 3}


def test_records_created_after_the_as_of_time_stay_out(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    rows = [
        rec("on-time", "bob", created_at=AS_OF_ISO),  # at the as-of time: in
        rec("just-after", "bob", created_at="2025-06-01T00:00:00.000001Z"),
        rec("zone", "bob", created_at="2025-06-01T01:30:00+02:00"),  # 23:30 UTC before: in
        rec("zone-after", "bob", created_at="2025-05-31T23:30:00-01:00"),  # 00:30 UTC: out
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    manifest, out = build(led, corpus, snaps / "s")
    assert set(out) == {"on-time", "zone"}
    assert nonzero(manifest) == {"created-after-as-of": 2}


# ---- authors ----------------------------------------------------------------------------

AUTHORS_CORPUS = [rec(f"by-{a}", a, f"a post by {a}") for a in ["bob", *AUTHOR_REASON]]


def test_each_author_who_is_not_a_yes_stays_out_with_their_reason(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", AUTHORS_CORPUS)
    manifest, out = build(led, corpus, snaps / "s")
    assert out == {"by-bob": "a post by bob"}
    expected: dict[str, int] = {}
    for reason in AUTHOR_REASON.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert nonzero(manifest) == expected
    # lou's withdrawal after the as-of time reached back; tim's later yes did not
    assert manifest.excluded["withdrawn"] == 3  # wes, paul, lou


def test_a_withdrawal_after_the_as_of_time_reaches_back_a_later_grant_does_not(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [rec("l", "lou"), rec("t", "tim"), rec("b", "bob")])
    # the decision at the as-of time alone was yes for lou, no for tim
    assert decide(led, "lou", GENAI, at=AS_OF).allowed
    assert not decide(led, "tim", GENAI, at=AS_OF).allowed
    manifest, out = build(led, corpus, snaps / "then")
    assert set(out) == {"b"}
    assert nonzero(manifest) == {"withdrawn": 1, "no-consent": 1}
    # as of now, tim's yes counts and lou's no still does
    now, out = build(led, corpus, snaps / "now", as_of=None)
    assert set(out) == {"b", "t"}
    assert nonzero(now) == {"withdrawn": 1}


def test_any_no_recorded_after_the_as_of_time_reaches_back(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", [rec(s, s) for s in LATE_NO_SAYERS])
    before, out = build(led, corpus, snaps / "before")
    assert set(out) == set(LATE_NO_SAYERS)
    after = LATER + timedelta(days=1)
    led.append_many(
        [
            status("eli", "closed", after),
            status("fay", "deceased", after),
            gpc("gil", after),
            choice("hal", "object", after),
        ]
    )
    manifest, out = build(led, corpus, snaps / "after")
    assert set(out) == {"ivy"}
    assert nonzero(manifest) == {"account-closed": 1, "deceased": 1, "gpc": 1, "withdrawn": 1}
    assert manifest.as_of == before.as_of == AS_OF_ISO


# ---- mentions ---------------------------------------------------------------------------


def test_handles_of_people_who_did_not_say_yes_are_redacted(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    rows = [
        rec("h1", "bob", "Thanks @anna.k. See @Anna.K, and @ANNA.K! Also @anna.k"),
        rec("h2", "bob", "Not her: @anna.kx and @anna_k and anna.k@example.com"),
        rec("h3", "bob", "cc @cyd, @bob.b and @lou; not @tim"),
        rec("h4", "bob", "(@paul) @dora.d @kiddo @wes @gus @shut"),
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    manifest, out = build(led, corpus, snaps / "s")
    assert out == {
        "h1": f"Thanks {R}. See {R}, and {R}! Also {R}",
        "h2": "Not her: @anna.kx and @anna_k and anna.k@example.com",
        # lou withdrew after the as-of time: the mention reaches back too
        "h3": f"cc @cyd, @bob.b and {R}; not {R}",
        # paul has no handle; the others said no one way or another
        "h4": f"(@paul) {R} {R} {R} {R} {R}",
    }
    # (record, subject) pairs: ann; lou, tim; dora, kid, wes, gus, shut
    assert manifest.redacted_mentions == 1 + 2 + 5
    assert nonzero(manifest) == {}


def test_a_mentions_list_subject_who_said_no_loses_handle_and_names(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    rows = [
        rec(
            "l1",
            "bob",
            "Lunch with Anna Keller (ANNA KELLER, @anna.k). Anna Kellerman and Hanna Keller "
            "came too.",
            mentions=["ann"],
        ),
        # ann is an ordinary member: her name alone, with no mention, is left as it is
        rec("l2", "bob", "Anna Keller wrote a book."),
        # a consenting subject in the list is kept, and counted in lineage
        rec("l3", "bob", "With Cyd Cole and @cyd", mentions=["cyd"]),
        # the author in their own mentions list is not a mention
        rec("l4", "cyd", "Me, Cyd Cole", mentions=["cyd", "cyd"]),
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    manifest, out = build(led, corpus, snaps / "s")
    assert out == {
        "l1": f"Lunch with {R} ({R}, {R}). Anna Kellerman and Hanna Keller came too.",
        "l2": "Anna Keller wrote a book.",
        "l3": "With Cyd Cole and @cyd",
        "l4": "Me, Cyd Cole",
    }
    assert manifest.redacted_mentions == 1
    cyd = snapshots_of(led, "cyd")
    assert [(s["author_records"], s["mention_records"]) for s in cyd] == [(1, 1)]
    assert snapshots_of(led, "ann") == []


def test_protected_names_are_redacted_anywhere_whole_words_any_case(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    rows = [
        rec("n1", "bob", "PAUL PERSON spoke; paul person left."),
        rec("n2", "cyd", "Paul Personality is a band. Paul Persons? No.", category="comment"),
        rec("n3", "cyd", "In memory of dora dean, and Dora Dean's work.", category="profile"),
        rec("n4", "bob", "Dora Deans and XDora Dean and Dora_Dean"),
        rec("n5", "bob", "Paul Person met Dora Dean."),
        rec("n6", "bob", "ZOË ØRSTED wrote; zoë ørsted. Not Zoë Ørstedé."),
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    manifest, out = build(led, corpus, snaps / "s")
    assert out == {
        "n1": f"{R} spoke; {R} left.",
        "n2": "Paul Personality is a band. Paul Persons? No.",
        "n3": f"In memory of {R}, and {R}'s work.",
        "n4": "Dora Deans and XDora Dean and Dora_Dean",
        "n5": f"{R} met {R}.",
        "n6": f"{R} wrote; {R}. Not Zoë Ørstedé.",
    }
    assert manifest.redacted_mentions == 1 + 1 + 2 + 1


def test_names_are_found_alike_in_ascii_mixed_and_mostly_non_ascii_batches() -> None:
    """ASCII text is lower-cased the fast way; other text is folded in full. A batch of
    either kind, or a mix, must find the same names in the same rows."""
    from askfirst.gate.redaction import NameFinder

    directory = pa.table(
        {
            "subject": ["paul", "zoe", "nik", "ibo"],
            "handle": pa.array([None, None, None, None], pa.string()),
            "names": ['["Paul Person"]', '["Zoë Ørsted"]', '["Νίκος"]', '["İbrahim Y\u0131lmaz"]'],
            "protected": [1, 1, 1, 1],
        }
    )
    finder = NameFinder.from_directory(directory)
    expected = {
        "PAUL PERSON spoke": {"paul"},
        "paul personality": set(),
        "met Paul Person.": {"paul"},
        "ZOË ØRSTED wrote": {"zoe"},
        "ΝΊΚΟΣ and paul PERSON": {"nik", "paul"},
        "zoë ørstedé, νίκος": {"nik"},
        # "İ" lower-cases to "i" in Arrow and to "i" with a combining dot in Python:
        # a text may hold either, and both are the name.
        "@İbrahim Y\u0131lmaz.": {"ibo"},
        "(i\u0307brahim y\u0131lmaz)": {"ibo"},
    }
    texts = list(expected)
    for batch in (texts[:3], texts[:4], texts[3:] + texts[:1], texts):
        # Empty and missing texts between the others, and an array that starts part
        # way into its buffers (after a text with a name in it), change nothing.
        padded = [x for t in batch for x in (t, "", None)]
        for array in (
            pa.array(padded, pa.string()),
            pa.array(["Zoë Ørsted", *padded], pa.string()).slice(1),
            pa.array(padded, pa.large_string()),
        ):
            rows, subjects = finder.find(array)
            got: dict[str, set[str]] = {}
            for row, subject in zip(rows, subjects, strict=True):
                got.setdefault(padded[row], set()).add(subject)
            assert got == {t: expected[t] for t in batch if expected[t]}, batch


def test_on_mention_drop_leaves_such_records_out(led: Ledger, tmp_path: Path, snaps: Path) -> None:
    rows = [
        rec("d1", "bob", "Thanks @anna.k."),
        rec("d2", "bob", "Hello", mentions=["ann"]),
        rec("d3", "bob", "Paul Person spoke"),
        rec("d4", "bob", "Hello", mentions=["ghost"]),  # unknown: not a yes
        rec("d5", "bob", "cc @cyd and @anna.kx", mentions=["cyd"]),
        rec("d6", "bob", "Anna Keller wrote a book."),
        rec("d7", "ann", "Thanks @anna.k."),  # the author's reason comes first
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    manifest, out = build(led, corpus, snaps / "drop", on_mention="drop")
    assert out == {"d5": "cc @cyd and @anna.kx", "d6": "Anna Keller wrote a book."}
    assert nonzero(manifest) == {"mention-not-consented": 4, "no-consent": 1}
    assert manifest.redacted_mentions == 0
    assert manifest.on_mention == "drop"
    redacted, out = build(led, corpus, snaps / "redact")
    assert set(out) == {"d1", "d2", "d3", "d4", "d5", "d6"}
    assert out["d1"] == f"Thanks {R}."
    assert redacted.redacted_mentions == 4
    assert redacted.snapshot_id != manifest.snapshot_id


def test_on_mention_drop_from_the_cli(led: Ledger, tmp_path: Path, snaps: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    printed = json.loads(
        ok(cli_build(led.url, corpus, snaps / "s", "--on-mention", "drop", "--json"))
    )
    assert printed["excluded"]["mention-not-consented"] == 3  # p2, p3, p4
    assert printed["redacted_mentions"] == 0
    _, table = check_snapshot(snaps / "s")
    assert set(texts(table)) == {"p1", "p5", "p10"}


# ---- lineage ----------------------------------------------------------------------------


def lineage_json(db: str, subject: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        ok(run("lineage", "subject", subject, "--json", "--db", db))
    )
    return rows


def test_lineage_lists_whose_data_is_in_the_snapshot(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    first, _ = build(led, corpus, snaps / "first")
    # p2 (cyd) mentions bob by handle, p10 (cyd) by list and handle; p1, p3, p4 by bob
    (bob,) = lineage_json(led.url, "bob")
    assert bob["snapshot_id"] == first.snapshot_id
    assert (bob["author_records"], bob["mention_records"]) == (3, 2)
    assert bob["roles"] == ["author", "mention"]
    assert bob["purpose"] == GENAI
    assert bob["as_of"] == AS_OF_ISO
    assert bob["status"] == "live"
    assert Path(bob["path"]) == (snaps / "first").resolve()
    (cyd,) = lineage_json(led.url, "cyd")
    assert (cyd["author_records"], cyd["mention_records"]) == (3, 0)  # @cyd in own post
    assert cyd["roles"] == ["author"]
    # a redacted mention, an excluded author: in no snapshot
    for subject in ("ann", "dora", "kid", "paul"):
        assert lineage_json(led.url, subject) == []
        assert ok(run("lineage", "subject", subject, "--db", led.url)).strip() == (
            f"{subject}: in no snapshot"
        )
    assert (first.subjects_as_author, first.subjects_as_mention) == (2, 1)

    second, _ = build(led, corpus, snaps / "second", purpose=RESEARCH)
    rows = lineage_json(led.url, "bob")
    assert [r["snapshot_id"] for r in rows] == [second.snapshot_id, first.snapshot_id]
    assert [r["purpose"] for r in rows] == [RESEARCH, GENAI]
    # the video p5 may not be used for research
    assert [r["author_records"] for r in lineage_json(led.url, "cyd")] == [2, 3]
    assert snapshots_of(led, "bob") == rows

    table = ok(run("lineage", "subject", "bob", "--db", led.url))
    assert first.snapshot_id[:16] in table and second.snapshot_id[:16] in table
    one_line_error(run("lineage", "subject", "nobody", "--db", led.url), "unknown subject")


def test_snapshot_list_and_show(led: Ledger, tmp_path: Path, snaps: Path) -> None:
    assert listed(led.url) == []
    assert "no snapshots yet" in ok(run("snapshot", "list", "--db", led.url))
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    genai, _ = build(led, corpus, snaps / "genai")
    research, _ = build(led, corpus, snaps / "research", purpose=RESEARCH)

    rows = listed(led.url)
    assert [r["snapshot_id"] for r in rows] == [research.snapshot_id, genai.snapshot_id]
    assert (rows[1]["input_records"], rows[1]["output_records"]) == (10, 6)
    assert rows[1]["ledger_head"] == {"seq": genai.ledger_head.seq, "hash": genai.ledger_head.hash}
    only = json.loads(ok(run("snapshot", "list", "--purpose", RESEARCH, "--json", "--db", led.url)))
    assert [r["snapshot_id"] for r in only] == [research.snapshot_id]
    text = ok(run("snapshot", "list", "--db", led.url))
    assert genai.snapshot_id[:16] in text and "6 of 10" in text

    shown = json.loads(ok(run("snapshot", "show", genai.snapshot_id[:12], "--db", led.url)))
    assert len(shown) == 1
    assert shown[0]["manifest"] == json.loads((snaps / "genai" / "manifest.json").read_text())
    assert Path(shown[0]["path"]) == (snaps / "genai").resolve()
    one_line_error(run("snapshot", "show", "abc", "--db", led.url), "8 characters")
    one_line_error(run("snapshot", "show", "0" * 64, "--db", led.url), "no snapshot")


def test_export_decisions_matches_decide(led: Ledger, tmp_path: Path) -> None:
    for at, extra in ((AS_OF, ["--as-of", AS_OF_ISO]), (None, [])):
        for purpose in PURPOSES:
            out = tmp_path / f"{purpose}-{bool(extra)}.parquet"
            res = run(
                "export", "decisions", "--purpose", purpose, "--out", out, *extra,
                "--db", led.url,
            )  # fmt: skip
            assert f"{len(SUBJECTS)} decisions written" in ok(res)
            table = pq.read_table(out)
            assert table.schema.names == ["subject", "allowed", "reason", "event_seq"]
            got = {r["subject"]: r for r in table.to_pylist()}
            assert sorted(got) == sorted(SUBJECT_IDS)
            for s in SUBJECT_IDS:
                d = decide(led, s, purpose, at=at)
                assert (got[s]["allowed"], got[s]["reason"], got[s]["event_seq"]) == (
                    d.allowed,
                    str(d.reason),
                    d.event_seq,
                ), s
            yes = {s for s, r in got.items() if r["allowed"]}
            assert yes == {"bob", "cyd", *LATE_NO_SAYERS, "lou" if at else "tim"}
    one_line_error(
        run("export", "decisions", "--purpose", "ads", "--out", tmp_path / "x.parquet",
            "--db", led.url),
        "unknown purpose",
    )  # fmt: skip
    assert not (tmp_path / "x.parquet").exists()


def test_export_for_the_gate_honours_withdrawals_made_after_the_as_of_time(
    led: Ledger, tmp_path: Path
) -> None:
    out = tmp_path / "gate.parquet"
    res = run(
        "export", "decisions", "--purpose", GENAI, "--out", out, "--as-of", AS_OF_ISO,
        "--for-gate", "--db", led.url,
    )  # fmt: skip
    ok(res)
    table = pq.read_table(out)
    got = {r["subject"]: r for r in table.to_pylist()}
    # lou said yes by the as-of time and withdrew after it: out, as in a snapshot
    assert got["lou"]["allowed"] is False and got["lou"]["reason"] == "withdrawn"
    assert decide(led, "lou", GENAI, at=AS_OF).allowed  # though yes at that time
    yes = {s for s, r in got.items() if r["allowed"]}
    assert yes == {"bob", "cyd", *LATE_NO_SAYERS}
    assert table.schema.metadata[b"askfirst.rule"] == b"yes at the time and at the head"
    # the same subjects a snapshot as of that time takes its authors from
    corpus = write_jsonl(tmp_path / "c.jsonl", [rec(f"r-{s}", s) for s in SUBJECT_IDS])
    manifest = build_snapshot(led, GENAI, corpus, tmp_path / "snap", as_of=AS_OF)
    _, records = read_snapshot(tmp_path / "snap")
    assert {r.removeprefix("r-") for r in records.column("record_id").to_pylist()} == yes
    assert manifest.output_records == len(yes)


# ---- reproducibility --------------------------------------------------------------------


def test_the_same_inputs_give_the_same_snapshot_id(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    first, out1 = build(led, corpus, snaps / "one")
    # the same records again, even in another order in another file: the same id
    shuffled = write_jsonl(tmp_path / "shuffled.jsonl", list(reversed(CORPUS)))
    second, out2 = build(led, shuffled, snaps / "two")
    assert second.snapshot_id == first.snapshot_id
    assert out2 == out1
    t1 = read_snapshot(snaps / "one")[1].sort_by("record_id")
    t2 = read_snapshot(snaps / "two")[1].sort_by("record_id")
    assert t1.equals(t2)
    # both copies are registered under the one id
    shown = json.loads(ok(run("snapshot", "show", first.snapshot_id, "--db", led.url)))
    assert sorted(Path(c["path"]).name for c in shown) == ["one", "two"]

    other_time, _ = build(led, corpus, snaps / "other-time", as_of=AS_OF - timedelta(days=1))
    assert other_time.snapshot_id != first.snapshot_id

    led.append(choice("bob", "withdraw", LATER + timedelta(days=1)))
    after, out4 = build(led, corpus, snaps / "after")
    assert after.snapshot_id != first.snapshot_id
    assert after.ledger_head.seq == first.ledger_head.seq + 1
    assert set(out4) == {"p2", "p5", "p10"}  # bob's posts went; his @handle did too
    assert out4["p2"] == f"Great talk by {R} and {R}, thanks!"
    assert out4["p10"] == f"Cyd meets @cyd and {R}"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_a_record_over_the_size_limit_is_malformed_and_the_build_goes_on(
    led: Ledger, tmp_path: Path, snaps: Path, fmt: str
) -> None:
    """One 10 MiB record used to run DuckDB out of memory and fail the whole build; now a
    record longer than MAX_RECORD_BYTES is counted malformed and left out (issue 15)."""
    from askfirst.gate.corpus import MAX_RECORD_BYTES

    huge = rec("big", "bob", "x" * (10 << 20))
    assert len(huge["text"]) > MAX_RECORD_BYTES
    just = rec("edge", "bob", "y" * (MAX_RECORD_BYTES // 2))  # long, within the limit
    rows = [*CORPUS, huge, just]
    path = tmp_path / f"c.{fmt}"
    {"jsonl": write_jsonl, "parquet": write_parquet, "csv": write_csv}[fmt](path, rows)
    manifest, out = build(led, path, snaps / fmt)
    plain, _ = build(led, write_jsonl(tmp_path / "plain.jsonl", CORPUS), snaps / "plain")
    assert nonzero(manifest)["malformed"] == nonzero(plain).get("malformed", 0) + 1
    assert "big" not in out and out["edge"] == just["text"]
    assert {k: v for k, v in out.items() if k != "edge"} == CORPUS_OUT


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv", "folder"])
def test_a_record_id_named_twice_is_refused_and_nothing_is_built(
    led: Ledger, tmp_path: Path, snaps: Path, fmt: str
) -> None:
    """A corpus that names one record id twice used to give a snapshot holding it twice;
    now the build is refused, naming the id, and nothing is written or registered
    (issue 15). In a folder, the two copies may sit in files of different formats."""
    again = rec("p1", "cyd", "an export that ran twice")
    rows = [*CORPUS, again, rec("p5", "cyd", "and again"), rec("p5", "cyd", "and again")]
    if fmt == "folder":
        path = write_folder(tmp_path / "corpus", rows, ["jsonl", "csv", "parquet-text"])
    else:
        path = tmp_path / f"c.{fmt}"
        {"jsonl": write_jsonl, "parquet": write_parquet, "csv": write_csv}[fmt](path, rows)
    before = listed(led.url)
    line = one_line_error(
        cli_build(led.url, path, snaps / "dup"), "record_id 'p5' appears 3 times",
        "1 more id", "unique", "nothing was built",
    )  # fmt: skip
    assert str(path) in line
    assert listed(led.url) == before
    assert list(snaps.iterdir()) == []  # no folder, no hidden work folder
    # Once the corpus names each id once, the same folder builds.
    unique = tmp_path / "unique.jsonl"
    write_jsonl(unique, [*CORPUS, rec("p99", "cyd", "an export that ran twice")])
    ok(cli_build(led.url, unique, snaps / "dup"))
    assert len(listed(led.url)) == len(before) + 1


def test_a_duplicate_left_out_by_the_rules_is_not_in_the_snapshot_twice(
    led: Ledger, tmp_path: Path, snaps: Path
) -> None:
    """The refusal is about what the snapshot would hold: a second copy that the rules
    leave out (here by an author who objected) puts the id in it once."""
    rows = [*CORPUS, rec("p1", "paul", "not paul's to give")]
    manifest, out = build(led, write_jsonl(tmp_path / "c.jsonl", rows), snaps / "one")
    assert out["p1"] == CORPUS_OUT["p1"]
    assert manifest.output_records == len(CORPUS_OUT)
