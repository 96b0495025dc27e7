"""askfirst: use members' content for AI and research only with their say-so.

The library is the product; the CLI, the HTTP API and the pages call it.

The public names load on first use (PEP 562): ``import askfirst`` alone, and so the
``askfirst`` command, does not pay for pyarrow, DuckDB or Alembic until a name that
needs them is used. ``from askfirst import decide`` works as always.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see; _WHERE says the same for Python
    from askfirst.data_in_ai import data_in_ai
    from askfirst.decisions import Decision, Reason, decide, decide_many
    from askfirst.errors import (
        AskfirstError,
        InputError,
        LedgerCorrupt,
        LedgerError,
        NotAuthorized,
        PolicyError,
        StorageError,
        UnknownPurpose,
        UnknownSubject,
    )
    from askfirst.gate import SnapshotManifest, build_snapshot, export_decisions, read_snapshot
    from askfirst.gate.rebuild import rebuild_snapshot, rebuild_stale
    from askfirst.ledger import Event, EventType, Head, Ledger, NewEvent, SubjectIn, VerifyReport
    from askfirst.lineage import snapshots_of
    from askfirst.models import close_task, list_tasks, register_model
    from askfirst.policy import Policy, Purpose, load_policy, parse_policy
    from askfirst.propagation import open_ledger
    from askfirst.reports import subject_report, training_content

__version__ = "0.1.0"

__all__ = [
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
    "SnapshotManifest",
    "StorageError",
    "SubjectIn",
    "UnknownPurpose",
    "UnknownSubject",
    "VerifyReport",
    "__version__",
    "build_snapshot",
    "close_task",
    "data_in_ai",
    "decide",
    "decide_many",
    "export_decisions",
    "list_tasks",
    "load_policy",
    "open_ledger",
    "parse_policy",
    "read_snapshot",
    "rebuild_snapshot",
    "rebuild_stale",
    "register_model",
    "snapshots_of",
    "subject_report",
    "training_content",
]

# Each public name and the module that holds it (tests/test_startup.py checks that this
# agrees with __all__ and with the imports above).
_WHERE = {
    "data_in_ai": "askfirst.data_in_ai",
    **dict.fromkeys(("Decision", "Reason", "decide", "decide_many"), "askfirst.decisions"),
    **dict.fromkeys(
        (
            "AskfirstError",
            "InputError",
            "LedgerCorrupt",
            "LedgerError",
            "NotAuthorized",
            "PolicyError",
            "StorageError",
            "UnknownPurpose",
            "UnknownSubject",
        ),
        "askfirst.errors",
    ),
    **dict.fromkeys(
        ("SnapshotManifest", "build_snapshot", "export_decisions", "read_snapshot"),
        "askfirst.gate",
    ),
    **dict.fromkeys(("rebuild_snapshot", "rebuild_stale"), "askfirst.gate.rebuild"),
    **dict.fromkeys(
        ("Event", "EventType", "Head", "Ledger", "NewEvent", "SubjectIn", "VerifyReport"),
        "askfirst.ledger",
    ),
    "snapshots_of": "askfirst.lineage",
    **dict.fromkeys(("close_task", "list_tasks", "register_model"), "askfirst.models"),
    **dict.fromkeys(("Policy", "Purpose", "load_policy", "parse_policy"), "askfirst.policy"),
    "open_ledger": "askfirst.propagation",
    **dict.fromkeys(("subject_report", "training_content"), "askfirst.reports"),
}


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use, and keep it here."""
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'askfirst' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package keeps its public names when a submodule of the same name loads.

    Importing ``askfirst.data_in_ai`` (the module) binds it on the package by that name;
    ``askfirst.data_in_ai`` is the function it holds, as it was when names loaded at once.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and _WHERE.get(name) == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
