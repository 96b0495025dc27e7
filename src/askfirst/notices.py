"""Published notices: each version of a purpose's terms, told before any default applies.

A notice version is *published* (:func:`publish`) from the policy file: its terms — title,
description, categories, recipients, the default, the grace period, the places a default
could apply and the earliest date it could start — plus what changed, in plain words.
Publishing appends a ``notice-published`` event whose value is the SHA-256 of the terms
(canonical JSON) and keeps the terms beside it in the ``notices`` table, in one
transaction.

The policy file and the published notices never disagree (:func:`bind`, run whenever a
ledger is opened): once a purpose has a published version, a policy file that names
another version, or other terms under the same version, is refused with an error naming
both. A purpose that was never published stays as the file says, and no notice of it can
be delivered, so no default can apply to anyone (DESIGN.md rule 2).

Widening and narrowing (rule 7) are read from the published versions: an earlier version
whose categories and recipients cover the current ones keeps its grants; any other makes
them ``reconsent-needed`` (``Purpose.grant_versions`` over the published history).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.engine import Engine

from askfirst import times
from askfirst.errors import InputError, PolicyError
from askfirst.ledger import Event, EventType, Ledger, NewEvent, store
from askfirst.ledger.events import SERVICE, control_character
from askfirst.ledger.tables import choice_state, notice_state, notices, subject_state
from askfirst.policy import NoticeVersion, Policy, Purpose, load_policy

MAX_CHANGES = 2000  # characters of "what changed"


class Terms(BaseModel):
    """One published version of a purpose's terms, as members are told them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    purpose: str
    version: int
    title: str
    description: str
    changes: str
    categories: tuple[str, ...]
    recipients: tuple[str, ...]
    default: Literal["on", "off"]
    grace_days: int
    places: tuple[str, ...]  # where a default could apply (none while it is off)
    earliest_default: date | None  # no default starts before this day (UTC)

    def canonical(self) -> str:
        data = self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


@dataclass(frozen=True)
class Published:
    """A published version: its terms, the event that vouches for them, and when."""

    terms: Terms
    seq: int
    published_at: int  # microseconds
    hash: str

    @property
    def not_before(self) -> int | None:
        """The first instant (microseconds) a default of this version could apply."""
        day = self.terms.earliest_default
        if day is None:
            return None
        return times.to_micros(datetime(day.year, day.month, day.day, tzinfo=UTC))

    def to_json(self) -> dict[str, Any]:
        return {
            **self.terms.model_dump(mode="json"),
            "seq": self.seq,
            "published_at": times.iso(self.published_at),
            "hash": self.hash,
        }


# ---- reading ---------------------------------------------------------------------------


def published(db: Engine | Connection) -> dict[str, list[Published]]:
    """Every published version, by purpose, oldest first."""
    query = select(notices.c.terms, notices.c.seq, notices.c.published_at, notices.c.hash).order_by(
        notices.c.purpose, notices.c.version
    )
    if isinstance(db, Engine):
        with db.connect() as conn:
            rows = conn.execute(query).all()
    else:
        rows = db.execute(query).all()
    out: dict[str, list[Published]] = {}
    for text, seq, at, digest in rows:
        terms = Terms.model_validate_json(text)
        out.setdefault(terms.purpose, []).append(Published(terms, seq, at, digest))
    return out


def current(ledger: Ledger, purpose: str) -> Published | None:
    """The published version a purpose is at now (the policy's version), or None."""
    version = ledger.policy.purpose(purpose).version
    for p in published(ledger.engine).get(purpose, []):
        if p.terms.version == version:
            return p
    return None


# ---- the policy and the published notices agree ------------------------------------------


def _places(policy: Policy, purpose: Purpose) -> tuple[str, ...]:
    """Where a purpose's default could apply: the policy's opt-out places, if it is on."""
    return tuple(policy.jurisdiction_rules.opt_out) if purpose.default == "on" else ()


def _differences(policy: Policy, file: Purpose, terms: Terms) -> list[str]:
    said = {
        "categories": (tuple(file.categories), terms.categories),
        "recipients": (tuple(file.recipients), terms.recipients),
        "default": (file.default, terms.default),
        "places a default could apply": (_places(policy, file), terms.places),
        "grace_days": (file.grace_days, terms.grace_days),
        "title": (file.title, terms.title),
        "description": (file.description, terms.description),
    }
    return [
        f"{key} {list(a) if isinstance(a, tuple) else a!r} in the file, "
        f"{list(b) if isinstance(b, tuple) else b!r} published"
        for key, (a, b) in said.items()
        if (sorted(a) if isinstance(a, tuple) else a) != (sorted(b) if isinstance(b, tuple) else b)
    ]


def bind(policy: Policy, versions: Mapping[str, list[Published]]) -> Policy:
    """``policy`` checked against the published notices, its purposes' history taken from
    them; PolicyError, naming the file's version and the published one, if they disagree."""
    purposes = dict(policy.purposes)
    not_before: dict[str, int] = {}
    for name, purpose in policy.purposes.items():
        history = versions.get(name, [])
        if not history:
            continue
        latest = history[-1]
        where = f"{policy.source}: purposes.{name}"
        if purpose.version > latest.terms.version:
            raise PolicyError(
                f"{where} is version {purpose.version}, but the ledger's latest published "
                f"notice of it is version {latest.terms.version} (seq {latest.seq}): publish "
                f"version {purpose.version} first ('askfirst notice publish {name}'), or set "
                f"the file back to version {latest.terms.version}"
            )
        if purpose.version < latest.terms.version:
            raise PolicyError(
                f"{where} is version {purpose.version}, but version {latest.terms.version} "
                f"was already published (seq {latest.seq}): the file is older than what "
                "members were told; use the published terms"
            )
        differ = _differences(policy, purpose, latest.terms)
        if differ:
            raise PolicyError(
                f"{where} version {purpose.version} differs from its published notice (seq "
                f"{latest.seq}): {'; '.join(differ)}. Changed terms are a new version: raise "
                "the version and publish it"
            )
        earlier = tuple(
            NoticeVersion(
                version=p.terms.version,
                categories=p.terms.categories,
                recipients=p.terms.recipients,
            )
            for p in history[:-1]
        )
        purposes[name] = purpose.model_copy(update={"history": earlier})
        if latest.not_before is not None:
            not_before[name] = latest.not_before
    last = max((p.seq for history in versions.values() for p in history), default=0)
    return dataclasses.replace(policy, purposes=purposes, not_before=not_before, notices_seq=last)


def follow(ledger: Ledger, path: str | Path | None) -> bool:
    """Bind ``ledger`` again if a notice was published since its policy was bound (by
    another process: the command line, another server): the policy file at ``path`` as
    it reads now, checked against every published notice (PolicyError if they disagree,
    so that nothing is decided on terms members were not told). True if it changed."""
    with ledger.engine.connect() as conn:
        last = conn.execute(select(func.max(notices.c.seq))).scalar() or 0
    if last == ledger.policy.notices_seq:
        return False
    ledger.policy = bind(load_policy(path), published(ledger.engine))
    return True


# ---- publishing ------------------------------------------------------------------------


def terms_for(
    policy: Policy,
    name: str,
    *,
    changes: str,
    at: int,
    earliest: date | None = None,
) -> Terms:
    """The terms of ``policy``'s current version of purpose ``name``, published at ``at``.

    A default could start no earlier than the day after ``at`` plus the grace period (a
    member told at once still has the whole period), or ``earliest`` if that is later."""
    purpose = policy.purpose(name)
    changes = changes.strip()
    if not changes:
        raise InputError("say what changed, in plain words (--changes)")
    if len(changes) > MAX_CHANGES:
        raise InputError(f"what changed is at most {MAX_CHANGES} characters")
    bad = control_character(changes.replace("\n", " "))
    if bad is not None:
        raise InputError(f"what changed contains a control character ({bad})")
    places = _places(policy, purpose)
    first_day: date | None = None
    if purpose.default == "on":
        published_day = datetime.fromtimestamp(at / times.MICROS, UTC).date()
        first_day = published_day + timedelta(days=purpose.grace_days + 1)
        if earliest is not None:
            if earliest < first_day:
                raise InputError(
                    f"the earliest default date {earliest.isoformat()} is too soon: with "
                    f"{purpose.grace_days} days' grace, a default published now could start "
                    f"on {first_day.isoformat()} at the earliest"
                )
            first_day = earliest
    elif earliest is not None:
        raise InputError(f"purpose {name!r} is off by default: it has no default date")
    return Terms(
        purpose=name,
        version=purpose.version,
        title=purpose.title,
        description=purpose.description,
        changes=changes,
        categories=tuple(purpose.categories),
        recipients=tuple(purpose.recipients),
        default=purpose.default,
        grace_days=purpose.grace_days,
        places=places,
        earliest_default=first_day,
    )


def publish(
    ledger: Ledger,
    policy: Policy,
    purpose: str,
    *,
    changes: str,
    actor: str,
    source: str = "cli",
    earliest: date | None = None,
    at: int | None = None,
) -> Published:
    """Publish ``policy``'s current version of ``purpose`` (the policy file as it is now);
    from then on the ledger is bound to it. Refused if that version, or a later one, was
    already published. ``at`` (microseconds) back-dates the publication, as an import of
    history may (never before the ledger head)."""
    with store.write(ledger.engine) as conn:
        head = ledger.lock_head(conn)
        now = at if at is not None else max(times.to_micros(times.now()), head.recorded_at)
        terms = terms_for(policy, purpose, changes=changes, at=now, earliest=earliest)
        versions = published(conn)
        before = versions.get(purpose, [])
        if before and before[-1].terms.version >= terms.version:
            last = before[-1]
            if last.terms.version == terms.version:
                bind(policy, versions)  # other terms under the same version: named
            raise InputError(
                f"version {last.terms.version} of {purpose!r} was already published (seq "
                f"{last.seq}, {times.iso(last.published_at)}); to publish new terms, give the "
                f"policy file's purpose a higher version than {last.terms.version}"
            )
        digest = terms.digest()
        # The policy must agree with every published notice once this one is out (another
        # purpose's too): checked before anything is written.
        bind(policy, {**versions, purpose: [*before, Published(terms, head.seq + 1, now, digest)]})
        (event,) = ledger.append_in(
            conn,
            [
                NewEvent(
                    EventType.PUBLISHED,
                    SERVICE,
                    actor,
                    source,
                    purpose,
                    f"sha256:{digest}",
                    terms.version,
                    at,
                )
            ],
        )
        _store_terms(conn, event, terms, digest)
        versions = published(conn)
    ledger.policy = bind(policy, versions)
    return Published(terms, event.seq, event.recorded_at, digest)


def publish_file(ledger: Ledger, path: str | Path | None, purpose: str, **kw: Any) -> Published:
    """:func:`publish` from the policy file at ``path`` (None: the shipped policy) as it
    reads now, not as it read when the ledger was opened: a running server publishes
    the file an editor just changed, and follows it from then on."""
    return publish(ledger, load_policy(path), purpose, **kw)


def _store_terms(conn: Connection, event: Event, terms: Terms, digest: str) -> None:
    conn.execute(
        insert(notices).values(
            purpose=terms.purpose,
            version=terms.version,
            seq=event.seq,
            published_at=event.recorded_at,
            terms=terms.canonical(),
            hash=digest,
        )
    )


# ---- telling members -------------------------------------------------------------------

CHANNEL_WORDS = {"email": "by e-mail", "in-app": "on this site"}


def default_starts(purpose: Purpose, policy: Policy, told_at: int) -> int:
    """When a default could start for someone told at ``told_at`` (microseconds): the
    grace period after, and never before the date the notice named."""
    return max(told_at + purpose.grace_days * times.DAY_US, policy.not_before.get(purpose.name, 0))


@dataclass(frozen=True)
class Owed:
    """A published version a member has not been told of and needs to be: a default could
    start for them, or it widened what they said yes to."""

    published: Published
    widened: bool
    starts: int | None  # when a default could start if they are told now and say nothing

    def to_json(self) -> dict[str, Any]:
        return {
            **self.published.to_json(),
            "widened": self.widened,
            "default_starts": times.iso(self.starts) if self.starts is not None else None,
        }


def owed(ledger: Ledger, subject: str, at: int | None = None) -> list[Owed]:
    """The current published versions ``subject`` must still be told of (none for a
    closed account or a member who died)."""
    now = at if at is not None else times.to_micros(times.now())
    with ledger.engine.connect() as conn:
        state = conn.execute(
            select(subject_state.c.jurisdiction, subject_state.c.status).where(
                subject_state.c.subject_id == subject
            )
        ).first()
        if state is None or state.status in ("closed", "deceased", "erased"):
            return []
        told = {
            (r.purpose, r.version)
            for r in conn.execute(
                select(notice_state.c.purpose, notice_state.c.version).where(
                    notice_state.c.subject_id == subject
                )
            )
        }
        chose = {
            r.purpose: (r.action, r.notice_version)
            for r in conn.execute(
                select(
                    choice_state.c.purpose, choice_state.c.action, choice_state.c.notice_version
                ).where(choice_state.c.subject_id == subject)
            )
        }
        versions = published(conn)
    regime = str(ledger.policy.regime(state.jurisdiction))
    out = []
    for name, purpose in ledger.policy.purposes.items():
        current = next(
            (p for p in versions.get(name, []) if p.terms.version == purpose.version), None
        )
        if current is None or (name, purpose.version) in told:
            continue
        action, version = chose.get(name, (None, None))
        widened = action == "grant" and version not in purpose.grant_versions
        may_default = current.terms.default == "on" and regime == "opt-out" and action is None
        if widened or may_default:
            starts = default_starts(purpose, ledger.policy, now) if may_default else None
            out.append(Owed(current, widened, starts))
    return out


def record_told(
    ledger: Ledger, subject: str, told: list[Owed], *, channel: str, actor: str, source: str
) -> list[Event]:
    """Record that ``subject`` was told of each notice in ``told`` (``notice-delivered``)."""
    if not told:
        return []
    return ledger.append_many(
        [
            NewEvent(
                EventType.NOTICE,
                subject,
                actor,
                source,
                o.published.terms.purpose,
                channel,
                o.published.terms.version,
            )
            for o in told
        ]
    )


# ---- the changelog ---------------------------------------------------------------------


def listed_in_words(words: Iterable[str]) -> str:
    items = list(words)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def what_changed(before: Terms | None, now: Terms) -> list[str]:
    """What ``now`` adds or removes against ``before``, in plain words."""
    if before is None:
        lines = [
            f"First published: uses {listed_in_words(now.categories)}; shared with "
            f"{listed_in_words(now.recipients)}."
        ]
        if now.default == "on":
            lines.append(_default_on(now))
        return lines
    lines = []
    for what, old, new in (
        ("categories", before.categories, now.categories),
        ("recipients", before.recipients, now.recipients),
    ):
        added = [c for c in new if c not in old]
        removed = [c for c in old if c not in new]
        if added:
            lines.append(f"Adds {what}: {listed_in_words(added)}.")
        if removed:
            lines.append(f"Removes {what}: {listed_in_words(removed)}.")
    if now.default == "on" and (before.default != "on" or before.places != now.places):
        lines.append(_default_on(now))
    elif now.default == "off" and before.default == "on":
        lines.append("Turns the default off: nobody is in without saying yes.")
    if not lines:
        lines.append("No change to what is used, by whom, or the default.")
    return lines


def _default_on(terms: Terms) -> str:
    when = terms.earliest_default.isoformat() if terms.earliest_default else "?"
    return (
        f"Turns the default on in {listed_in_words(terms.places) if terms.places else 'no place'}, "
        f"from {when} at the earliest, for members told at least {terms.grace_days} days "
        "earlier who did not say no."
    )


def widens(before: Terms | None, now: Terms) -> bool:
    """Whether ``now`` uses a category or reaches a recipient ``before`` did not: grants
    under ``before`` then no longer count (DESIGN.md rule 7)."""
    if before is None:
        return False
    return not (
        set(now.categories) <= set(before.categories)
        and set(now.recipients) <= set(before.recipients)
    )


@dataclass(frozen=True)
class Entry:
    """One line of the public changelog."""

    published: Published
    changes: list[str]
    widens: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.published.to_json(), "what_changed": self.changes, "widens": self.widens}


def changelog(versions: Mapping[str, list[Published]]) -> list[Entry]:
    """Every published version of every purpose, newest first."""
    entries = []
    for history in versions.values():
        before: Terms | None = None
        for p in history:
            entries.append(Entry(p, what_changed(before, p.terms), widens(before, p.terms)))
            before = p.terms
    entries.sort(key=lambda e: e.published.seq, reverse=True)
    return entries
