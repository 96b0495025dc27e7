"""Receipts on the web: in words on the settings page, a readable page beside the signed
JSON file, the keys the service publishes, and a choice said twice recorded once.

In-process through TestClient on a copy of the demo, except the test of ``--keys-url``,
which asks a real uvicorn server on a free local port for the published keys.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from askfirst import demo, privacy, receipts
from askfirst.cli import app as cli_app
from askfirst.ledger import Ledger
from askfirst.web.app import WebSettings, create_app

GENAI, RESEARCH = "genai-training", "third-party-research"
ANNA, PRIYA, ACME = "m001", "m171", "org-acme"  # the demo's sample subjects
KEYS = "/.well-known/askfirst-receipt-keys.json"
LIST_ITEM = re.compile(r"<li>(.*?)</li>", re.S)


def head(app: FastAPI) -> tuple[int, str]:
    ledger: Ledger = app.state.ledger
    h = ledger.head()
    return h.seq, h.hash


def say(client: Any, purpose: str, action: str, subject: str | None = None) -> str:
    """Press a Yes or No button on the Data privacy page; the page it comes back to."""
    form = {"purpose": purpose, "action": action, "csrf_token": client.csrf}
    if subject:
        form["subject"] = subject
    r = client.post("/settings/data-privacy/choice", data=form)
    assert r.status_code == 200 and r.url.path == "/settings/data-privacy", r.text[:300]
    return str(r.text)


def flash(html: str) -> str:
    found = re.search(r'<p class="notice" role="status">(.*?)</p>', html, re.S)
    assert found, "no message on the page"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def title(app: FastAPI, purpose: str) -> str:
    return str(app.state.ledger.policy.purpose(purpose).title)


# ---- receipts in words -----------------------------------------------------------------


def test_the_settings_page_lists_receipts_in_words_with_a_page_each(
    app: FastAPI, signed_in: Callable[..., Any]
) -> None:
    anna = signed_in("anna.keller")
    say(anna, GENAI, "grant")
    page = say(anna, GENAI, "withdraw")
    seq = head(app)[0]

    receipts_part = page.split('id="receipts"', 1)[1]
    items = [" ".join(re.sub(r"<[^>]+>", " ", i).split()) for i in LIST_ITEM.findall(receipts_part)]
    newest = items[0]
    assert newest.startswith(f"You said no to “{title(app, GENAI)}” on "), newest
    assert re.search(r" on \d{1,2} [A-Z][a-z]{2} \d{4} at \d\d:\d\d UTC: receipt \d+", newest)
    assert items[1].startswith(f"You said yes to “{title(app, GENAI)}”"), items[1]
    assert "— receipt" not in receipts_part
    assert f'href="/receipts/{seq}"' in receipts_part
    assert f'href="/receipts/{seq}.json" download' in receipts_part

    twin = anna.get("/settings/data-privacy.json").json()["receipts"][0]
    assert twin["seq"] == seq and twin["url"] == f"/receipts/{seq}"
    assert twin["in_words"] == newest.split(": receipt")[0]


def test_a_receipt_has_a_readable_page_beside_its_signed_json(
    app: FastAPI, signed_in: Callable[..., Any]
) -> None:
    anna = signed_in("anna.keller")
    page = say(anna, GENAI, "withdraw")
    seq = head(app)[0]
    assert f'<a href="/receipts/{seq}">See your receipt</a>' in page

    r = anna.get(f"/receipts/{seq}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    text = " ".join(re.sub(r"<[^>]+>", " ", r.text).split())
    assert f"You said no to “{title(app, GENAI)}” on " in text
    assert "Consent withdrawn (dpv:ConsentWithdrawn)" in text
    assert "This is your answer now." in text
    assert f'href="/receipts/{seq}.json" download' in r.text
    assert f"--keys-url http://testserver{KEYS}" in text

    # The JSON twin stays: the signed receipt, as a file to keep.
    js = anna.get(f"/receipts/{seq}.json")
    assert (
        js.headers["content-disposition"] == f'attachment; filename="askfirst-receipt-{seq}.json"'
    )
    body = js.json()
    assert body["ledger"]["eventSeq"] == seq and body["signature"]["alg"] == "Ed25519"

    # An answer changed since says so.
    say(anna, GENAI, "grant")
    later = anna.get(f"/receipts/{seq}").text
    assert "This is an earlier answer: you have changed it since." in later


def test_the_receipt_page_is_for_its_subject_and_those_who_act_for_it(
    app: FastAPI, client: TestClient, signed_in: Callable[..., Any]
) -> None:
    anna, priya, staff = signed_in("anna.keller"), signed_in("priya.raman"), signed_in("staff")
    say(anna, GENAI, "withdraw")
    own = head(app)[0]
    say(anna, RESEARCH, "withdraw", subject=ACME)  # as a page admin of Acme
    acme = head(app)[0]

    assert anna.get(f"/receipts/{own}").status_code == 200
    acme_page = anna.get(f"/receipts/{acme}")
    assert acme_page.status_code == 200
    assert f"@anna.keller said no to “{title(app, RESEARCH)}” for this page on " in acme_page.text
    assert staff.get(f"/receipts/{own}").status_code == 200
    for path in (f"/receipts/{own}", f"/receipts/{own}.json", f"/receipts/{acme}"):
        r = priya.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert "Consent withdrawn" not in r.text
    anonymous = client.get(f"/receipts/{own}", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == f"/signin?next=/receipts/{own}"
    assert anna.get("/receipts/1").status_code == 404  # a registration, not a choice


def test_the_withdrawal_link_is_the_settings_page_not_its_json_twin(
    signed_in: Callable[..., Any],
) -> None:
    anna = signed_in("anna.keller")
    made = anna.post(
        f"/v1/subjects/{ACME}/choices",
        json={"purpose": GENAI, "action": "withdraw"},
        headers=anna.csrf_header,
    )
    seq = made.json()["event"]["seq"]
    for path in (f"/v1/receipts/{seq}", f"/receipts/{seq}.json"):
        url = urlsplit(anna.get(path).json()["withdrawalMethod"]["url"])
        assert url.path == "/settings/data-privacy", url
        assert parse_qs(url.query) == {"subject": [ACME]}
        settings = anna.get(f"{url.path}?{url.query}")
        assert settings.headers["content-type"].startswith("text/html")
        assert '<input type="hidden" name="action" value="withdraw">' in settings.text


# ---- the same answer twice ------------------------------------------------------------


def test_saying_again_what_the_answer_already_is_records_nothing_on_the_page(
    app: FastAPI, signed_in: Callable[..., Any]
) -> None:
    anna = signed_in("anna.keller")
    first = say(anna, GENAI, "withdraw")
    assert flash(first).startswith(f"Saved: you said no to “{title(app, GENAI)}”.")
    before = head(app)

    again = say(anna, GENAI, "withdraw")
    assert head(app) == before
    assert flash(again).startswith(
        f"Nothing changed: the answer to “{title(app, GENAI)}” was already no (since "
    )
    assert "so nothing new was recorded" in flash(again)
    assert f'<a href="/receipts/{before[0]}">See your receipt</a>' in again

    say(anna, GENAI, "grant")
    assert head(app)[0] == before[0] + 1  # a change is recorded, as ever

    say(anna, RESEARCH, "withdraw")
    say(anna, GENAI, "withdraw")
    before = head(app)
    r = anna.post("/settings/data-privacy/all-off", data={"csrf_token": anna.csrf, "subject": ANNA})
    assert head(app) == before
    assert flash(r.text) == (
        "Nothing changed: every AI and research use was already off, so nothing new was recorded."
    )


def test_saying_again_what_the_answer_already_is_records_nothing_through_the_api(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    write = token(["choices:write"], subject=PRIYA)
    body = {"purpose": GENAI, "action": "withdraw"}
    first = client.post(f"/v1/subjects/{PRIYA}/choices", json=body, headers=write.headers)
    assert first.status_code == 201 and first.json()["changed"] is True
    before = head(app)

    again = client.post(f"/v1/subjects/{PRIYA}/choices", json=body, headers=write.headers)
    assert again.status_code == 200, again.text
    assert head(app) == before
    answer = again.json()
    assert answer["changed"] is False
    assert answer["event"] == first.json()["event"]
    assert answer["receipt_url"] == first.json()["receipt_url"]
    assert answer["message"].startswith("Nothing changed: the answer to “")
    assert "was already no" in answer["message"]


def test_a_yes_after_a_gpc_signal_is_recorded_even_after_an_earlier_yes(
    app: FastAPI, client: TestClient, token: Callable[..., Any]
) -> None:
    """A yes that stands behind a later GPC signal is not "already yes": saying it again
    is how a member confirms it (DESIGN.md, rule 4 of a decision)."""
    ledger: Ledger = app.state.ledger
    write = token(["choices:write"], subject=PRIYA)
    body = {"purpose": GENAI, "action": "grant"}
    client.post(f"/v1/subjects/{PRIYA}/choices", json=body, headers=write.headers)
    assert privacy.note_gpc(ledger, PRIYA) is not None
    before = head(app)
    r = client.post(f"/v1/subjects/{PRIYA}/choices", json=body, headers=write.headers)
    assert r.status_code == 201 and r.json()["changed"] is True
    assert head(app)[0] == before[0] + 1


# ---- the published keys and the verify endpoint ---------------------------------------


def test_the_service_publishes_its_receipt_keys(app: FastAPI, client: TestClient) -> None:
    r = client.get(KEYS)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    [jwk] = r.json()["keys"]
    key: receipts.ReceiptKey = app.state.receipt_key
    assert {k: jwk[k] for k in ("kty", "crv", "kid", "x")} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": key.key_id,
        "x": key.public_b64,
    }
    assert "d" not in jwk  # never the private part


def _resigned(receipt: dict[str, Any], key: receipts.ReceiptKey) -> dict[str, Any]:
    """``receipt`` as a grant, signed again with ``key``."""
    forged = copy.deepcopy(receipt)
    forged["event"]["eventState"] = "consent given"
    forged["event"]["dpv:hasConsentStatus"] = "dpv:ConsentGiven"
    forged["signature"]["keyId"], forged["signature"]["publicKey"] = key.key_id, key.public_b64
    forged["signature"]["value"] = (
        base64.urlsafe_b64encode(key.private.sign(receipts.canonical(forged))).rstrip(b"=").decode()
    )
    return forged


def test_the_verify_endpoint_compares_the_receipt_with_the_ledger_event(
    app: FastAPI, client: TestClient, signed_in: Callable[..., Any], tmp_path: Path
) -> None:
    anna = signed_in("anna.keller")
    say(anna, GENAI, "withdraw")
    seq = head(app)[0]
    receipt = anna.get(f"/receipts/{seq}.json").json()
    assert client.post("/v1/receipts/verify", json=receipt).json() == {
        "valid": True,
        "problems": [],
    }

    # Signed with the service's own key: the signature holds, the ledger does not agree.
    as_grant = _resigned(receipt, app.state.receipt_key)
    verdict = client.post("/v1/receipts/verify", json=as_grant).json()
    assert verdict == {
        "valid": False,
        "problems": [f"the ledger's event {seq} is a withdraw, the receipt says grant"],
    }
    # Signed with a key of one's own: not a key of this service.
    forger = receipts.ReceiptKey.load(tmp_path / "forger")
    verdict = client.post("/v1/receipts/verify", json=_resigned(receipt, forger)).json()
    assert verdict["valid"] is False
    assert any(f"signed by key '{forger.key_id}'" in p for p in verdict["problems"])


@pytest.fixture
def served(demo_dir: demo.Demo) -> Iterator[str]:
    """uvicorn on a free 127.0.0.1 port, serving this test's copy of the demo."""
    application = create_app(WebSettings(demo_dir.url, demo_dir.key_dir))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def test_a_receipt_checks_against_the_keys_a_running_service_publishes(
    app: FastAPI, served: str, signed_in: Callable[..., Any], tmp_path: Path
) -> None:
    anna = signed_in("anna.keller")
    say(anna, GENAI, "withdraw")
    seq = head(app)[0]
    receipt = anna.get(f"/receipts/{seq}.json").json()
    held, forged = tmp_path / "receipt.json", tmp_path / "forged.json"
    held.write_text(json.dumps(receipt), "utf-8")
    forger = receipts.ReceiptKey.load(tmp_path / "forger")
    forged.write_text(json.dumps(_resigned(receipt, forger)), "utf-8")
    url = served + KEYS

    good = CliRunner().invoke(cli_app, ["receipt", "verify", str(held), "--keys-url", url])
    assert good.exit_code == 0, good.output
    assert good.stdout.startswith(f"valid: {ANNA} consent withdrawn for {GENAI}")

    bad = CliRunner().invoke(cli_app, ["receipt", "verify", str(forged), "--keys-url", url])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert bad.stderr.strip() == (
        f"error: signed by key '{forger.key_id}', which {url} does not know: not a key of "
        f"this service (its keys: {app.state.receipt_key.key_id})"
    )

    missing = CliRunner().invoke(
        cli_app, ["receipt", "verify", str(held), "--keys-url", served + "/no-such-keys.json"]
    )
    assert missing.exit_code == 1
    assert missing.stderr.strip().endswith("cannot fetch the receipt keys: HTTP 404")
