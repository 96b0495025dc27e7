"""Consent receipts: a signed record of one choice, that the member keeps.

A receipt carries the fields of ISO/IEC TS 27560 (consent record information structure),
with purpose and state terms from the W3C Data Privacy Vocabulary, the event's ledger seq
and hash, and the ledger head when it was issued. It is signed with the service's Ed25519
key (see :mod:`askfirst.receipt_keys`) and names that key by its id.

A signature alone proves only that *some* key signed the receipt, so a receipt verifies
only against a trust anchor that says which keys are the service's: the keys the ledger
recorded, the key folder, or the keys the service publishes. Against the ledger, a
receipt must also say what the ledger's event says.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from askfirst import times
from askfirst.errors import InputError
from askfirst.ledger import Event, EventType, Ledger
from askfirst.ledger.tables import events, subject_state
from askfirst.receipt_keys import (
    KEY_FILE,
    WELL_KNOWN,
    KeySet,
    ReceiptKey,
    b64url,
    jwks,
    new_key,
    record_key,
    signing_key,
    unb64url,
)

__all__ = [
    "KEY_FILE",
    "NO_ANCHOR",
    "SIGNATURE_PROBLEM",
    "WELL_KNOWN",
    "KeySet",
    "ReceiptKey",
    "build",
    "canonical",
    "differences",
    "jwks",
    "new_key",
    "record_key",
    "signing_key",
    "verify",
]

SCHEMA = "askfirst-receipt/1; ISO/IEC TS 27560:2023"
STATES = {
    "grant": ("consent given", "dpv:ConsentGiven"),
    "withdraw": ("consent withdrawn", "dpv:ConsentWithdrawn"),
    "object": ("objection", "dpv:ConsentRefused"),
}
SIGNATURE_PROBLEM = "the signature does not match the receipt: it was altered or forged"
NO_ANCHOR = (
    "nothing says which keys are the service's: check a receipt against the ledger, the "
    "service's key folder or the keys it publishes at " + WELL_KNOWN
)


# ---- building --------------------------------------------------------------------------


def canonical(receipt: dict[str, Any]) -> bytes:
    """The bytes that are signed: the receipt without its signature, keys sorted."""
    body = {k: v for k, v in receipt.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_id(event: Event) -> str:
    return f"urn:askfirst:ledger:{event.seq}:{event.hash[:16]}"


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
        "recordId": record_id(event),
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
        "value": b64url(key.private.sign(canonical(receipt))),
    }
    return receipt


# ---- verifying -------------------------------------------------------------------------


def verify(receipt: Any, anchors: Sequence[KeySet] = (), ledger: Ledger | None = None) -> list[str]:
    """Problems with a receipt (empty when it is good).

    The signature must match, and be by a key that every anchor knows (``ledger``, when
    given, is one: the keys it recorded); with no anchor at all, the answer is
    :data:`NO_ANCHOR`. With ``ledger``, the event the receipt names must still be in the
    ledger, unchanged, and say what the receipt says, and so must the head it names.
    """
    if not isinstance(receipt, dict) or not isinstance(receipt.get("signature"), dict):
        return ["not a receipt: no signature"]
    sig = receipt["signature"]
    try:
        public = Ed25519PublicKey.from_public_bytes(unb64url(str(sig.get("publicKey", ""))))
        public.verify(unb64url(str(sig.get("value", ""))), canonical(receipt))
    except (InvalidSignature, ValueError, TypeError):
        return [SIGNATURE_PROBLEM]
    trusted = [*anchors, *([KeySet.from_ledger(ledger)] if ledger is not None else [])]
    if not trusted:
        return [NO_ANCHOR]
    kid = sig.get("keyId")
    problems: list[str] = []
    for anchor in trusted:
        known = anchor.keys.get(kid) if isinstance(kid, str) else None
        if known is None:
            problems.append(
                f"signed by key {_plain(kid)!r}, which {anchor.source} does not know: not a "
                f"key of this service (its keys: {', '.join(anchor.keys) or 'none'})"
            )
        elif known != sig.get("publicKey"):
            problems.append(
                f"key {kid!r} in {anchor.source} is not the key that signed this receipt"
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
            row = conn.execute(select(events).where(events.c.seq == seq)).first()
            if row is None or row.hash != digest:
                problems.append(
                    f"the ledger's {what} at seq {seq} is not the one this receipt holds: "
                    "the ledger was rewritten or cut"
                )
            if what == "event" and row is not None:
                problems += differences(receipt, Event.from_row(row))
    return problems


def differences(receipt: dict[str, Any], event: Event) -> list[str]:
    """What ``receipt`` says that ledger event ``event`` does not, one line each
    ("the ledger's event 12 is a withdraw, the receipt says grant")."""
    n = event.seq
    if event.type != EventType.CHOICE:
        return [f"the ledger's event {n} is a {event.type} event, the receipt says a choice"]
    said = _what_it_says(receipt)
    out = []
    want = STATES.get(event.value or "")
    if (said["state"], said["dpv_state"]) != want:
        odd = said["state"] if want is None or said["state"] != want[0] else said["dpv_state"]
        theirs = _action(odd) or _plain(odd)
        out.append(f"the ledger's event {n} is a {event.value}, the receipt says {theirs}")
    checks: list[tuple[str, Any, Any]] = [
        ("is about", event.subject, said["subject"]),
        ("is for purpose", event.purpose, said["purpose"]),
        ("is under notice version", event.notice_version, said["notice_version"]),
        ("was recorded at", times.iso(event.recorded_at), said["time"]),
        ("was made by", event.actor, said["actor"]),
    ]
    for phrase, ours, theirs in checks:
        if ours != theirs or type(ours) is not type(theirs):
            out.append(f"the ledger's event {n} {phrase} {ours}, the receipt says {_plain(theirs)}")
    notice_id = f"{event.purpose}@v{event.notice_version}"
    same_version = said["notice_version"] == event.notice_version  # else named above
    if same_version and said["notice_id"] != notice_id:
        out.append(
            f"the ledger's event {n} is under notice {notice_id}, the receipt says "
            f"{_plain(said['notice_id'])}"
        )
    return out


def _action(words: Any) -> str | None:
    return _ACTION_OF.get(words) if isinstance(words, str) else None


def _plain(value: Any, limit: int = 80) -> str:
    """A value from a receipt, for a message: as it reads when it is text or a number."""
    plain = isinstance(value, str | int) and not isinstance(value, bool)
    text = str(value) if plain else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_ACTION_OF = {words: action for action, pair in STATES.items() for words in pair}


def _what_it_says(receipt: dict[str, Any]) -> dict[str, Any]:
    def part(name: str) -> dict[str, Any]:
        value = receipt.get(name)
        return value if isinstance(value, dict) else {}

    purposes = receipt.get("purposes")
    first = purposes[0] if isinstance(purposes, list) and purposes else {}
    first = first if isinstance(first, dict) else {}
    event, notice = part("event"), part("notice")

    return {
        "state": event.get("eventState"),
        "dpv_state": event.get("dpv:hasConsentStatus"),
        "subject": receipt.get("piiPrincipalId"),
        "purpose": first.get("purposeId"),
        "notice_version": notice.get("version"),
        "notice_id": notice.get("noticeId"),
        "time": event.get("eventTime"),
        "actor": event.get("actor"),
    }
