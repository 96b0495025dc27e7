"""How much one client may ask: sign-in limits per account and per address, body caps
answered 413 before parsing, and a per-address limit on the API open without sign-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi import FastAPI

from askfirst import demo
from askfirst.web.app import WebSettings, create_app
from askfirst.web.limits import RateLimiter

from .conftest import MEMBER_PASSWORD, ApiToken, WebClient, csrf_in

MakeApp = Callable[..., FastAPI]


@pytest.fixture
def make_app(demo_dir: demo.Demo) -> Iterator[MakeApp]:
    """``make_app(signin_attempts=3, ...)`` -> the web app on this test's demo copy, with
    those settings changed."""
    made: list[FastAPI] = []

    def make(**settings: Any) -> FastAPI:
        web = WebSettings(demo_dir.url, demo_dir.key_dir, secure_cookies=False, **settings)
        made.append(create_app(web))
        return made[-1]

    yield make
    for application in made:
        application.state.ledger.close()


def _from(app: FastAPI, address: str) -> WebClient:
    """A client whose requests come from ``address``."""
    return WebClient(app, client=(address, 50000))


def _sign_in(c: WebClient, username: str, password: str) -> int:
    form = c.get("/signin")
    r = c.post(
        "/signin",
        data={"username": username, "password": password, "csrf_token": csrf_in(form.text)},
        follow_redirects=False,
    )
    return r.status_code


# ---- sign-in ---------------------------------------------------------------------------


def test_padding_the_username_does_not_get_round_the_accounts_limit(
    make_app: MakeApp, demo_dir: demo.Demo
) -> None:
    app = make_app(signin_attempts=3, signin_window_s=90)
    member = demo_dir.sample_members[0]
    # Three failures, each from its own address, each spelling the name differently.
    for i, spelling in enumerate([member, f"  {member}", f"\t{member.upper()} "]):
        with _from(app, f"203.0.113.{i + 1}") as c:
            assert _sign_in(c, spelling, "not-the-password") == 401
    with _from(app, "203.0.113.9") as c:
        form = c.get("/signin")
        r = c.post(
            "/signin",
            data={
                "username": f"{member}\t",
                "password": MEMBER_PASSWORD,
                "csrf_token": csrf_in(form.text),
            },
            follow_redirects=False,
        )
        assert r.status_code == 429
        assert "too many failed sign-ins" in r.text
        assert "<html" in r.text.lower()  # the form's answer is a page
        # The wait is the limiter's own (here a 90 s window), not a fixed five minutes.
        assert 0 < int(r.headers["Retry-After"]) <= 90
        assert "try again in 2 minutes" in r.text
    # Another account is not held back by this one's failures.
    with _from(app, "203.0.113.9") as c:
        assert _sign_in(c, demo_dir.sample_members[1], MEMBER_PASSWORD) == 303


def test_spraying_many_usernames_from_one_address_gets_limited(
    make_app: MakeApp, demo_dir: demo.Demo
) -> None:
    app = make_app(signin_address_attempts=4)
    with _from(app, "198.51.100.7") as sprayer:
        for i in range(4):
            assert _sign_in(sprayer, f"guess-{i}", "password1") == 401
        assert _sign_in(sprayer, "guess-99", "password1") == 429
        assert _sign_in(sprayer, demo_dir.sample_members[0], MEMBER_PASSWORD) == 429
    with _from(app, "198.51.100.8") as neighbour:
        assert _sign_in(neighbour, demo_dir.sample_members[0], MEMBER_PASSWORD) == 303


def test_a_limiter_forgets_its_oldest_keys_rather_than_grow() -> None:
    limiter = RateLimiter(1, 300, max_keys=100)
    for i in range(10_000):
        limiter.hit(f"name-{i}")
    assert len(limiter) == 100
    assert limiter.retry_after("name-9999") > 0  # the newest are still held back
    assert limiter.retry_after("name-0") == 0


# ---- request bodies --------------------------------------------------------------------


def test_a_body_over_the_cap_is_refused_before_it_is_parsed(client: WebClient) -> None:
    broken = b"{" + b" " * (200 * 1024)  # not JSON: parsing it would answer 422
    r = client.post(
        "/v1/receipts/verify", content=broken, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert "64 KiB" in r.json()["error"]
    # Streamed without a Content-Length, it is counted as it comes and refused the same.
    chunks = (b"{" + b" " * (64 * 1024) for _ in range(4))
    r = client.post(
        "/v1/receipts/verify", content=chunks, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert "64 KiB" in r.json()["error"]
    # The default cap for everything else, on a page as on the API.
    form = client.get("/signin")
    r = client.post(
        "/signin",
        data={"username": "x" * (2 << 20), "password": "p", "csrf_token": csrf_in(form.text)},
    )
    assert r.status_code == 413
    assert "1 MiB" in r.text
    assert client.get("/v1/health").json() == {"ok": True}  # and the server answers on


def test_a_chunked_body_is_not_read_past_the_cap(app: FastAPI) -> None:
    """The ASGI app pulls a few chunks of a 16 MiB body, not all 256 of them."""
    chunk, total = b"x" * (64 * 1024), 256
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < total}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/receipts/verify",
        "raw_path": b"/v1/receipts/verify",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("192.0.2.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    # On a thread of its own: the browser tests may leave this thread's event loop running.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, app(scope, receive, send)).result()  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["error"].startswith("the request body is larger")
    assert pulled <= 2


def test_a_batch_of_ten_thousand_long_ids_still_works(
    client: WebClient, token: Callable[..., ApiToken]
) -> None:
    ids = [f"{i:06d}-" + "s" * 240 for i in range(10_000)]  # about 2.5 MB of JSON
    r = client.post(
        "/v1/decisions/batch",
        json={"purpose": "genai-training", "subjects": ids},
        headers=token(["decisions:read"]).headers,
    )
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["decisions"]) == 10_000


# ---- the API open without sign-in -------------------------------------------------------


def test_anonymous_verify_is_limited_per_address(make_app: MakeApp) -> None:
    app = make_app(anonymous_requests=3)
    with _from(app, "192.0.2.10") as busy, _from(app, "192.0.2.11") as other:
        for _ in range(3):
            assert busy.post("/v1/receipts/verify", json={}).status_code == 200
        r = busy.post("/v1/receipts/verify", json={})
        assert r.status_code == 429
        assert "too many requests" in r.json()["error"]
        assert 0 < int(r.headers["Retry-After"]) <= 60
        assert other.post("/v1/receipts/verify", json={}).status_code == 200
        assert busy.get("/v1/health").status_code == 200  # only the open routes are limited


# ---- JSON bodies -----------------------------------------------------------------------


def test_a_json_body_giving_a_key_twice_is_refused_and_nothing_is_written(
    client: WebClient, token: Callable[..., ApiToken]
) -> None:
    """``{"action": "grant", "action": "withdraw"}`` used to record the last one; it has
    no one meaning, so it is 400 naming the key, and the member's events are unchanged."""
    mine = token(["choices:write", "decisions:read"], subject="m001")
    before = client.get("/v1/subjects/m001/events", headers=mine.headers).json()
    body = '{"purpose": "genai-training", "action": "grant", "action": "withdraw"}'
    r = client.post(
        "/v1/subjects/m001/choices",
        content=body,
        headers={**mine.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "the request body: key 'action' appears twice in one object"
    assert client.get("/v1/subjects/m001/events", headers=mine.headers).json() == before
    # The same choice, said once, is taken.
    once = '{"purpose": "genai-training", "action": "withdraw"}'
    r = client.post(
        "/v1/subjects/m001/choices",
        content=once,
        headers={**mine.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("opening", ["[", '{"a":'], ids=["arrays", "objects"])
@pytest.mark.parametrize("depth", [33, 100_000])
def test_a_deeply_nested_json_body_is_one_clear_400(
    client: WebClient, token: Callable[..., ApiToken], opening: str, depth: int
) -> None:
    reader = token(["decisions:read"])
    closing = "]" if opening == "[" else "}"
    nested = opening * depth + ("" if opening == "[" else "1") + closing * depth
    body = '{"purpose": "genai-training", "subjects": ' + nested + "}"
    r = client.post(
        "/v1/decisions/batch",
        content=body,
        headers={**reader.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "the request body: nested more than 32 levels deep"


def test_a_json_body_that_is_not_json_names_where(
    client: WebClient, token: Callable[..., ApiToken]
) -> None:
    reader = token(["decisions:read"])
    r = client.post(
        "/v1/decisions/batch",
        content='{"purpose": "genai-training", "subjects": ["m001",]}',
        headers={**reader.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("the request body: not valid JSON:"), r.text
    assert "(character 51)" in r.json()["error"]  # the "]" after the comma
