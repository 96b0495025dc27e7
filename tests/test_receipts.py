"""Consent receipts: what a member holds, signed by the service, checked later.

Receipts are built from a real ledger on SQLite and again on PostgreSQL (the ``ledger``
fixture). A good receipt verifies; any single change to what it says breaks the
signature; a receipt signed by someone else's key is refused when the service's key is
given; and a ledger rewritten wholesale (every hash redone, the head moved), which its
own verification cannot catch without a head kept elsewhere, contradicts the receipts
members hold.
"""

from __future__ import annotations

import base64
import copy
import json
import stat
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from askfirst import Ledger, NewEvent, SubjectIn, load_policy, open_ledger, times
from askfirst.decisions import decide, decide_many
from askfirst.errors import InputError
from askfirst.ledger import Event, EventType
from askfirst.ledger.events import GENESIS, event_hash
from askfirst.receipts import (
    KEY_FILE,
    NO_ANCHOR,
    SIGNATURE_PROBLEM,
    KeySet,
    ReceiptKey,
    build,
    canonical,
    jwks,
    new_key,
    record_key,
    signing_key,
    verify,
)
from conftest import fresh_pg_url

GENAI = "genai-training"
WITHDRAW_URL = "https://platform.example/settings/data-privacy"


def choice(subject: str, action: str, *, actor: str | None = None) -> NewEvent:
    return NewEvent(
        type="choice",
        subject=subject,
        actor=actor or subject,
        source="test",
        purpose=GENAI,
        value=action,
    )


def setup_members(ledger: Ledger) -> None:
    ledger.register(
        [
            SubjectIn(id="m1", jurisdiction="DE", handle="anna"),
            SubjectIn(id="m2", jurisdiction="US-CA", handle="jo"),
        ]
    )


@pytest.fixture
def key(tmp_path: Path) -> ReceiptKey:
    return ReceiptKey.load(tmp_path / "keys")


def trusting(*keys: ReceiptKey) -> list[KeySet]:
    """An anchor that vouches for ``keys`` (as the service's key folder would)."""
    return [KeySet.of(keys)]


def as_held(receipt: dict[str, Any]) -> dict[str, Any]:
    """The receipt as a member holds it: a JSON file read back."""
    data: dict[str, Any] = json.loads(json.dumps(receipt, ensure_ascii=False))
    return data


# ---- what a receipt says ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "state", "dpv_state"),
    [
        ("grant", "consent given", "dpv:ConsentGiven"),
        ("withdraw", "consent withdrawn", "dpv:ConsentWithdrawn"),
    ],
)
def test_receipt_carries_the_27560_fields_dpv_terms_and_ledger_position(
    ledger: Ledger, key: ReceiptKey, action: str, state: str, dpv_state: str
) -> None:
    setup_members(ledger)
    record_key(ledger, key)
    if action == "withdraw":
        ledger.append(choice("m1", "grant"))
    ev = ledger.append(choice("m1", action))
    later = ledger.append(choice("m2", "grant"))  # the head moves on before the receipt
    purpose = ledger.policy.purpose(GENAI)

    receipt = as_held(build(ledger, ev, key, withdraw_url=WITHDRAW_URL))

    assert receipt["@context"]["dpv"] == "https://w3id.org/dpv#"
    assert "27560" in receipt["schemaVersion"]
    assert str(ev.seq) in receipt["recordId"] and ev.hash[:16] in receipt["recordId"]
    assert receipt["piiPrincipalId"] == "m1"
    assert receipt["piiController"] == {
        "name": ledger.policy.controller.name,
        "contact": ledger.policy.controller.contact,
    }
    [p] = receipt["purposes"]
    assert p["purposeId"] == GENAI
    assert p["purpose"] == purpose.title
    assert p["dpv:hasPurpose"] == "dpv:ResearchAndDevelopment"
    assert p["piiCategories"] == list(purpose.categories)
    assert {"profile", "post", "comment"} <= set(p["piiCategories"])
    assert p["recipients"] == list(purpose.recipients)
    assert p["lawfulBasis"] == "dpv:Consent"
    assert receipt["jurisdiction"] == "DE"
    assert ev.notice_version == purpose.version
    assert receipt["notice"]["version"] == ev.notice_version
    assert receipt["notice"]["noticeId"] == f"{GENAI}@v{purpose.version}"
    assert receipt["event"]["eventTime"] == times.iso(ev.recorded_at)
    assert receipt["event"]["eventType"] == "choice"
    assert receipt["event"]["eventState"] == state
    assert receipt["event"]["dpv:hasConsentStatus"] == dpv_state
    assert receipt["event"]["actor"] == "m1"
    assert receipt["withdrawalMethod"]["url"] == WITHDRAW_URL
    assert receipt["withdrawalMethod"]["api"] == "POST /v1/subjects/m1/choices"
    assert receipt["withdrawalMethod"]["description"]
    assert receipt["ledger"] == {
        "eventSeq": ev.seq,
        "eventHash": ev.hash,
        "head": {"seq": later.seq, "hash": later.hash},
    }
    assert ledger.head().seq == later.seq
    sig = receipt["signature"]
    assert sig["alg"] == "Ed25519"
    assert sig["publicKey"] == key.public_b64
    assert sig["keyId"] == key.key_id

    assert verify(receipt) == [NO_ANCHOR]  # well signed, but by whom?
    assert verify(receipt, trusting(key)) == []
    assert verify(receipt, ledger=ledger) == []
    assert verify(receipt, trusting(key), ledger) == []


def test_receipt_for_a_staff_withdrawal_names_the_staff_actor(
    ledger: Ledger, key: ReceiptKey
) -> None:
    setup_members(ledger)
    record_key(ledger, key)
    ledger.append(choice("m2", "grant"))
    ev = ledger.append(choice("m2", "withdraw", actor="staff:support"))
    receipt = build(ledger, ev, key, withdraw_url=WITHDRAW_URL)
    assert receipt["event"]["actor"] == "staff:support"
    assert receipt["event"]["dpv:hasConsentStatus"] == "dpv:ConsentWithdrawn"
    assert receipt["jurisdiction"] == "US-CA"
    assert verify(receipt, trusting(key), ledger) == []


def test_a_non_choice_event_gets_no_receipt(ledger: Ledger, key: ReceiptKey) -> None:
    setup_members(ledger)
    registered = ledger.events(limit=1)[0]
    assert registered.type == "subject"
    with pytest.raises(InputError, match="not a choice"):
        build(ledger, registered, key, withdraw_url=WITHDRAW_URL)
    gpc = ledger.append(NewEvent(type="gpc", subject="m1", actor="m1", source="test", value="1"))
    with pytest.raises(InputError, match="not a choice"):
        build(ledger, gpc, key, withdraw_url=WITHDRAW_URL)


# ---- tampering and forgery ------------------------------------------------------------


def issue(ledger: Ledger, key: ReceiptKey) -> tuple[Event, dict[str, Any]]:
    """m1's grant, then m2's, and the receipt for m1's grant as m1 holds it."""
    setup_members(ledger)
    record_key(ledger, key)
    ev = ledger.append(choice("m1", "grant"))
    ledger.append(choice("m2", "grant"))
    return ev, as_held(build(ledger, ev, key, withdraw_url=WITHDRAW_URL))


@pytest.fixture
def issued(ledger: Ledger, key: ReceiptKey) -> tuple[Ledger, Event, dict[str, Any]]:
    ev, receipt = issue(ledger, key)
    return ledger, ev, receipt


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def held(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ReceiptKey, dict[str, Any]]]:
    """One receipt per database for the many tampering cases (which need no ledger)."""
    folder = tmp_path_factory.mktemp("held")
    key = ReceiptKey.load(folder / "keys")
    if request.param == "sqlite":
        url, drop = f"sqlite:///{folder / 'ledger.db'}", None
    else:
        admin = request.getfixturevalue("pg_admin")
        url, drop = fresh_pg_url(admin)
    with open_ledger(url, load_policy(), create=True) as ledger:
        _, receipt = issue(ledger, key)
    yield key, receipt
    if drop is not None:
        with request.getfixturevalue("pg_admin").begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {drop} CASCADE")


def _altered(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        # The first character: the last one of a base64 string may carry only padding bits.
        return ("0" if value[:1] != "0" else "1") + value[1:]
    if isinstance(value, list):
        return value[:-1]
    raise AssertionError(f"no way to alter {value!r}")


TAMPERED_PATHS: list[tuple[str | int, ...]] = [
    ("piiPrincipalId",),
    ("recordId",),
    ("jurisdiction",),
    ("schemaVersion",),
    ("piiController", "name"),
    ("purposes", 0, "purposeId"),
    ("purposes", 0, "dpv:hasPurpose"),
    ("purposes", 0, "piiCategories"),
    ("purposes", 0, "lawfulBasis"),
    ("notice", "version"),
    ("event", "eventTime"),
    ("event", "eventState"),
    ("event", "dpv:hasConsentStatus"),
    ("withdrawalMethod", "url"),
    ("ledger", "eventSeq"),
    ("ledger", "eventHash"),
    ("ledger", "head", "seq"),
    ("ledger", "head", "hash"),
    ("signature", "value"),
    ("signature", "publicKey"),
]


@pytest.mark.parametrize(
    "path", TAMPERED_PATHS, ids=["/".join(map(str, p)) for p in TAMPERED_PATHS]
)
def test_altering_any_field_breaks_the_signature(
    held: tuple[ReceiptKey, dict[str, Any]], path: tuple[str | int, ...]
) -> None:
    key, receipt = held
    tampered = copy.deepcopy(receipt)
    node: Any = tampered
    for step in path[:-1]:
        node = node[step]
    before = node[path[-1]]
    node[path[-1]] = _altered(before)
    assert node[path[-1]] != before

    assert verify(tampered) == [SIGNATURE_PROBLEM]
    assert verify(tampered, trusting(key)) == [SIGNATURE_PROBLEM]
    assert verify(receipt, trusting(key)) == []  # the original is untouched and still good


def test_adding_or_removing_a_field_breaks_the_signature(
    held: tuple[ReceiptKey, dict[str, Any]],
) -> None:
    _, receipt = held
    added = copy.deepcopy(receipt)
    added["event"]["note"] = "the member agreed to everything"
    removed = copy.deepcopy(receipt)
    del removed["withdrawalMethod"]
    assert verify(added) == [SIGNATURE_PROBLEM]
    assert verify(removed) == [SIGNATURE_PROBLEM]


@pytest.mark.parametrize("not_a_receipt", [None, [], "receipt", {}, {"signature": "abc"}], ids=repr)
def test_what_is_not_a_receipt_is_reported(not_a_receipt: Any) -> None:
    assert verify(not_a_receipt) == ["not a receipt: no signature"]


def test_a_receipt_signed_by_another_key_fails_against_the_service_key(
    issued: tuple[Ledger, Event, dict[str, Any]], key: ReceiptKey, tmp_path: Path
) -> None:
    ledger, ev, _ = issued
    other = ReceiptKey.load(tmp_path / "someone-else")
    assert other.public_b64 != key.public_b64
    forged = as_held(build(ledger, ev, other, withdraw_url=WITHDRAW_URL))

    assert verify(forged, trusting(other)) == []  # consistent in itself
    for anchor in (trusting(key), [KeySet.from_ledger(ledger)]):
        problems = verify(forged, anchor)
        assert len(problems) == 1, problems
        assert f"signed by key '{other.key_id}', which" in problems[0]
        assert "does not know: not a key of this service" in problems[0]
        assert key.key_id in problems[0]  # the keys it does know
    assert len(verify(forged, ledger=ledger)) == 1

    # Claiming the service's public key while signed by another one is no better.
    claimed = copy.deepcopy(forged)
    claimed["signature"]["publicKey"] = key.public_b64
    claimed["signature"]["keyId"] = key.key_id
    assert verify(claimed, trusting(key)) == [SIGNATURE_PROBLEM]

    # Naming the service's key id beside one's own public key is no better either.
    named = copy.deepcopy(forged)
    named["signature"]["keyId"] = key.key_id
    named["signature"]["value"] = (
        base64.urlsafe_b64encode(other.private.sign(canonical(named))).rstrip(b"=").decode()
    )
    assert verify(named, trusting(other)) != []  # (the other key's own id is not this one)
    problems = verify(named, ledger=ledger)
    assert problems == [f"key {key.key_id!r} in the ledger is not the key that signed this receipt"]


# ---- a ledger rewritten wholesale ------------------------------------------------------


def rewrite_from(ledger: Ledger, start: int, sql: str) -> None:
    """Change an early event, recompute every hash from ``start`` on, move the head."""
    with ledger.engine.begin() as conn:
        conn.execute(sa.text(sql))
    evs = ledger.events(limit=10_000)
    prev = evs[start - 2].hash if start > 1 else GENESIS
    with ledger.engine.begin() as conn:
        for e in evs[start - 1 :]:
            digest = event_hash(*astuple(e)[:-2], prev)
            conn.execute(
                sa.text("UPDATE events SET prev_hash = :p, hash = :h WHERE seq = :s"),
                {"p": prev, "h": digest, "s": e.seq},
            )
            prev = digest
        last = evs[-1]
        conn.execute(
            sa.text("UPDATE ledger_head SET seq = :s, hash = :h, recorded_at = :t"),
            {"s": last.seq, "h": prev, "t": last.recorded_at},
        )


def test_a_wholesale_rewrite_contradicts_the_receipt(
    issued: tuple[Ledger, Event, dict[str, Any]], key: ReceiptKey
) -> None:
    ledger, ev, receipt = issued
    old_head = ledger.head()
    assert verify(receipt, trusting(key), ledger) == []

    # The source of event 1 (m1's registration) is changed; every later hash is redone.
    rewrite_from(ledger, 1, "UPDATE events SET source = 'rewritten' WHERE seq = 1")

    assert ledger.head().seq == old_head.seq and ledger.head().hash != old_head.hash
    assert ledger.events(after=ev.seq - 1, limit=1)[0].hash != ev.hash
    # Without a head kept elsewhere, the ledger's own check cannot tell ...
    assert ledger.verify().ok
    # ... but the receipt the member holds can.
    assert verify(receipt, trusting(key)) == []  # still well signed
    problems = verify(receipt, trusting(key), ledger)
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"the ledger's event at seq {ev.seq} is not the one")
    assert problems[1].startswith(f"the ledger's head at seq {old_head.seq} is not the one")
    assert all("rewritten or cut" in p for p in problems)


def test_a_cut_ledger_contradicts_the_receipt(
    issued: tuple[Ledger, Event, dict[str, Any]], key: ReceiptKey
) -> None:
    ledger, ev, receipt = issued
    head = ledger.head()
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM events WHERE seq = :s"), {"s": head.seq})
    problems = verify(receipt, trusting(key), ledger)
    assert problems == [
        f"the ledger's head at seq {head.seq} is not the one this receipt holds: "
        "the ledger was rewritten or cut"
    ]
    assert ev.seq != head.seq


# ---- the signing key --------------------------------------------------------------------


def test_signing_key_is_made_once_with_owner_only_permissions(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    assert not folder.exists()
    first = ReceiptKey.load(folder)
    path = folder / KEY_FILE
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()
    assert [p.name for p in folder.iterdir()] == [KEY_FILE]

    again = ReceiptKey.load(folder)
    assert again.public_b64 == first.public_b64
    assert again.key_id == first.key_id
    assert ReceiptKey.load(folder, create=False).public_b64 == first.public_b64
    assert ReceiptKey.load(tmp_path / "other").public_b64 != first.public_b64


def test_a_receipt_outlives_a_restart(ledger: Ledger, tmp_path: Path) -> None:
    """Signed with the key as first loaded, verified with the key loaded again."""
    setup_members(ledger)
    record_key(ledger, ReceiptKey.load(tmp_path / "k"))
    ev = ledger.append(choice("m1", "grant"))
    receipt = as_held(build(ledger, ev, ReceiptKey.load(tmp_path / "k"), withdraw_url="u"))
    assert verify(receipt, [KeySet.from_folder(tmp_path / "k")], ledger) == []


def test_missing_or_broken_key_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no receipt signing key"):
        ReceiptKey.load(tmp_path / "empty", create=False)
    assert not (tmp_path / "empty" / KEY_FILE).exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / KEY_FILE).write_text("not a key\n")
    with pytest.raises(InputError, match="not an Ed25519 private key"):
        ReceiptKey.load(broken)
    assert (broken / KEY_FILE).read_text() == "not a key\n"  # not replaced behind our back


def _loose(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _same_bytes_other_text(b64: str) -> str:
    """The same bytes in base64url, written differently (other unused bits at the end)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for c in alphabet:
        variant = b64[:-1] + c
        if variant != b64 and _loose(variant) == _loose(b64):
            return variant
    raise AssertionError("no other spelling")


def test_the_service_key_spelt_differently_is_not_called_another_key(
    held: tuple[ReceiptKey, dict[str, Any]],
) -> None:
    key, receipt = held
    respelt = copy.deepcopy(receipt)
    respelt["signature"]["publicKey"] = _same_bytes_other_text(key.public_b64)
    # Either accepted (it is the same key) or refused as not canonical; never "another key".
    assert verify(respelt, trusting(key)) in ([], [SIGNATURE_PROBLEM])


# ---- trust anchors: which keys are the service's ---------------------------------------


def resigned(receipt: dict[str, Any], key: ReceiptKey, change: Any) -> dict[str, Any]:
    """``receipt`` altered by ``change`` and signed again, properly, with ``key``."""
    altered = copy.deepcopy(receipt)
    change(altered)
    altered["signature"] = {
        "alg": "Ed25519",
        "keyId": key.key_id,
        "publicKey": key.public_b64,
        "value": base64.urlsafe_b64encode(key.private.sign(canonical(altered)))
        .rstrip(b"=")
        .decode(),
    }
    return altered


def withdrawn(r: dict[str, Any]) -> None:
    r["event"]["eventState"] = "consent withdrawn"
    r["event"]["dpv:hasConsentStatus"] = "dpv:ConsentWithdrawn"


def given(r: dict[str, Any]) -> None:
    r["event"]["eventState"] = "consent given"
    r["event"]["dpv:hasConsentStatus"] = "dpv:ConsentGiven"


def test_a_receipt_altered_and_signed_with_a_foreign_key_is_refused(
    issued: tuple[Ledger, Event, dict[str, Any]], key: ReceiptKey, tmp_path: Path
) -> None:
    ledger, ev, receipt = issued
    forger = ReceiptKey.load(tmp_path / "forger")
    forged = resigned(receipt, forger, withdrawn)
    assert verify(forged, [KeySet.of([forger])]) == []  # it is a perfectly good signature ...

    # ... by a key that neither the ledger nor the service's key folder knows.
    by_ledger = verify(forged, ledger=ledger)
    assert by_ledger[0].startswith(f"signed by key '{forger.key_id}', which the ledger does not")
    assert f"the ledger's event {ev.seq} is a grant, the receipt says withdraw" in by_ledger
    by_folder = verify(forged, [KeySet.from_folder(tmp_path / "keys")])
    assert by_folder == [
        f"signed by key '{forger.key_id}', which the key folder {tmp_path / 'keys'} does not "
        f"know: not a key of this service (its keys: {key.key_id})"
    ]


@pytest.mark.parametrize("start", ["grant", "withdraw"])
def test_a_receipt_re_signed_with_the_service_key_must_say_what_the_ledger_says(
    ledger: Ledger, key: ReceiptKey, start: str
) -> None:
    """Whoever holds the service's key can sign anything; the ledger's event still says
    what was chosen, and the check names the difference."""
    setup_members(ledger)
    record_key(ledger, key)
    if start == "withdraw":
        ledger.append(choice("m1", "grant"))
    ev = ledger.append(choice("m1", start))
    receipt = as_held(build(ledger, ev, key, withdraw_url=WITHDRAW_URL))
    flipped = resigned(receipt, key, withdrawn if start == "grant" else given)
    other = "withdraw" if start == "grant" else "grant"

    assert verify(flipped, trusting(key)) == []  # signed by the service's own key
    assert verify(flipped, trusting(key), ledger) == [
        f"the ledger's event {ev.seq} is a {start}, the receipt says {other}"
    ]
    assert verify(receipt, trusting(key), ledger) == []


def _set(path: tuple[str | int, ...], value: Any) -> Any:
    def change(r: dict[str, Any]) -> None:
        node: Any = r
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (("piiPrincipalId",), "m2", "is about m1, the receipt says m2"),
        (("purposes", 0, "purposeId"), "third-party-research", "is for purpose genai-training"),
        (("notice", "version"), 2, "is under notice version 1, the receipt says 2"),
        (("notice", "noticeId"), "genai-training@v9", "is under notice genai-training@v1"),
        (("event", "eventTime"), "2020-01-01T00:00:00Z", "the receipt says 2020-01-01T00:00:00Z"),
        (("event", "actor"), "staff:someone", "was made by m1, the receipt says staff:someone"),
        (("event", "eventState"), ["x"], 'is a grant, the receipt says ["x"]'),
        (("event", "dpv:hasConsentStatus"), "dpv:ConsentRefused", "is a grant, the receipt says"),
    ],
    ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_every_field_the_ledger_holds_is_compared_and_named(
    issued: tuple[Ledger, Event, dict[str, Any]],
    key: ReceiptKey,
    path: tuple[str | int, ...],
    value: Any,
    says: str,
) -> None:
    ledger, ev, receipt = issued
    problems = verify(resigned(receipt, key, _set(path, value)), trusting(key), ledger)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"the ledger's event {ev.seq} ") and says in problems[0]


def test_a_receipt_naming_an_event_that_is_no_choice_is_refused(
    issued: tuple[Ledger, Event, dict[str, Any]], key: ReceiptKey
) -> None:
    ledger, _, receipt = issued
    first = ledger.events(limit=1)[0]
    moved = resigned(
        receipt,
        key,
        _set(("ledger",), {**receipt["ledger"], "eventSeq": 1, "eventHash": first.hash}),
    )
    assert verify(moved, trusting(key), ledger) == [
        "the ledger's event 1 is a subject event, the receipt says a choice"
    ]


def test_with_no_anchor_nothing_is_trusted(held: tuple[ReceiptKey, dict[str, Any]]) -> None:
    _, receipt = held
    assert verify(receipt) == [NO_ANCHOR]
    assert verify(receipt, []) == [NO_ANCHOR]
    assert "/.well-known/askfirst-receipt-keys.json" in NO_ANCHOR


def test_keys_rotate_and_old_receipts_still_verify(ledger: Ledger, tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    setup_members(ledger)
    old = signing_key(ledger, folder)
    first = ledger.append(choice("m1", "grant"))
    old_receipt = as_held(build(ledger, first, old, withdraw_url=WITHDRAW_URL))

    new, recorded = new_key(ledger, folder)
    assert new.key_id != old.key_id and recorded is not None
    assert ReceiptKey.load(folder).key_id == new.key_id  # the folder now signs with the new one
    assert not any(b"PRIVATE" in p.read_bytes() for p in folder.glob("receipt-retired.*"))
    second = ledger.append(choice("m1", "withdraw"))
    new_receipt = as_held(build(ledger, second, new, withdraw_url=WITHDRAW_URL))

    published = jwks(ledger)["keys"]
    assert [k["kid"] for k in published] == [new.key_id, old.key_id]  # newest first
    assert published[1] | {"askfirst:recorded": None} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": old.public_b64,
        "kid": old.key_id,
        "use": "sig",
        "alg": "EdDSA",
        "askfirst:recorded": None,
    }
    anchors = [
        KeySet.from_folder(folder),
        KeySet.from_jwks(json.loads(json.dumps(jwks(ledger))), "the published keys"),
    ]
    for r in (old_receipt, new_receipt):
        assert verify(r, anchors, ledger) == []
    # A folder that forgot the old key no longer vouches for it; the ledger still does.
    for retired in folder.glob("receipt-retired.*"):
        retired.unlink()
    assert verify(old_receipt, ledger=ledger) == []
    [problem] = verify(old_receipt, [KeySet.from_folder(folder)])
    assert "does not know" in problem and old.key_id in problem


def test_a_key_is_recorded_once_and_decisions_ignore_it(ledger: Ledger, tmp_path: Path) -> None:
    setup_members(ledger)
    ledger.append(choice("m1", "grant"))

    def decisions() -> list[tuple[bool, str, int | None]]:
        return [
            (d.allowed, d.reason, d.event_seq)
            for d in (decide(ledger, s, GENAI) for s in ("m1", "m2"))
        ]

    before = decisions()
    many_before = decide_many(ledger, GENAI, ["m1", "m2"]).to_pylist()

    key = signing_key(ledger, tmp_path / "keys")
    head = ledger.head()
    assert signing_key(ledger, tmp_path / "keys").key_id == key.key_id
    assert ledger.head() == head  # the second start records nothing
    [event] = [e for e in ledger.events(limit=100) if e.type == EventType.RECEIPT_KEY]
    assert (event.subject, event.actor, event.purpose) == ("system", "system", None)
    assert event.value == f"ed25519:{key.key_id}:{key.public_b64}"

    assert ledger.verify().ok
    assert decisions() == before
    assert decide_many(ledger, GENAI, ["m1", "m2"]).to_pylist() == many_before
    assert decide(ledger, "system", GENAI).reason == "unknown-subject"
    assert decide_many(ledger, GENAI, at=times.now()).column("subject").to_pylist() == [
        "m1",
        "m2",
    ]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"actor": "m1"}, "may not record a receipt-key event"),
        ({"subject": "m1"}, "its subject is 'system'"),
        ({"value": "ed25519:0000000000000000:" + "A" * 43}, "not a valid value"),
        ({"value": "rsa:whatever"}, "not a valid value"),
        ({"purpose": GENAI}, "takes no purpose"),
    ],
    ids=["member-actor", "member-subject", "wrong-kid", "not-ed25519", "purpose"],
)
def test_only_the_platform_records_a_well_formed_key(
    ledger: Ledger, key: ReceiptKey, change: dict[str, Any], error: str
) -> None:
    setup_members(ledger)
    head = ledger.head()
    fields: dict[str, Any] = {
        "type": "receipt-key",
        "subject": "system",
        "actor": "system",
        "source": "test",
        "value": f"ed25519:{key.key_id}:{key.public_b64}",
    }
    with pytest.raises(InputError, match=error):
        ledger.append(NewEvent(**(fields | change)))
    assert ledger.head() == head


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([], "not a JSON Web Key Set"),
        ({"keys": "x"}, "not a JSON Web Key Set"),
        ({"keys": []}, "lists no Ed25519 receipt keys"),
        ({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]}, "lists no Ed25519 receipt keys"),
        ({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "short"}]}, "valid 'kid'"),
        ({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}]}, "valid 'kid'"),
    ],
    ids=["list", "keys-not-list", "empty", "rsa-only", "bad-x", "no-kid"],
)
def test_a_key_set_that_is_not_one_is_an_input_error(data: Any, error: str) -> None:
    with pytest.raises(InputError, match=error):
        KeySet.from_jwks(data, "https://example.test/keys.json")


def test_a_keys_url_that_cannot_be_used_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="give an http"):
        KeySet.from_url("file:///etc/passwd")
    with pytest.raises(InputError, match="cannot fetch the receipt keys"):
        KeySet.from_url("http://127.0.0.1:9/.well-known/askfirst-receipt-keys.json")
