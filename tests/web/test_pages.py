"""The pages, in-process: every page and its JSON twin, HEAD wherever GET answers, the
do-not-train signals taken from the policy, and the words of an organization's page.

Each test runs on its own copy of the demo platform (see conftest.py).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from askfirst import demo, privacy
from askfirst.ledger import EventType, Ledger
from askfirst.ledger.tables import content, subjects
from askfirst.web.app import WebSettings, create_app
from askfirst.web.pages import router as pages_router

ANNA, ACME = "m001", "org-acme"  # the demo's sample member (she runs Acme's page) and Acme
SIGNALS = {"x-robots-tag": "noai, noimageai", "tdm-reservation": "1", "content-usage": "train-ai=n"}
PARAM = re.compile(r"{(\w+)(?::\w+)?}")
DATA_IT_USES = re.compile(r"<dt>Data it uses</dt><dd>(.*?)</dd>")


class Links(HTMLParser):
    """The page's links (``<a href>``) and its ``<link rel="alternate">`` JSON twin."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.alternate: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))
        if tag == "link" and a.get("rel") == "alternate" and a.get("type") == "application/json":
            self.alternate = a.get("href")


def twin_of(url: str) -> str:
    """Where a page's JSON twin is: the same path plus .json, the same query."""
    parts = urlsplit(url)
    path = "/index.json" if parts.path == "/" else parts.path + ".json"
    return f"{path}?{parts.query}" if parts.query else path


def a_public_post(ledger: Ledger, author: str) -> str:
    q = select(content.c.record_id).where(content.c.author_id == author, content.c.public)
    with ledger.engine.connect() as conn:
        found = conn.execute(q.limit(1)).scalar()
    assert found, author
    return str(found)


def samples(ledger: Ledger) -> dict[str, list[str]]:
    """The values the pages' path parameters are visited with."""
    choices = [e.seq for e in ledger.subject_events(ANNA) if e.type == EventType.CHOICE]
    assert choices, "the demo's anna.keller has made no choice"
    return {
        "handle": ["anna.keller", "acme"],
        "record_id": [a_public_post(ledger, ANNA)],
        "seq": [str(choices[-1])],
        "purpose": ["genai-training"],
    }


def page_urls(ledger: Ledger) -> dict[str, list[str]]:
    """Each GET route of the pages' router (JSON twins left out) -> the URLs visited."""
    values = samples(ledger)
    urls: dict[str, list[str]] = {}
    for route in pages_router.routes:
        if not isinstance(route, APIRoute) or "GET" not in route.methods:
            continue
        if route.path.endswith(".json"):
            continue
        names = PARAM.findall(route.path)
        assert len(names) <= 1, f"{route.path}: give the test samples for several parameters"
        if not names:
            urls[route.path] = [route.path]
            continue
        assert names[0] in values, f"{route.path}: add samples for {{{names[0]}}} to the test"
        urls[route.path] = [PARAM.sub(v, route.path) for v in values[names[0]]]
    urls["/settings/data-privacy"].append(f"/settings/data-privacy?subject={ACME}")
    urls["/settings/your-data-in-ai"].append(f"/settings/your-data-in-ai?subject={ACME}")
    return urls


@pytest.fixture
def visitors(client: TestClient, signed_in: Callable[..., TestClient]) -> dict[str, TestClient]:
    """An anonymous visitor, a member who runs an organization's page, and staff."""
    return {
        "anonymous": client,
        "anna.keller": signed_in("anna.keller"),
        "staff": signed_in(demo.STAFF_USER),
    }


def test_every_page_and_every_json_twin_it_links_to_answers(
    app: FastAPI, visitors: dict[str, TestClient]
) -> None:
    shown: dict[str, set[str]] = {}  # route -> who saw it as a page
    twins_followed: set[str] = set()
    for route, urls in page_urls(app.state.ledger).items():
        for url in urls:
            for who, c in visitors.items():
                r = c.get(url, follow_redirects=False)
                if r.status_code != 200:
                    continue
                if url.endswith(".atom"):  # a feed, for feed readers: not a page
                    assert r.headers["content-type"].startswith("application/atom+xml"), url
                    continue
                assert r.headers["content-type"].startswith("text/html"), (who, url)
                shown.setdefault(route, set()).add(who)
                links = Links(r.text)
                assert links.alternate == twin_of(url), (who, url, links.alternate)
                assert twin_of(url) in links.hrefs, (who, url, "no JSON link in the page")
                for href in {h for h in links.hrefs if urlsplit(h).path.endswith(".json")}:
                    twin = c.get(href, follow_redirects=False)
                    assert twin.status_code == 200, (who, url, href, twin.text[:200])
                    assert twin.headers["content-type"].startswith("application/json"), href
                    assert twin.json() is not None
                    twins_followed.add(urlsplit(href).path)
    # Every other route answers JSON at its own path (the receipt keys, say).
    for route, urls in page_urls(app.state.ledger).items():
        if route not in shown and not route.endswith(".atom"):
            r = visitors["anonymous"].get(urls[0])
            assert r.status_code == 200, (route, r.status_code)
            assert r.headers["content-type"].startswith("application/json"), route
    assert {"/in/anna.keller.json", "/in/acme.json", "/index.json"} <= twins_followed
    assert any(t.startswith("/posts/") for t in twins_followed), twins_followed
    assert shown["/in/{handle}"] >= {"anonymous"}
    assert shown["/posts/{record_id}"] >= {"anonymous"}
    assert shown["/admin"] == {"staff"}


def test_the_public_pages_json_twins_say_what_the_pages_say(
    visitors: dict[str, TestClient],
) -> None:
    c = visitors["anonymous"]
    profile = c.get("/in/anna.keller.json")
    assert profile.status_code == 200, profile.text
    assert profile.json()["handle"] == "anna.keller"
    post_id = profile.json()["posts"][0]["record_id"]
    post = c.get(f"/posts/{post_id}.json")
    assert post.status_code == 200, post.text
    assert (post.json()["record_id"], post.json()["author"]) == (post_id, "anna.keller")
    assert c.get("/in/no-such-member.json").status_code == 404


def test_the_organization_pages_twin_is_the_organizations(
    visitors: dict[str, TestClient],
) -> None:
    anna = visitors["anna.keller"]
    page = anna.get(f"/settings/data-privacy?subject={ACME}")
    twin = anna.get(Links(page.text).alternate or "")
    assert twin.status_code == 200 and twin.json()["subject"] == ACME


# ---- HEAD --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/", "/signin", "/in/anna.keller", "/index.json", "/v1/health"])
def test_head_answers_wherever_get_does_with_the_same_headers_and_no_body(
    client: TestClient, url: str
) -> None:
    got = client.get(url)
    head = client.head(url)
    assert (head.status_code, got.status_code) == (200, 200), url
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]


def test_head_keeps_the_do_not_train_signals_and_a_members_session(
    visitors: dict[str, TestClient],
) -> None:
    jo = visitors["anonymous"].get("/in/jo.rivera")
    head = visitors["anonymous"].head("/in/jo.rivera")
    assert {k: head.headers.get(k) for k in SIGNALS} == {k: jo.headers.get(k) for k in SIGNALS}
    assert visitors["anna.keller"].head("/settings/data-privacy").status_code == 200
    assert visitors["anonymous"].head("/settings", follow_redirects=False).status_code == 303


def test_a_wrong_method_names_head_beside_get(client: TestClient) -> None:
    r = client.post("/")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    r = client.head("/v1/receipts/verify")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


# ---- do-not-train signals from the policy ------------------------------------------------

GROK_POLICY = """
[purposes.grok-training]
title = "Use my posts to train Grok"
version = 1
categories = ["profile", "post"]
public_signal = true

[purposes.ads-research]
title = "Research on how ads perform"
version = 1
categories = ["post"]
"""

NO_SIGNAL_POLICY = """
[purposes.ads-research]
title = "Research on how ads perform"
version = 1
categories = ["post"]
"""


@pytest.fixture
def app_with_policy(demo_dir: demo.Demo, tmp_path: Path) -> Iterator[Callable[[str], FastAPI]]:
    """``app_with_policy(toml)`` -> the web app on this test's demo, under that policy."""
    made: list[FastAPI] = []

    def make(text: str) -> FastAPI:
        path = tmp_path / f"policy-{len(made)}.toml"
        path.write_text(text)
        settings = WebSettings(demo_dir.url, demo_dir.key_dir, path, secure_cookies=False)
        made.append(create_app(settings))
        return made[-1]

    yield make
    for a in made:
        a.state.ledger.close()


def public_pages(c: TestClient, ledger: Ledger, handle: str) -> dict[str, dict[str, str]]:
    """A member's profile and one of their posts -> the headers each answered with."""
    subject = privacy.subject_for_handle(ledger, handle)
    assert subject
    answers = {}
    for url in (f"/in/{handle}", f"/posts/{a_public_post(ledger, subject)}"):
        for u in (url, f"{url}.json"):
            r = c.get(u)
            assert r.status_code == 200, (u, r.text[:200])
            answers[u] = dict(r.headers)
    return answers


def test_a_platform_whose_training_purpose_is_grok_training_signals_do_not_train(
    app_with_policy: Callable[[str], FastAPI],
) -> None:
    app = app_with_policy(GROK_POLICY)
    ledger: Ledger = app.state.ledger
    with TestClient(app) as c:
        for url, headers in public_pages(c, ledger, "anna.keller").items():
            assert {k: headers.get(k) for k in SIGNALS} == SIGNALS, url
        assert "train AI: not allowed" in c.get("/in/anna.keller").text

        privacy.choose(ledger, ANNA, "grok-training", "grant", actor=ANNA, source="web")
        for url, headers in public_pages(c, ledger, "anna.keller").items():
            assert SIGNALS.keys().isdisjoint(headers), url
        assert c.get("/in/anna.keller.json").json()["ai_training"] == "allowed"


def test_with_no_purpose_carrying_public_signal_pages_carry_no_signal(
    app_with_policy: Callable[[str], FastAPI],
) -> None:
    app = app_with_policy(NO_SIGNAL_POLICY)
    with TestClient(app) as c:
        for url, headers in public_pages(c, app.state.ledger, "jo.rivera").items():
            assert SIGNALS.keys().isdisjoint(headers), url
        page = c.get("/in/jo.rivera")
        assert "train AI" not in page.text
        assert c.get("/in/jo.rivera.json").json()["ai_training"] is None


def test_the_shipped_policy_signals_through_genai_trainings_flag(client: TestClient) -> None:
    # jo.rivera has not said yes to genai-training in the demo; anna.keller has.
    assert {k: client.get("/in/jo.rivera").headers.get(k) for k in SIGNALS} == SIGNALS
    assert SIGNALS.keys().isdisjoint(client.get("/in/anna.keller").headers)


# ---- an organization's page --------------------------------------------------------------


def test_an_organizations_settings_page_names_it_and_speaks_of_the_page(
    visitors: dict[str, TestClient],
) -> None:
    anna = visitors["anna.keller"]
    page = anna.get(f"/settings/data-privacy?subject={ACME}")
    assert page.status_code == 200
    text = html.unescape(page.text)
    h1 = re.search(r"<h1>(.*?)</h1>", text, re.S)
    assert h1 and h1.group(1) == "Data privacy: Acme Robotics", h1
    uses = DATA_IT_USES.findall(text)
    assert uses and all(u.startswith("this page's profile, the page's posts") for u in uses)
    buttons = re.findall(r"<button[^>]*>([^<]*)</button>", text)
    assert {"Yes, use this page's data", "No, don't use this page's data"} <= set(buttons)
    assert not [b for b in buttons if "my data" in b], buttons
    assert "See where the page's data went" in text
    twin = anna.get(f"/settings/data-privacy.json?subject={ACME}").json()
    assert twin["name"] == "Acme Robotics"
    assert twin["purposes"][0]["categories_in_words"][:2] == [
        "this page's profile",
        "the page's posts",
    ]
    ai = anna.get(f"/settings/your-data-in-ai?subject={ACME}")
    assert "<h1>Your data in AI: Acme Robotics</h1>" in ai.text

    own = html.unescape(anna.get("/settings/data-privacy").text)
    assert "<h1>Data privacy</h1>" in own
    assert DATA_IT_USES.findall(own)[0].startswith("your profile, posts")
    assert "No, don't use my data" in own
    assert "Data privacy for Acme Robotics" in own  # the link to the page's settings


def test_an_organization_without_names_is_named_by_its_handle(
    app: FastAPI, visitors: dict[str, TestClient]
) -> None:
    ledger: Ledger = app.state.ledger
    with ledger.engine.begin() as conn:
        conn.execute(update(subjects).where(subjects.c.id == ACME).values(names="[]"))
    page = visitors["anna.keller"].get(f"/settings/data-privacy?subject={ACME}")
    assert "<h1>Data privacy: acme</h1>" in page.text
