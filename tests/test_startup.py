"""The command starts quickly because the heavy parts load only where they are used.

Checked by what a fresh process has imported (never by timing; bench/startup.py times it):
``askfirst --help`` and one ``askfirst decide`` need neither pyarrow, DuckDB, numpy nor
Alembic. And the shortcuts that make that so say the same as the code they stand for.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import askfirst
from askfirst import load_policy, open_ledger
from askfirst.ledger import store

HEAVY = ("pyarrow", "duckdb", "numpy", "alembic")
REPORT = "import json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"


def loaded_by(code: str) -> set[str]:
    """The top-level packages a fresh Python has imported after running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_command_line_loads_without_the_heavy_parts() -> None:
    assert loaded_by("import askfirst.cli") & set(HEAVY) == set()


def test_the_library_loads_without_the_heavy_parts() -> None:
    assert loaded_by("import askfirst") & set(HEAVY) == set()


def test_help_loads_without_the_heavy_parts() -> None:
    code = (
        "import sys\nfrom askfirst.cli import app\n"
        "try:\n    app(['snapshot', 'build', '--help'])\nexcept SystemExit:\n    pass"
    )
    assert loaded_by(code) & set(HEAVY) == set()


def test_one_decision_loads_without_the_heavy_parts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with open_ledger(url, load_policy(), create=True) as ledger:
        ledger.register([askfirst.SubjectIn(id="m1", jurisdiction="US-CA")])
    args = ["decide", "--subject", "m1", "--purpose", "genai-training", "--json", "--db", url]
    code = (
        "import sys\nfrom askfirst.cli import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit as e:\n    assert not e.code, e.code"
    )
    loaded = loaded_by(code)
    assert "askfirst" in loaded
    assert loaded & set(HEAVY) == set()


# ---- the lazy public names ----------------------------------------------------------------


def _type_checking_imports() -> dict[str, str]:
    """name -> module, from the ``if TYPE_CHECKING:`` block of askfirst/__init__.py."""
    tree = ast.parse(Path(askfirst.__file__).read_text("utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    return {
        alias.asname or alias.name: str(node.module)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_the_lazy_names_are_the_public_names_and_the_typed_ones() -> None:
    where = askfirst._WHERE
    assert set(where) == set(askfirst.__all__) - {"__version__"}
    assert _type_checking_imports() == where


@pytest.mark.parametrize("first", ["askfirst.reports", "askfirst.data_in_ai", "askfirst.web.app"])
def test_a_public_name_stays_itself_when_its_module_loads_first(first: str) -> None:
    """``askfirst.data_in_ai`` is the function, even when the module of the same name was
    imported before anyone asked for it."""
    code = (
        f"import {first}\nimport askfirst\nfrom askfirst import data_in_ai\n"
        "assert callable(askfirst.data_in_ai), askfirst.data_in_ai\n"
        "assert data_in_ai is askfirst.data_in_ai\n"
        "assert data_in_ai.__module__ == 'askfirst.data_in_ai'"
    )
    loaded_by(code)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        askfirst.nope  # noqa: B018
    with pytest.raises(ImportError):
        exec("from askfirst import nope", {})


# ---- what stands in for a heavy import says the same ---------------------------------------


def test_the_schema_head_read_from_the_migrations_is_alembics() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(store.MIGRATIONS))
    assert store.head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_the_help_texts_name_what_the_library_accepts() -> None:
    from askfirst import accounts, receipts
    from askfirst.cli import WELL_KNOWN, web

    assert web.SCOPES == accounts.SCOPES
    assert WELL_KNOWN == receipts.WELL_KNOWN
