"""Cases: requests from the people around a member, each reviewed by staff (issue 17).

Four kinds. A ``death`` (anyone reports that a member died, with a link or a document),
a ``representative`` (someone asks to act for a deceased member, with evidence), an
``objection`` (a person without an account asks that their names not be used) and an
``erasure`` (a member, a representative or a person asks to be forgotten).

A case moves through steps, each a ``case`` event in the chain with its actor::

    open ──► (verified) ──► propose ──► approve      (death, representative, erasure:
      │   a requester's        │    └──► reject       two different reviewers, rule 13)
      │   e-mail, by link      └────────► reject
      └──► approve / reject                           (objection: one reviewer)

What is personal about a case (the requester's and the representative's e-mail, the
names, the link, the statement, the evidence's bytes) stays outside the chain, in
``cases`` and the evidence store; a step's event carries only the SHA-256 of its details
(the reviewer's reason, the evidence's hashes), so erasing a case leaves the chain whole.
The ledger itself refuses an approval by the case's proposer and any death, representative
or erasure that does not follow an approval (``askfirst.ledger.four_eyes``).

What an approval does:

- *death*: the member is ``deceased`` (every use ends and reaches back; their names are
  protected in others' content; their public pages say "do not train").
- *representative*: the representative may act for the deceased member (withdraw,
  object, download the member's data, close the account; never grant). They get an account
  of their own and a one-time sign-in link, by e-mail.
- *objection*: a ``person`` subject with the names given, objecting to every purpose.
- *erasure*: the subject is ``erased`` and what askfirst keeps about them is deleted
  (``askfirst.erasure``).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection, delete, insert, select, update

from askfirst import times
from askfirst.erasure import CASE_PERSONAL
from askfirst.errors import InputError, NotAuthorized, UnknownSubject
from askfirst.evidence import Checked, Store
from askfirst.ledger import Ledger, store
from askfirst.ledger.events import (
    CASE_KINDS,
    SERVICE,
    EventType,
    NewEvent,
    SubjectIn,
    authority_value,
    case_value,
    check_text,
    representative_actor,
)
from askfirst.ledger.four_eyes import FOUR_EYES
from askfirst.ledger.tables import (
    accounts,
    case_steps,
    cases,
    evidence,
    sessions,
    signin_links,
    subject_state,
    subjects,
)

KINDS = CASE_KINDS
STATUSES = ("unverified", "open", "proposed", "approved", "rejected", "expired")
# A public request whose requester never confirmed it expires once its link has: what is
# personal about it is deleted (its events stay; they hold nothing personal).
UNCONFIRMED_DAYS = 3
# A reviewer is a staff account with this role (askfirst.accounts.STAFF_ROLES).
REVIEWER_ROLE = "reviewer"
MAX_NAMES = 20
MAX_TEXT = 4000  # a statement's or a reason's characters
MAX_LINK = 2000
SIGNIN_LINK_DAYS = 7
# The subject's status an approved death or erasure records.
EFFECT_STATUS = {"death": "deceased", "erasure": "erased"}
_STAFF_NAME = re.compile(r"[^\s:]{1,200}")


@dataclass(frozen=True)
class Step:
    seq: int
    step: str
    actor: str
    at: int
    reason: str | None
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Document:
    id: int
    sha256: str
    media_type: str
    size: int
    location: str


@dataclass(frozen=True)
class Case:
    id: int
    kind: str
    subject: str | None
    status: str
    opened_at: int
    opened_by: str
    requester_email: str | None
    email_verified: bool
    email: str | None
    names: tuple[str, ...]
    link: str | None
    statement: str | None
    erased_at: int | None
    steps: tuple[Step, ...] = ()
    evidence: tuple[Document, ...] = ()

    @property
    def proposer(self) -> str | None:
        return next((s.actor for s in self.steps if s.step == "propose"), None)

    @property
    def needs_two(self) -> bool:
        return self.kind in FOUR_EYES

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "status": self.status,
            "opened_at": times.iso(self.opened_at),
            "opened_by": self.opened_by,
            "requester_email": self.requester_email,
            "email_verified": self.email_verified,
            "email": self.email,
            "names": list(self.names),
            "link": self.link,
            "statement": self.statement,
            "erased_at": times.iso(self.erased_at) if self.erased_at else None,
            "steps": [
                {
                    "seq": s.seq,
                    "step": s.step,
                    "actor": s.actor,
                    "at": times.iso(s.at),
                    "reason": s.reason,
                    "evidence": list(s.evidence),
                }
                for s in self.steps
            ],
            "evidence": [
                {"id": d.id, "sha256": d.sha256, "media_type": d.media_type, "size": d.size}
                for d in self.evidence
            ],
        }


@dataclass
class Approved:
    """What an approval made that its caller hands on: a representative's sign-in link
    secret (to mail), the evidence files an erasure deleted."""

    case: Case
    signin_secret: str | None = None
    deleted_files: list[str] = field(default_factory=list)


# ---- reading ----------------------------------------------------------------------------


def get(ledger: Ledger, case_id: int, conn: Connection | None = None) -> Case:
    if conn is None:
        with ledger.engine.connect() as c:
            return get(ledger, case_id, c)
    row = conn.execute(select(cases).where(cases.c.id == case_id)).first()
    if row is None:
        raise InputError(f"no case {case_id}")
    steps = [
        _step(r)
        for r in conn.execute(
            select(case_steps).where(case_steps.c.case_id == case_id).order_by(case_steps.c.seq)
        )
    ]
    docs = [
        Document(r.id, r.sha256, r.media_type, r.size, r.location)
        for r in conn.execute(
            select(evidence).where(evidence.c.case_id == case_id).order_by(evidence.c.id)
        )
    ]
    return _case(row, steps, docs)


def listed(ledger: Ledger, *, status: str | None = None, limit: int = 200) -> list[Case]:
    """Cases, oldest first; by default those awaiting a reviewer (open or proposed).
    Unverified cases (a requester has not confirmed their e-mail yet) are listed only when
    asked for by name."""
    if status is not None and status not in STATUSES:
        raise InputError(f"case status {status!r} is not one of: {', '.join(STATUSES)}")
    wanted = [status] if status else ["open", "proposed"]
    q = (
        select(cases.c.id)
        .where(cases.c.status.in_(wanted))
        .order_by(cases.c.opened_at, cases.c.id)
        .limit(limit)
    )
    with ledger.engine.connect() as conn:
        return [get(ledger, case_id, conn) for case_id in conn.execute(q).scalars()]


def evidence_file(ledger: Ledger, case_id: int, doc_id: int) -> Document:
    """One document of a case (the caller reads it from the store)."""
    for doc in get(ledger, case_id).evidence:
        if doc.id == doc_id:
            return doc
    raise InputError(f"case {case_id} has no document {doc_id}")


def _step(r: Any) -> Step:
    details = json.loads(r.details)
    return Step(
        r.seq, r.step, r.actor, r.at, details.get("reason"), tuple(details.get("evidence", ()))
    )


def _case(row: Any, steps: list[Step], docs: list[Document]) -> Case:
    return Case(
        id=row.id,
        kind=row.kind,
        subject=row.subject_id,
        status=row.status,
        opened_at=row.opened_at,
        opened_by=row.opened_by,
        requester_email=row.requester_email,
        email_verified=row.email_verified_at is not None,
        email=row.email,
        names=tuple(json.loads(row.names or "[]")),
        link=row.link,
        statement=row.statement,
        erased_at=row.erased_at,
        steps=tuple(steps),
        evidence=tuple(docs),
    )


# ---- opening ----------------------------------------------------------------------------


def check_email(value: str | None, what: str) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        return str(validate_email(value.strip(), check_deliverability=False).normalized)
    except EmailNotValidError as e:
        raise InputError(f"{what} {value[:100]!r} is not an e-mail address: {e}") from None


def _check_link(link: str | None) -> str | None:
    if link is None or not link.strip():
        return None
    link = link.strip()
    if len(link) > MAX_LINK or not re.fullmatch(r"https?://[^\s]+", link):
        raise InputError(f"the link {link[:100]!r} is not an http(s) address")
    return link


def _check_names(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        name = " ".join(name.split())
        if not name:
            continue
        check_text("name", name)
        if len(name) > 200:
            raise InputError(f"the name {name[:50]!r}... is longer than 200 characters")
        if name not in out:
            out.append(name)
    if len(out) > MAX_NAMES:
        raise InputError(f"at most {MAX_NAMES} names, not {len(out)}")
    return out


def _check_text(value: str | None, what: str) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MAX_TEXT:
        raise InputError(f"the {what} is longer than {MAX_TEXT} characters")
    check_text(what, value.replace("\n", " ").replace("\r", " ").replace("\t", " "))
    return value.strip()


def open_case(
    ledger: Ledger,
    kind: str,
    *,
    actor: str,
    subject: str | None = None,
    names: Sequence[str] = (),
    email: str | None = None,
    reporter_email: str | None = None,
    link: str | None = None,
    statement: str | None = None,
    files: Sequence[Checked] = (),
    store_: Store | None = None,
    verify_reporter: bool = False,
    source: str = "cli",
) -> Case:
    """Open a case, all or nothing: its row, its evidence (stored first, removed again if
    the case cannot be recorded) and its ``open`` event.

    With ``verify_reporter`` (a request from the public page) the case waits, unseen by
    reviewers, until the reporter opened the link mailed to ``reporter_email``."""
    if kind not in KINDS:
        raise InputError(f"case kind {kind!r} is not one of: {', '.join(KINDS)}")
    names_ = _check_names(names)
    email_ = check_email(email, "the e-mail")
    reporter = check_email(reporter_email, "the reporter's e-mail")
    link_ = _check_link(link)
    statement_ = _check_text(statement, "statement")
    if verify_reporter and reporter is None:
        raise InputError("give the reporter's e-mail: a link is sent there to confirm it")
    if kind == "objection":
        if subject is not None:
            raise InputError(
                "an objection is for a person without an account: give names, no subject"
            )
        if not names_:
            raise InputError("an objection names the names that must not be used (--names)")
    elif subject is None:
        raise InputError(f"a {kind} case names the member it is about (--subject)")
    if kind == "death" and link_ is None and not files:
        raise InputError("a death is reported with a link (an obituary) or a document (--evidence)")
    if kind == "representative":
        if not files:
            raise InputError("a representative's request needs evidence of their authority")
        if email_ is None:
            raise InputError(
                "a representative's request needs their e-mail (--email), where "
                "their sign-in link goes"
            )
    if files and store_ is None:
        raise InputError("no evidence store is configured")
    check_text("actor", actor)
    if not actor.strip() or len(actor) > 255:
        raise InputError("the actor must be 1 to 255 characters")
    if subject is not None:
        check_text("subject", subject)
        if not ledger.subject_exists(subject):
            raise UnknownSubject(subject)
    expire_unconfirmed(ledger, store_)
    placed: list[str] = []
    try:
        for f in files:
            assert store_ is not None
            placed.append(store_.put(f))
        now = times.to_micros(times.now())
        with store.write(ledger.engine) as conn:
            row = conn.execute(
                insert(cases).values(
                    kind=kind,
                    subject_id=subject,
                    status="unverified" if verify_reporter else "open",
                    opened_at=now,
                    opened_by=actor,
                    requester_email=reporter,
                    email=email_,
                    names=json.dumps(names_),
                    link=link_,
                    statement=statement_,
                )
            )
            (case_id,) = row.inserted_primary_key or (0,)
            opener = f"requester:{case_id}" if actor == "requester" else actor
            if opener != actor:
                conn.execute(update(cases).where(cases.c.id == case_id).values(opened_by=opener))
            seen: set[str] = set()
            for f, location in zip(files, placed, strict=True):
                if f.sha256 in seen:
                    continue
                seen.add(f.sha256)
                conn.execute(
                    insert(evidence).values(
                        case_id=case_id,
                        sha256=f.sha256,
                        media_type=f.media_type,
                        size=f.size,
                        location=location,
                        created_at=now,
                    )
                )
            _record(
                ledger, conn, case_id, kind, subject, "open", opener, None, sorted(seen), source
            )
            return get(ledger, int(case_id), conn)
    except BaseException:
        if store_ is not None:
            for location in placed:
                _forget_file(ledger, store_, location)
        raise


def _forget_file(ledger: Ledger, store_: Store, location: str) -> None:
    """Delete a stored file unless another case still holds it (the store is keyed by
    content, so two cases may share a document)."""
    with ledger.engine.connect() as conn:
        held = conn.execute(select(evidence.c.id).where(evidence.c.location == location)).first()
    if held is None:
        store_.delete(location)


def _record(
    ledger: Ledger,
    conn: Connection,
    case_id: int,
    kind: str,
    subject: str | None,
    step: str,
    actor: str,
    reason: str | None,
    evidence_hashes: list[str],
    source: str,
    effects: Sequence[NewEvent] = (),
) -> int:
    """Append a step's ``case`` event (and the events it orders) and keep its details."""
    details = json.dumps(
        {"reason": reason, "evidence": evidence_hashes}, sort_keys=True, separators=(",", ":")
    )
    digest = hashlib.sha256(details.encode()).hexdigest()
    new = NewEvent(
        type=EventType.CASE,
        subject=subject or SERVICE,
        actor=actor,
        source=source,
        value=case_value(step, kind, case_id, digest),
    )
    chained = ledger.append_in(conn, [new, *effects])
    conn.execute(
        insert(case_steps).values(
            seq=chained[0].seq,
            case_id=case_id,
            step=step,
            actor=actor,
            at=chained[0].recorded_at,
            details=details,
        )
    )
    return chained[0].seq


# ---- the requester's e-mail -------------------------------------------------------------


def verify_reporter(ledger: Ledger, case_id: int, *, source: str = "web") -> Case:
    """The reporter opened the link mailed to them: the case goes to the reviewers.
    Opening it again changes nothing."""
    with store.write(ledger.engine) as conn:
        ledger.lock_head(conn)
        case = get(ledger, case_id, conn)
        if case.status != "unverified":
            return case
        _record(
            ledger,
            conn,
            case_id,
            case.kind,
            case.subject,
            "verified",
            f"requester:{case_id}",
            None,
            [],
            source,
        )
        conn.execute(
            update(cases)
            .where(cases.c.id == case_id)
            .values(status="open", email_verified_at=times.to_micros(times.now()))
        )
        return get(ledger, case_id, conn)


# ---- reviewing ----------------------------------------------------------------------------


def reviewer(conn: Connection, staff: str) -> str:
    """``staff:NAME`` for a reviewer's account name; NotAuthorized unless ``staff`` names a
    staff account with the reviewer role."""
    name = staff.strip().lower()
    if not _STAFF_NAME.fullmatch(name):
        raise InputError(f"staff name {staff[:100]!r} is not valid")
    role = conn.execute(
        select(accounts.c.role).where(accounts.c.username == name, accounts.c.kind == "staff")
    ).first()
    if role is None:
        raise InputError(f"no staff account named {name!r}")
    if role[0] != REVIEWER_ROLE:
        raise NotAuthorized(f"{name!r} is a {role[0]}, not a reviewer: only reviewers review cases")
    return f"staff:{name}"


def _reason(reason: str | None, needed: bool) -> str | None:
    text = _check_text(reason, "reason")
    if needed and text is None:
        raise InputError("give a reason (--reason): it is kept with the step")
    return text


def propose(ledger: Ledger, case_id: int, staff: str, reason: str, *, source: str = "cli") -> Case:
    """The first reviewer proposes to approve; a second, different one decides."""
    text = _reason(reason, needed=True)
    with store.write(ledger.engine) as conn:
        actor = reviewer(conn, staff)
        ledger.lock_head(conn)
        case = _awaiting(ledger, conn, case_id)
        if not case.needs_two:
            raise InputError(f"case {case_id} is an objection: one reviewer approves or rejects it")
        if case.status == "proposed":
            raise InputError(
                f"case {case_id} was proposed by {case.proposer}; a second reviewer "
                "approves or rejects it"
            )
        _record(
            ledger,
            conn,
            case_id,
            case.kind,
            _event_subject(case),
            "propose",
            actor,
            text,
            [],
            source,
        )
        conn.execute(update(cases).where(cases.c.id == case_id).values(status="proposed"))
        return get(ledger, case_id, conn)


def reject(ledger: Ledger, case_id: int, staff: str, reason: str, *, source: str = "cli") -> Case:
    text = _reason(reason, needed=True)
    with store.write(ledger.engine) as conn:
        actor = reviewer(conn, staff)
        ledger.lock_head(conn)
        case = _awaiting(ledger, conn, case_id)
        _record(
            ledger,
            conn,
            case_id,
            case.kind,
            _event_subject(case),
            "reject",
            actor,
            text,
            [],
            source,
        )
        conn.execute(
            update(cases)
            .where(cases.c.id == case_id)
            .values(status="rejected", decided_at=times.to_micros(times.now()))
        )
        return get(ledger, case_id, conn)


def approve(
    ledger: Ledger,
    case_id: int,
    staff: str,
    reason: str | None = None,
    *,
    store_: Store | None = None,
    names_key: bytes | None = None,
    source: str = "cli",
) -> Approved:
    """Approve a case and carry out what it asks, in one transaction with its events.

    An erasure needs ``store_`` (to delete the evidence files) and ``names_key`` (to keep
    the erased names as keyed hashes only)."""
    text = _reason(reason, needed=False)
    with store.write(ledger.engine) as conn:
        actor = reviewer(conn, staff)
        ledger.lock_head(conn)
        case = _awaiting(ledger, conn, case_id)
        if case.needs_two and case.status != "proposed":
            raise InputError(
                f"case {case_id} ({case.kind}) needs a proposal first: one "
                "reviewer proposes, a second approves"
            )
        if case.needs_two and case.proposer == actor:
            raise NotAuthorized(
                f"{actor} proposed case {case_id}, so may not approve it too: "
                f"a {case.kind} needs a second, different reviewer"
            )
        done = Approved(case)
        src = f"case:{case_id}"
        subject = _event_subject(case)
        if case.kind == "representative":
            done.signin_secret = _approve_representative(ledger, conn, case, actor, text, source)
        elif case.kind == "objection":
            _approve_objection(ledger, conn, case, actor, text, source)
        else:  # a death or an erasure: the status the approval orders, in the same append
            if case.kind == "erasure" and (store_ is None or names_key is None):
                raise InputError("an erasure needs the evidence store and the names key")
            status = _status(case.subject, EFFECT_STATUS[case.kind], actor, src)
            _record(ledger, conn, case_id, case.kind, subject, "approve", actor, text, [],
                    source, [status])  # fmt: skip
            if case.kind == "erasure":
                from askfirst import erasure  # what an erasure deletes

                assert case.subject is not None and names_key is not None
                done.deleted_files = erasure.erase(conn, case.subject, names_key)
        conn.execute(
            update(cases)
            .where(cases.c.id == case_id)
            .values(status="approved", decided_at=times.to_micros(times.now()))
        )
        done.case = get(ledger, case_id, conn)
    if store_ is not None:
        for location in done.deleted_files:
            store_.delete(location)
    return done


def _awaiting(ledger: Ledger, conn: Connection, case_id: int) -> Case:
    case = get(ledger, case_id, conn)
    if case.status == "unverified":
        raise InputError(f"case {case_id} waits for its reporter to confirm their e-mail")
    if case.status in ("approved", "rejected", "expired"):
        raise InputError(f"case {case_id} is already {case.status}")
    return case


def _event_subject(case: Case) -> str:
    return case.subject if case.kind != "objection" and case.subject else SERVICE


def _status(subject: str | None, value: str, actor: str, source: str) -> NewEvent:
    assert subject is not None
    return NewEvent(type=EventType.STATUS, subject=subject, actor=actor, source=source, value=value)


def _approve_representative(
    ledger: Ledger, conn: Connection, case: Case, actor: str, reason: str | None, source: str
) -> str:
    """The representative's authority (in the chain, named ``rep:CASE``), their account and
    a one-time sign-in link; returns the link's secret."""
    assert case.subject is not None and case.email is not None
    status = conn.execute(
        select(subject_state.c.status).where(subject_state.c.subject_id == case.subject)
    ).scalar()
    if status != "deceased":
        raise InputError(
            f"{case.subject!r} is not recorded as deceased: approve a death case for them first"
        )
    rep = representative_actor(case.id)
    grant = NewEvent(
        type=EventType.AUTHORITY,
        subject=case.subject,
        actor=actor,
        source=f"case:{case.id}",
        value=authority_value("grant", "representative", rep),
    )
    _record(
        ledger,
        conn,
        case.id,
        case.kind,
        case.subject,
        "approve",
        actor,
        reason,
        [],
        source,
        [grant],
    )
    now = times.to_micros(times.now())
    row = conn.execute(
        insert(accounts).values(
            username=f"rep-{case.id}",
            kind="representative",
            subject_id=case.subject,
            password_hash="!",  # no password: a one-time link signs them in
            created_at=now,
            role=None,
        )
    )
    (account_id,) = row.inserted_primary_key or (0,)
    return new_signin_link(conn, int(account_id), now)


def new_signin_link(conn: Connection, account_id: int, now: int | None = None) -> str:
    """A one-time sign-in link's secret for the account (any earlier unused one ends)."""
    now = times.to_micros(times.now()) if now is None else now
    secret = secrets.token_urlsafe(32)
    conn.execute(
        delete(signin_links).where(
            signin_links.c.account_id == account_id, signin_links.c.used_at.is_(None)
        )
    )
    conn.execute(
        insert(signin_links).values(
            token_hash=hashlib.sha256(secret.encode()).hexdigest(),
            account_id=account_id,
            created_at=now,
            expires_at=now + SIGNIN_LINK_DAYS * times.DAY_US,
        )
    )
    return secret


def _approve_objection(
    ledger: Ledger, conn: Connection, case: Case, actor: str, reason: str | None, source: str
) -> None:
    """A ``person`` subject with the case's names, objecting to every purpose."""
    person = f"person-case-{case.id}"
    src = f"case:{case.id}"
    registered = SubjectIn(id=person, kind="person", names=list(case.names)).to_events(
        actor, src, None
    )
    objections = [
        NewEvent(
            type=EventType.CHOICE,
            subject=person,
            actor=actor,
            source=src,
            purpose=name,
            value="object",
        )
        for name in sorted(ledger.policy.purposes)
    ]
    _record(
        ledger,
        conn,
        case.id,
        case.kind,
        SERVICE,
        "approve",
        actor,
        reason,
        [],
        source,
        [*registered, *objections],
    )
    conn.execute(
        insert(subjects).values(id=person, handle=None, names=json.dumps(list(case.names)))
    )
    conn.execute(update(cases).where(cases.c.id == case.id).values(subject_id=person))


# ---- a representative's acts ------------------------------------------------------------


def close_account(ledger: Ledger, case_id: int, *, source: str = "web") -> Case:
    """A representative closes the deceased member's account: the member's own sign-in
    accounts and their sessions end. (The member stays ``deceased`` in the ledger: the
    stronger no, which keeps their names protected.)"""
    with store.write(ledger.engine) as conn:
        ledger.lock_head(conn)
        case = get(ledger, case_id, conn)
        if case.kind != "representative" or case.status != "approved":
            raise InputError(f"case {case_id} is not an approved representative's case")
        assert case.subject is not None
        _record(
            ledger,
            conn,
            case_id,
            case.kind,
            case.subject,
            "close-account",
            representative_actor(case_id),
            None,
            [],
            source,
        )
        own = select(accounts.c.id).where(
            accounts.c.subject_id == case.subject, accounts.c.kind == "member"
        )
        ids = list(conn.execute(own).scalars())
        if ids:
            conn.execute(delete(sessions).where(sessions.c.account_id.in_(ids)))
            conn.execute(delete(accounts).where(accounts.c.id.in_(ids)))
        return get(ledger, case_id, conn)


def renew_signin_link(ledger: Ledger, case: Case) -> str:
    """A new one-time sign-in link for an approved representative (any unused one ends)."""
    if case.kind != "representative" or case.status != "approved":
        raise InputError(f"case {case.id} is not an approved representative's case")
    with store.write(ledger.engine) as conn:
        account_id = conn.execute(
            select(accounts.c.id).where(
                accounts.c.username == f"rep-{case.id}", accounts.c.kind == "representative"
            )
        ).scalar()
        if account_id is None:
            raise InputError(f"the representative of case {case.id} has no account any more")
        return new_signin_link(conn, int(account_id))


def expire_unconfirmed(ledger: Ledger, store_: Store | None, *, now: int | None = None) -> int:
    """Delete what is personal about public requests nobody confirmed within
    :data:`UNCONFIRMED_DAYS` (their e-mails, names, link, statement and, given the store,
    documents); they are ``expired``. Runs whenever a case is opened. Returns how many."""
    now = times.to_micros(times.now()) if now is None else now
    cutoff = now - UNCONFIRMED_DAYS * times.DAY_US
    with store.write(ledger.engine) as conn:
        ids = list(
            conn.execute(
                select(cases.c.id).where(cases.c.status == "unverified", cases.c.opened_at < cutoff)
            ).scalars()
        )
        if not ids:
            return 0
        locations: list[str] = []
        if store_ is not None:  # without the store, the documents wait for a later run
            locations = list(
                conn.execute(
                    select(evidence.c.location).where(evidence.c.case_id.in_(ids))
                ).scalars()
            )
            conn.execute(delete(evidence).where(evidence.c.case_id.in_(ids)))
        conn.execute(
            update(cases)
            .where(cases.c.id.in_(ids))
            .values(**CASE_PERSONAL, status="expired", decided_at=now)
        )
    if store_ is not None:
        for location in dict.fromkeys(locations):
            _forget_file(ledger, store_, location)
    return len(ids)
