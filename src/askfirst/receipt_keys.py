"""The keys consent receipts are signed with, and which keys are the service's.

The service signs with one Ed25519 key at a time (:class:`ReceiptKey`), kept in a key
folder outside the database. Each key is recorded in the ledger when it is made (a
``receipt-key`` event: public key material, nothing personal) and published as a JSON
Web Key Set at :data:`WELL_KNOWN`. Keys are rotated, never forgotten: an old key stays
recorded, published and (its public half) in the folder, so its receipts still verify.

A :class:`KeySet` is one trust anchor: the keys that the ledger, the key folder or the
published set says are the service's. A receipt's signature counts only by a key that
its anchors know.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import select

from askfirst import times
from askfirst.errors import InputError
from askfirst.ledger import Event, EventType, Ledger, NewEvent, store
from askfirst.ledger.events import (
    SERVICE,
    parse_receipt_key,
    receipt_key_id,
    receipt_key_value,
)
from askfirst.ledger.tables import events

KEY_FILE = "receipt-signing.ed25519.pem"
RETIRED = "receipt-retired.{kid}.pub.pem"  # the public half of a key this folder signed with
WELL_KNOWN = "/.well-known/askfirst-receipt-keys.json"


class ReceiptKey:
    """The service's Ed25519 signing key, made on first use and kept in ``folder``."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key()
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_b64 = b64url(raw)
        self.key_id = receipt_key_id(self.public_b64)

    @classmethod
    def load(cls, folder: str | Path, *, create: bool = True) -> ReceiptKey:
        path = Path(folder) / KEY_FILE
        if path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (ValueError, TypeError) as e:
                raise InputError(f"{path}: not an Ed25519 private key ({e})") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise InputError(f"{path}: not an Ed25519 private key")
            return cls(key)
        if not create:
            raise InputError(f"no receipt signing key at {path}")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        _write_new(path, _private_pem(key), 0o600)
        return cls(key)

    @classmethod
    def rotate(cls, folder: str | Path) -> ReceiptKey:
        """Make a new signing key in ``folder``; the old one's public half stays there
        (``receipt-retired.KID.pub.pem``), so that its receipts still verify."""
        old = cls.load(folder, create=False)
        retired = Path(folder) / RETIRED.format(kid=old.key_id)
        if not retired.exists():
            _write_new(retired, _public_pem(old.public), 0o644)
        new = Ed25519PrivateKey.generate()
        staging = Path(folder) / f".{KEY_FILE}.new"
        staging.unlink(missing_ok=True)
        _write_new(staging, _private_pem(new), 0o600)
        os.replace(staging, Path(folder) / KEY_FILE)
        return cls(new)


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Decode base64url, accepting only its one canonical spelling (so that a receipt has
    exactly one form: no spare bits set, no padding, no stray characters)."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(data) != text:
        raise ValueError("not canonical base64url")
    return data


def _jwk(kid: str, x: str) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}


# ---- the keys the service made: recorded in the ledger, published as JWKS ---------------


@dataclass(frozen=True)
class RecordedKey:
    """A receipt key as the ledger recorded it when it was made."""

    kid: str
    x: str  # the raw public key, base64url
    seq: int
    recorded_at: int

    def jwk(self) -> dict[str, Any]:
        recorded = {"ledgerSeq": self.seq, "at": times.iso(self.recorded_at)}
        return {**_jwk(self.kid, self.x), "askfirst:recorded": recorded}


def recorded_keys(ledger: Ledger) -> list[RecordedKey]:
    """Every receipt key the ledger recorded, oldest first."""
    q = (
        select(events.c.value, events.c.seq, events.c.recorded_at)
        .where(events.c.subject_id == SERVICE, events.c.type == EventType.RECEIPT_KEY)
        .order_by(events.c.seq)
    )
    with ledger.engine.connect() as conn:
        rows = conn.execute(q).all()
    out = []
    for value, seq, at in rows:
        parsed = parse_receipt_key(value or "")
        if parsed is not None:  # the ledger checks the shape; a row edited since is skipped
            out.append(RecordedKey(parsed[0], parsed[1], seq, at))
    return out


def record_key(ledger: Ledger, key: ReceiptKey, *, source: str = "receipt-keys") -> Event | None:
    """Record ``key`` in the ledger, unless it is there already (then None)."""
    value = receipt_key_value(key.public_b64)
    q = select(events.c.seq).where(
        events.c.subject_id == SERVICE,
        events.c.type == EventType.RECEIPT_KEY,
        events.c.value == value,
    )
    with store.write(ledger.engine) as conn:
        ledger.lock_head(conn)  # so that two starts cannot both record it
        if conn.execute(q).first() is not None:
            return None
        new = NewEvent(
            type=EventType.RECEIPT_KEY, subject=SERVICE, actor="system", source=source, value=value
        )
        return ledger.append_in(conn, [new])[0]


def signing_key(ledger: Ledger, folder: str | Path) -> ReceiptKey:
    """The key receipts are signed with: loaded from ``folder`` (made there on first
    use) and recorded in the ledger if it is not yet."""
    key = ReceiptKey.load(folder)
    record_key(ledger, key)
    return key


def new_key(ledger: Ledger, folder: str | Path) -> tuple[ReceiptKey, Event | None]:
    """Rotate the signing key in ``folder`` (or make the first one) and record the new one
    in the ledger. The old key stays recorded and published, so its receipts still verify."""
    if not (Path(folder) / KEY_FILE).exists():
        key = ReceiptKey.load(folder)
    else:
        signing_key(ledger, folder)  # the old one, recorded if it was not yet
        key = ReceiptKey.rotate(folder)
    return key, record_key(ledger, key)


def jwks(ledger: Ledger) -> dict[str, Any]:
    """The service's receipt keys as a JSON Web Key Set, newest first."""
    return {"keys": [k.jwk() for k in reversed(recorded_keys(ledger))]}


# ---- trust anchors ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeySet:
    """The receipt keys one source says are the service's: key id -> raw public key."""

    source: str  # for messages: "the ledger", "the key folder keys/", a URL
    keys: Mapping[str, str]

    @classmethod
    def of(cls, keys: Iterable[ReceiptKey], source: str = "this service's key") -> KeySet:
        return cls(source, {k.key_id: k.public_b64 for k in keys})

    @classmethod
    def from_ledger(cls, ledger: Ledger) -> KeySet:
        return cls("the ledger", {k.kid: k.x for k in recorded_keys(ledger)})

    @classmethod
    def from_folder(cls, folder: str | Path) -> KeySet:
        """The folder's signing key and the keys it signed with before."""
        current = ReceiptKey.load(folder, create=False)
        keys = {current.key_id: current.public_b64}
        for path in sorted(Path(folder).glob(RETIRED.format(kid="*"))):
            try:
                public = serialization.load_pem_public_key(path.read_bytes())
            except (ValueError, TypeError) as e:
                raise InputError(f"{path}: not an Ed25519 public key ({e})") from None
            if not isinstance(public, Ed25519PublicKey):
                raise InputError(f"{path}: not an Ed25519 public key")
            x = b64url(
                public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            )
            keys[receipt_key_id(x)] = x
        return cls(f"the key folder {folder}", keys)

    @classmethod
    def from_jwks(cls, data: Any, source: str) -> KeySet:
        """The Ed25519 keys of a JSON Web Key Set (other kinds of key are skipped)."""
        listed = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(listed, list):
            raise InputError(f"{source}: not a JSON Web Key Set (no 'keys' list)")
        keys: dict[str, str] = {}
        for jwk in listed:
            if not isinstance(jwk, dict) or (jwk.get("kty"), jwk.get("crv")) != ("OKP", "Ed25519"):
                continue
            kid, x = jwk.get("kid"), jwk.get("x")
            if not isinstance(kid, str) or not isinstance(x, str) or not _is_public_key(x):
                raise InputError(f"{source}: an Ed25519 key without a valid 'kid' and 'x'")
            keys[kid] = x
        if not keys:
            raise InputError(f"{source}: lists no Ed25519 receipt keys")
        return cls(source, keys)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 10.0) -> KeySet:
        """The keys a service publishes at ``url`` (its ``/.well-known/...`` JWKS)."""
        import httpx

        if not url.startswith(("https://", "http://")):
            raise InputError(
                f"keys URL {url!r}: give an http(s) URL, e.g. https://HOST{WELL_KNOWN}"
            )
        try:
            r = httpx.get(url, timeout=timeout_s, headers={"Accept": "application/json"})
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise InputError(f"{url}: cannot fetch the receipt keys: {e}") from None
        if r.status_code != 200:
            raise InputError(f"{url}: cannot fetch the receipt keys: HTTP {r.status_code}")
        try:
            data = r.json()
        except ValueError:
            raise InputError(f"{url}: the receipt keys are not JSON") from None
        return cls.from_jwks(data, url)


def _is_public_key(x: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(unb64url(x))
    except ValueError:
        return False
    return True
