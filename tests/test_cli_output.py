"""What the command prints when it is not talking to a person at a terminal: whole values
a script can use, JSON on request, help that says what the code says, and errors that
end their line.

CliRunner's stdout is not a terminal, as with ``askfirst snapshot list | cut -f1``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from typer.main import get_command
from typer.testing import CliRunner, Result

from askfirst import SnapshotManifest, build_snapshot, load_policy, open_ledger
from askfirst.cli import app
from test_gate import AS_OF, CORPUS, GENAI, world, write_jsonl

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def run(*args: str | Path, columns: int = 80) -> Result:
    """Like a pipe: not a terminal, 80 columns (Rich's width when it cannot ask)."""
    env = {"ASKFIRST_DATABASE_URL": None, "ASKFIRST_POLICY": None, "COLUMNS": str(columns)}
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def ok(res: Result) -> str:
    assert res.exit_code == 0, (res.exit_code, res.stdout, res.stderr, res.exception)
    return res.stdout


def rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


@pytest.fixture
def built(tmp_path: Path) -> Iterator[tuple[str, SnapshotManifest, Path]]:
    """A ledger with one snapshot of test_gate's corpus: (url, manifest, its folder)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    # A long folder name, as real paths are, so that a table would have to cut it.
    out = tmp_path / "snapshots-of-the-platform" / "genai-training-2026-03-01"
    with open_ledger(url, load_policy(), create=True) as ledger:
        world(ledger)
        manifest = build_snapshot(
            ledger, GENAI, write_jsonl(tmp_path / "c.jsonl", CORPUS), out, as_of=AS_OF
        )
    yield url, manifest, out


def all_commands() -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []

    def walk(cmd: click.Command, path: str) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, f"{path} {name}".strip())
        else:
            found.append((path, cmd))

    walk(get_command(app), "")
    return found


# ---- whole values when piped ------------------------------------------------------------


def test_snapshot_list_piped_prints_whole_values_one_row_a_line(
    built: tuple[str, SnapshotManifest, Path],
) -> None:
    url, manifest, out = built
    header, row = rows(ok(run("snapshot", "list", "--db", url)))
    assert header == ["snapshot", "purpose", "as of", "status", "records", "path"]
    assert row[0] == manifest.snapshot_id and HEX64.match(row[0])
    assert row[1] == "genai-training"
    assert row[2] == manifest.as_of
    assert row[3] == "live"
    assert Path(row[5]) == out.resolve()
    # the id goes straight into the next command
    shown = ok(run("snapshot", "show", row[0], "--db", url))
    assert manifest.snapshot_id in shown


def test_lineage_subject_piped_prints_whole_values(
    built: tuple[str, SnapshotManifest, Path],
) -> None:
    url, manifest, _ = built
    header, row = rows(ok(run("lineage", "subject", "bob", "--db", url)))
    assert header == ["snapshot", "purpose", "as of", "status", "as author", "as mention"]
    assert row[:4] == [manifest.snapshot_id, "genai-training", manifest.as_of, "live"]


def test_model_list_piped_prints_whole_snapshot_ids(
    built: tuple[str, SnapshotManifest, Path],
) -> None:
    url, manifest, _ = built
    ok(run("model", "register", "writer", "v1", "--snapshot", manifest.snapshot_id, "--db", url))
    header, row = rows(ok(run("model", "list", "--db", url)))
    assert header[:2] == ["model", "version"] and header[4] == "snapshots"
    assert row[:2] == ["writer", "v1"]
    assert row[4] == manifest.snapshot_id


def test_a_tab_or_line_break_inside_a_value_keeps_one_row_a_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    out = tmp_path / "tab\there, line\nbreak"
    with open_ledger(url, load_policy(), create=True) as ledger:
        world(ledger)
        build_snapshot(ledger, GENAI, write_jsonl(tmp_path / "c.jsonl", CORPUS), out, as_of=AS_OF)
    _, row = rows(ok(run("snapshot", "list", "--db", url)))
    assert len(row) == 6
    assert row[5] == str(out.resolve()).replace("\t", "\\t").replace("\n", "\\n")


@pytest.mark.parametrize(
    "path", [p for p, _ in all_commands() if p.endswith(" list") or p == "lineage subject"]
)
def test_every_listing_takes_json(path: str) -> None:
    command = dict(all_commands())[path]
    assert any("--json" in getattr(p, "opts", []) for p in command.params), path


def test_outbox_list_takes_json_and_prints_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ok(run("init", "--db", url))
    assert ok(run("outbox", "list", "--json", "--db", url)).strip() == "[]"


# ---- help that says what the code says ---------------------------------------------------


def test_help_keeps_square_brackets() -> None:
    """ "[spark]" is text, not markup: the install hint must survive."""
    text = " ".join(ok(run("snapshot", "build", "--help")).split())
    assert "pip install 'askfirst[spark]'" in text


@pytest.mark.parametrize("path", [p for p, _ in all_commands()])
def test_no_help_shows_a_bool_placeholder(path: str) -> None:
    text = ok(run(*path.split(), "--help", columns=200))
    assert "<bool>" not in text, text
    assert "Usage: " in text


def test_a_flag_is_shown_as_a_flag() -> None:
    text = ok(run("snapshot", "build", "--help", columns=200))
    assert re.search(r"^\s+--verify-ledger\s+Verify the whole ledger first\.", text, re.M), text
    assert re.search(r"^\s+-q, --quiet\s+No progress bar\.", text, re.M), text


# ---- errors end their line ----------------------------------------------------------------


def _value(param: click.Parameter, existing: Path) -> str:
    """A value the parser takes for ``param``: a choice, an existing file or a number."""
    described = getattr(param, "type_descriptor", None)  # Typer's own parameters
    kind = getattr(param, "type", None)  # click's
    choices = getattr(described, "choices", None) or getattr(kind, "choices", None)
    if choices:
        return str(next(iter(choices)))
    if getattr(described, "annotation", None) is Path or getattr(kind, "name", "") == "path":
        return str(existing)
    return "1"


def _args_for(command: click.Command, existing: Path) -> list[str]:
    """Values for a command's required parameters that pass the parser."""
    args: list[str] = []
    for p in command.params:
        if p.required and p.param_type_name == "option":
            args += [p.opts[0], _value(p, existing)]
        elif p.required:
            args.append(_value(p, existing))
    return args


ON_A_LEDGER = [
    (p, c)
    for p, c in all_commands()
    if p != "init" and any("--db" in getattr(x, "opts", []) for x in c.params)
]


@pytest.mark.parametrize("path", [p for p, _ in ON_A_LEDGER])
def test_a_missing_ledger_is_one_whole_line(path: str, tmp_path: Path) -> None:
    existing = tmp_path / "input.json"
    existing.write_text("{}\n")
    command = dict(ON_A_LEDGER)[path]
    missing = tmp_path / "nowhere.db"
    res = run(*path.split(), *_args_for(command, existing), "--db", f"sqlite:///{missing}")
    assert res.exit_code != 0, res.stdout
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.stderr.startswith("error: ") and res.stderr.endswith("\n"), repr(res.stderr)
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert not missing.exists()
