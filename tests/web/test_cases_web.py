"""Cases on the web (issue 17): the public request form with its confirming e-mail (real
SMTP), the review queue, four eyes across sessions and tokens, and a representative's page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import func, select

from askfirst import demo, privacy
from askfirst.accounts import create_token
from askfirst.decisions import decide
from askfirst.ledger.tables import cases as cases_table
from askfirst.ledger.tables import events
from test_mail import Sink, free_port

from .conftest import MEMBER_PASSWORD, WebClient, csrf_in, sign_in

BASE = "http://testserver"


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    """A real SMTP server the app sends its case mail to."""
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setenv("ASKFIRST_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
    monkeypatch.setenv("ASKFIRST_MAIL_FROM", "privacy@example.com")
    monkeypatch.setenv("ASKFIRST_BASE_URL", BASE)
    yield sink
    controller.stop()


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "gray").save(out, format="PNG")
    return out.getvalue()


def staff(app: FastAPI, demo_dir: demo.Demo, name: str) -> WebClient:
    return sign_in(app, name, demo_dir.staff_password)


def head_seq(app: FastAPI) -> int:
    with app.state.ledger.engine.connect() as conn:
        return int(conn.execute(select(func.max(events.c.seq))).scalar_one())


def link_in(sink: Sink, pattern: str) -> str:
    body = sink.messages[-1].get_body(("plain",))
    assert body is not None
    found = re.search(pattern, body.get_content())
    assert found, body.get_content()
    return found.group(0).removeprefix(BASE)


def press(client: WebClient, url: str) -> httpx.Response:
    """Open a link's page and press its button (the page's form, with its CSRF token)."""
    page = client.get(url)
    assert page.status_code == 200, page.text
    return client.post(url, data={"csrf_token": csrf_in(page.text)})


def report_death(client: WebClient, handle: str, smtp: Sink) -> int:
    form = client.get("/requests")
    assert form.status_code == 200
    r = client.post(
        "/requests",
        data={
            "kind": "death",
            "member": handle,
            "reporter_email": "kin@example.com",
            "link": "https://news.example/obituary",
            "csrf_token": csrf_in(form.text),
        },
        files=[("files", ("certificate.png", png(), "image/png"))],
        headers={"Accept": "application/json"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["confirm_needed"] and r.json()["sent"]
    return int(r.json()["case"])


def test_a_reported_death_is_confirmed_by_mail_then_needs_two_reviewers(
    app: FastAPI, demo_dir: demo.Demo, client: WebClient, smtp: Sink
) -> None:
    handle = demo_dir.sample_members[1]
    subject = privacy.subject_for_handle(app.state.ledger, handle)
    case_id = report_death(client, handle, smtp)
    ana, ben = staff(app, demo_dir, "ana"), staff(app, demo_dir, "ben")
    assert f"/admin/cases/{case_id}" not in ana.get("/admin/cases").text  # not confirmed yet

    confirm = link_in(smtp, r"http://testserver/requests/confirm/\S+")
    assert client.get(confirm).status_code == 200  # opening the link confirms nothing
    assert f"/admin/cases/{case_id}" not in ana.get("/admin/cases").text
    assert press(client, confirm).status_code == 200
    assert f"/admin/cases/{case_id}" in ana.get("/admin/cases").text

    page = ana.get(f"/admin/cases/{case_id}")
    doc = re.search(rf"/admin/cases/{case_id}/evidence/\d+", page.text)
    assert doc is not None
    got = ana.get(doc.group(0))
    assert got.content == png() and got.headers["content-type"] == "image/png"
    assert "sandbox" in got.headers["content-security-policy"]

    r = ana.post(
        f"/admin/cases/{case_id}/propose",
        data={"reason": "obituary and certificate agree", "csrf_token": ana.csrf},
        follow_redirects=False,
    )
    assert r.status_code == 303
    # The proposer again, from a second session and with their own token: refused.
    before = head_seq(app)
    ana2 = staff(app, demo_dir, "ana")
    r = ana2.post(f"/admin/cases/{case_id}/approve", data={"csrf_token": ana2.csrf})
    assert r.status_code == 403, r.text
    _, secret = create_token(app.state.ledger, "ana-own", ["admin"], staff="ana")
    r = client.post(
        f"/v1/cases/{case_id}/approve", json={}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert r.status_code == 403 and "second, different reviewer" in r.json()["error"]
    assert head_seq(app) == before
    assert decide(app.state.ledger, subject, "genai-training").reason != "deceased"

    r = ben.post(f"/admin/cases/{case_id}/approve", data={"csrf_token": ben.csrf})
    assert r.status_code == 200 and "Approved" in r.text
    assert decide(app.state.ledger, subject, "genai-training").reason == "deceased"


def test_staff_roles_decide_who_may_review(
    app: FastAPI, demo_dir: demo.Demo, client: WebClient, smtp: Sink
) -> None:
    case_id = report_death(client, demo_dir.sample_members[1], smtp)
    press(client, link_in(smtp, r"http://testserver/requests/confirm/\S+"))
    before = head_seq(app)
    for name in (demo.EDITOR_USER, demo.AUDITOR_USER, demo.STAFF_USER):
        someone = staff(app, demo_dir, name)
        assert someone.get(f"/admin/cases/{case_id}").status_code == 200  # all staff read
        r = someone.post(
            f"/admin/cases/{case_id}/propose", data={"reason": "x", "csrf_token": someone.csrf}
        )
        assert r.status_code == 403, (name, r.status_code)
    member = sign_in(app, demo_dir.sample_members[0], MEMBER_PASSWORD)
    assert member.get(f"/admin/cases/{case_id}").status_code == 403
    assert (
        member.post(
            f"/admin/cases/{case_id}/propose", data={"reason": "x", "csrf_token": member.csrf}
        ).status_code
        == 403
    )
    assert client.get(f"/v1/cases/{case_id}").status_code == 401
    assert head_seq(app) == before


def test_a_representative_signs_in_by_link_and_may_only_say_no(
    app: FastAPI, demo_dir: demo.Demo, client: WebClient, smtp: Sink
) -> None:
    ledger = app.state.ledger
    handle = demo_dir.sample_members[1]
    subject = privacy.subject_for_handle(ledger, handle)
    death = report_death(client, handle, smtp)
    press(client, link_in(smtp, r"http://testserver/requests/confirm/\S+"))
    ana, ben = staff(app, demo_dir, "ana"), staff(app, demo_dir, "ben")
    ana.post(f"/admin/cases/{death}/propose", data={"reason": "ok", "csrf_token": ana.csrf})
    ben.post(f"/admin/cases/{death}/approve", data={"csrf_token": ben.csrf})

    form = client.get("/requests")
    r = client.post(
        "/requests",
        data={
            "kind": "representative",
            "member": handle,
            "email": "sam@example.com",
            "reporter_email": "sam@example.com",
            "csrf_token": csrf_in(form.text),
        },
        files=[("files", ("letter.png", png(), "image/png"))],
        headers={"Accept": "application/json"},
    )
    rep_case = int(r.json()["case"])
    press(client, link_in(smtp, r"http://testserver/requests/confirm/\S+"))
    ben.post(f"/admin/cases/{rep_case}/propose", data={"reason": "letter", "csrf_token": ben.csrf})
    r = ana.post(f"/admin/cases/{rep_case}/approve", data={"csrf_token": ana.csrf})
    assert "mailed a one-time sign-in link" in r.text
    assert str(smtp.messages[-1]["To"]) == "sam@example.com"
    signin = link_in(smtp, r"http://testserver/signin/link/\S+")

    rep = WebClient(app)
    r = press(rep, signin)
    assert r.status_code == 200 and r.url.path == "/representing"
    assert press(WebClient(app), signin).status_code == 400
    rep.csrf = csrf_in(r.text)
    r = rep.post(
        "/representing/choice",
        data={"purpose": "genai-training", "action": "object", "csrf_token": rep.csrf},
    )
    assert r.status_code == 200
    last = ledger.subject_events(subject)[-1]
    assert (last.type, last.value, last.actor) == ("choice", "object", f"rep:{rep_case}")
    r = rep.post(
        "/representing/choice",
        data={"purpose": "genai-training", "action": "grant", "csrf_token": rep.csrf},
    )
    assert r.status_code == 403
    report = rep.get("/representing/report.json")
    assert report.status_code == 200 and report.json()["subject"]["id"] == subject
    r = rep.post("/representing/close", data={"csrf_token": rep.csrf})
    assert r.status_code == 200
    # The member's own sign-in is gone.
    c = WebClient(app)
    form = c.get("/signin")
    r = c.post(
        "/signin",
        data={"username": handle, "password": MEMBER_PASSWORD, "csrf_token": csrf_in(form.text)},
    )
    assert r.status_code in (400, 401, 403) or r.url.path == "/signin"
    with ledger.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(cases_table)).scalar_one() == 2
