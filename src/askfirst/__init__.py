"""askfirst: use members' content for AI and research only with their say-so.

The library is the product; the CLI, the HTTP API and the pages call it.
"""

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
from askfirst.ledger import Event, EventType, Head, Ledger, NewEvent, SubjectIn, VerifyReport
from askfirst.lineage import snapshots_of
from askfirst.policy import Policy, Purpose, load_policy, parse_policy

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
    "decide",
    "decide_many",
    "export_decisions",
    "load_policy",
    "parse_policy",
    "read_snapshot",
    "snapshots_of",
]
