"""The consent ledger: an append-only, hash-chained log of events and its projections."""

from askfirst.ledger.events import Event, EventType, Head, NewEvent, SubjectIn
from askfirst.ledger.ledger import Ledger
from askfirst.ledger.verify import VerifyReport

__all__ = ["Event", "EventType", "Head", "Ledger", "NewEvent", "SubjectIn", "VerifyReport"]
