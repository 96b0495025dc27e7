"""The web face's modules import one way only, with no private names across modules.

Every import counts: at the top of a module, inside a function, or under
``TYPE_CHECKING``. ``auth`` (who is asking) is at the bottom, then ``errors``, then the
routers (``api``, ``training_api``, ``pages``), then ``app``, which builds the whole.
"""

from __future__ import annotations

import ast
from pathlib import Path

import askfirst
import askfirst.web

WEB = Path(askfirst.web.__file__).parent
CONFIG = Path(askfirst.__file__).parent / "config.py"


def _module_name(path: Path) -> str:
    return "askfirst.web" if path.stem == "__init__" else f"askfirst.web.{path.stem}"


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from M import name`` and ``import M`` in the file."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def _web_graph() -> dict[str, set[str]]:
    """Each web module and the web modules it imports (``from askfirst.web import api``
    is an import of ``askfirst.web.api``)."""
    modules = {_module_name(p): p for p in WEB.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for module, imported in _imports(path):
            if f"{module}.{imported}" in modules:
                targets.add(f"{module}.{imported}")
            elif module in modules and module != "askfirst.web":
                targets.add(module)
        graph[name] = targets - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_web_modules_import_each_other_without_a_loop() -> None:
    graph = _web_graph()
    assert graph["askfirst.web.app"] >= {"askfirst.web.api", "askfirst.web.pages"}, graph
    loop = _cycle(graph)
    assert loop is None, " -> ".join(loop or [])


def test_auth_is_the_bottom_of_the_web_face_and_config_knows_no_web() -> None:
    graph = _web_graph()
    assert graph["askfirst.web.auth"] == set(), graph["askfirst.web.auth"]
    assert not [m for m, _ in _imports(CONFIG) if m.startswith("askfirst.web")]


def test_no_web_module_imports_another_modules_private_names() -> None:
    private = [
        f"{path.name}: from {module} import {name}"
        for path in sorted(WEB.glob("*.py"))
        for module, name in _imports(path)
        if module.startswith("askfirst") and name.startswith("_")
    ]
    assert private == []
