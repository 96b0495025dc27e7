"""Ledger events: their types, the input forms callers give, and chaining an event (its
hash: the canonical encoding is in ``chain``, which verify's worker processes run alone).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    field_validator,
)

from askfirst import jurisdictions, times
from askfirst.errors import InputError
from askfirst.ledger.chain import ENCODING_VERSION as ENCODING_VERSION
from askfirst.ledger.chain import GENESIS as GENESIS
from askfirst.ledger.chain import event_hash as event_hash


@dataclass(frozen=True)
class Head:
    """The last event of the chain (seq 0 and the genesis hash when empty)."""

    seq: int
    hash: str
    recorded_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "recorded_at": times.iso(self.recorded_at) if self.seq else None,
        }


class EventType(StrEnum):
    SUBJECT = "subject"  # a subject is registered; value is its kind
    CHOICE = "choice"  # value: grant / withdraw / object, for a purpose
    GPC = "gpc"  # a Global Privacy Control signal
    NOTICE = "notice-delivered"  # a purpose's notice version was delivered; value: channel
    STATUS = "status"  # value: active / deactivated / closed / deceased / erased
    JURISDICTION = "jurisdiction"  # value: a code, or "" when unknown
    MINOR = "minor"  # value: "true", "false" or "until:YYYY-MM-DD"
    AUTHORITY = "authority"  # value: "grant|revoke:ROLE:DELEGATE" (who may act for S)
    # A receipt-signing public key the service made; subject "system", value "ed25519:KID:X".
    # Public key material is not personal, so it may sit in the chain; decisions ignore it.
    RECEIPT_KEY = "receipt-key"
    # A purpose's notice version was published; subject "system", value "sha256:HEX" of
    # its terms (kept beside the chain, in the ``notices`` table).
    PUBLISHED = "notice-published"
    # A step of a case (a death, a representative, an objection, an erasure); subject the
    # case's subject (or "system" before it has one), value "STEP:KIND:ID:HEX", HEX the
    # SHA-256 of the step's details (kept beside the chain, in ``case_steps``).
    CASE = "case"


KINDS = ("member", "organization", "person")
ACTIONS = ("grant", "withdraw", "object")
STATUSES = ("active", "deactivated", "closed", "deceased", "erased")
# page-admin: a member who manages an organization's page, and may make its choices;
# representative: a verified representative of a (deceased) member, who may stop uses.
ROLES = ("page-admin", "representative")
SERVICE = "system"  # the subject of the service's own facts (receipt keys, notices)
# How a notice reached someone (the value of a notice-delivered event): "email",
# "in-app", or a platform's own word for its channel.
CHANNEL = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
TERMS_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def authority_value(action: str, role: str, delegate: str) -> str:
    return f"{action}:{role}:{delegate}"


def parse_authority(value: str) -> tuple[str, str, str] | None:
    """``grant:page-admin:m5`` -> (grant, page-admin, m5); None when malformed."""
    parts = value.split(":", 2)
    if len(parts) != 3 or parts[0] not in ("grant", "revoke") or parts[1] not in ROLES:
        return None
    if not parts[2] or any(c.isspace() for c in parts[2]):
        return None
    return parts[0], parts[1], parts[2]


CASE_KINDS = ("death", "representative", "objection", "erasure")
CASE_STEPS = ("open", "verified", "propose", "approve", "reject", "close-account")
_CASE = re.compile(r"([a-z-]+):([a-z]+):([1-9][0-9]{0,17}):([0-9a-f]{64})")


def case_value(step: str, kind: str, case_id: int, details_hash: str) -> str:
    return f"{step}:{kind}:{case_id}:{details_hash}"


def parse_case(value: str) -> tuple[str, str, int, str] | None:
    """``approve:death:7:HEX`` -> (approve, death, 7, HEX); None when malformed."""
    found = _CASE.fullmatch(value)
    if found is None or found[1] not in CASE_STEPS or found[2] not in CASE_KINDS:
        return None
    return found[1], found[2], int(found[3]), found[4]


def receipt_key_value(x: str) -> str:
    """The value of a ``receipt-key`` event for the raw Ed25519 public key ``x`` (base64url)."""
    return f"ed25519:{receipt_key_id(x)}:{x}"


def receipt_key_id(x: str) -> str:
    """A receipt key's id: the first 16 hex digits of SHA-256 over its raw bytes."""
    return hashlib.sha256(_unb64(x)).hexdigest()[:16]


def parse_receipt_key(value: str) -> tuple[str, str] | None:
    """``ed25519:KID:X`` -> (KID, X); None when malformed or KID is not X's id."""
    found = _RECEIPT_KEY.fullmatch(value)
    if found is None or receipt_key_id(found[2]) != found[1]:
        return None
    return found[1], found[2]


_RECEIPT_KEY = re.compile(r"ed25519:([0-9a-f]{16}):([A-Za-z0-9_-]{42}[AEIMQUYcgkosw048])")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event before it is chained: what a caller asks the ledger to append."""

    type: str
    subject: str
    actor: str
    source: str
    purpose: str | None = None
    value: str | None = None
    notice_version: int | None = None
    recorded_at: int | None = None  # microseconds; None means "now"


@dataclass(frozen=True, slots=True)
class Event:
    """One fact in the ledger."""

    seq: int
    type: str
    subject: str
    purpose: str | None
    value: str | None
    notice_version: int | None
    actor: str
    source: str
    recorded_at: int
    prev_hash: str
    hash: str

    @classmethod
    def chained(cls, new: NewEvent, *, seq: int, recorded_at: int, prev_hash: str) -> Event:
        """``new`` as the event after ``prev_hash``, with its own hash."""
        fields = (
            seq,
            new.type,
            new.subject,
            new.purpose,
            new.value,
            new.notice_version,
            new.actor,
            new.source,
            recorded_at,
            prev_hash,
        )
        return cls(*fields, event_hash(*fields))

    @classmethod
    def from_row(cls, r: Any) -> Event:
        """An event from a row of the ``events`` table."""
        return cls(
            r.seq,
            r.type,
            r.subject_id,
            r.purpose,
            r.value,
            r.notice_version,
            r.actor,
            r.source,
            r.recorded_at,
            r.prev_hash,
            r.hash,
        )

    def row(self) -> dict[str, Any]:
        """The event as a row of the ``events`` table."""
        return {
            "seq": self.seq,
            "type": self.type,
            "subject_id": self.subject,
            "purpose": self.purpose,
            "value": self.value,
            "notice_version": self.notice_version,
            "actor": self.actor,
            "source": self.source,
            "recorded_at": self.recorded_at,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @property
    def time(self) -> datetime:
        return times.from_micros(self.recorded_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.type,
            "subject": self.subject,
            "purpose": self.purpose,
            "value": self.value,
            "notice_version": self.notice_version,
            "actor": self.actor,
            "source": self.source,
            "recorded_at": times.iso(self.recorded_at),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def is_platform_actor(actor: str) -> bool:
    """The platform itself (``system``, ``system:NAME``) or its staff (``staff:NAME``)."""
    return actor == "system" or actor.startswith(("system:", "staff:"))


def representative_actor(case_id: int) -> str:
    """How the ledger names a representative a case approved (no personal data)."""
    return f"rep:{case_id}"


def is_representative(actor: str) -> bool:
    return _REPRESENTATIVE.fullmatch(actor) is not None


_REPRESENTATIVE = re.compile(r"rep:[1-9][0-9]{0,17}")


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


_VALUE_CHECKS: dict[str, Callable[[str | None], bool]] = {
    EventType.SUBJECT: lambda v: v in KINDS,
    EventType.CHOICE: lambda v: v in ACTIONS,
    EventType.GPC: lambda v: v == "1",
    EventType.NOTICE: lambda v: v is None or CHANNEL.match(v) is not None,
    EventType.STATUS: lambda v: v in STATUSES,
    EventType.JURISDICTION: lambda v: v == "" or (v is not None and _is_code(v)),
    EventType.MINOR: lambda v: (
        v in ("true", "false") or (v is not None and v.startswith("until:") and _is_date(v[6:]))
    ),
    EventType.AUTHORITY: lambda v: v is not None and parse_authority(v) is not None,
    EventType.RECEIPT_KEY: lambda v: v is not None and parse_receipt_key(v) is not None,
    EventType.PUBLISHED: lambda v: v is not None and TERMS_HASH.match(v) is not None,
    EventType.CASE: lambda v: v is not None and parse_case(v) is not None,
}
_WITH_PURPOSE = (EventType.CHOICE, EventType.NOTICE, EventType.PUBLISHED)
_HAS_SPACE = re.compile(r"\s")
# C0 and C1 control characters (NUL, escape, ...): refused in every id and name, on
# every database alike (PostgreSQL cannot store a NUL at all).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
OLDEST_BIRTH = date(1900, 1, 1)


def control_character(text: str) -> str | None:
    """The first control character in ``text``, written as U+XXXX; None if there is none."""
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found[0]):04X}"


def check_text(name: str, text: str | None) -> None:
    """Raise InputError if ``text`` (an id, handle, name or purpose) holds a control character."""
    if text is None:
        return
    bad = control_character(text)
    if bad is not None:
        raise InputError(f"{name} {text!r} contains a control character ({bad})")


def check_shape(new: NewEvent) -> None:
    """Raise InputError unless the event's fields are what its type allows."""
    value_ok = _VALUE_CHECKS.get(new.type)
    if value_ok is None:
        raise InputError(f"unknown event type {new.type!r}; known: {', '.join(EventType)}")
    for name, text, limit in (
        ("subject", new.subject, 255),
        ("actor", new.actor, 255),
        ("source", new.source, 64),
    ):
        if not isinstance(text, str) or not text.strip() or len(text) > limit:
            raise InputError(f"{name} must be 1 to {limit} characters, not {text!r}")
    for name, maybe in (
        ("subject", new.subject),
        ("actor", new.actor),
        ("source", new.source),
        ("purpose", new.purpose),
        ("value", new.value),
    ):
        check_text(name, maybe)
    if _HAS_SPACE.search(new.subject):
        raise InputError(f"subject {new.subject!r} may not contain spaces")
    with_purpose = new.type in _WITH_PURPOSE
    if with_purpose != (new.purpose is not None):
        raise InputError(f"a {new.type} event {'needs' if with_purpose else 'takes no'} purpose")
    if new.notice_version is not None and (not with_purpose or new.notice_version < 1):
        raise InputError(f"notice version {new.notice_version!r} is not valid here")
    if not value_ok(new.value):
        raise InputError(f"{new.value!r} is not a valid value for a {new.type} event")
    if new.type == EventType.SUBJECT and is_platform_actor(new.subject):
        raise InputError(f"subject id {new.subject!r} is reserved for the platform's actors")
    if new.type in (EventType.RECEIPT_KEY, EventType.PUBLISHED) and new.subject != SERVICE:
        raise InputError(f"a {new.type} event is the service's own: its subject is {SERVICE!r}")
    if new.type == EventType.PUBLISHED and new.notice_version is None:
        raise InputError("a notice-published event names the version it publishes")


def check_subject_text(subject: SubjectIn) -> None:
    """Raise InputError if a subject's id, handle or a name holds a control character
    (for a SubjectIn made without validation, e.g. ``model_construct``)."""
    check_text("subject", subject.id)
    check_text("handle", subject.handle)
    for name in subject.names:
        check_text("name", name)


def _is_code(value: str) -> bool:
    try:
        return jurisdictions.normalize(value) == value
    except ValueError:
        return False


def minor_value(*, minor: bool | None, birth_date: date | None) -> str | None:
    """The value of a ``minor`` event for what is known about a subject's age."""
    if birth_date is not None:
        return f"until:{times.eighteenth_birthday(birth_date).isoformat()}"
    if minor is not None:
        return "true" if minor else "false"
    return None


# ---- input forms (JSONL lines, API bodies) ---------------------------------------------


def _no_control(text: str) -> str:
    bad = control_character(text)
    if bad is not None:
        raise ValueError(f"contains a control character ({bad})")
    return text


# Text a person or a program gave: no control characters.
_Text = Annotated[str, AfterValidator(_no_control)]
_Id = Annotated[_Text, Field(min_length=1, max_length=255, pattern=r"^\S+$")]
_Purpose = Annotated[_Text, Field(min_length=1, max_length=255)]


class _In(BaseModel):
    # Built on first use, not at import: most commands never validate an import line.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    subject: _Id
    actor: _Id | None = None
    source: _Text | None = Field(default=None, max_length=64)
    recorded_at: datetime | None = None

    @field_validator("recorded_at", mode="before")
    @classmethod
    def _time(cls, v: object) -> object:
        if v is None or isinstance(v, datetime):
            return v
        if isinstance(v, str):
            return times.parse(v, field="recorded_at")
        raise ValueError("recorded_at must be an ISO 8601 time string")

    def _new(self, default_actor: str, default_source: str, **kw: Any) -> NewEvent:
        return NewEvent(
            subject=self.subject,
            actor=self.actor or default_actor,
            source=self.source or default_source,
            recorded_at=times.to_micros(self.recorded_at) if self.recorded_at else None,
            **kw,
        )


class ChoiceIn(_In):
    type: Literal["choice"]
    purpose: _Purpose
    action: Literal["grant", "withdraw", "object"]
    version: StrictInt | None = Field(default=None, ge=1)

    def to_new(self, source: str) -> NewEvent:
        return self._new(
            self.subject,
            source,
            type=EventType.CHOICE,
            purpose=self.purpose,
            value=self.action,
            notice_version=self.version,
        )


class GpcIn(_In):
    type: Literal["gpc"]

    def to_new(self, source: str) -> NewEvent:
        return self._new(self.subject, source, type=EventType.GPC, value="1")


class NoticeIn(_In):
    type: Literal["notice-delivered"]
    purpose: _Purpose
    version: StrictInt | None = Field(default=None, ge=1)
    channel: str | None = Field(default=None, pattern=CHANNEL.pattern)

    def to_new(self, source: str) -> NewEvent:
        return self._new(
            "system",
            source,
            type=EventType.NOTICE,
            purpose=self.purpose,
            value=self.channel,
            notice_version=self.version,
        )


class StatusIn(_In):
    type: Literal["status"]
    # "erased" is read, so that the ledger can say how an erasure is made (a case)
    status: Literal["active", "deactivated", "closed", "deceased", "erased"]

    def to_new(self, source: str) -> NewEvent:
        return self._new("system", source, type=EventType.STATUS, value=self.status)


class JurisdictionIn(_In):
    type: Literal["jurisdiction"]
    jurisdiction: str | None

    @field_validator("jurisdiction")
    @classmethod
    def _code(cls, v: str | None) -> str | None:
        return jurisdictions.normalize(v) if v else None

    def to_new(self, source: str) -> NewEvent:
        return self._new(
            "system", source, type=EventType.JURISDICTION, value=self.jurisdiction or ""
        )


class MinorIn(_In):
    type: Literal["minor"]
    minor: StrictBool

    def to_new(self, source: str) -> NewEvent:
        return self._new(
            "system", source, type=EventType.MINOR, value="true" if self.minor else "false"
        )


class AuthorityIn(_In):
    type: Literal["authority"]
    delegate: _Id
    role: Literal["page-admin", "representative"]
    action: Literal["grant", "revoke"] = "grant"

    def to_new(self, source: str) -> NewEvent:
        return self._new(
            "system",
            source,
            type=EventType.AUTHORITY,
            value=authority_value(self.action, self.role, self.delegate),
        )


EventIn = Annotated[
    ChoiceIn | GpcIn | NoticeIn | StatusIn | JurisdictionIn | MinorIn | AuthorityIn,
    Field(discriminator="type"),
]


@functools.cache
def event_in() -> TypeAdapter[EventIn]:
    """The validator of one import line (built on first use)."""
    return TypeAdapter(EventIn)


_HANDLE = re.compile(r"^[a-z0-9_](?:[a-z0-9_.\-]*[a-z0-9_])?$")


class SubjectIn(BaseModel):
    """One subject, as imported: identity, where they live, age and status."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: _Id
    kind: Literal["member", "organization", "person"] = "member"
    jurisdiction: str | None = None
    handle: _Text | None = Field(default=None, min_length=1, max_length=255)
    names: list[Annotated[_Text, Field(min_length=1, max_length=255)]] = []
    birth_date: date | None = None
    minor: StrictBool | None = None
    status: Literal["active", "deactivated", "closed", "deceased"] = "active"
    # Where notices are mailed: kept in the directory, never in the chain (erasable).
    email: EmailStr | None = Field(default=None, max_length=320)

    @field_validator("jurisdiction")
    @classmethod
    def _code(cls, v: str | None) -> str | None:
        return jurisdictions.normalize(v) if v else None

    @field_validator("birth_date", mode="before")
    @classmethod
    def _birth(cls, v: object) -> object:
        if v is not None and not isinstance(v, str | date):
            raise ValueError("birth_date must be a date, e.g. 1990-04-01")
        return v

    @field_validator("birth_date")
    @classmethod
    def _born_when(cls, v: date | None) -> date | None:
        if v is None:
            return v
        if v > (times.now() + timedelta(days=1)).date():  # a day: anywhere on Earth
            raise ValueError(f"{v.isoformat()} is in the future")
        if v < OLDEST_BIRTH:
            raise ValueError(f"{v.isoformat()} is before {OLDEST_BIRTH.isoformat()}")
        return v

    @field_validator("handle")
    @classmethod
    def _handle(cls, v: str | None) -> str | None:
        if not v:
            return v
        handle = v.lstrip("@").lower()
        if not _HANDLE.match(handle):
            raise ValueError(
                "a handle is ASCII letters, digits, '_', '.' and '-', starting and ending "
                "with a letter, digit or '_' (so that '@handle' can be found in text)"
            )
        return handle

    def to_events(self, actor: str, source: str, at: int | None) -> list[NewEvent]:
        """The events that register this subject and its starting state."""

        def event(type: str, value: str) -> NewEvent:
            return NewEvent(
                type=type, subject=self.id, actor=actor, source=source, value=value, recorded_at=at
            )

        out = [
            event(EventType.SUBJECT, self.kind),
            event(EventType.JURISDICTION, self.jurisdiction or ""),
        ]
        minor = minor_value(minor=self.minor, birth_date=self.birth_date)
        if minor is not None:
            out.append(event(EventType.MINOR, minor))
        if self.status != "active":
            out.append(event(EventType.STATUS, self.status))
        return out
