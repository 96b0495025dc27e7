"""The subject directory: handles, names and e-mail, kept outside the hash chain.

Registering a subject (``Ledger.register``) writes its first entry. This module changes
it (:func:`update_subject`): the new handle and names apply at once, and the ones given up
stay protected, in ``former_names``, for the period the policy sets (``[names]
former_protected_days``) — a former handle still resolves to its subject for @mentions,
nobody else may take it meanwhile, and a former name is looked for like a current one.

When a subject is erased, :func:`forget` keeps their handles and names only as keyed
digests in ``forgotten_names``, so that the gate still finds and redacts them in other
people's content, and clears the entry. Each row is 32 bytes, written as 64 hex digits:

- 16 bytes of HMAC-SHA256 under the names key of the kind (``name`` or ``handle``) and
  the normalised value: a name folded as the gate folds text (lower case, final sigma as
  sigma; both Arrow's and Python's lower-casing, where they differ) with its runs of
  white space made one space; a handle in lower case;
- 16 bytes sealed under the same key (XOR with an HMAC of the first 16): the kind, the
  value's length in bytes, its first :data:`PREFIX` bytes, a polynomial hash of it at a
  secret base (:func:`poly`) and a zero. The gate reads these to look, in one pass over
  each batch, only where a forgotten value could start, checks the length and the
  polynomial hash there for all such places at once, and computes the keyed digest only
  where they match.

The names key is 32 random bytes in the key folder (``forgotten-names.key``, made on
first use, mode 0600), never in the database: the database alone lets nobody test a
guess, nor read a prefix. Whoever holds the key too can: names have little entropy, so
the key is guarded like the receipt-signing key (see the README).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator
from sqlalchemy import Connection, and_, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from askfirst import times
from askfirst.errors import Conflict, InputError, UnknownSubject
from askfirst.ledger import Ledger, SubjectIn, store
from askfirst.ledger.tables import forgotten_names, former_names, subject_state, subjects

MAX_NAMES = 20  # names one subject may have at once
NAMES_KEY_FILE = "forgotten-names.key"
PREFIX = 8  # bytes of a forgotten value the gate looks for first
_TAG = 16  # bytes of HMAC kept per forgotten value
_HINT = 16  # bytes sealed beside it: kind, length, prefix, polynomial hash, a zero
POLY_MOD = (1 << 31) - 1
NAME, HANDLE = "name", "handle"
_KIND_BYTE = {NAME: b"n", HANDLE: b"h"}
FINAL_SIGMA, SIGMA = "\u03c2", "\u03c3"


# ---- the key ----------------------------------------------------------------------------


def names_key(folder: str | Path, *, create: bool = True) -> bytes:
    """The key forgotten names are hashed with, from the key folder; made on first use
    (``create``), else InputError when it is not there."""
    path = Path(folder) / NAMES_KEY_FILE
    if not path.exists():
        if not create:
            raise InputError(f"no names key at {path}")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made meanwhile by another process: use that one
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a names key (64 hex digits): {e}") from None
    if len(key) != 32:
        raise InputError(f"{path}: not a names key (64 hex digits)")
    return key


# ---- normalised values and their digests -------------------------------------------------


def name_forms(name: str) -> list[bytes]:
    """The forms of ``name`` the gate may meet in folded text, as UTF-8: white space made
    single spaces, then lower-cased by Arrow and by Python (which differ on a few letters,
    such as the Turkish dotted I), final sigma as sigma. Empty for a blank name."""
    collapsed = " ".join(name.split())
    if not collapsed:
        return []
    arrow = pc.utf8_lower(pa.array([collapsed], pa.string())).to_pylist()[0]
    forms = (arrow, collapsed.lower())
    return [f.replace(FINAL_SIGMA, SIGMA).encode() for f in dict.fromkeys(forms)]


def tag(key: bytes, kind: str, value: bytes) -> bytes:
    """The keyed digest of a normalised value of ``kind`` (its first 16 bytes)."""
    return hmac.digest(key, kind.encode() + b"\0" + value, "sha256")[:_TAG]


def poly_base(key: bytes) -> int:
    """The secret base of :func:`poly`, from the names key."""
    return int.from_bytes(hmac.digest(key, b"poly", "sha256")[:4], "big") % (POLY_MOD - 2) + 2


def poly(base: int, value: bytes) -> int:
    """A polynomial hash of ``value`` modulo 2**31 - 1 at a secret ``base``: cheap enough
    for the gate to compute, with numpy, for every place a forgotten value may start, so
    that the keyed digest is computed only where this one matches."""
    h = 0
    for b in value:
        h = (h * base + b) % POLY_MOD
    return h


def _pad(key: bytes, tagged: bytes) -> bytes:
    return hmac.digest(key, b"hint\0" + tagged, "sha256")[:_HINT]


def sealed(key: bytes, kind: str, value: bytes) -> str:
    """The ``forgotten_names`` digest of a normalised value (64 hex digits): its keyed
    digest, and sealed under the same key its kind, length, first bytes and :func:`poly`."""
    if not value or len(value) > 0xFFFF:
        raise InputError(f"a forgotten {kind} is 1 to 65535 bytes long")
    t = tag(key, kind, value)
    hint = (
        _KIND_BYTE[kind]
        + len(value).to_bytes(2, "big")
        + value[:PREFIX].ljust(PREFIX, b"\0")
        + poly(poly_base(key), value).to_bytes(4, "big")
        + b"\0"
    )
    return (t + bytes(a ^ b for a, b in zip(hint, _pad(key, t), strict=True))).hex()


@dataclass(frozen=True)
class Opened:
    """What the key reads off one ``forgotten_names`` row."""

    kind: str
    length: int
    prefix: bytes  # the value's first bytes (all of it when it is shorter than PREFIX)
    poly: int
    tag: bytes


def open_sealed(key: bytes, digest: str) -> Opened | None:
    """The row's kind, length, prefix and polynomial hash; None when it was not made with
    ``key``."""
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        return None
    if len(raw) != _TAG + _HINT:
        return None
    t = raw[:_TAG]
    hint = bytes(a ^ b for a, b in zip(raw[_TAG:], _pad(key, t), strict=True))
    kinds = {v: k for k, v in _KIND_BYTE.items()}
    kind = kinds.get(hint[:1])
    length = int.from_bytes(hint[1:3], "big")
    shown = min(length, PREFIX)
    value = int.from_bytes(hint[3 + PREFIX : 7 + PREFIX], "big")
    if kind is None or hint[-1] != 0 or length == 0 or any(hint[3 + shown : 3 + PREFIX]):
        return None
    if value >= POLY_MOD:
        return None
    return Opened(kind, length, hint[3 : 3 + shown], value, t)


def _forgotten_digests(key: bytes, names: Iterable[str], handles: Iterable[str]) -> list[str]:
    out: dict[str, None] = {}
    for name in names:
        for form in name_forms(name):
            out[sealed(key, NAME, form)] = None
    for handle in handles:
        if handle:
            out[sealed(key, HANDLE, handle.lower().encode())] = None
    return list(out)


# ---- reading the directory --------------------------------------------------------------


@dataclass(frozen=True)
class Former:
    """A handle or name a subject gave up, still protected until ``until``."""

    kind: str  # handle / name
    value: str
    until: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "until": times.iso(self.until)}


@dataclass(frozen=True)
class Entry:
    """A subject's directory entry: what it is called, where it is mailed, and what it
    was called lately."""

    subject: str
    handle: str | None
    names: list[str]
    email: str | None
    former: list[Former]

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "handle": self.handle,
            "names": self.names,
            "email": self.email,
            "former": [f.to_json() for f in self.former],
        }


def _former_of(conn: Connection, subject: str, now: int) -> list[Former]:
    rows = conn.execute(
        select(former_names.c.kind, former_names.c.value, former_names.c.until)
        .where(former_names.c.subject_id == subject, former_names.c.until > now)
        .order_by(former_names.c.until, former_names.c.id)
    ).all()
    return [Former(r.kind, r.value, r.until) for r in rows]


def entry(ledger: Ledger, subject: str, *, at: datetime | None = None) -> Entry:
    """``subject``'s directory entry, with the former handles and names still protected
    at ``at`` (default now)."""
    now = times.to_micros(at or times.now())
    with ledger.engine.connect() as conn:
        return _entry(conn, subject, now)


def _entry(conn: Connection, subject: str, now: int) -> Entry:
    row = conn.execute(
        select(subjects.c.handle, subjects.c.names, subjects.c.email).where(
            subjects.c.id == subject
        )
    ).first()
    if row is None:
        raise UnknownSubject(subject)
    return Entry(
        subject, row.handle, json.loads(row.names), row.email, _former_of(conn, subject, now)
    )


def protected_former(conn: Connection, now: int) -> pa.Table:
    """Every former handle and name still protected at ``now``: ``subject, kind, value``."""
    rows = conn.execute(
        select(former_names.c.subject_id, former_names.c.kind, former_names.c.value)
        .where(former_names.c.until > now)
        .order_by(former_names.c.subject_id, former_names.c.id)
    ).all()
    return pa.table(
        {
            "subject": pa.array([r[0] for r in rows], pa.string()),
            "kind": pa.array([r[1] for r in rows], pa.string()),
            "value": pa.array([r[2] for r in rows], pa.string()),
        }
    )


def forgotten_rows(conn: Connection) -> pa.Table:
    """Every ``forgotten_names`` row: ``digest, subject, forgotten_at``."""
    rows = conn.execute(
        select(
            forgotten_names.c.digest, forgotten_names.c.subject_id, forgotten_names.c.forgotten_at
        ).order_by(forgotten_names.c.digest)
    ).all()
    return pa.table(
        {
            "digest": pa.array([r[0] for r in rows], pa.string()),
            "subject": pa.array([r[1] for r in rows], pa.string()),
            "forgotten_at": pa.array([r[2] for r in rows], pa.int64()),
        }
    )


# ---- changing an entry ------------------------------------------------------------------


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # a field left as it is


def _message(err: ValidationError) -> tuple[str, str]:
    """The first error's place (``names[2]``) and what is wrong."""
    first = err.errors()[0]
    field, *rest = [str(p) for p in first["loc"]] or [""]
    return field + "".join(f"[{p}]" for p in rest), str(first["msg"]).removeprefix("Value error, ")


def _checked(field: str, value: Any) -> Any:
    """``value`` as registration accepts and normalises it, or ValueError saying why
    (starting with the place inside it, as ``[2]: ...``, for an item of a list)."""
    try:
        subject = SubjectIn.model_validate({"id": "-", field: value})
    except ValidationError as e:
        where, msg = _message(e)
        inner = where.removeprefix(field)
        raise ValueError(f"{inner}: {msg}" if inner else msg) from None
    return getattr(subject, field)


# What registration accepts, said in the schema too (the validators below then apply
# registration's own checks, and its normal form: a handle in lower case, without '@').
Handle = Annotated[
    str,
    Field(
        min_length=1, max_length=255, pattern=r"^@?[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?$"
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]


class SubjectChange(BaseModel):
    """A change to a subject's directory entry, checked as registration checks a new one:
    a field left out stays as it is; ``null`` clears a handle or an e-mail."""

    model_config = ConfigDict(extra="forbid")

    handle: Handle | None = None
    names: list[Name] = Field(default_factory=list, max_length=MAX_NAMES)
    email: EmailStr | None = Field(default=None, max_length=320)

    @field_validator("handle")
    @classmethod
    def _handle(cls, v: str | None) -> str | None:
        return None if v is None else _checked("handle", v)

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        names: list[str] = _checked("names", v)
        return list(dict.fromkeys(names))

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return None if v is None else _checked("email", v)


def handle_holder(conn: Connection, handle: str, now: int) -> str | None:
    """Who holds ``handle`` now, or held it lately (as a former handle still protected)."""
    holder = conn.execute(select(subjects.c.id).where(subjects.c.handle == handle)).scalar()
    if holder is not None:
        return str(holder)
    former = conn.execute(
        select(former_names.c.subject_id).where(
            former_names.c.kind == HANDLE,
            former_names.c.value == handle,
            former_names.c.until > now,
        )
    ).scalar()
    return None if former is None else str(former)


def _fold(text: str) -> str:
    return text.lower().replace(FINAL_SIGMA, SIGMA)


def update_subject(
    ledger: Ledger,
    subject_id: str,
    *,
    handle: str | None = UNSET,
    names: Sequence[str] = UNSET,
    email: str | None = UNSET,
    at: datetime | None = None,
) -> Entry:
    """Change ``subject_id``'s handle, names or e-mail (a field not given stays; ``None``
    clears a handle or an e-mail); return the new entry.

    Checked as registration checks them. The new handle and names apply at once; the
    handle and names given up stay protected until ``at`` (default now) plus the policy's
    ``[names] former_protected_days``: the handle still resolves to the subject, nobody
    else may take it, and the names are redacted like current ones. Taking back a former
    one makes it current again. Nothing goes into the hash chain.

    UnknownSubject for an unknown subject; Conflict for a handle someone else holds or
    held lately, or a subject that was erased.
    """
    given: dict[str, Any] = {}
    if handle is not UNSET:
        given["handle"] = handle
    if names is not UNSET:
        given["names"] = list(names)
    if email is not UNSET:
        given["email"] = email
    try:
        change = SubjectChange.model_validate(given)
    except ValidationError as e:
        where, msg = _message(e)
        raise InputError(f"{where}{msg}" if msg.startswith("[") else f"{where}: {msg}") from None
    return apply_change(ledger, subject_id, change, fields=set(given), at=at)


def apply_change(
    ledger: Ledger,
    subject_id: str,
    change: SubjectChange,
    *,
    fields: set[str] | None = None,
    at: datetime | None = None,
) -> Entry:
    """:func:`update_subject` with the change already checked (``fields``: those given;
    default the model's own ``model_fields_set``)."""
    given = change.model_fields_set if fields is None else fields
    now = times.to_micros(at or times.now())
    until = now + ledger.policy.names.former_protected_days * times.DAY_US
    with store.write(ledger.engine) as conn:
        ledger.lock_head(conn)  # directory changes and registrations, one at a time
        row = conn.execute(
            select(subjects.c.handle, subjects.c.names, subjects.c.email).where(
                subjects.c.id == subject_id
            )
        ).first()
        if row is None:
            raise UnknownSubject(subject_id)
        status = conn.execute(
            select(subject_state.c.status).where(subject_state.c.subject_id == subject_id)
        ).scalar()
        if status == "erased":
            raise Conflict(f"subject {subject_id!r} was erased; its entry cannot be set again")
        # What lingers past its period is personal data kept for nothing: gone now.
        conn.execute(delete(former_names).where(former_names.c.until <= now))
        values: dict[str, Any] = {}
        old_names: list[str] = json.loads(row.names)
        if "handle" in given and change.handle != row.handle:
            if change.handle is not None:
                holder = handle_holder(conn, change.handle, now)
                if holder is not None and holder != subject_id:
                    raise Conflict(f"handle {change.handle!r} is already taken")
                _take_back(conn, subject_id, HANDLE, [change.handle])
            if row.handle is not None:
                _give_up(conn, subject_id, HANDLE, [row.handle], until, now)
            values["handle"] = change.handle
        if "names" in given and change.names != old_names:
            kept = {_fold(n) for n in change.names}
            dropped = [n for n in old_names if _fold(n) not in kept]
            _take_back(conn, subject_id, NAME, change.names)
            _give_up(conn, subject_id, NAME, dropped, until, now)
            values["names"] = json.dumps(change.names)
        if "email" in given and change.email != row.email:
            values["email"] = change.email
        if values:
            conn.execute(update(subjects).where(subjects.c.id == subject_id).values(**values))
        return _entry(conn, subject_id, now)


def _give_up(
    conn: Connection, subject: str, kind: str, values: list[str], until: int, now: int
) -> None:
    """Keep ``values`` protected until ``until`` (nothing, with a period of 0 days)."""
    if not values or until <= now:
        return
    _take_back(conn, subject, kind, values)
    conn.execute(
        insert(former_names),
        [{"subject_id": subject, "kind": kind, "value": v, "until": until} for v in values],
    )


def _take_back(conn: Connection, subject: str, kind: str, values: list[str]) -> None:
    """``values`` are current again: no longer former ones of ``subject``."""
    if kind == NAME:
        folded = {_fold(v) for v in values}
        rows = conn.execute(
            select(former_names.c.id, former_names.c.value).where(
                former_names.c.subject_id == subject, former_names.c.kind == NAME
            )
        ).all()
        ids = [r.id for r in rows if _fold(r.value) in folded]
    else:
        ids = list(
            conn.execute(
                select(former_names.c.id).where(
                    and_(
                        former_names.c.subject_id == subject,
                        former_names.c.kind == kind,
                        former_names.c.value.in_(values),
                    )
                )
            ).scalars()
        )
    if ids:
        conn.execute(delete(former_names).where(former_names.c.id.in_(ids)))


# ---- erasure ----------------------------------------------------------------------------


def forget(conn: Connection, subject_id: str, key: bytes) -> int:
    """Keep ``subject_id``'s handle and names, and the former ones still protected, only as
    keyed digests in ``forgotten_names``; clear its entry (no handle, no names, no e-mail)
    and delete its former names. Inside the caller's transaction; doing it again changes
    nothing. Returns how many digests it kept (0 the second time)."""
    now = times.to_micros(times.now())
    row = conn.execute(
        select(subjects.c.handle, subjects.c.names).where(subjects.c.id == subject_id)
    ).first()
    if row is None:
        raise UnknownSubject(subject_id)
    former = _former_of(conn, subject_id, now)
    names = [*json.loads(row.names), *(f.value for f in former if f.kind == NAME)]
    handles = [h for h in (row.handle, *(f.value for f in former if f.kind == HANDLE)) if h]
    digests = _forgotten_digests(key, names, handles)
    if digests:
        # The same name forgotten for two people is one row: the gate needs it once.
        dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(forgotten_names).on_conflict_do_nothing(index_elements=["digest"])
        conn.execute(
            stmt,
            [{"digest": d, "subject_id": subject_id, "forgotten_at": now} for d in digests],
        )
    conn.execute(
        update(subjects)
        .where(subjects.c.id == subject_id)
        .values(handle=None, names="[]", email=None)
    )
    conn.execute(delete(former_names).where(former_names.c.subject_id == subject_id))
    return len(digests)
