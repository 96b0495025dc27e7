"""The README runs as written: every command block, in order, from the repository root
after ``askfirst demo``, with the real ``askfirst`` command, shows what the README says
it shows; its JSON lines are the shipped example files and its policy is a valid one.

The install block (``pip install -e . && askfirst demo``) and the test command are not
run again here (CI runs them): the demo is set up without serving instead, and the API
blocks talk to ``askfirst serve`` on a free port (``ASKFIRST_URL``). A block marked
``<!-- not-run: REASON -->`` right above it is skipped with that reason; only blocks that
need Spark may be marked so.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from askfirst.policy import load_policy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"
INSTALL = "pip install -e . && askfirst demo"
LANGUAGES = ("sh", "python", "toml", "json", "")  # "" is plain text, such as the layout
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->")
FENCE = re.compile(r"```(\w*)")
DONE = "@@ README block at line {} ran @@"
DONE_RE = re.compile(r"^@@ README block at line (\d+) ran @@$", re.M)
HEX = r"\b[0-9a-f]{8,}\b"
TIME = r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # the line of its opening fence
    not_run: str | None  # the reason given by a <!-- not-run: ... --> mark right above
    test_command: bool  # between the <!-- test-command --> markers

    def shown(self) -> list[str]:
        """The output the README shows: the block's full-line comments."""
        return [
            line.strip().removeprefix("#").strip()
            for line in self.code.splitlines()
            if line.strip().startswith("#")
        ]


def readme_blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    in_test_command = False
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped == "<!-- test-command -->":
            in_test_command = True
        elif stripped == "<!-- /test-command -->":
            in_test_command = False
        fence = FENCE.fullmatch(lines[i].rstrip())
        if fence is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        mark = NOT_RUN.fullmatch(lines[i - 1].strip()) if i else None
        blocks.append(
            Block(
                lang=fence.group(1),
                code="\n".join(lines[i + 1 : end]) + "\n",
                line=i + 1,
                not_run=mark.group(1) if mark else None,
                test_command=in_test_command,
            )
        )
        i = end + 1
    return blocks


def essentials(line: str) -> re.Pattern[str]:
    """A shown output line as a pattern: ``...`` stands for anything, and ids (hex) and
    times for any id and any time, since they differ from run to run."""
    parts: list[str] = []
    for piece in re.split(r"(\.\.\.|…)", line):
        if piece in ("...", "…"):
            parts.append(".*")
            continue
        at = 0
        for m in re.finditer(f"{TIME}|{HEX}", piece):
            parts.append(re.escape(piece[at : m.start()]))
            parts.append(TIME if "T" in m.group() else "[0-9a-f]+")
            at = m.end()
        parts.append(re.escape(piece[at:]))
    return re.compile("".join(parts))


def assert_shows(block: Block, output: str) -> None:
    """Every line the README shows is in the output, in the same order."""
    lines = [line.strip() for line in output.splitlines()]
    at = 0
    for want in block.shown():
        if want in ("...", "…"):
            continue
        pattern = essentials(want)
        while at < len(lines) and not pattern.fullmatch(lines[at]):
            at += 1
        assert at < len(lines), (
            f"README.md line {block.line}: the output has no line like {want!r} "
            f"(after the lines shown before it):\n{output}"
        )
        at += 1


def _need(tool: str, path: str) -> str:
    found = shutil.which(tool, path=path)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is needed to run the README's commands")
        pytest.skip(f"{tool} is not installed")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of what the README's commands read: the README and the example files."""
    shutil.copy(README, tmp_path / "README.md")
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    return tmp_path


@dataclass(frozen=True)
class Shell:
    """A user's environment: the askfirst next to this Python first on PATH, no askfirst
    settings (kept out of reprs, so that a failure never prints the environment)."""

    env: dict[str, str] = field(repr=False)

    def __or__(self, more: dict[str, str]) -> Shell:
        return Shell(self.env | more)


@pytest.fixture
def shell() -> Shell:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    for tool in ("askfirst", "bash", "curl", "awk", "tee"):
        _need(tool, path)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASKFIRST_")}
    return Shell(clean | {"PATH": path, "PYTHON": sys.executable})


@contextmanager
def served(scratch: Path, shell: Shell, port: int) -> Iterator[None]:
    """``askfirst serve`` on the demo's ledger, as ``askfirst demo`` would serve it."""
    cmd = [
        "askfirst", "serve", "--db", "sqlite:///askfirst-demo/askfirst.db",
        "--key-dir", "askfirst-demo/keys", "--port", str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=scratch, env=shell.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"askfirst serve stopped (exit {proc.returncode}):\n{out}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("askfirst serve did not answer /v1/health")
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _script(blocks: list[Block]) -> str:
    """One shell session, as a user in one terminal: each block in turn, a line of its
    own after each so that the output can be told apart."""
    parts = ["set -euo pipefail"]
    for b in blocks:
        if b.lang == "python":
            parts.append(f"\"$PYTHON\" - <<'README_PYTHON'\n{b.code}README_PYTHON")
        else:
            parts.append(b.code.rstrip("\n"))
        parts.append(f"printf '\\n%s\\n' '{DONE.format(b.line)}'")
    return "\n".join(parts) + "\n"


def test_the_readme_runs_as_written(scratch: Path, shell: Shell) -> None:
    blocks = readme_blocks()
    odd = [b for b in blocks if b.lang not in LANGUAGES]
    assert not odd, f"README.md line {odd[0].line}: a ```{odd[0].lang} block this test cannot run"
    for b in blocks:
        if b.not_run is not None:
            assert "spark" in b.code.lower(), (
                f"README.md line {b.line}: only blocks that need Spark may be marked not-run"
            )
    install, *rest = [b for b in blocks if b.lang == "sh"]
    assert install.code.strip() == INSTALL, "the first command block installs and runs the demo"
    assert [b.code.startswith("pip install -e '.[test]'") for b in rest if b.test_command] == [
        True
    ], "one test command, between the test-command markers"
    runnable = [
        b
        for b in blocks
        if b.lang in ("sh", "python")
        and b is not install
        and not b.test_command
        and b.not_run is None
    ]

    # What `askfirst demo` leaves behind, without serving it ...
    demo = subprocess.run(
        ["askfirst", "demo", "--no-serve"],
        cwd=scratch,
        env=shell.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    assert (scratch / "askfirst-demo" / "askfirst.db").is_file()
    # ... and the demo served, for the API blocks.
    port = _free_port()
    shell |= {"ASKFIRST_URL": f"http://127.0.0.1:{port}"}
    with served(scratch, shell, port):
        run = subprocess.run(
            ["bash", "-c", _script(runnable)],
            cwd=scratch,
            env=shell.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )

    outputs = DONE_RE.split(run.stdout)  # [out, line, out, line, ..., rest]
    ran = outputs[1::2]
    assert ran == [str(b.line) for b in runnable[: len(ran)]]
    if run.returncode != 0:
        failed = runnable[len(ran)]
        pytest.fail(
            f"README.md line {failed.line}: the ```{failed.lang} block exits "
            f"{run.returncode}:\n{failed.code}\n--- output ---\n{outputs[-1]}"
        )
    assert len(ran) == len(runnable)
    for block, output in zip(runnable, outputs[0::2], strict=False):
        assert_shows(block, output)


@pytest.mark.parametrize(
    "block",
    [b for b in readme_blocks() if b.not_run is not None],
    ids=lambda b: f"line-{b.line}",
)
def test_blocks_marked_not_run(block: Block) -> None:
    """Skipped, each with the reason its mark gives (and only blocks that need Spark)."""
    assert "spark" in block.code.lower()
    pytest.skip(f"README.md line {block.line} is not run here: {block.not_run}")


def test_the_json_examples_are_the_shipped_files() -> None:
    shipped = {p.name: p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.jsonl"))}
    shown = [b for b in readme_blocks() if b.lang == "json"]
    assert shown
    for b in shown:
        same = [name for name, text in shipped.items() if text == b.code]
        assert same, f"README.md line {b.line}: these lines are not those of a file in examples/"
    assert len({b.code for b in shown}) == len(shipped), "each example file is in the README"


def test_the_policy_example_is_a_valid_policy(tmp_path: Path) -> None:
    shown = [b for b in readme_blocks() if b.lang == "toml"]
    assert shown
    for b in shown:
        file = tmp_path / f"line-{b.line}.toml"
        file.write_text(b.code, encoding="utf-8")
        load_policy(file)  # raises PolicyError naming the key when it is not valid
