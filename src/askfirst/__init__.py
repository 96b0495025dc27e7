"""askfirst: use members' content for AI and research only with their say-so.

The library is the product; the CLI (and later the HTTP API and pages) call it.
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
from askfirst.ledger import Event, EventType, Head, Ledger, NewEvent, SubjectIn, VerifyReport
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
    "StorageError",
    "SubjectIn",
    "UnknownPurpose",
    "UnknownSubject",
    "VerifyReport",
    "__version__",
    "decide",
    "decide_many",
    "load_policy",
    "parse_policy",
]
