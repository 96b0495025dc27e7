"""The consent ledger: append events to the hash chain, read them back, verify them.

Every append — one event or a whole import — runs in one transaction that takes the
chain head, checks every event against the policy and the subjects' state, chains them,
writes them and folds them into the projections. Either all of it is committed or none.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from askfirst import times
from askfirst.errors import InputError, NotAuthorized, UnknownSubject
from askfirst.ledger import four_eyes, projections, store
from askfirst.ledger.events import (
    SERVICE,
    Event,
    EventType,
    Head,
    NewEvent,
    SubjectIn,
    check_shape,
    check_subject_text,
    check_text,
    is_platform_actor,
    is_representative,
    parse_authority,
)
from askfirst.ledger.tables import (
    authority_state,
    events,
    former_names,
    ledger_head,
    notices,
    subject_state,
    subjects,
)
from askfirst.ledger.verify import VerifyReport, verify
from askfirst.policy import Policy, load_policy


class AfterAppend(Protocol):
    """What the ledger runs inside every append's transaction, after the events are
    written (reaching back: ``askfirst.propagation.propagate``)."""

    def __call__(self, conn: Connection, policy: Policy, events: Sequence[Event], /) -> object: ...


_IN_CHUNK = 500  # ids per IN (...) list

# Statements built once: appends are the hot path, and building a statement costs more
# than running a cached one.
_HEAD = select(ledger_head.c.seq, ledger_head.c.hash, ledger_head.c.recorded_at).where(
    ledger_head.c.id == 1
)
_LOCK_HEAD = {False: store.Prepared(_HEAD), True: store.Prepared(_HEAD.with_for_update())}
_MOVE_HEAD = store.Prepared(
    update(ledger_head)
    .where(ledger_head.c.id == 1)
    .values(seq=bindparam("s"), hash=bindparam("h"), recorded_at=bindparam("t"))
)
_INSERT_EVENTS = store.Prepared(
    insert(events).values({c.name: bindparam(c.name) for c in events.c})
)
_SUBJECT_EVENTS = store.Prepared(  # the hot path of a single decision
    select(*events.c)
    .where(events.c.subject_id == bindparam("sid"), events.c.recorded_at <= bindparam("until"))
    .order_by(events.c.seq)
)
_SUBJECT_ONE = store.Prepared(
    select(subject_state.c.subject_id, subject_state.c.kind, subject_state.c.status).where(
        subject_state.c.subject_id == bindparam("sid")
    )
)
_SUBJECTS_IN = select(
    subject_state.c.subject_id, subject_state.c.kind, subject_state.c.status
).where(subject_state.c.subject_id.in_(bindparam("ids", expanding=True)))
_AUTHORITY_IN = select(
    authority_state.c.subject_id, authority_state.c.delegate_id, authority_state.c.role
).where(authority_state.c.subject_id.in_(bindparam("ids", expanding=True)))


@dataclass
class _SubjectView:
    """What validation needs to know of a subject while a batch is checked."""

    kind: str
    status: str
    delegates: dict[str, set[str]] = field(default_factory=dict)  # delegate -> roles


class Ledger:
    """An open consent ledger on one database, checked against one policy."""

    def __init__(
        self, engine: Engine, policy: Policy, url: str, *, after_append: AfterAppend
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.url = url
        self.after_append = after_append

    # ---- opening --------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        policy: Policy | None = None,
        *,
        create: bool = False,
        after_append: AfterAppend,
    ) -> Ledger:
        """Open the ledger at ``url``; with ``create``, make or upgrade its schema first.

        ``after_append`` runs inside every append's transaction; open a ledger with
        :func:`askfirst.open_ledger`, which gives it reaching back (DESIGN.md rule 3).
        """
        engine = store.create(url, must_exist=not create)
        if create:
            store.upgrade(engine)
        else:
            store.check_current(engine, url)
        return cls(engine, policy or load_policy(), url, after_append=after_append)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading --------------------------------------------------------------------

    def head(self, conn: Connection | None = None) -> Head:
        if conn is None:
            with self.engine.connect() as c:
                return self.head(c)
        row = conn.execute(_HEAD).one()
        return Head(row.seq, row.hash, row.recorded_at)

    def events(
        self, *, after: int = 0, limit: int = 100, subject: str | None = None
    ) -> list[Event]:
        """Events with seq > ``after``, oldest first, at most ``limit``."""
        q = select(events).where(events.c.seq > after).order_by(events.c.seq).limit(limit)
        if subject is not None:
            q = q.where(events.c.subject_id == subject)
        with self.engine.connect() as conn:
            return [Event.from_row(r) for r in conn.execute(q)]

    def subject_events(self, subject: str, *, until: int | None = None) -> list[Event]:
        """Every event about ``subject`` (recorded at or before ``until``), in order."""
        check_text("subject", subject)  # alike on every database: PostgreSQL refuses a NUL
        bound = (1 << 63) - 1 if until is None else until
        with self.engine.connect() as conn:
            rows = _SUBJECT_EVENTS.all(conn, {"sid": subject, "until": bound})
        return [Event(*row) for row in rows]

    def subject_exists(self, subject: str) -> bool:
        check_text("subject", subject)
        q = select(subject_state.c.subject_id).where(subject_state.c.subject_id == subject)
        with self.engine.connect() as conn:
            return conn.execute(q).first() is not None

    # ---- writing --------------------------------------------------------------------

    def append(self, new: NewEvent) -> Event:
        """Append one event; it is durable when this returns."""
        return self.append_many([new])[0]

    def append_many(self, batch: Sequence[NewEvent]) -> list[Event]:
        """Append events in order, all or none. A bad one raises InputError with ``index``."""
        with store.write(self.engine) as conn:
            return self.append_in(conn, batch)

    def register(
        self,
        batch: Sequence[SubjectIn],
        *,
        actor: str = "system",
        source: str = "import",
        since: datetime | None = None,
    ) -> list[Event]:
        """Register subjects: their directory rows and the events of their starting state.

        ``since`` is when that state began to hold (default: now); it may not go back
        before the ledger head.
        """
        at = times.to_micros(since) if since else None
        seen_ids: set[str] = set()
        seen_handles: set[str] = set()
        new: list[NewEvent] = []
        owner: list[int] = []
        for i, s in enumerate(batch):
            try:
                check_subject_text(s)  # before any look-up: PostgreSQL cannot take a NUL
            except InputError as e:
                raise _at(i, e) from None
            if s.id in seen_ids:
                raise _at(i, InputError(f"subject {s.id!r} appears twice"))
            if s.handle and s.handle in seen_handles:
                raise _at(i, InputError(f"handle {s.handle!r} appears twice"))
            seen_ids.add(s.id)
            if s.handle:
                seen_handles.add(s.handle)
            evs = s.to_events(actor, source, at)
            new.extend(evs)
            owner.extend([i] * len(evs))
        with store.write(self.engine) as conn:
            taken = _existing(conn, subjects.c.handle, sorted(seen_handles))
            # A handle someone gave up lately still resolves to them: not free yet.
            taken |= _former_handles(conn, sorted(seen_handles), times.to_micros(times.now()))
            for i, s in enumerate(batch):
                if s.handle in taken:
                    raise _at(i, InputError(f"handle {s.handle!r} is already taken"))
            try:
                chained = self.append_in(conn, new)
            except InputError as e:
                raise _at(owner[e.index], e) if e.index is not None else e from None
            if batch:
                conn.execute(
                    insert(subjects),
                    [
                        {
                            "id": s.id,
                            "handle": s.handle,
                            "names": json.dumps(s.names),
                            "email": s.email,
                        }
                        for s in batch
                    ],
                )
            return chained

    def lock_head(self, conn: Connection) -> Head:
        """Take the chain head inside a write transaction (``store.write``): no other
        append can land until the transaction ends, so a check made now still holds."""
        seq, digest, at = _LOCK_HEAD[store.is_postgres(self.engine)].one(conn)
        return Head(seq, digest, at)

    def check_in(self, conn: Connection, new: NewEvent) -> NewEvent:
        """``new`` as ``append_in`` would chain it (defaults filled in), or the error it
        would raise; nothing is written. Inside the caller's write transaction."""
        check_shape(new)  # before the look-up: PostgreSQL cannot take a NUL
        return self._check(
            new,
            self._load_subjects(conn, [new]),
            _published(conn, [new]),
            four_eyes.load(conn, [new]),
        )

    def append_in(self, conn: Connection, batch: Sequence[NewEvent]) -> list[Event]:
        """Append inside a write transaction the caller holds (``store.write``), and
        carry any end of use back to the snapshots and models that hold the data."""
        if not batch:
            return []
        h = self.lock_head(conn)
        seq, prev, last_at = h.seq, h.hash, h.recorded_at
        now = times.to_micros(times.now())
        for i, new in enumerate(batch):  # before the look-up: PostgreSQL cannot take a NUL
            try:
                check_shape(new)
            except InputError as e:
                raise _at(i, e) from None
        known = self._load_subjects(conn, batch)
        published = _published(conn, batch)
        cases = four_eyes.load(conn, batch)
        rows: list[dict[str, Any]] = []
        chained: list[Event] = []
        for i, new in enumerate(batch):
            try:
                new = self._check(new, known, published, cases)
            except InputError as e:
                raise _at(i, e) from None
            if new.recorded_at is None:
                at = max(now, last_at)
            else:
                at = new.recorded_at
                if at < last_at:
                    raise _at(
                        i,
                        InputError(
                            f"recorded_at {times.iso(at)} goes back before the ledger head "
                            f"({times.iso(last_at)}); events must be in time order"
                        ),
                    )
                if at > now:
                    raise _at(i, InputError(f"recorded_at {times.iso(at)} is in the future"))
            seq += 1
            ev = Event.chained(new, seq=seq, recorded_at=at, prev_hash=prev)
            chained.append(ev)
            rows.append(ev.row())
            prev, last_at = ev.hash, at
        _INSERT_EVENTS.run(conn, rows)
        _MOVE_HEAD.run(conn, [{"s": seq, "h": prev, "t": last_at}])
        projections.apply(conn, chained)
        # A withdrawal reaches back in the same transaction (DESIGN.md rule 3).
        self.after_append(conn, self.policy, chained)
        return chained

    def _load_subjects(
        self, conn: Connection, batch: Sequence[NewEvent]
    ) -> dict[str, _SubjectView]:
        ids = {e.subject for e in batch}
        for e in batch:
            if e.type == EventType.AUTHORITY and (parsed := parse_authority(e.value or "")):
                ids.add(parsed[2])
        # Who may act for whom matters only when someone acts for another subject.
        delegated = any(
            e.type == EventType.AUTHORITY or (e.type == EventType.CHOICE and e.actor != e.subject)
            for e in batch
        )
        out: dict[str, _SubjectView] = {}
        ordered = sorted(ids)
        if len(ordered) == 1 and not delegated:  # the common case: one member's choice
            row = _SUBJECT_ONE.one(conn, {"sid": ordered[0]})
            return {row[0]: _SubjectView(row[1], row[2])} if row else {}
        for k in range(0, len(ordered), _IN_CHUNK):
            chunk = ordered[k : k + _IN_CHUNK]
            rows = conn.execute(_SUBJECTS_IN, {"ids": chunk})
            out.update({sid: _SubjectView(kind, status) for sid, kind, status in rows})
            if delegated:
                for sid, delegate, role in conn.execute(_AUTHORITY_IN, {"ids": chunk}):
                    out[sid].delegates.setdefault(delegate, set()).add(role)
        return out

    def _check(
        self,
        new: NewEvent,
        known: dict[str, _SubjectView],
        published: dict[str, set[int]],
        cases: four_eyes.CaseHistory,
    ) -> NewEvent:
        """Check one event against the policy, the subjects, the published notices and
        the cases it belongs to; fill in defaults."""
        check_shape(new)
        if new.type in (EventType.RECEIPT_KEY, EventType.PUBLISHED):
            _check_authority(new, None)  # the service's own fact: no subject to look up
            return new
        if new.type == EventType.CASE:  # anyone may open a case; rule 13 decides the rest
            if new.subject != SERVICE:
                about = known.get(new.subject)
                if about is None:
                    raise UnknownSubject(new.subject)
                if about.status == "erased":
                    raise InputError(f"subject {new.subject!r} was erased")
            four_eyes.check_step(new, cases)
            return new
        if new.type == EventType.SUBJECT:
            if new.subject in known:
                raise InputError(f"subject {new.subject!r} is already registered")
            _check_authority(new, None)
            known[new.subject] = _SubjectView(new.value or "member", "active")
            return new
        subject = known.get(new.subject)
        if subject is None:
            raise UnknownSubject(new.subject)
        if subject.status == "erased":
            raise InputError(f"subject {new.subject!r} was erased; nothing more is recorded")
        if new.type in (EventType.CHOICE, EventType.NOTICE):
            purpose = self.policy.purpose(new.purpose or "")
            if new.notice_version is None:  # bound to the notice current now
                new = NewEvent(
                    new.type,
                    new.subject,
                    new.actor,
                    new.source,
                    new.purpose,
                    new.value,
                    purpose.version,
                    new.recorded_at,
                )
            elif new.notice_version > purpose.version:
                raise InputError(
                    f"notice version {new.notice_version} of {purpose.name!r} does not exist "
                    f"(the current one is {purpose.version})"
                )
            if new.type == EventType.NOTICE and new.notice_version not in published.get(
                purpose.name, ()
            ):
                raise InputError(
                    f"notice version {new.notice_version} of {purpose.name!r} was never "
                    f"published, so it cannot have been delivered: publish it first "
                    f"('askfirst notice publish {purpose.name}')"
                )
        _check_authority(new, subject)
        if new.type == EventType.AUTHORITY:
            _check_delegation(new, subject, known)
        four_eyes.check_effect(new, cases)
        if new.type == EventType.STATUS:
            subject.status = new.value or "active"
        return new

    # ---- verifying ------------------------------------------------------------------

    def verify(self, expected_head: str | None = None) -> VerifyReport:
        return verify(self.engine, expected_head)


# Who may record what, besides the platform itself and its staff (rule 10).
_SELF_MAY = {
    EventType.GPC: {"1"},
    EventType.STATUS: {"active", "deactivated", "closed"},  # not "deceased"
    EventType.JURISDICTION: None,  # any value: a member says where they live
    EventType.AUTHORITY: set(),  # only the platform verifies who may act for whom
}


def _check_delegation(new: NewEvent, subject: _SubjectView, known: dict[str, _SubjectView]) -> None:
    """An authority event names a registered member, in a role that fits the subject."""
    action, role, delegate = parse_authority(new.value or "") or ("", "", "")
    if role == "representative" and is_representative(delegate):
        pass  # a representative with no account of their own: named by their case
    elif known.get(delegate) is None or known[delegate].kind != "member":
        raise InputError(f"delegate {delegate!r} is not a registered member")
    if role == "page-admin" and subject.kind != "organization":
        raise InputError(f"{new.subject!r} is not an organization; it has no page admins")
    if role == "representative" and subject.kind != "member":
        raise InputError(f"{new.subject!r} is not a member; it has no representative")
    roles = subject.delegates.setdefault(delegate, set())
    if action == "grant":
        roles.add(role)
    else:
        roles.discard(role)


def _check_authority(new: NewEvent, subject: _SubjectView | None) -> None:
    """Rule 10: everyone acts only for themselves unless the ledger shows the authority;
    staff may stop a use, never start one."""
    actor, platform = new.actor, is_platform_actor(new.actor)
    if new.type == EventType.CHOICE:
        assert subject is not None
        roles = subject.delegates.get(actor, set())
        stops = new.value in ("withdraw", "object")
        if actor == new.subject or "page-admin" in roles:
            if new.value == "grant" and subject.status in ("closed", "deceased"):
                raise InputError(
                    f"subject {new.subject!r} is {subject.status}; a grant cannot be recorded"
                )
            return
        if stops and ("representative" in roles or actor.startswith("staff:")):
            return
        raise NotAuthorized(
            f"actor {actor!r} may not {new.value} for subject {new.subject!r}: only the "
            "subject itself (or, for an organization, a page admin) can make this choice; "
            "a representative or staff ('staff:NAME') may only withdraw or object"
        )
    if platform:
        return
    allowed = _SELF_MAY.get(EventType(new.type), set())
    if actor == new.subject and (allowed is None or new.value in allowed):
        return
    raise NotAuthorized(
        f"actor {actor!r} may not record a {new.type} event ({new.value}) for subject "
        f"{new.subject!r}: that is for the platform ('system' or 'system:NAME') or its "
        "staff ('staff:NAME')"
    )


def _published(conn: Connection, batch: Sequence[NewEvent]) -> dict[str, set[int]]:
    """The published versions of each purpose a notice-delivered event in ``batch`` names
    (nothing is read for a batch without one)."""
    wanted = sorted({e.purpose for e in batch if e.type == EventType.NOTICE and e.purpose})
    found: dict[str, set[int]] = {}
    if wanted:
        query = select(notices.c.purpose, notices.c.version).where(notices.c.purpose.in_(wanted))
        for purpose, version in conn.execute(query):
            found.setdefault(purpose, set()).add(version)
    return found


def _at(index: int, err: InputError) -> InputError:
    err.index = index
    return err


def _former_handles(conn: Connection, handles: list[str], now: int) -> set[str]:
    found: set[str] = set()
    for k in range(0, len(handles), _IN_CHUNK):
        q = select(former_names.c.value).where(
            former_names.c.kind == "handle",
            former_names.c.until > now,
            former_names.c.value.in_(handles[k : k + _IN_CHUNK]),
        )
        found.update(v for (v,) in conn.execute(q))
    return found


def _existing(conn: Connection, column: Any, values: list[str]) -> set[str]:
    found: set[str] = set()
    for k in range(0, len(values), _IN_CHUNK):
        q = select(column).where(column.in_(values[k : k + _IN_CHUNK]))
        found.update(v for (v,) in conn.execute(q))
    return found
