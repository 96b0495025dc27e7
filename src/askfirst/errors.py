"""The exceptions askfirst raises, in one tree.

Every error says what was wrong and, where it can, what to do about it. The CLI prints
``str(error)`` as one line and exits non-zero; the HTTP API answers 4xx with it.

::

    AskfirstError
     ├── PolicyError            the policy file is missing, unreadable or breaks a rule
     ├── InputError             bad input from a caller (a value, a time, a JSONL line)
     │    ├── UnknownSubject    no subject with that id
     │    ├── UnknownPurpose    the policy has no purpose of that name
     │    ├── NotFound          no such task (or other record named in a request's path)
     │    └── NotAuthorized     the actor may not act for that subject
     ├── Conflict               the request clashes with what is there (a handle taken)
     ├── LedgerError            the ledger cannot be used as asked
     │    └── LedgerCorrupt     the ledger failed verification; nothing is decided on it
     └── StorageError           the database cannot be reached, or its schema is not current
"""

from __future__ import annotations

import re

SHOWN = 80  # characters of a quoted input an error message echoes, at most

# A quoted value in a message (as ``{value!r}`` writes it), longer than SHOWN: the
# opening quote starts the message or follows a space or ``(`[=:,``, the closing one ends
# it or comes before a space or ``,;:.)]`` (so the text between two quoted values is not
# taken for one).
_OPEN = r"(?<![^\s(\[=:,])"
_CLOSE = r"(?![^\s,;:.)\]])"
_QUOTED = re.compile(
    rf"{_OPEN}'([^'\n]{{{SHOWN}}})[^'\n]+'{_CLOSE}|{_OPEN}\"([^\"\n]{{{SHOWN}}})[^\"\n]+\"{_CLOSE}"
)


def shorten_quoted(message: str) -> str:
    """``message`` with every quoted value longer than :data:`SHOWN` characters cut to
    that many and an ellipsis: an error names what was wrong without echoing a huge input.
    """
    return _QUOTED.sub(lambda m: f"'{m[1]}…'" if m[1] is not None else f'"{m[2]}…"', message)


class AskfirstError(Exception):
    """Base of every error askfirst raises on purpose. A quoted input in its message is
    cut to :data:`SHOWN` characters (``shorten_quoted``), whoever raised it."""

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (shorten_quoted(args[0]), *args[1:])
        super().__init__(*args)


class PolicyError(AskfirstError):
    """The policy could not be loaded: the message names the key and the reason."""


class InputError(AskfirstError):
    """A caller gave a value askfirst cannot accept; nothing was written.

    ``index`` is the 0-based position of the offending item when a batch was given.
    """

    index: int | None = None


class UnknownSubject(InputError):
    """No subject has this id."""

    def __init__(self, subject_id: str) -> None:
        super().__init__(
            f"unknown subject {subject_id!r}: import it first with 'askfirst subjects import'"
        )
        self.subject_id = subject_id


class UnknownPurpose(InputError):
    """The policy has no purpose of this name."""

    def __init__(self, purpose: str, known: list[str]) -> None:
        super().__init__(f"unknown purpose {purpose!r}; the policy has: {', '.join(known)}")
        self.purpose = purpose


class NotFound(InputError):
    """A record named by its id (in an API path, say) does not exist."""


class NotAuthorized(InputError):
    """The actor has no authority in the ledger to act for the subject."""


class Conflict(AskfirstError):
    """The request is well formed but clashes with what is there: a handle another
    subject holds (or held lately), a directory entry of an erased subject."""


class LedgerError(AskfirstError):
    """The ledger cannot do what was asked."""


class LedgerCorrupt(LedgerError):
    """Verification found an edited, deleted, inserted or reordered event."""


class StorageError(AskfirstError):
    """The database is unreachable, or its schema is missing or out of date."""
