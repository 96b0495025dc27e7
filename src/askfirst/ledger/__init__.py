"""The consent ledger: an append-only, hash-chained log of events and its projections."""

from askfirst.ledger.events import Event, EventType, NewEvent, SubjectIn
from askfirst.ledger.ledger import Head, Ledger, VerifyReport

__all__ = ["Event", "EventType", "Head", "Ledger", "NewEvent", "SubjectIn", "VerifyReport"]
