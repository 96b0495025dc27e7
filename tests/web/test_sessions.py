"""Sessions end server-side: a copy of the cookie is worth nothing once its session ended.

A session ends on sign-out, on a password change, when the member's account is closed,
after its lifetime and after its idle time. An ended session is a signed-out visitor:
pages send it to sign in, the API answers 401, and nothing is written.
"""

from __future__ import annotations

import json
from base64 import b64encode
from collections.abc import Callable

from fastapi import FastAPI
from itsdangerous import TimestampSigner
from sqlalchemy import func, select, update

from askfirst import accounts, times
from askfirst.ledger import Ledger, NewEvent
from askfirst.ledger.tables import sessions
from askfirst.web.app import session_secret

from .conftest import MEMBER_PASSWORD, WebClient, csrf_in, sign_in

ANNA = "m001"  # the demo's anna.keller
COOKIE = "askfirst_session"


def _replay(app: FastAPI, cookie: str) -> WebClient:
    """A new client sending a given session cookie, as an attacker holding a copy would."""
    c = WebClient(app)
    c.cookies.set(COOKIE, cookie)
    return c


def _assert_signed_out(app: FastAPI, c: WebClient, csrf: str) -> None:
    """Pages send ``c`` to sign in, the API answers 401, and a choice records nothing."""
    ledger: Ledger = app.state.ledger
    head = ledger.head()
    page = c.get("/settings", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/signin")
    assert c.get(f"/v1/subjects/{ANNA}").status_code == 401
    r = c.post(
        f"/v1/subjects/{ANNA}/choices",
        json={"purpose": "genai-training", "action": "withdraw"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 401, r.text
    assert ledger.head() == head


def _live_sessions(app: FastAPI, account_id: int) -> int:
    ledger: Ledger = app.state.ledger
    q = select(func.count()).select_from(sessions).where(sessions.c.account_id == account_id)
    with ledger.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def _account_id(app: FastAPI, username: str) -> int:
    account = accounts.authenticate(app.state.ledger, username, MEMBER_PASSWORD)
    assert account is not None
    return account.id


def test_the_old_cookie_replayed_after_sign_out_reads_and_writes_nothing(
    app: FastAPI, signed_in: Callable[..., WebClient]
) -> None:
    anna = signed_in("anna.keller")
    assert anna.get(f"/v1/subjects/{ANNA}").status_code == 200
    stolen = anna.cookies[COOKIE]
    r = anna.post("/signout", data={"csrf_token": anna.csrf})
    assert r.url.path == "/"
    assert _live_sessions(app, _account_id(app, "anna.keller")) == 0
    with _replay(app, stolen) as thief:
        _assert_signed_out(app, thief, anna.csrf)


def test_signing_out_ends_only_that_session(
    app: FastAPI, signed_in: Callable[..., WebClient]
) -> None:
    laptop, phone = signed_in("anna.keller"), signed_in("anna.keller")
    laptop.post("/signout", data={"csrf_token": laptop.csrf})
    assert phone.get(f"/v1/subjects/{ANNA}").status_code == 200


def test_a_password_change_ends_every_session_of_the_account(
    app: FastAPI, signed_in: Callable[..., WebClient]
) -> None:
    laptop, phone = signed_in("anna.keller"), signed_in("anna.keller")
    jo = signed_in("jo.rivera")
    accounts.change_password(app.state.ledger, "anna.keller", "a new passphrase")
    for c in (laptop, phone):
        _assert_signed_out(app, c, c.csrf)
    assert jo.get("/settings", follow_redirects=False).status_code == 200
    with sign_in(app, "anna.keller", "a new passphrase") as again:
        assert again.get(f"/v1/subjects/{ANNA}").status_code == 200


def test_closing_the_account_ends_all_its_sessions(
    app: FastAPI, signed_in: Callable[..., WebClient]
) -> None:
    laptop, phone = signed_in("anna.keller"), signed_in("anna.keller")
    ledger: Ledger = app.state.ledger
    ledger.append(
        NewEvent(type="status", subject=ANNA, value="closed", actor="system", source="platform")
    )
    for c in (laptop, phone):
        _assert_signed_out(app, c, c.csrf)
    assert _live_sessions(app, _account_id(app, "anna.keller")) == 0


def _set_back(app: FastAPI, column: str, seconds: int) -> None:
    """Move every session's ``column`` (created_at, last_seen_at) ``seconds`` into the past."""
    ledger: Ledger = app.state.ledger
    then = times.to_micros(times.now()) - seconds * times.MICROS
    with ledger.engine.begin() as conn:
        conn.execute(update(sessions).values({column: then}))


def test_an_idle_session_is_refused(app: FastAPI, signed_in: Callable[..., WebClient]) -> None:
    anna = signed_in("anna.keller")
    idle = app.state.settings.session_idle_s
    _set_back(app, "last_seen_at", idle - 120)
    assert anna.get(f"/v1/subjects/{ANNA}").status_code == 200  # used again: not idle
    _set_back(app, "last_seen_at", idle + 1)
    _assert_signed_out(app, anna, anna.csrf)


def test_a_session_past_its_lifetime_is_refused_however_busy(
    app: FastAPI, signed_in: Callable[..., WebClient]
) -> None:
    anna = signed_in("anna.keller")
    _set_back(app, "created_at", app.state.settings.session_lifetime_s + 1)
    _set_back(app, "last_seen_at", 1)
    _assert_signed_out(app, anna, anna.csrf)


def _forge(app: FastAPI, payload: dict[str, object]) -> str:
    """A cookie signed with the app's own secret, as Starlette's session middleware signs."""
    data = b64encode(json.dumps(payload).encode())
    secret = session_secret(app.state.settings.key_dir)
    return TimestampSigner(str(secret)).sign(data).decode()


def test_a_signed_cookie_naming_another_session_or_account_is_refused(
    app: FastAPI, signed_in: Callable[..., WebClient]
) -> None:
    anna = signed_in("anna.keller")  # a live session exists: a forged id must not reach it
    for payload in (
        {"sid": "not-a-session-anyone-was-given", "csrf": anna.csrf},
        {"account": _account_id(app, "anna.keller"), "csrf": anna.csrf},  # the old payload
    ):
        with _replay(app, _forge(app, payload)) as forger:
            _assert_signed_out(app, forger, anna.csrf)
    assert anna.get(f"/v1/subjects/{ANNA}").status_code == 200


def test_a_fresh_sign_in_gets_a_new_session_id(app: FastAPI) -> None:
    c = WebClient(app)
    form = c.get("/signin")
    before = c.cookies.get(COOKIE)
    r = c.post(
        "/signin",
        data={
            "username": "anna.keller",
            "password": MEMBER_PASSWORD,
            "csrf_token": csrf_in(form.text),
        },
    )
    assert r.url.path == "/settings"
    assert c.cookies.get(COOKIE) != before
    assert _live_sessions(app, _account_id(app, "anna.keller")) == 1
    c.close()


def test_a_closed_account_cannot_sign_in_again(app: FastAPI) -> None:
    ledger: Ledger = app.state.ledger
    ledger.append(
        NewEvent(type="status", subject=ANNA, value="closed", actor="system", source="platform")
    )
    with WebClient(app) as c:
        form = c.get("/signin")
        r = c.post(
            "/signin",
            data={
                "username": "anna.keller",
                "password": MEMBER_PASSWORD,
                "csrf_token": csrf_in(form.text),
            },
            follow_redirects=False,
        )
        assert r.status_code == 403
        assert "This account is closed" in r.text
        assert _live_sessions(app, _account_id(app, "anna.keller")) == 0
        assert c.get("/settings", follow_redirects=False).status_code == 303
