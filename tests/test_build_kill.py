"""A snapshot build killed at every step: the registry and the disk still agree.

A real build runs in a child process on a small corpus and waits at a named step (the
build's test hook, ``ASKFIRST_TEST_PAUSE_AT``); the test kills it there with SIGKILL,
SIGTERM or SIGINT. Afterwards, and again after the next build: every live snapshot in
the registry has its folder and manifest, every snapshot folder on disk is registered
live with its lineage, no hidden build folder or spill folder is left, and a build to
the same ``--out`` succeeds (or, when the kill came after the commit, the snapshot is
there, live and whole). SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from askfirst import Ledger, build_snapshot, read_snapshot, snapshots_of
from askfirst.cli import app
from askfirst.gate.build import reconcile
from askfirst.ledger.tables import snapshots
from askfirst.lineage import list_snapshots
from test_gate import AS_OF, CORPUS, GENAI, world, write_jsonl

TIMEOUT = 120  # seconds; only a guard against a hang, never a timing assertion
STEPS = ("registered", "written", "moved", "committed")
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)

CHILD = """
import sys
from datetime import datetime
from askfirst import build_snapshot, open_ledger
with open_ledger(sys.argv[1]) as led:
    build_snapshot(led, "genai-training", sys.argv[2], sys.argv[3],
                   as_of=datetime.fromisoformat(sys.argv[4]))
"""


REBUILD = """
import sys
from askfirst import open_ledger
from askfirst.gate.rebuild import rebuild_snapshot
with open_ledger(sys.argv[1]) as led:
    rebuild_snapshot(led, sys.argv[2])
"""


def kill_at(
    db_url: str,
    corpus: Path,
    out: Path,
    step: str,
    sig: signal.Signals,
    child: tuple[str, ...] = (),
) -> None:
    """Start a build that waits at ``step``; send it ``sig`` there; wait for it to end."""
    env = {**os.environ, "ASKFIRST_TEST_PAUSE_AT": step}
    args = child or ("-c", CHILD, db_url, str(corpus), str(out), AS_OF.isoformat())
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    try:
        line = proc.stderr.readline()
        assert line == f"askfirst-test: paused at {step}\n", line + proc.stderr.read()
        os.kill(proc.pid, sig)
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    assert proc.returncode != 0


def assert_agree(led: Ledger, parent: Path) -> None:
    """Registry and disk agree: nothing hidden, nothing unregistered, nothing missing."""
    with led.engine.connect() as conn:
        statuses = [s for (s,) in conn.execute(select(snapshots.c.status))]
    assert "building" not in statuses
    live = [r for r in list_snapshots(led) if r["status"] == "live"]
    for r in live:
        manifest, _ = read_snapshot(r["path"])
        assert manifest.snapshot_id == r["snapshot_id"]
        assert sorted(p.name for p in Path(r["path"]).iterdir()) == ["data", "manifest.json"]
    retired = [r for r in list_snapshots(led) if r["status"] == "retired"]
    for r in retired:  # only the manifest stays, with a note of why
        assert sorted(p.name for p in Path(r["path"]).iterdir()) == [
            "manifest.json",
            "retired.json",
        ]
    on_disk = sorted(parent.iterdir()) if parent.exists() else []  # a clean failure removes it
    assert [p.name for p in on_disk if p.name.startswith(".")] == []
    assert not any("askfirst-spill-" in str(p) for p in parent.rglob("*"))
    assert {str(p.resolve()) for p in on_disk} == {r["path"] for r in live + retired}
    # each live snapshot's lineage is there: a withdrawal would reach it
    held = {s["snapshot_id"] for s in snapshots_of(led, "bob") if s["status"] == "live"}
    assert held == {r["snapshot_id"] for r in live}


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("step", STEPS)
def test_a_build_killed_at_any_step_leaves_registry_and_disk_in_agreement(
    ledger: Ledger, db_url: str, tmp_path: Path, step: str, sig: signal.Signals
) -> None:
    led = world(ledger)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS)
    parent = tmp_path / "snaps"
    out = parent / "s1"

    kill_at(db_url, corpus, out, step, sig)

    # what the killed build left is finished by the next run (here, a reconcile)
    reconcile(led, [parent])
    assert_agree(led, parent)
    committed = [r for r in list_snapshots(led) if r["status"] == "live"]
    if step == "committed":  # killed after the commit: the snapshot is there, whole
        assert [r["path"] for r in committed] == [str(out.resolve())]
        again = build_snapshot(led, GENAI, corpus, parent / "s2", as_of=AS_OF)
        assert again.snapshot_id == committed[0]["snapshot_id"]
    else:
        assert committed == []
        again = build_snapshot(led, GENAI, corpus, out, as_of=AS_OF)
        assert read_snapshot(out)[0].snapshot_id == again.snapshot_id
    assert_agree(led, parent)


def test_a_rerun_after_a_kill_builds_to_the_same_folder_without_a_reconcile(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    led = world(ledger)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS)
    parent = tmp_path / "snaps"
    out = parent / "s1"
    kill_at(db_url, corpus, out, "moved", signal.SIGKILL)
    assert out.is_dir()  # the folder moved into place, but nothing was committed
    assert list_snapshots(led) == []

    manifest = build_snapshot(led, GENAI, corpus, out, as_of=AS_OF)

    assert [r["snapshot_id"] for r in list_snapshots(led)] == [manifest.snapshot_id]
    assert_agree(led, parent)


def test_a_build_still_running_is_left_alone_by_a_reconcile(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    led = world(ledger)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS)
    parent = tmp_path / "snaps"
    env = {**os.environ, "ASKFIRST_TEST_PAUSE_AT": "written"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, str(corpus), str(parent / "s1"), AS_OF.isoformat()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    try:
        assert proc.stderr.readline() == "askfirst-test: paused at written\n"
        done = reconcile(led, [parent])
        assert done.to_json() == {"entries_removed": [], "folders_removed": []}
        hidden = [p for p in parent.iterdir() if p.name.startswith(".s1.building-")]
        assert len(hidden) == 1 and (hidden[0] / "manifest.json").exists()
        with led.engine.connect() as conn:
            about = conn.execute(
                select(snapshots.c.manifest).where(snapshots.c.status == "building")
            ).scalar_one()
        assert json.loads(about)["building"]["pid"] == proc.pid
        # not listed, not resolvable: no decision or look-up sees a build in progress
        assert list_snapshots(led) == []
        proc.send_signal(signal.SIGKILL)
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    done = reconcile(led, [parent])
    assert len(done.entries) == 1
    assert_agree(led, parent)


def test_snapshot_reconcile_clears_a_killed_build_from_the_command_line(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    world(ledger)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS)
    parent = tmp_path / "snaps"
    out = parent / "s1"
    kill_at(db_url, corpus, out, "moved", signal.SIGTERM)

    res = CliRunner().invoke(
        app, ["snapshot", "reconcile", "--folder", str(parent), "--db", db_url]
    )

    assert res.exit_code == 0, res.output
    done = json.loads(res.stdout)
    assert len(done["entries_removed"]) == 1
    assert done["folders_removed"] == [str(out.resolve())]
    assert not out.exists()
    assert_agree(ledger, parent)


def test_a_rebuild_killed_after_its_commit_leaves_no_data_in_the_snapshot_it_retired(
    ledger: Ledger, db_url: str, tmp_path: Path
) -> None:
    led = world(ledger)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", CORPUS)
    parent = tmp_path / "snaps"
    old = build_snapshot(led, GENAI, corpus, parent / "s1", as_of=AS_OF)
    rebuild = ("-c", REBUILD, db_url, old.snapshot_id)

    kill_at(db_url, corpus, parent / "s1", "committed", signal.SIGKILL, rebuild)
    assert (parent / "s1" / "data").is_dir()  # retired in the registry, not yet on disk

    reconcile(led)

    assert not (parent / "s1" / "data").exists()
    status = {Path(r["path"]).name: r["status"] for r in list_snapshots(led)}
    assert status == {"s1": "retired", "s1.r2": "live"}
    assert_agree(led, parent)
