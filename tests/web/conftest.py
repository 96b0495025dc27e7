"""Fixtures for the web layer: a demo platform, an app on a fresh copy of it, sign-in, tokens.

The demo platform is built once per test session into a template folder (building takes a
few seconds) and copied for every test, so each test may write freely and no test sees
another's leftovers. Sign-in goes through the real /signin form; tokens are made with
:func:`askfirst.accounts.create_token` against the copy's ledger.

Fixtures: ``demo_dir`` (a :class:`askfirst.demo.Demo` describing this test's copy),
``app``, ``client`` (anonymous), ``signed_in(username)`` and ``token(scopes, subject=None)``;
and ``browser``, Debian's headless Chromium, started once per session for every module of
browser tests (Playwright's sync API runs one instance per thread).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import select, update
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette suggests httpx2 for its TestClient; httpx still works and is what we ship.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from askfirst import demo, load_policy, open_ledger
from askfirst.accounts import create_token
from askfirst.ledger import Ledger
from askfirst.ledger.tables import accounts
from askfirst.receipts import signing_key
from askfirst.web.app import WebSettings, create_app, session_secret

if TYPE_CHECKING:
    from playwright.sync_api import Browser

MEMBER_PASSWORD = demo.MEMBER_PASSWORD
STAFF_USER = demo.STAFF_USER
_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").lower() == "true"


def csrf_in(html: str) -> str:
    """The CSRF token in a page's hidden csrf_token field."""
    found = _CSRF_FIELD.search(html)
    assert found, "the page has no csrf_token field"
    return found.group(1)


class WebClient(TestClient):
    """A TestClient that remembers who it signed in as and its session's CSRF token."""

    username: str | None = None
    subject: str | None = None
    csrf: str = ""

    @property
    def csrf_header(self) -> dict[str, str]:
        """The header a cookie-authenticated API write needs."""
        return {"X-CSRF-Token": self.csrf}


@dataclass(frozen=True)
class ApiToken:
    name: str
    secret: str
    scopes: tuple[str, ...]
    subject: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> demo.Demo:
    """The demo platform, built once per session; copy it before writing (see demo_dir)."""
    built = demo.build(tmp_path_factory.mktemp("demo-template") / "askfirst-demo")
    # Make the keys now (the receipt key recorded in the ledger, as a start does), so that
    # each copy does not generate and record its own.
    with open_ledger(built.url, load_policy()) as ledger:
        signing_key(ledger, built.key_dir)
    session_secret(built.key_dir)
    # The same passwords, hashed with cheap Argon2id parameters: sign-in still runs the
    # real verification, but in milliseconds rather than a second on a busy machine.
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with open_ledger(built.url, load_policy()) as ledger, ledger.engine.begin() as conn:
        for kind, password in (("member", MEMBER_PASSWORD), ("staff", built.staff_password)):
            conn.execute(
                update(accounts)
                .where(accounts.c.kind == kind)
                .values(password_hash=cheap.hash(password))
            )
    return built


@pytest.fixture
def demo_dir(demo_template: demo.Demo, tmp_path: Path) -> demo.Demo:
    """A fresh copy of the demo platform for this test: ``.folder``, ``.url``, ``.key_dir``,
    ``.staff_password``, ``.sample_members``."""
    folder = tmp_path / "askfirst-demo"
    shutil.copytree(demo_template.folder, folder)
    return replace(
        demo_template,
        folder=folder,
        url=f"sqlite:///{folder / 'askfirst.db'}",
        key_dir=folder / "keys",
    )


@pytest.fixture
def app(demo_dir: demo.Demo) -> Iterator[FastAPI]:
    """The web app on this test's copy of the demo (cookies without the Secure flag, so
    the test client, which speaks plain http, sends them back)."""
    application = create_app(WebSettings(demo_dir.url, demo_dir.key_dir, secure_cookies=False))
    yield application
    ledger: Ledger = application.state.ledger
    ledger.close()


@pytest.fixture
def client(app: FastAPI) -> Iterator[WebClient]:
    """An anonymous visitor."""
    with WebClient(app) as c:
        yield c


def sign_in(app: FastAPI, username: str, password: str) -> WebClient:
    """A new client signed in through the real form: GET it, send back its CSRF token."""
    c = WebClient(app)
    form = c.get("/signin")
    assert form.status_code == 200, form.text
    r = c.post(
        "/signin",
        data={"username": username, "password": password, "csrf_token": csrf_in(form.text)},
    )
    assert r.status_code == 200, f"sign-in as {username} failed: {r.status_code} {r.text[:300]}"
    assert r.url.path in ("/settings", "/admin"), r.url
    c.username = username
    c.csrf = csrf_in(r.text)
    ledger: Ledger = app.state.ledger
    with ledger.engine.connect() as conn:
        q = select(accounts.c.subject_id).where(accounts.c.username == username.lower())
        c.subject = conn.execute(q).scalar()
    return c


@pytest.fixture
def signed_in(app: FastAPI, demo_dir: demo.Demo) -> Iterator[Callable[..., WebClient]]:
    """``signed_in("anna.keller")`` -> a client with a member's session (``.csrf`` holds
    the session's CSRF token, ``.subject`` the member's subject id); ``signed_in("staff")``
    signs in the demo's staff account."""
    made: list[WebClient] = []

    def make(username: str, password: str | None = None) -> WebClient:
        if password is None:
            staff = {name for name, _ in demo.STAFF}
            password = demo_dir.staff_password if username in staff else MEMBER_PASSWORD
        c = sign_in(app, username, password)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def token(app: FastAPI) -> Callable[..., ApiToken]:
    """``token(["decisions:read"])`` or ``token(["choices:write"], subject="m001")`` -> an
    :class:`ApiToken` (``.headers`` is the Authorization header)."""
    counter = itertools.count(1)

    def make(scopes: list[str], subject: str | None = None, name: str | None = None) -> ApiToken:
        name = name or f"test-token-{next(counter)}"
        _, secret = create_token(app.state.ledger, name, scopes, subject=subject)
        return ApiToken(name, secret, tuple(scopes), subject)

    return make


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, once per session (Playwright's own browser download
    cannot work on these machines); skipped without it, except under CI=true."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(message + "; CI=true: the browser tests must run")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
