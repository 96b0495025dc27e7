"""The layers hold: no import loop among askfirst's modules, no module importing above its
layer (the contract in pyproject.toml), imports inside functions included; and the ledger
is handed reaching back rather than importing it."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

import askfirst
from askfirst import open_ledger, propagation
from askfirst.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
SRC = Path(askfirst.__file__).resolve().parent


def import_loops(package: str) -> list[tuple[str, ...]]:
    """Every direct import a -> b for which b also reaches a: the chain back, per edge."""
    graph = grimp.build_graph(package, cache_dir=None)
    loops = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                loops.append((module, *back))
    return loops


def test_askfirst_has_no_import_loop() -> None:
    assert import_loops("askfirst") == []


def test_the_loop_finder_sees_imports_inside_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "looped"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from looped import high\n    return high\n")
    (pkg / "high.py").write_text("from looped import low\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert ("looped.high", "looped.low", "looped.high") in import_loops("looped")


def test_no_module_imports_above_its_layer() -> None:
    lint = shutil.which("lint-imports")
    assert lint is not None, "import-linter is a test dependency: pip install -e '.[test]'"
    run = subprocess.run(
        [lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def test_the_contract_breaks_when_the_core_imports_the_web(tmp_path: Path) -> None:
    """The contract is not vacuous: a copy of askfirst whose ledger imports the web
    breaks it."""
    copy = tmp_path / "src"
    shutil.copytree(SRC, copy / "askfirst", ignore=shutil.ignore_patterns("__pycache__"))
    state = copy / "askfirst" / "ledger" / "state.py"
    state.write_text(
        state.read_text() + "\n\ndef _late() -> None:\n    from askfirst.web import app\n"
    )
    config = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    config.write_text(text)
    lint = shutil.which("lint-imports")
    assert lint is not None
    run = subprocess.run(
        [lint, "--config", str(config), "--no-cache"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "askfirst.ledger.state -> askfirst.web" in run.stdout.replace("\n", " ") or (
        "askfirst.ledger.state" in run.stdout and "askfirst.web.app" in run.stdout
    )


# ---- reaching back is handed to the ledger ----------------------------------------------------


def test_the_public_constructor_always_installs_reaching_back(tmp_path: Path) -> None:
    with open_ledger(f"sqlite:///{tmp_path / 'a.db'}", create=True) as ledger:
        assert ledger.after_append is propagation.propagate
    # The ledger's own constructor cannot be called without saying what runs after an
    # append: forgetting reaching back is a TypeError, not a silent "going forward only".
    with pytest.raises(TypeError):
        Ledger.open(f"sqlite:///{tmp_path / 'a.db'}")  # type: ignore[call-arg]


def test_askfirst_opens_ledgers_only_through_the_public_constructor() -> None:
    """Outside ``open_ledger`` itself, no module of askfirst builds a Ledger directly."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            direct = isinstance(f, ast.Name) and f.id == "Ledger"
            opened = (
                isinstance(f, ast.Attribute)
                and f.attr == "open"
                and isinstance(f.value, ast.Name)
                and f.value.id == "Ledger"
            )
            if direct or opened:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == ["propagation.py:" + str(_open_ledger_line())]


def _open_ledger_line() -> int:
    source = textwrap.dedent(Path(propagation.__file__).read_text())
    tree = ast.parse(source)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "open_ledger")
    return next(
        n.lineno
        for n in ast.walk(fn)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "open"
    )
