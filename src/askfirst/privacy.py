"""What a member sees and does on the Data privacy settings page, as plain data.

The pages, their JSON twins and the API all call these functions: :func:`overview`
says, for each purpose, what it uses, who gets it, the current notice and the member's
state in words; :func:`choose` records one yes or no (withdrawing is exactly as easy as
granting); :func:`turn_off_all` says no to every purpose in one transaction; and
:func:`note_gpc` records a browser's Global Privacy Control signal the first time it is
seen for a member.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from askfirst import times
from askfirst.decisions import Decision, Reason, decide
from askfirst.errors import InputError, UnknownSubject
from askfirst.ledger import Event, EventType, Ledger, NewEvent, store
from askfirst.ledger.tables import authority_state, subject_state, subjects

YES, NO = "grant", "withdraw"
CATEGORY_WORDS = {
    "profile": "your profile",
    "post": "posts",
    "comment": "comments",
    "article": "articles",
    "video": "videos",
    "ai-prompt": "what you type into AI features",
}
SAID = {"grant": "You said yes", "withdraw": "You said no", "object": "You objected"}


def day(us: int) -> str:
    dt = times.from_micros(us)
    return f"{dt.day} {dt:%b %Y}"


def in_words(d: Decision, event: Event | None) -> str:
    """The member's state for one purpose, as a sentence they can act on."""
    when = f" on {day(event.recorded_at)}" if event else ""
    words = {
        Reason.GRANTED: f"Used: you said yes{when}.",
        Reason.WITHDRAWN: f"Not used: you said no{when}.",
        Reason.GPC: f"Not used: your browser's Global Privacy Control signal{when} was "
        "honoured as a no.",
        Reason.RECONSENT_NEEDED: f"Not used: you said yes{when} to an earlier version; this "
        "purpose has since grown, so we need you to decide again.",
        Reason.NO_CONSENT: "Not used: where you live, we need your consent first.",
        Reason.DEFAULT_OFF: "Not used: this is off unless you say yes.",
        Reason.NOTICE_PENDING: "Not used yet: we have told you about this and you have "
        "time to decide.",
        Reason.DEFAULT_AFTER_NOTICE: f"Used: we told you{when} and you did not say no. "
        "You can say no at any time.",
        Reason.MINOR: "Not used: you are under 18.",
        Reason.ACCOUNT_CLOSED: "Not used: the account is closed.",
        Reason.DECEASED: "Not used: this member has died.",
        Reason.UNKNOWN_SUBJECT: "Not used.",
    }
    return words[d.reason]


@dataclass(frozen=True)
class Profile:
    subject: str
    kind: str
    handle: str | None
    names: list[str]
    jurisdiction: str | None
    status: str
    gpc_seq: int | None


def profile(ledger: Ledger, subject: str) -> Profile:
    """A subject's directory entry and current state; UnknownSubject if none."""
    q = (
        select(subject_state, subjects.c.handle, subjects.c.names)
        .select_from(subject_state.outerjoin(subjects, subjects.c.id == subject_state.c.subject_id))
        .where(subject_state.c.subject_id == subject)
    )
    with ledger.engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        raise UnknownSubject(subject)
    return Profile(
        subject,
        row.kind,
        row.handle,
        json.loads(row.names or "[]"),
        row.jurisdiction or None,
        row.status,
        row.gpc_seq,
    )


def subject_for_handle(ledger: Ledger, handle: str) -> str | None:
    q = select(subjects.c.id).where(subjects.c.handle == handle.lstrip("@").lower())
    with ledger.engine.connect() as conn:
        return conn.execute(q).scalar()


def managed_by(ledger: Ledger, member: str) -> list[str]:
    """The organizations whose page ``member`` administers (the ledger shows it)."""
    a = authority_state
    q = select(a.c.subject_id).where(a.c.delegate_id == member, a.c.role == "page-admin")
    with ledger.engine.connect() as conn:
        return sorted(conn.execute(q).scalars())


def overview(ledger: Ledger, subject: str) -> dict[str, Any]:
    """Everything the Data privacy page shows for ``subject``, JSON-ready."""
    who = profile(ledger, subject)
    evs = ledger.subject_events(subject)
    by_seq = {e.seq: e for e in evs}
    gpc = [e for e in evs if e.type == EventType.GPC]
    purposes = []
    for p in ledger.policy.purposes.values():
        d = decide(ledger, subject, p.name)
        event = by_seq.get(d.event_seq) if d.event_seq is not None else None
        last_choice = next(
            (e for e in reversed(evs) if e.type == EventType.CHOICE and e.purpose == p.name),
            None,
        )
        conflict = bool(
            gpc
            and p.honours_gpc
            and last_choice
            and last_choice.value == YES
            and last_choice.seq > gpc[-1].seq
        )
        purposes.append(
            {
                "name": p.name,
                "title": p.title,
                "description": p.description,
                "categories": list(p.categories),
                "categories_in_words": [CATEGORY_WORDS.get(c, c) for c in p.categories],
                "recipients": list(p.recipients),
                "notice_version": p.version,
                "allowed": d.allowed,
                "reason": str(d.reason),
                "in_words": in_words(d, event),
                "event_seq": d.event_seq,
                "gpc_conflict": conflict,
                "receipt_seq": last_choice.seq if last_choice else None,
                "can_choose": who.status not in ("closed", "deceased"),
            }
        )
    return {
        "subject": subject,
        "kind": who.kind,
        "handle": who.handle,
        "jurisdiction": who.jurisdiction,
        "regime": str(ledger.policy.regime(who.jurisdiction)),
        "gpc_honoured_at": times.iso(gpc[-1].recorded_at) if gpc else None,
        "purposes": purposes,
        "receipts": [
            {
                "seq": e.seq,
                "purpose": e.purpose,
                "action": e.value,
                "at": times.iso(e.recorded_at),
                "actor": e.actor,
            }
            for e in reversed(evs)
            if e.type == EventType.CHOICE
        ],
    }


def choose(
    ledger: Ledger, subject: str, purpose: str, action: str, *, actor: str, source: str
) -> Event:
    """Record one choice: ``grant``, ``withdraw`` or ``object``; in effect at once."""
    if action not in ("grant", "withdraw", "object"):
        raise InputError(f"action {action!r} must be grant, withdraw or object")
    ledger.policy.purpose(purpose)
    return ledger.append(
        NewEvent(
            type="choice",
            subject=subject,
            actor=actor,
            source=source,
            purpose=purpose,
            value=action,
        )
    )


def turn_off_all(ledger: Ledger, subject: str, *, actor: str, source: str) -> list[Event]:
    """Say no to every purpose at once, in one transaction."""
    return ledger.append_many(
        [
            NewEvent(
                type="choice", subject=subject, actor=actor, source=source, purpose=name, value=NO
            )
            for name in ledger.policy.purposes
        ]
    )


def note_gpc(ledger: Ledger, subject: str, *, source: str = "web:sec-gpc") -> Event | None:
    """Record a GPC signal the first time one is seen for ``subject``; later ones add
    nothing, so a member who then says yes on the settings page keeps their yes."""
    q = select(subject_state.c.gpc_seq).where(subject_state.c.subject_id == subject)
    with store.write(ledger.engine) as conn:
        ledger.lock_head(conn)  # so that two requests cannot both record "the first" signal
        row = conn.execute(q).first()
        if row is None or row.gpc_seq is not None:
            return None
        new = NewEvent(type="gpc", subject=subject, actor=subject, source=source, value="1")
        return ledger.append_in(conn, [new])[0]
