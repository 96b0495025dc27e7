"""The one-click "no" from a notice e-mail (RFC 8058), in the web app, without signing in.

Opening the link changes nothing (mail scanners fetch links); the button, or a mail
client's own ``List-Unsubscribe=One-Click`` POST, records the withdrawal once, with a
receipt; a used, expired or tampered link gets a clear page, a 4xx, and writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, select

from askfirst import demo, mail, privacy, receipts
from askfirst.ledger import Ledger
from askfirst.ledger.tables import one_click, subjects

from .conftest import WebClient

PURPOSE = "genai-training"


def _subject(app: FastAPI, demo_dir: demo.Demo) -> str:
    ledger: Ledger = app.state.ledger
    subject = privacy.subject_for_handle(ledger, demo_dir.sample_members[0])
    assert subject is not None
    return subject


def _token(app: FastAPI, subject: str, **kw: int) -> str:
    secret = mail.one_click_secret(app.state.settings.key_dir)
    version = app.state.ledger.policy.purpose(PURPOSE).version
    return mail.make_token(secret, subject, PURPOSE, version, **kw)


def _state(app: FastAPI, subject: str) -> tuple[int, int, list[str | None]]:
    """The ledger head, the spent links, and the subject's choices for the purpose."""
    ledger: Ledger = app.state.ledger
    with ledger.engine.connect() as conn:
        spent = int(conn.execute(select(func.count()).select_from(one_click)).scalar() or 0)
    choices = [
        e.value
        for e in ledger.subject_events(subject)
        if e.type == "choice" and e.purpose == PURPOSE
    ]
    return ledger.head().seq, spent, choices


def test_opening_the_link_changes_nothing_and_shows_one_button(
    app: FastAPI, client: WebClient, demo_dir: demo.Demo
) -> None:
    subject = _subject(app, demo_dir)
    token = _token(app, subject)
    before = _state(app, subject)
    page = client.get(f"/one-click/{token}")
    assert page.status_code == 200
    assert f'<form method="post" action="/one-click/{token}">' in page.text
    assert "Say no" in page.text and "csrf_token" not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert client.head(f"/one-click/{token}").status_code == 200
    assert _state(app, subject) == before


def test_the_button_says_no_once_with_a_receipt(
    app: FastAPI, client: WebClient, demo_dir: demo.Demo
) -> None:
    subject = _subject(app, demo_dir)
    token = _token(app, subject)
    head, spent, choices = _state(app, subject)
    # A mail client's one-click POST (RFC 8058): no session, no CSRF token.
    done = client.post(f"/one-click/{token}", data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200, done.text
    assert "Your no is recorded" in done.text
    assert _state(app, subject) == (head + 1, spent + 1, [*choices, "withdraw"])
    [event] = app.state.ledger.events(after=head, limit=1)
    assert (event.actor, event.source, event.value) == (subject, "one-click", "withdraw")

    receipt = client.get(f"/one-click/{token}/receipt.json")
    assert receipt.status_code == 200
    body = json.loads(receipt.text)
    assert body["ledger"]["eventSeq"] == event.seq
    assert receipts.verify(body, ledger=app.state.ledger) == []
    assert f"/one-click/{token}/receipt.json" in done.text

    # Used: the button again, and the page, say so and write nothing.
    again = client.post(f"/one-click/{token}")
    assert again.status_code == 409 and "already used" in again.text
    assert client.get(f"/one-click/{token}").status_code == 409
    assert _state(app, subject) == (head + 1, spent + 1, [*choices, "withdraw"])


def test_expired_and_tampered_links_get_a_clear_page_and_write_nothing(
    app: FastAPI, client: WebClient, demo_dir: demo.Demo
) -> None:
    subject = _subject(app, demo_dir)
    before = _state(app, subject)
    expired = _token(app, subject, expires=1)
    for method in ("get", "post"):
        r = getattr(client, method)(f"/one-click/{expired}")
        assert r.status_code == 410 and "expired" in r.text and "nothing was recorded" in r.text
    good = _token(app, subject)
    forged = mail.make_token("not our secret", subject, PURPOSE, 1)
    for bad in (good[:-3] + "xyz", forged, "hello"):
        for method in ("get", "post"):
            r = getattr(client, method)(f"/one-click/{bad}")
            assert r.status_code == 400, (bad, r.status_code)
            assert "not one we sent" in r.text
    assert client.get(f"/one-click/{good}/receipt.json").status_code == 404  # not used yet
    assert _state(app, subject) == before


def test_the_api_registers_a_subject_with_an_email_and_refuses_a_bad_one(
    app: FastAPI, client: WebClient, token: Callable[..., Any]
) -> None:
    admin = token(["admin"])
    r = client.post(
        "/v1/subjects",
        json=[{"id": "mail-1", "jurisdiction": "US", "email": "Someone@Example.COM"}],
        headers=admin.headers,
    )
    assert r.status_code == 201, r.text
    ledger: Ledger = app.state.ledger
    with ledger.engine.connect() as conn:
        stored = conn.execute(select(subjects.c.email).where(subjects.c.id == "mail-1")).scalar()
    assert stored == "Someone@example.com"
    head = ledger.head()
    bad = client.post(
        "/v1/subjects", json=[{"id": "mail-2", "email": "nobody"}], headers=admin.headers
    )
    assert bad.status_code == 422 and "email" in bad.json()["error"]
    assert ledger.head() == head
