"""The /v1 HTTP API, in-process: every endpoint's happy path, with the caller it is for.

Members act through their session (API writes carry the session's CSRF token in
X-CSRF-Token); services through bearer tokens with scopes. Each test runs on its own
copy of the demo platform.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from askfirst import accounts, decide, privacy, times
from askfirst.ledger import Ledger, NewEvent

GENAI, RESEARCH = "genai-training", "third-party-research"
ANNA, JO, PRIYA, ACME = "m001", "m101", "m171", "org-acme"  # the demo's sample subjects


def head_seq(app: FastAPI) -> int:
    ledger: Ledger = app.state.ledger
    return ledger.head().seq


def choose(
    client: TestClient, headers: dict[str, str], subject: str, purpose: str, action: str
) -> dict[str, Any]:
    """Make a choice through the API; the event it recorded (or, when the answer was
    already this one, the event it stands on: 200 rather than 201)."""
    r = client.post(
        f"/v1/subjects/{subject}/choices",
        json={"purpose": purpose, "action": action},
        headers=headers,
    )
    assert r.status_code == (201 if r.json().get("changed") else 200), r.text
    return dict(r.json()["event"])


def test_the_sample_subjects_are_the_demos(app: FastAPI) -> None:
    """The ids this file uses are the demo's sample members and company page."""
    ledger: Ledger = app.state.ledger
    for handle, subject in (
        ("anna.keller", ANNA),
        ("jo.rivera", JO),
        ("priya.raman", PRIYA),
        ("acme", ACME),
    ):
        assert privacy.subject_for_handle(ledger, handle) == subject
    assert privacy.managed_by(ledger, ANNA) == [ACME]


# ---- public ----------------------------------------------------------------------------


def test_health_answers_ok_to_anyone(client: TestClient) -> None:
    r = client.get("/v1/health")
    assert r.status_code == 200
    assert r.json() == {"ok": True}


def test_ledger_head_is_public_and_matches_the_ledger(app: FastAPI, client: TestClient) -> None:
    r = client.get("/v1/ledger/head")
    assert r.status_code == 200
    head = app.state.ledger.head()
    body = r.json()
    assert body["seq"] == head.seq > 0
    assert body["hash"] == head.hash
    assert re.fullmatch(r"[0-9a-f]{64}", body["hash"])
    assert body["recorded_at"] is not None


def test_api_answers_are_never_cached(client: TestClient) -> None:
    r = client.get("/v1/ledger/head")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"


# ---- subjects --------------------------------------------------------------------------


def test_admin_token_registers_subjects(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    admin = token(["admin"])
    before = head_seq(app)
    new = [
        {"id": "api-new-1", "jurisdiction": "FR", "handle": "new.one", "names": ["New One"]},
        {"id": "api-new-2", "jurisdiction": "US-TX"},
    ]
    r = client.post("/v1/subjects", json=new, headers=admin.headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["registered"] == 2
    assert body["head"]["seq"] > before
    assert body["head"] == client.get("/v1/ledger/head").json()
    # The new subjects exist: a decision about them is no longer "unknown-subject".
    d = client.get(
        "/v1/decisions/api-new-1", params={"purpose": GENAI}, headers=admin.headers
    ).json()
    assert d["reason"] == "no-consent"
    events = app.state.ledger.subject_events("api-new-1")
    assert {e.actor for e in events} == {f"staff:token:{admin.name}"}


def test_registering_a_subject_twice_is_refused_and_writes_nothing(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    admin = token(["admin"])
    before = head_seq(app)
    r = client.post("/v1/subjects", json=[{"id": "brand-new"}, {"id": ANNA}], headers=admin.headers)
    assert 400 <= r.status_code < 500
    assert ANNA in r.json()["error"]
    assert head_seq(app) == before
    assert not app.state.ledger.subject_exists("brand-new")


def test_member_reads_own_subject(app: FastAPI, signed_in: Callable[..., Any]) -> None:
    anna = signed_in("anna.keller")
    r = anna.get(f"/v1/subjects/{ANNA}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["subject"] == ANNA
    assert body["handle"] == "anna.keller"
    assert body["jurisdiction"] == "DE"
    assert body["regime"] == "opt-in"
    states = {p["name"]: p for p in body["purposes"]}
    assert set(states) == {GENAI, RESEARCH}
    for name, state in states.items():
        d = decide(app.state.ledger, ANNA, name)
        assert (state["allowed"], state["reason"], state["event_seq"]) == (
            d.allowed,
            str(d.reason),
            d.event_seq,
        )


def test_page_admin_reads_the_organization(signed_in: Callable[..., Any]) -> None:
    anna = signed_in("anna.keller")
    r = anna.get(f"/v1/subjects/{ACME}")
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "organization"


def test_member_reads_own_events_paged(app: FastAPI, signed_in: Callable[..., Any]) -> None:
    anna = signed_in("anna.keller")
    r = anna.get(f"/v1/subjects/{ANNA}/events")
    assert r.status_code == 200, r.text
    events = r.json()
    expected = [e.seq for e in app.state.ledger.subject_events(ANNA)]
    assert [e["seq"] for e in events] == expected
    assert all(e["subject"] == ANNA for e in events)
    first_two = anna.get(f"/v1/subjects/{ANNA}/events", params={"limit": 2}).json()
    rest = anna.get(f"/v1/subjects/{ANNA}/events", params={"after": first_two[-1]["seq"]}).json()
    assert [e["seq"] for e in first_two + rest] == expected


def test_events_of_an_unknown_subject_is_404(client: TestClient, token: Callable[..., Any]) -> None:
    r = client.get("/v1/subjects/nobody-here/events", headers=token(["admin"]).headers)
    assert r.status_code == 404
    assert "nobody-here" in r.json()["error"]


# ---- choices ---------------------------------------------------------------------------


def test_member_withdraws_through_the_api_with_the_csrf_header(
    app: FastAPI, signed_in: Callable[..., Any]
) -> None:
    anna = signed_in("anna.keller")
    before = head_seq(app)
    r = anna.post(
        f"/v1/subjects/{ANNA}/choices",
        json={"purpose": GENAI, "action": "withdraw"},
        headers=anna.csrf_header,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    event = body["event"]
    assert event["seq"] == before + 1
    assert (event["type"], event["subject"], event["purpose"], event["value"]) == (
        "choice",
        ANNA,
        GENAI,
        "withdraw",
    )
    assert event["actor"] == ANNA
    assert event["source"] == "api"
    assert body["receipt_url"] == f"/v1/receipts/{event['seq']}"


def test_member_api_write_without_the_csrf_header_is_refused(
    app: FastAPI, signed_in: Callable[..., Any]
) -> None:
    anna = signed_in("anna.keller")
    before = head_seq(app)
    for headers in ({}, {"X-CSRF-Token": "not-the-token"}):
        r = anna.post(
            f"/v1/subjects/{ANNA}/choices",
            json={"purpose": GENAI, "action": "withdraw"},
            headers=headers,
        )
        assert r.status_code == 403, r.text
        assert "CSRF" in r.json()["error"]
    assert head_seq(app) == before


def test_bound_choices_token_grants_for_its_subject(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    write = token(["choices:write"], subject=PRIYA)
    r = client.post(
        f"/v1/subjects/{PRIYA}/choices",
        json={"purpose": RESEARCH, "action": "grant"},
        headers=write.headers,
    )
    assert r.status_code == 201, r.text
    event = r.json()["event"]
    assert event["actor"] == PRIYA
    assert event["value"] == "grant"
    assert app.state.ledger.head().seq == event["seq"]


def test_withdrawing_takes_effect_at_once(
    client: TestClient, signed_in: Callable[..., Any], token: Callable[..., Any]
) -> None:
    anna = signed_in("anna.keller")
    read = token(["decisions:read"])

    def decision() -> dict[str, Any]:
        r = client.get(f"/v1/decisions/{ANNA}", params={"purpose": RESEARCH}, headers=read.headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    granted = choose(anna, anna.csrf_header, ANNA, RESEARCH, "grant")["seq"]
    assert decision() | {"at": None} == {
        "subject": ANNA,
        "purpose": RESEARCH,
        "at": None,
        "allowed": True,
        "reason": "granted",
        "event_seq": granted,
    }
    withdrawn = choose(anna, anna.csrf_header, ANNA, RESEARCH, "withdraw")["seq"]
    now = decision()
    assert (now["allowed"], now["reason"], now["event_seq"]) == (False, "withdrawn", withdrawn)


def test_objecting_is_recorded_and_counts_as_no(
    client: TestClient, token: Callable[..., Any]
) -> None:
    write = token(["choices:write"], subject=ANNA)
    r = client.post(
        f"/v1/subjects/{ANNA}/choices",
        json={"purpose": GENAI, "action": "object"},
        headers=write.headers,
    )
    assert r.status_code == 201, r.text
    d = client.get(f"/v1/decisions/{ANNA}", params={"purpose": GENAI}, headers=write.headers).json()
    assert (d["allowed"], d["reason"]) == (False, "withdrawn")


def test_page_admin_chooses_for_the_organization(
    app: FastAPI, signed_in: Callable[..., Any]
) -> None:
    anna = signed_in("anna.keller")
    r = anna.post(
        f"/v1/subjects/{ACME}/choices",
        json={"purpose": GENAI, "action": "grant"},
        headers=anna.csrf_header,
    )
    assert r.status_code == 201, r.text
    event = r.json()["event"]
    assert (event["subject"], event["actor"]) == (ACME, ANNA)
    d = anna.get(f"/v1/decisions/{ACME}", params={"purpose": GENAI}).json()
    assert (d["allowed"], d["reason"], d["event_seq"]) == (True, "granted", event["seq"])


def test_a_choice_with_an_unknown_action_is_422(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    before = head_seq(app)
    r = client.post(
        f"/v1/subjects/{ANNA}/choices",
        json={"purpose": GENAI, "action": "maybe"},
        headers=token(["choices:write"], subject=ANNA).headers,
    )
    assert r.status_code == 422
    assert r.json()["error"].startswith("body.action")
    assert head_seq(app) == before


# ---- decisions -------------------------------------------------------------------------


def test_decisions_read_token_reads_any_subjects_decision(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    read = token(["decisions:read"])
    ledger: Ledger = app.state.ledger
    # jo.rivera's browser sent GPC (perhaps already in the demo's history); then jo said yes
    # on the settings page, and that yes stands; the same signal seen again adds nothing.
    privacy.note_gpc(ledger, JO)
    assert any(e.type == "gpc" for e in ledger.subject_events(JO))
    granted = choose(client, token(["choices:write"], subject=JO).headers, JO, GENAI, "grant")
    assert privacy.note_gpc(ledger, JO) is None
    r = client.get(f"/v1/decisions/{JO}", params={"purpose": GENAI}, headers=read.headers)
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["subject"], d["purpose"], d["allowed"], d["reason"], d["event_seq"]) == (
        JO,
        GENAI,
        True,
        "granted",
        granted["seq"],
    )
    datetime.fromisoformat(d["at"])
    for subject in (ANNA, PRIYA, ACME):
        r = client.get(f"/v1/decisions/{subject}", params={"purpose": GENAI}, headers=read.headers)
        lib = decide(app.state.ledger, subject, GENAI)
        got = r.json()
        assert (got["allowed"], got["reason"], got["event_seq"]) == (
            lib.allowed,
            str(lib.reason),
            lib.event_seq,
        )


def test_gpc_counts_as_no_through_the_api(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    write = token(["choices:write"], subject=PRIYA)
    choose(client, write.headers, PRIYA, GENAI, "grant")
    ev = app.state.ledger.append(
        NewEvent(type="gpc", subject=PRIYA, actor=PRIYA, source="test", value="1")
    )
    d = client.get(f"/v1/decisions/{PRIYA}", params={"purpose": GENAI}, headers=write.headers)
    assert (d.json()["allowed"], d.json()["reason"], d.json()["event_seq"]) == (
        False,
        "gpc",
        ev.seq,
    )


def test_member_reads_own_decision(signed_in: Callable[..., Any]) -> None:
    priya = signed_in("priya.raman")
    granted = choose(priya, priya.csrf_header, PRIYA, RESEARCH, "grant")
    r = priya.get(f"/v1/decisions/{PRIYA}", params={"purpose": RESEARCH})
    assert r.status_code == 200, r.text
    assert (r.json()["allowed"], r.json()["reason"], r.json()["event_seq"]) == (
        True,
        "granted",
        granted["seq"],
    )


def test_decision_at_a_past_time_ignores_later_choices(
    client: TestClient, token: Callable[..., Any]
) -> None:
    write = token(["choices:write"], subject=ANNA)
    granted = choose(client, write.headers, ANNA, GENAI, "grant")
    choose(client, write.headers, ANNA, GENAI, "withdraw")
    then = client.get(
        f"/v1/decisions/{ANNA}",
        params={"purpose": GENAI, "at": granted["recorded_at"]},
        headers=write.headers,
    ).json()
    assert (then["allowed"], then["reason"], then["event_seq"]) == (True, "granted", granted["seq"])
    assert datetime.fromisoformat(then["at"]) == datetime.fromisoformat(granted["recorded_at"])
    now = client.get(
        f"/v1/decisions/{ANNA}", params={"purpose": GENAI}, headers=write.headers
    ).json()
    assert now["reason"] == "withdrawn"


def test_unknown_subject_is_a_no_with_its_reason(
    client: TestClient, token: Callable[..., Any]
) -> None:
    r = client.get(
        "/v1/decisions/nobody-at-all",
        params={"purpose": GENAI},
        headers=token(["decisions:read"]).headers,
    )
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["allowed"], d["reason"], d["event_seq"]) == (False, "unknown-subject", None)


@pytest.mark.parametrize(
    "at",
    ["yesterday", "2026-13-01T00:00:00Z", "2026-03-01T12:00:00"],
    ids=["words", "no-such-month", "no-time-zone"],
)
def test_a_bad_at_is_400_naming_it(client: TestClient, token: Callable[..., Any], at: str) -> None:
    r = client.get(
        f"/v1/decisions/{ANNA}",
        params={"purpose": GENAI, "at": at},
        headers=token(["decisions:read"]).headers,
    )
    assert r.status_code == 400, r.text  # the schema holds (a string); the time does not
    assert r.json()["error"].startswith("at: ")


def test_unknown_purpose_is_404_naming_it(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    read = token(["decisions:read"])
    write = token(["choices:write"], subject=ANNA)
    before = head_seq(app)
    answers = [
        client.get(
            f"/v1/decisions/{ANNA}", params={"purpose": "face-recognition"}, headers=read.headers
        ),
        client.post(
            "/v1/decisions/batch",
            json={"purpose": "face-recognition", "subjects": [ANNA]},
            headers=read.headers,
        ),
        client.post(
            f"/v1/subjects/{ANNA}/choices",
            json={"purpose": "face-recognition", "action": "grant"},
            headers=write.headers,
        ),
    ]
    for r in answers:
        assert r.status_code == 404, (r.request.url, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert "face-recognition" in r.json()["error"]
        assert GENAI in r.json()["error"]  # and says which purposes there are
    assert head_seq(app) == before


def test_batch_decides_for_ten_thousand_subjects(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    read = token(["decisions:read"])
    known = [ANNA, JO, PRIYA, ACME]
    subjects = known + [f"unknown-{i}" for i in range(10_000 - len(known))]
    r = client.post(
        "/v1/decisions/batch",
        json={"purpose": GENAI, "subjects": subjects},
        headers=read.headers,
    )
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["purpose"] == GENAI
    rows = {d["subject"]: d for d in body["decisions"]}
    assert len(body["decisions"]) == 10_000
    assert set(rows) == set(subjects)
    assert all(rows[s]["reason"] == "unknown-subject" for s in subjects[len(known) :])
    # Each matches the single decision.
    for s in known:
        one = client.get(f"/v1/decisions/{s}", params={"purpose": GENAI}, headers=read.headers)
        single = one.json()
        assert (rows[s]["allowed"], rows[s]["reason"], rows[s]["event_seq"]) == (
            single["allowed"],
            single["reason"],
            single["event_seq"],
        ), s


def test_batch_over_ten_thousand_is_422_naming_the_field(
    client: TestClient, token: Callable[..., Any]
) -> None:
    r = client.post(
        "/v1/decisions/batch",
        json={"purpose": GENAI, "subjects": [f"s{i}" for i in range(10_001)]},
        headers=token(["decisions:read"]).headers,
    )
    assert r.status_code == 422
    assert r.json()["error"].startswith("body.subjects:")
    assert "10000" in r.json()["error"]


def test_batch_at_a_past_time(client: TestClient, token: Callable[..., Any]) -> None:
    write = token(["choices:write"], subject=ANNA)
    read = token(["decisions:read"])
    granted = choose(client, write.headers, ANNA, GENAI, "grant")
    choose(client, write.headers, ANNA, GENAI, "withdraw")
    r = client.post(
        "/v1/decisions/batch",
        json={"purpose": GENAI, "subjects": [ANNA], "at": granted["recorded_at"]},
        headers=read.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["decisions"] == [
        {"subject": ANNA, "allowed": True, "reason": "granted", "event_seq": granted["seq"]}
    ]
    assert datetime.fromisoformat(r.json()["at"]) == datetime.fromisoformat(granted["recorded_at"])
    naive = client.post(
        "/v1/decisions/batch",
        json={"purpose": GENAI, "subjects": [ANNA], "at": "2026-01-01T00:00:00"},
        headers=read.headers,
    )
    assert naive.status_code == 400
    assert naive.json()["error"].startswith("at: ")


# ---- events ----------------------------------------------------------------------------


def test_admin_lists_events_paged(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    admin = token(["admin"])
    page = client.get("/v1/events", params={"limit": 5}, headers=admin.headers)
    assert page.status_code == 200, page.text
    assert [e["seq"] for e in page.json()] == [1, 2, 3, 4, 5]
    nxt = client.get("/v1/events", params={"after": 5, "limit": 3}, headers=admin.headers).json()
    assert [e["seq"] for e in nxt] == [6, 7, 8]
    # The chain is visible: each event names the hash of the one before.
    assert nxt[0]["prev_hash"] == page.json()[-1]["hash"]
    head = app.state.ledger.head()
    last = client.get("/v1/events", params={"after": head.seq - 1}, headers=admin.headers).json()
    assert [(e["seq"], e["hash"]) for e in last] == [(head.seq, head.hash)]


def test_staff_session_lists_events(signed_in: Callable[..., Any]) -> None:
    staff = signed_in("staff")
    r = staff.get("/v1/events", params={"limit": 1})
    assert r.status_code == 200, r.text
    assert r.json()[0]["seq"] == 1


# ---- receipts --------------------------------------------------------------------------


def _own_receipt(anna: TestClient) -> dict[str, Any]:
    made = anna.post(
        f"/v1/subjects/{ANNA}/choices",
        json={"purpose": GENAI, "action": "withdraw"},
        headers=anna.csrf_header,  # type: ignore[attr-defined]
    )
    assert made.status_code == 201, made.text
    r = anna.get(made.json()["receipt_url"])
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_member_gets_a_receipt_that_verifies(
    app: FastAPI, client: TestClient, signed_in: Callable[..., Any]
) -> None:
    anna = signed_in("anna.keller")
    receipt = _own_receipt(anna)
    head = app.state.ledger.head()
    assert receipt["piiPrincipalId"] == ANNA
    assert receipt["purposes"][0]["purposeId"] == GENAI
    assert receipt["event"]["dpv:hasConsentStatus"] == "dpv:ConsentWithdrawn"
    assert receipt["jurisdiction"] == "DE"
    assert receipt["ledger"]["eventSeq"] == head.seq
    assert receipt["ledger"]["eventHash"] == head.hash
    assert receipt["signature"]["alg"] == "Ed25519"
    # Anyone holding the receipt may check it.
    r = client.post("/v1/receipts/verify", json=receipt)
    assert r.status_code == 200, r.text
    assert r.json() == {"valid": True, "problems": []}


@pytest.mark.parametrize(
    "change",
    [
        ("event", "dpv:hasConsentStatus", "dpv:ConsentGiven"),
        ("piiPrincipalId", None, "m002"),
        ("ledger", "eventSeq", 1),
    ],
    ids=["state", "subject", "seq"],
)
def test_a_receipt_with_one_field_changed_is_invalid(
    client: TestClient, signed_in: Callable[..., Any], change: tuple[str, str | None, Any]
) -> None:
    anna = signed_in("anna.keller")
    receipt = _own_receipt(anna)
    forged = copy.deepcopy(receipt)
    top, inner, value = change
    if inner is None:
        forged[top] = value
    else:
        forged[top][inner] = value
    r = client.post("/v1/receipts/verify", json=forged)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is False
    assert any("signature" in p for p in body["problems"]), body


def test_a_receipt_from_another_service_key_is_invalid(
    app: FastAPI, client: TestClient, signed_in: Callable[..., Any], tmp_path: Any
) -> None:
    from askfirst import receipts
    from askfirst.receipts import ReceiptKey

    anna = signed_in("anna.keller")
    original = _own_receipt(anna)
    other_key = ReceiptKey.load(tmp_path / "other-keys")
    ledger: Ledger = app.state.ledger
    event = ledger.events(after=original["ledger"]["eventSeq"] - 1, limit=1)[0]
    forged = receipts.build(ledger, event, other_key, withdraw_url="http://x/")
    r = client.post("/v1/receipts/verify", json=forged)
    assert r.status_code == 200
    assert r.json()["valid"] is False
    assert any("key" in p for p in r.json()["problems"])


def test_receipt_for_an_event_that_does_not_exist_is_404(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    admin = token(["admin"])
    missing = head_seq(app) + 10
    for seq in (missing, 0, -1):
        r = client.get(f"/v1/receipts/{seq}", headers=admin.headers)
        assert r.status_code == 404, (seq, r.text)
        assert "error" in r.json()


def test_receipt_for_an_event_that_is_not_a_choice_is_a_client_error(
    client: TestClient, token: Callable[..., Any]
) -> None:
    r = client.get("/v1/receipts/1", headers=token(["admin"]).headers)  # seq 1: a subject event
    assert r.status_code in (400, 404)
    assert "not a choice" in r.json()["error"]


def test_bound_token_gets_its_subjects_receipt(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    write = token(["choices:write"], subject=PRIYA)
    seq = choose(client, write.headers, PRIYA, RESEARCH, "grant")["seq"]
    r = client.get(f"/v1/receipts/{seq}", headers=write.headers)
    assert r.status_code == 200, r.text
    assert r.json()["piiPrincipalId"] == PRIYA
    verdict = client.post("/v1/receipts/verify", json=r.json()).json()
    assert verdict == {"valid": True, "problems": []}


# ---- tokens ----------------------------------------------------------------------------


def test_revoked_token_is_401(app: FastAPI, client: TestClient, token: Callable[..., Any]) -> None:
    read = token(["decisions:read"])
    url, params = f"/v1/decisions/{ANNA}", {"purpose": GENAI}
    assert client.get(url, params=params, headers=read.headers).status_code == 200
    accounts.revoke_token(app.state.ledger, read.name)
    r = client.get(url, params=params, headers=read.headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "revoked" in r.json()["error"]


@pytest.mark.parametrize(
    "authorization",
    ["Bearer afk_not-a-real-token", "Bearer ", "Basic YWRtaW46YWRtaW4=", "afk_x"],
)
def test_unknown_or_malformed_credentials_are_401(
    app: FastAPI, client: TestClient, authorization: str
) -> None:
    before = head_seq(app)
    r = client.post(
        f"/v1/subjects/{ANNA}/choices",
        json={"purpose": GENAI, "action": "withdraw"},
        headers={"Authorization": authorization},
    )
    assert r.status_code == 401
    assert head_seq(app) == before


def test_times_in_answers_are_iso_with_a_zone(
    client: TestClient, token: Callable[..., Any]
) -> None:
    d = client.get(
        f"/v1/decisions/{ANNA}", params={"purpose": GENAI}, headers=token(["admin"]).headers
    ).json()
    at = datetime.fromisoformat(d["at"])
    assert at.tzinfo is not None
    assert abs(times.to_micros(at) - times.to_micros(times.now())) < 3600 * times.MICROS


def test_sec_gpc_on_an_api_request_is_recorded_once(
    app: FastAPI, signed_in: Callable[..., Any]
) -> None:
    priya = signed_in("priya.raman")
    ledger: Ledger = app.state.ledger
    had = [e.seq for e in ledger.subject_events(PRIYA) if e.type == "gpc"]
    for _ in range(2):
        r = priya.get(f"/v1/subjects/{PRIYA}", headers={"Sec-GPC": "1"})
        assert r.status_code == 200, r.text
    gpc = [e for e in ledger.subject_events(PRIYA) if e.type == "gpc"]
    assert len(gpc) == max(len(had), 1)
    assert r.json()["gpc_honoured_at"] is not None
