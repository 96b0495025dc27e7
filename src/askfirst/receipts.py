"""Consent receipts: a signed record of one choice, that the member keeps.

A receipt carries the fields of ISO/IEC TS 27560 (consent record information structure),
with purpose and state terms from the W3C Data Privacy Vocabulary, the event's ledger seq
and hash, and the ledger head when it was issued. It is signed with the service's Ed25519
key, which lives in a key folder outside the database, so that a ledger rewritten
wholesale would contradict the receipts members hold.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import select

from askfirst import times
from askfirst.errors import InputError
from askfirst.ledger import Event, EventType, Ledger
from askfirst.ledger.tables import events, subject_state

SCHEMA = "askfirst-receipt/1; ISO/IEC TS 27560:2023"
KEY_FILE = "receipt-signing.ed25519.pem"
STATES = {
    "grant": ("consent given", "dpv:ConsentGiven"),
    "withdraw": ("consent withdrawn", "dpv:ConsentWithdrawn"),
    "object": ("objection", "dpv:ConsentRefused"),
}


class ReceiptKey:
    """The service's Ed25519 signing key, made on first use and kept in ``folder``."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key()
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_b64 = _b64(raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

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
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return cls(key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Decode base64url, accepting only its one canonical spelling (so that a receipt has
    exactly one form: no spare bits set, no padding, no stray characters)."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def canonical(receipt: dict[str, Any]) -> bytes:
    """The bytes that are signed: the receipt without its signature, keys sorted."""
    body = {k: v for k, v in receipt.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def build(ledger: Ledger, event: Event, key: ReceiptKey, *, withdraw_url: str) -> dict[str, Any]:
    """A signed receipt for one choice event."""
    if event.type != EventType.CHOICE or event.purpose is None:
        raise InputError(f"ledger event {event.seq} is not a choice; receipts are for choices")
    purpose = ledger.policy.purpose(event.purpose)
    state, dpv_state = STATES[event.value or "grant"]
    with ledger.engine.connect() as conn:
        jurisdiction = conn.execute(
            select(subject_state.c.jurisdiction).where(subject_state.c.subject_id == event.subject)
        ).scalar()
    head = ledger.head()
    controller = ledger.policy.controller
    receipt: dict[str, Any] = {
        "@context": {"dpv": "https://w3id.org/dpv#"},
        "schemaVersion": SCHEMA,
        "recordId": f"urn:askfirst:ledger:{event.seq}:{event.hash[:16]}",
        "piiPrincipalId": event.subject,
        "piiController": {"name": controller.name, "contact": controller.contact},
        "purposes": [
            {
                "purposeId": purpose.name,
                "purpose": purpose.title,
                "dpv:hasPurpose": purpose.dpv_purpose,
                "piiCategories": list(purpose.categories),
                "recipients": list(purpose.recipients),
                "lawfulBasis": "dpv:Consent"
                if purpose.legal_basis == "consent"
                else (purpose.legal_basis),
            }
        ],
        "jurisdiction": jurisdiction or "unknown",
        "notice": {
            "noticeId": f"{purpose.name}@v{event.notice_version}",
            "version": event.notice_version,
        },
        "event": {
            "eventTime": times.iso(event.recorded_at),
            "eventType": "choice",
            "eventState": state,
            "dpv:hasConsentStatus": dpv_state,
            "actor": event.actor,
            "source": event.source,
        },
        "withdrawalMethod": {
            "description": "One action, as easy as saying yes: the 'No' button on the Data "
            "privacy settings page, or the API call below; it takes effect at once.",
            "url": withdraw_url,
            "api": f"POST /v1/subjects/{event.subject}/choices",
        },
        "ledger": {
            "eventSeq": event.seq,
            "eventHash": event.hash,
            "head": {"seq": head.seq, "hash": head.hash},
        },
    }
    receipt["signature"] = {
        "alg": "Ed25519",
        "keyId": key.key_id,
        "publicKey": key.public_b64,
        "value": _b64(key.private.sign(canonical(receipt))),
    }
    return receipt


def verify(receipt: Any, key: ReceiptKey | None = None, ledger: Ledger | None = None) -> list[str]:
    """Problems with a receipt (empty when it is good).

    With ``key``, the signature must be by that key (not only by the key the receipt
    names); with ``ledger``, the event and the head it names must still be in the ledger.
    """
    if not isinstance(receipt, dict) or not isinstance(receipt.get("signature"), dict):
        return ["not a receipt: no signature"]
    sig = receipt["signature"]
    try:
        public = Ed25519PublicKey.from_public_bytes(_unb64(str(sig.get("publicKey", ""))))
        public.verify(_unb64(str(sig.get("value", ""))), canonical(receipt))
    except (InvalidSignature, ValueError, TypeError):
        return ["the signature does not match the receipt: it was altered or forged"]
    problems: list[str] = []
    if key is not None and sig.get("publicKey") != key.public_b64:
        problems.append(
            f"signed by key {sig.get('keyId')!r}, not by this service's key {key.key_id!r}"
        )
    if ledger is not None:
        problems += _against_ledger(receipt, ledger)
    return problems


def _against_ledger(receipt: dict[str, Any], ledger: Ledger) -> list[str]:
    info = receipt.get("ledger")
    head = info.get("head") if isinstance(info, dict) else None
    if not isinstance(info, dict) or not isinstance(head, dict):
        return ["the receipt names no ledger event and head"]
    problems = []
    with ledger.engine.connect() as conn:
        for what, seq, digest in (
            ("event", info.get("eventSeq"), info.get("eventHash")),
            ("head", head.get("seq"), head.get("hash")),
        ):
            if type(seq) is not int or not 0 < seq < 1 << 63:
                problems.append(f"the receipt names no valid ledger {what} seq")
                continue
            found = conn.execute(select(events.c.hash).where(events.c.seq == seq)).scalar()
            if found != digest:
                problems.append(
                    f"the ledger's {what} at seq {seq} is not the one this receipt holds: "
                    "the ledger was rewritten or cut"
                )
    return problems
