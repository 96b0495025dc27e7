"""askfirst: use members' content for AI and research only with their say-so.

The library is the product; the CLI, the HTTP API and the pages call it.
"""

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
    "parse_policy",
    "read_snapshot",
    "rebuild_snapshot",
    "rebuild_stale",
    "register_model",
    "snapshots_of",
    "subject_report",
    "training_content",
]
