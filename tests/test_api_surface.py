"""The public API: ``askfirst.__all__`` is exactly what we mean to promise.

Adding or removing a public name is a decision: update EXPECTED here in the same change.
"""

from __future__ import annotations

import importlib

import pytest

import askfirst

EXPECTED = {
    "AskfirstError",
    "Decision",
    "Event",
    "EventType",
    "Head",
    "InputError",
    "Ledger",
    "LedgerCorrupt",
    "LedgerError",
    "NewEvent",
    "NotAuthorized",
    "Policy",
    "PolicyError",
    "Purpose",
    "Reason",
    "StorageError",
    "SnapshotManifest",
    "SubjectIn",
    "UnknownPurpose",
    "UnknownSubject",
    "VerifyReport",
    "__version__",
    "decide",
    "decide_many",
    "export_decisions",
    "build_snapshot",
    "read_snapshot",
    "snapshots_of",
    "load_policy",
    "open_ledger",
    "parse_policy",
    # withdrawals that reach back (issue 5)
    "close_task",
    "data_in_ai",
    "list_tasks",
    "rebuild_snapshot",
    "rebuild_stale",
    "register_model",
    "subject_report",
    "training_content",
}


def test_all_is_exactly_the_expected_public_names() -> None:
    assert len(askfirst.__all__) == len(set(askfirst.__all__)), "a name is listed twice"
    assert set(askfirst.__all__) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_public_name_imports(name: str) -> None:
    module = importlib.import_module("askfirst")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from askfirst import {name}", namespace)
    assert namespace[name] is getattr(askfirst, name)


def test_star_import_gives_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from askfirst import *", namespace)
    assert EXPECTED - {"__version__"} <= set(namespace)


def test_errors_form_one_tree() -> None:
    for name in ("PolicyError", "InputError", "LedgerError", "StorageError"):
        assert issubclass(getattr(askfirst, name), askfirst.AskfirstError), name
    for name in ("UnknownSubject", "UnknownPurpose", "NotAuthorized"):
        assert issubclass(getattr(askfirst, name), askfirst.InputError), name
    assert issubclass(askfirst.LedgerCorrupt, askfirst.LedgerError)


def test_version_matches_the_installed_distribution() -> None:
    from importlib.metadata import version

    assert askfirst.__version__ == version("askfirst")
