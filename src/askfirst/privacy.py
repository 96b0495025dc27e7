"""What a member sees and does on the Data privacy settings page, as plain data.

The pages, their JSON twins, the API and the CLI all call these functions:
:func:`overview` says, for each purpose, what it uses, who gets it, the current notice
and the member's state in words, and lists the member's receipts in words;
:func:`receipt_in_words` is what a receipt's page says; :func:`choose` records one yes or
no (withdrawing is exactly as easy as granting) and, when the answer is already that one,
records nothing and says so; :func:`turn_off_all` says no to every purpose in one
transaction; and :func:`note_gpc` records a browser's Global Privacy Control signal the
first time it is seen for a member.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection, bindparam, select

from askfirst import notices, times
from askfirst.decisions import Decision, Reason, decide
from askfirst.errors import InputError, UnknownSubject
from askfirst.ledger import Event, EventType, Ledger, NewEvent, store
from askfirst.ledger.tables import authority_state, choice_state, events, subject_state, subjects
from askfirst.policy import Policy

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


def in_words(d: Decision, event: Event | None, policy: Policy | None = None) -> str:
    """The member's state for one purpose, as a sentence they can act on. A decision that
    rests on a notice says when and how they were told and, before a default starts,
    from which day it could (``policy`` gives the grace period and the published date)."""
    when = f" on {day(event.recorded_at)}" if event else ""
    told = ""
    if event is not None and event.type == EventType.NOTICE:
        how = notices.CHANNEL_WORDS.get(event.value or "", "")
        told = f"we told you{when}{' ' + how if how else ''}"
    pending = "Not used: we have not told you about this yet."
    if told:
        pending = f"Not used yet: {told[0].upper()}{told[1:]}."
        if policy is not None and event is not None:
            purpose = policy.purpose(d.purpose)
            starts = notices.default_starts(purpose, policy, event.recorded_at)
            uses = notices.listed_in_words(CATEGORY_WORDS.get(c, c) for c in purpose.categories)
            pending += (
                f" From {day(starts)}, {uses} may be used for “{purpose.title}” unless you "
                "say no. Saying no now means it never starts."
            )
    words = {
        Reason.GRANTED: f"Used: you said yes{when}.",
        Reason.WITHDRAWN: f"Not used: you said no{when}.",
        Reason.GPC: f"Not used: your browser's Global Privacy Control signal{when} was "
        "honoured as a no.",
        Reason.RECONSENT_NEEDED: f"Not used: you said yes{when} to an earlier version; this "
        "purpose has since grown, so we need you to decide again.",
        Reason.NO_CONSENT: "Not used: where you live, we need your consent first.",
        Reason.DEFAULT_OFF: "Not used: this is off unless you say yes.",
        Reason.NOTICE_PENDING: pending,
        Reason.DEFAULT_AFTER_NOTICE: f"Used: {told or 'we told you'} and you did not say no. "
        "You can say no at any time.",
        Reason.MINOR: "Not used: you are under 18.",
        Reason.ACCOUNT_CLOSED: "Not used: the account is closed.",
        Reason.DECEASED: "Not used: this member has died.",
        Reason.ERASED: f"Not used, ever: this person was forgotten{when}.",
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
                "in_words": in_words(d, event, ledger.policy),
                "event_seq": d.event_seq,
                "gpc_conflict": conflict,
                "receipt_seq": last_choice.seq if last_choice else None,
                "can_choose": who.status not in ("closed", "deceased", "erased"),
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
        "receipts": receipt_list(ledger, subject, evs),
    }


def settings_url(base_url: str, subject: str) -> str:
    """The Data privacy settings page for ``subject`` (the page, not its JSON twin), where
    whoever may act for the subject says no: a receipt's withdrawal link."""
    return f"{base_url.rstrip('/')}/settings/data-privacy?{urlencode({'subject': subject})}"


def receipt_list(ledger: Ledger, subject: str, evs: list[Event]) -> list[dict[str, Any]]:
    """The subject's choices, newest first, each in words with its receipt's page."""
    choices = [e for e in reversed(evs) if e.type == EventType.CHOICE]
    names = _names(ledger, {e.actor for e in choices} - {subject})
    kind = next((e.value for e in evs if e.type == EventType.SUBJECT), "member")
    return [
        {
            "seq": e.seq,
            "purpose": e.purpose,
            "title": _title(ledger, e.purpose),
            "action": e.value,
            "at": times.iso(e.recorded_at),
            "actor": e.actor,
            "in_words": choice_in_words(ledger, e, names.get(e.actor), kind),
            "url": f"/receipts/{e.seq}",
            "json_url": f"/receipts/{e.seq}.json",
        }
        for e in choices
    ]


def choice_in_words(
    ledger: Ledger, e: Event, actor_name: str | None = None, kind: str | None = "member"
) -> str:
    """One choice as a sentence: who said what, to which purpose, when. ``kind`` is the
    subject's (a choice for an organization was made for "this page")."""
    if e.actor == e.subject:
        who, for_whom = "You", ""
    else:
        who = "Our staff" if e.actor.startswith("staff:") else actor_name or e.actor
        for_whom = " for this page" if kind == "organization" else " for you"
    said = CHOSE.get(e.value or "", "answered")
    return (
        f"{who} {said} to “{_title(ledger, e.purpose)}”{for_whom} on {day(e.recorded_at)} "
        f"at {e.time:%H:%M} UTC"
    )


def receipt_in_words(ledger: Ledger, receipt: dict[str, Any]) -> dict[str, Any]:
    """What the receipt page shows: the signed receipt (``receipt``, as built), and what
    it says in words, with whether the choice still stands."""
    seq = receipt["ledger"]["eventSeq"]
    [event] = ledger.events(after=seq - 1, limit=1)
    subject = event.subject
    names = _names(ledger, {event.actor} - {subject})
    kind = profile(ledger, subject).kind
    [purpose] = receipt["purposes"]
    latest = next(
        (
            e
            for e in reversed(ledger.subject_events(subject))
            if e.type == EventType.CHOICE and e.purpose == event.purpose
        ),
        event,
    )
    return {
        "seq": seq,
        "subject": subject,
        "in_words": choice_in_words(ledger, event, names.get(event.actor), kind),
        "title": purpose["purpose"],
        "categories_in_words": [CATEGORY_WORDS.get(c, c) for c in purpose["piiCategories"]],
        "recipients": purpose["recipients"],
        "state": receipt["event"]["eventState"],
        "at": receipt["event"]["eventTime"],
        "at_in_words": f"{day(event.recorded_at)} at {event.time:%H:%M} UTC",
        "still_stands": latest.seq == event.seq,
        "receipt": receipt,
        "json_url": f"/receipts/{seq}.json",
        "settings_url": receipt["withdrawalMethod"]["url"],
    }


def _title(ledger: Ledger, purpose: str | None) -> str:
    p = ledger.policy.purposes.get(purpose or "")
    return p.title if p else str(purpose)


def _names(ledger: Ledger, ids: set[str]) -> dict[str, str]:
    """@handles of the members among ``ids`` (those who acted for a subject)."""
    if not ids:
        return {}
    q = select(subjects.c.id, subjects.c.handle).where(subjects.c.id.in_(sorted(ids)))
    with ledger.engine.connect() as conn:
        return {i: f"@{h}" for i, h in conn.execute(q) if h}


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` did for one purpose: the choice event the answer now stands
    on, and whether it is new (``changed``) or the answer was already this one."""

    event: Event
    changed: bool

    def in_words(self, title: str) -> str:
        """What happened, for the member: "Saved: ..." or "Nothing changed: ..."."""
        said = CHOSE.get(self.event.value or "", "answered")
        if self.changed:
            return f"Saved: you {said} to “{title}”. It applies now."
        answer = ANSWER.get(self.event.value or "", "given")
        return (
            f"Nothing changed: the answer to “{title}” was already {answer} (since "
            f"{day(self.event.recorded_at)}), so nothing new was recorded."
        )


CHOSE = {"grant": "said yes", "withdraw": "said no", "object": "objected"}
ANSWER = {"grant": "yes", "withdraw": "no", "object": "no (an objection)"}
_STANDING = select(choice_state.c.action, choice_state.c.notice_version, choice_state.c.seq).where(
    choice_state.c.subject_id == bindparam("s"), choice_state.c.purpose == bindparam("p")
)
_GPC_SEQ = select(subject_state.c.gpc_seq).where(subject_state.c.subject_id == bindparam("s"))


def _standing(ledger: Ledger, conn: Connection, new: NewEvent) -> int | None:
    """The seq of the subject's standing choice for the purpose when ``new`` (checked,
    its notice version filled in) would say the same again; else None.

    A yes is the same only under the current notice and with no GPC signal after it (a
    yes given after a GPC signal is how a member confirms that yes), a no or an
    objection whatever the notice."""
    row = conn.execute(_STANDING, {"s": new.subject, "p": new.purpose}).first()
    if row is None or row.action != new.value:
        return None
    if new.value == YES:
        gpc = conn.execute(_GPC_SEQ, {"s": new.subject}).scalar()
        honours = ledger.policy.purpose(new.purpose or "").honours_gpc
        if row.notice_version != new.notice_version or (honours and (gpc or 0) > row.seq):
            return None
    return int(row.seq)


def _event(conn: Connection, seq: int) -> Event:
    return Event.from_row(conn.execute(select(events).where(events.c.seq == seq)).one())


def _choose_all(ledger: Ledger, batch: list[NewEvent]) -> list[Choice]:
    """Record the choices in ``batch`` that change an answer, in one transaction; the
    others are acknowledged with the event they already stand on."""
    with store.write(ledger.engine) as conn:
        ledger.lock_head(conn)
        standing: list[int | None] = []
        for new in batch:
            # The same checks as an append (who may act, the subject, the purpose), so
            # that "already so" is never said to someone who could not have said it.
            standing.append(_standing(ledger, conn, ledger.check_in(conn, new)))
        fresh = iter(
            ledger.append_in(conn, [n for n, s in zip(batch, standing, strict=True) if s is None])
        )
        return [
            Choice(next(fresh), True) if seq is None else Choice(_event(conn, seq), False)
            for seq in standing
        ]


def choose(
    ledger: Ledger, subject: str, purpose: str, action: str, *, actor: str, source: str
) -> Choice:
    """Record one choice: ``grant``, ``withdraw`` or ``object``; in effect at once.

    Saying again what the subject's standing answer already says writes nothing: the
    answer comes back with ``changed`` False and the event it stands on.
    """
    if action not in ("grant", "withdraw", "object"):
        raise InputError(f"action {action!r} must be grant, withdraw or object")
    ledger.policy.purpose(purpose)
    new = NewEvent(
        type="choice", subject=subject, actor=actor, source=source, purpose=purpose, value=action
    )
    return _choose_all(ledger, [new])[0]


def turn_off_all(ledger: Ledger, subject: str, *, actor: str, source: str) -> list[Choice]:
    """Say no to every purpose at once, in one transaction (a purpose whose answer is
    already no is left as it is)."""
    return _choose_all(
        ledger,
        [
            NewEvent(
                type="choice", subject=subject, actor=actor, source=source, purpose=name, value=NO
            )
            for name in ledger.policy.purposes
        ],
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
