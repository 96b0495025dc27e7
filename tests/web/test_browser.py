"""The member pages in a real browser: Debian's headless Chromium driven by Playwright.

Each test gets its own copy of the demo platform served by uvicorn on a free port of
127.0.0.1, with secure cookies on (browsers accept Secure cookies from 127.0.0.1), and a
fresh browser context; the browser itself is started once per session. What is checked
here is what only a browser shows: clicks to reach the setting, the words after a choice,
downloads, the GPC header sent by the browser, cookie flags as the browser stores them,
keyboard use, axe-core's accessibility rules, response headers and the CSP as enforced;
and, after the demo's withdrawal, "Your data in AI" for members and the open retraining
tasks for staff.

Playwright's own browser download cannot work on these machines, so the tests launch
/usr/bin/chromium (Debian's ``chromium`` package). Without it they are skipped, except
under CI=true, where a missing browser fails them.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Locator, Page
from sqlalchemy import delete
from typer.testing import CliRunner

from askfirst import demo, open_ledger, privacy, times
from askfirst.cli import app as cli_app
from askfirst.decisions import decide, decide_many
from askfirst.ledger import EventType, Ledger
from askfirst.ledger.tables import notice_state
from askfirst.models import list_tasks
from askfirst.policy import default_policy_text as load_policy_text
from askfirst.policy import load_policy
from askfirst.web.app import WebSettings, create_app

PASSWORD = demo.MEMBER_PASSWORD
GENAI = "genai-training"
POLICY = load_policy()
SCREENSHOT = Path("/tmp/askfirst-data-privacy.png")
DO_NOT_TRAIN = {"x-robots-tag", "tdm-reservation", "content-usage"}


# ---- the browser and the server -----------------------------------------------------------


@dataclass
class LiveServer:
    """The web app served by uvicorn in a background thread."""

    base_url: str
    demo: demo.Demo
    server: uvicorn.Server
    thread: threading.Thread
    policy_path: Path | None = None

    def ledger(self) -> Ledger:
        """A second connection to the served ledger, to check what the pages recorded."""
        return open_ledger(self.demo.url, load_policy(self.policy_path))


@contextmanager
def serving(
    demo_dir: demo.Demo,
    policy_path: Path | None = None,
    before_start: Callable[[str], None] | None = None,
) -> Iterator[LiveServer]:
    """uvicorn on a free 127.0.0.1 port, serving ``demo_dir`` (with that policy file).
    ``before_start(base_url)`` runs once the port is known, before the app is made (to
    set the environment it reads, such as the address its e-mails link to)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if before_start is not None:
        before_start(f"http://127.0.0.1:{port}")
    settings = WebSettings(
        demo_dir.url, demo_dir.key_dir, policy_path=policy_path, secure_cookies=True
    )
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", demo_dir, server, thread, policy_path)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def live(demo_dir: demo.Demo) -> Iterator[LiveServer]:
    """uvicorn on a free 127.0.0.1 port, serving this test's copy of the demo."""
    with serving(demo_dir) as server:
        yield server


@pytest.fixture
def new_context(browser: Browser, live: LiveServer) -> Iterator[Callable[..., BrowserContext]]:
    """``new_context(**options)`` -> a fresh browser context on the live server."""
    made: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        ctx = browser.new_context(base_url=live.base_url, accept_downloads=True, **options)
        ctx.set_default_timeout(10_000)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def page(new_context: Callable[..., BrowserContext]) -> Page:
    """A page in a fresh context (no cookies, no extra headers)."""
    return new_context().new_page()


def sign_in(page: Page, username: str, password: str = PASSWORD) -> None:
    """Sign in through the form, as a person would."""
    page.goto("/signin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/settings")
    assert page.get_by_role("button", name=f"Sign out {username}").is_visible()


def submit(page: Page, button: Locator) -> None:
    """Click a form's button and wait for the page the server answers with."""
    with page.expect_navigation():
        button.click()


def purpose_section(page: Page, purpose: str) -> Locator:
    """The section of the Data privacy page about one purpose (a labelled region)."""
    return page.get_by_role("region", name=POLICY.purpose(purpose).title, exact=True)


def today_in_words() -> set[str]:
    """'29 Nov 2026' as the page writes dates (UTC); both days just after midnight."""
    now = datetime.now(UTC)
    return {f"{t.day} {t:%b %Y}" for t in (now, now - timedelta(minutes=5))}


def said_on_today(text: str, words: str) -> bool:
    return any(f"{words} on {day}." in text for day in today_in_words())


def subject_of(ledger: Ledger, handle: str) -> str:
    found = privacy.subject_for_handle(ledger, handle)
    assert found is not None, handle
    return found


# ---- navigation -----------------------------------------------------------------------------


def test_data_privacy_is_at_most_two_clicks_from_home_a_profile_a_post_and_an_error_page(
    page: Page,
) -> None:
    sign_in(page, "jo.rivera")
    page.goto("/in/anna.keller")
    post_url = page.locator("ul.posts a").first.get_attribute("href")
    assert post_url and post_url.startswith("/posts/")
    for start in ("/", "/in/anna.keller", post_url, "/in/no-such-member"):
        page.goto(start)
        clicks = 0
        page.get_by_role("link", name="Settings & Privacy").first.click()
        clicks += 1
        page.wait_for_url("**/settings")
        page.get_by_role("link", name="Data privacy", exact=True).click()
        clicks += 1
        page.wait_for_url("**/settings/data-privacy")
        assert page.get_by_role("heading", level=1).inner_text() == "Data privacy", start
        no = purpose_section(page, GENAI).get_by_role("button", name="No, don't use my data")
        assert no.is_visible(), start
        assert clicks <= 2, start


def test_a_signed_out_member_opening_data_privacy_signs_in_and_lands_there(page: Page) -> None:
    page.goto("/settings/data-privacy")
    assert page.get_by_role("heading", level=1).inner_text() == "Sign in"
    page.get_by_label("Username").fill("jo.rivera")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/settings/data-privacy")
    assert page.get_by_role("heading", level=1).inner_text() == "Data privacy"


def test_an_error_page_still_shows_the_member_signed_in(page: Page) -> None:
    sign_in(page, "jo.rivera")
    response = page.goto("/in/no-such-member")
    assert response is not None and response.status == 404
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("button", name="Sign out jo.rivera").is_visible()
    assert nav.get_by_role("link", name="Sign in").count() == 0


# ---- choices --------------------------------------------------------------------------------


def test_saying_no_shows_the_new_reason_and_one_click_on_yes_flips_it_back(
    page: Page, live: LiveServer
) -> None:
    sign_in(page, "jo.rivera")
    page.goto("/settings/data-privacy")
    section = purpose_section(page, GENAI)
    title = POLICY.purpose(GENAI).title

    submit(page, section.get_by_role("button", name="No, don't use my data"))
    section = purpose_section(page, GENAI)
    state = section.locator(".state").inner_text()
    assert said_on_today(state, "Not used: you said no"), state
    assert f"Saved: you said no to “{title}”" in page.get_by_role("status").inner_text()
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    submit(page, section.get_by_role("button", name="Yes, use my data"))
    state = purpose_section(page, GENAI).locator(".state").inner_text()
    assert said_on_today(state, "Used: you said yes"), state

    with live.ledger() as ledger:
        assert decide(ledger, subject_of(ledger, "jo.rivera"), GENAI).allowed


def test_turn_off_all_says_no_to_every_purpose(page: Page, live: LiveServer) -> None:
    sign_in(page, "jo.rivera")
    page.goto("/settings/data-privacy")
    for name in POLICY.purposes:  # start from yes everywhere, so that "off" is visible
        submit(page, purpose_section(page, name).get_by_role("button", name="Yes, use my data"))
    for name in POLICY.purposes:
        assert purpose_section(page, name).locator(".state").inner_text().startswith("Used")

    submit(page, page.get_by_role("button", name="Turn off all AI and research uses"))
    assert "every AI and research use is off" in page.get_by_role("status").inner_text()
    for name in POLICY.purposes:
        state = purpose_section(page, name).locator(".state").inner_text()
        assert said_on_today(state, "Not used: you said no"), (name, state)
    with live.ledger() as ledger:
        subject = subject_of(ledger, "jo.rivera")
        assert not any(decide(ledger, subject, name).allowed for name in POLICY.purposes)


def test_the_downloaded_receipt_verifies_with_the_cli(
    page: Page, live: LiveServer, tmp_path: Path
) -> None:
    sign_in(page, "jo.rivera")
    page.goto("/settings/data-privacy")
    submit(page, purpose_section(page, GENAI).get_by_role("button", name="No, don't use my data"))
    with page.expect_download() as info:
        page.get_by_role("link", name="Download your receipt").click()
    download = info.value
    assert re.fullmatch(r"askfirst-receipt-\d+\.json", download.suggested_filename)
    path = tmp_path / download.suggested_filename
    download.save_as(path)

    receipt = json.loads(path.read_text("utf-8"))
    with live.ledger() as ledger:
        assert receipt["piiPrincipalId"] == subject_of(ledger, "jo.rivera")
    assert receipt["purposes"][0]["purposeId"] == GENAI

    key_dir, db = str(live.demo.key_dir), live.demo.url
    args = ["receipt", "verify", str(path), "--key-dir", key_dir, "--db", db]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert "withdrawn" in result.output, result.output


def test_receipts_read_in_words_and_a_no_said_twice_is_recorded_once(
    page: Page, live: LiveServer
) -> None:
    sign_in(page, "jo.rivera")
    page.goto("/settings/data-privacy")
    title = POLICY.purpose(GENAI).title
    submit(page, purpose_section(page, GENAI).get_by_role("button", name="Yes, use my data"))
    submit(page, purpose_section(page, GENAI).get_by_role("button", name="No, don't use my data"))
    newest = page.get_by_role("region", name="Your receipts").get_by_role("listitem").first
    assert newest.inner_text().startswith(f"You said no to “{title}” on "), newest.inner_text()

    with live.ledger() as ledger:
        head = ledger.head()
    submit(page, purpose_section(page, GENAI).get_by_role("button", name="No, don't use my data"))
    status = page.get_by_role("status").inner_text()
    assert status.startswith(f"Nothing changed: the answer to “{title}” was already no"), status
    with live.ledger() as ledger:
        assert ledger.head() == head

    page.get_by_role("status").get_by_role("link", name="See your receipt").click()
    page.wait_for_url(f"**/receipts/{head.seq}")
    assert page.get_by_role("heading", level=1).inner_text() == f"Consent receipt {head.seq}"
    main = page.get_by_role("main").inner_text()
    assert f"You said no to “{title}” on " in main and "This is your answer now." in main
    assert page.get_by_role("link", name="Download the signed receipt (JSON file)").is_visible()
    assert serious(page) == []


# ---- Global Privacy Control ------------------------------------------------------------------


def test_gpc_from_the_browser_is_honoured_once_and_a_later_yes_stands(
    new_context: Callable[..., BrowserContext], live: LiveServer
) -> None:
    assert POLICY.purpose(GENAI).honours_gpc
    with live.ledger() as ledger:
        granted = decide_many(ledger, GENAI).to_pylist()
        member = next(
            p
            for p in (privacy.profile(ledger, d["subject"]) for d in granted if d["allowed"])
            if p.kind == "member" and p.gpc_seq is None and p.handle
        )
    assert member.handle is not None
    page = new_context(extra_http_headers={"Sec-GPC": "1"}).new_page()
    sign_in(page, member.handle)
    page.goto("/settings/data-privacy")

    assert page.get_by_text("Your browser sent a Global Privacy Control signal").is_visible()
    state = purpose_section(page, GENAI).locator(".state").inner_text()
    assert "Not used: your browser's Global Privacy Control signal" in state, state
    twin = page.request.get("/settings/data-privacy.json").json()
    genai = next(p for p in twin["purposes"] if p["name"] == GENAI)
    assert (genai["allowed"], genai["reason"]) == (False, "gpc")

    submit(page, purpose_section(page, GENAI).get_by_role("button", name="Yes, use my data"))
    section = purpose_section(page, GENAI)
    assert said_on_today(section.locator(".state").inner_text(), "Used: you said yes")
    conflict = section.get_by_text("you said yes here after it")
    assert conflict.is_visible()

    page.reload()  # the header is still sent: nothing new is recorded, the yes stands
    section = purpose_section(page, GENAI)
    assert said_on_today(section.locator(".state").inner_text(), "Used: you said yes")
    assert section.get_by_text("you said yes here after it").is_visible()
    with live.ledger() as ledger:
        gpc = [e for e in ledger.subject_events(member.subject) if e.type == EventType.GPC]
        assert [e.source for e in gpc] == ["web:sec-gpc"], gpc
        assert decide(ledger, member.subject, GENAI).allowed


# ---- security as the browser sees it ----------------------------------------------------------


def test_the_session_cookie_is_httponly_secure_and_samesite(page: Page, live: LiveServer) -> None:
    sign_in(page, "jo.rivera")
    cookies = {c["name"]: c for c in page.context.cookies(live.base_url)}
    assert "askfirst_session" in cookies, cookies
    session = cookies["askfirst_session"]
    assert session["httpOnly"] is True
    assert session["secure"] is True
    assert session["sameSite"] in ("Lax", "Strict"), session
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it


def test_the_csp_holds_no_inline_script_and_no_violations(page: Page) -> None:
    console: list[str] = []
    page.on(
        "console",
        lambda m: console.append(m.text) if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

    visited = ["/signin"]
    page.goto("/signin")
    sign_in(page, "jo.rivera")
    page.goto("/in/anna.keller")
    post_url = page.locator("ul.posts a").first.get_attribute("href")
    assert post_url
    for url in ["/", "/settings", "/settings/data-privacy", "/in/anna.keller", post_url]:
        response = page.goto(url)
        assert response is not None and response.ok, url
        visited.append(url)
        csp = response.headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "default-src 'none'" in csp, csp
        inline = page.evaluate(
            """() => [...document.querySelectorAll('*')].flatMap(el => [
                ...(el.tagName === 'SCRIPT' && !el.src ? ['<script> ' + el.textContent] : []),
                ...[...el.attributes]
                    .filter(a => a.name.startsWith('on') || a.name === 'style')
                    .map(a => el.tagName + ' ' + a.name + '=' + a.value),
            ])"""
        )
        assert inline == [], (url, inline)
    assert [m for m in console if "Content Security Policy" in m or "pageerror" in m] == [], (
        visited,
        console,
    )

    # The policy is really enforced: an inline script injected into the page does not run.
    ran = page.evaluate(
        """() => { const s = document.createElement('script');
                   s.textContent = 'window.__inlineRan = true';
                   document.body.appendChild(s); return window.__inlineRan === true; }"""
    )
    assert ran is False
    page.wait_for_timeout(100)  # let the console message arrive
    assert any("Content Security Policy" in m for m in console), console


def test_public_profile_and_post_carry_do_not_train_headers_only_when_the_answer_is_no(
    page: Page, live: LiveServer
) -> None:
    with live.ledger() as ledger:
        rows = decide_many(ledger, GENAI).to_pylist()

        def member_with(allowed: bool, reasons: tuple[str, ...]) -> str:
            for d in rows:
                if d["allowed"] is allowed and d["reason"] in reasons:
                    who = privacy.profile(ledger, d["subject"])
                    if who.kind == "member" and who.handle and who.status == "active":
                        return who.handle
            raise AssertionError(f"the demo has no active member with {reasons}")

        said_no = member_with(False, ("withdrawn",))
        said_yes = member_with(True, ("granted",))

    for handle, expect_signals in ((said_no, True), (said_yes, False)):
        response = page.goto(f"/in/{handle}")
        assert response is not None and response.ok, handle
        pages = {f"/in/{handle}": response.headers}
        post_url = page.locator("ul.posts a").first.get_attribute("href")
        assert post_url, handle
        post = page.goto(post_url)
        assert post is not None and post.ok
        pages[post_url] = post.headers
        for url, headers in pages.items():
            if expect_signals:
                assert "noai" in headers.get("x-robots-tag", ""), (url, headers)
                assert headers.get("tdm-reservation") == "1", (url, headers)
                assert headers.get("content-usage") == "train-ai=n", (url, headers)
            else:
                assert DO_NOT_TRAIN.isdisjoint(headers), (url, headers)


# ---- keyboard and screen readers ------------------------------------------------------------


def test_keyboard_alone_reaches_yes_and_no_and_enter_says_no(page: Page) -> None:
    sign_in(page, "jo.rivera")
    page.goto("/settings/data-privacy")
    page.locator("body").focus()
    title = POLICY.purpose(GENAI).title
    focused: list[str] = []
    for _ in range(80):
        page.keyboard.press("Tab")
        label = page.evaluate(
            """() => { const el = document.activeElement;
                       const section = el.closest('section');
                       const h = section ? section.querySelector('h2') : null;
                       return (h ? h.textContent + ' / ' : '') + el.textContent.trim(); }"""
        )
        focused.append(label)
        if label == f"{title} / No, don't use my data":
            break
    else:
        pytest.fail(f"Tab never reached the no button for {GENAI}: {focused}")
    assert f"{title} / Yes, use my data" in focused, focused

    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "Saved: you said no" in page.get_by_role("status").inner_text()
    state = purpose_section(page, GENAI).locator(".state").inner_text()
    assert said_on_today(state, "Not used: you said no"), state


def serious(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the current page, one line each."""
    results = Axe().run(page)
    return [
        f"{page.url}: {v['id']} ({v['impact']}): {v['help']} at "
        + "; ".join(", ".join(n["target"]) for n in v["nodes"])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_axe_finds_no_serious_or_critical_violations_on_member_pages(page: Page) -> None:
    page.goto("/signin")
    found = serious(page)
    sign_in(page, "jo.rivera")
    page.goto("/in/anna.keller")
    post_url = page.locator("ul.posts a").first.get_attribute("href")
    assert post_url
    for url in ["/", "/settings", "/settings/data-privacy", "/in/anna.keller", post_url]:
        page.goto(url)
        found += serious(page)
    assert found == [], "\n".join(found)


# ---- Your data in AI, and staff's retraining tasks ---------------------------------------


def withdrawn_member(live: LiveServer) -> tuple[str, dict[str, Any]]:
    """The demo member who said no after the model was trained, and their open task."""
    with live.ledger() as ledger:
        (task,) = list_tasks(ledger, status="open")
        handle = privacy.profile(ledger, task["subject"]).handle
    assert handle is not None
    return handle, task


def open_your_data_in_ai(page: Page) -> None:
    """From the home page to "Your data in AI" by clicking, as a member would."""
    page.goto("/")
    page.get_by_role("link", name="Settings & Privacy").first.click()
    page.wait_for_url("**/settings")
    page.get_by_role("link", name="Your data in AI").click()
    page.wait_for_url("**/settings/your-data-in-ai")
    assert page.get_by_role("heading", level=1).inner_text() == "Your data in AI"


def test_the_withdrawn_member_sees_the_snapshot_waiting_and_the_model_pending(
    page: Page, live: LiveServer
) -> None:
    handle, task = withdrawn_member(live)
    since = privacy.day(times.to_micros(times.parse(task["opened_at"])))
    sign_in(page, handle)
    open_your_data_in_ai(page)

    status = page.get_by_role("status").inner_text()
    assert "1 snapshot held your data; 1 waiting to be rebuilt without it" in status, status
    assert "1 model retraining pending" in status, status
    section = purpose_section(page, GENAI)
    assert task["snapshot_id"][:16] in section.locator("code").inner_text()
    now = section.locator(".state").inner_text()
    assert now.startswith(f"Waiting to be rebuilt without your data since {since}."), now
    models = section.get_by_role("table", name="AI models trained on this snapshot")
    row = models.get_by_role("row").filter(has_text=demo.MODEL[0])
    assert row.get_by_role("cell").all_inner_texts() == [
        demo.MODEL[0],
        demo.MODEL[1],
        f"Retraining or unlearning pending since {since}.",
    ]

    # The JSON twin says the same, from the link at the foot of the page.
    twin_link = page.get_by_role("link", name="JSON")
    assert twin_link.get_attribute("href") == "/settings/your-data-in-ai.json"
    with page.expect_response("**/settings/your-data-in-ai.json") as info:
        twin_link.click()
    response = info.value
    assert response.ok and response.headers["content-type"].startswith("application/json")
    twin = response.json()
    assert twin["subject"] == task["subject"] and twin["acting_for_other"] is False
    (snap,) = twin["snapshots"]
    assert (snap["snapshot_id"], snap["status"]) == (task["snapshot_id"], "stale")
    assert snap["models"][0]["in_words"] == f"Retraining or unlearning pending since {since}."


def test_a_member_who_said_yes_sees_in_use_and_one_not_in_it_is_told_so(
    page: Page,
) -> None:
    sign_in(page, "anna.keller")
    open_your_data_in_ai(page)
    section = purpose_section(page, GENAI)
    assert section.locator(".state").inner_text() == "In use."
    assert "Used: you said yes on" in section.inner_text()
    row = section.get_by_role("row").filter(has_text=demo.MODEL[0])
    assert "Trained with your data, which you allowed." in row.inner_text()

    page.get_by_role("button", name="Sign out anna.keller").click()
    page.wait_for_url(re.compile(r".*/$"))
    sign_in(page, "jo.rivera")
    open_your_data_in_ai(page)
    assert page.get_by_role("status").inner_text() == "No training snapshot holds your data."
    assert page.get_by_role("region").count() == 0


def sign_in_staff(page: Page, live: LiveServer) -> None:
    page.goto("/signin")
    page.get_by_label("Username").fill(demo.STAFF_USER)
    page.get_by_label("Password").fill(live.demo.staff_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/admin")


def test_staff_follow_admin_to_the_open_task_and_its_age(page: Page, live: LiveServer) -> None:
    _, task = withdrawn_member(live)
    sign_in_staff(page, live)
    page.goto("/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    page.wait_for_url("**/admin")
    page.get_by_role("link", name="1 open task", exact=True).click()
    page.wait_for_url("**/admin/tasks")
    assert "retraining" in page.get_by_role("heading", level=1).inner_text().lower()

    table = page.get_by_role("table")
    headers = table.get_by_role("columnheader").all_inner_texts()
    assert headers == ["task", "age (days)", "model", "owner", "what", "close"], headers
    rows = table.locator("tbody").get_by_role("row")
    assert rows.count() == 1
    cells = rows.first.get_by_role("cell").all_inner_texts()
    assert cells[0] == str(task["id"])
    assert re.fullmatch(r"\d+\.\d", cells[1]) and float(cells[1]) < 1, cells
    assert cells[2:4] == [f"{demo.MODEL[0]} {demo.MODEL[1]}", "ml-team@example.com"]
    assert task["subject"] in cells[4] and task["snapshot_id"][:16] in cells[4], cells

    twin = page.request.get("/admin/tasks.json")
    assert twin.ok
    assert [t["id"] for t in twin.json()["open"]] == [task["id"]]

    # The admin closes it from the console, saying what was done.
    page.get_by_label("What was done").fill("retrained as v2 without the member")
    page.get_by_role("button", name=f"Close task {task['id']}").click()
    page.wait_for_url("**/admin/tasks")
    assert f"Task {task['id']} closed" in page.get_by_role("status").inner_text()
    assert "No open tasks." in page.get_by_role("table").inner_text()
    with live.ledger() as ledger:
        (closed,) = list_tasks(ledger, status="closed")
    assert (closed["note"], closed["closed_by"]) == (
        "retrained as v2 without the member",
        f"staff:{demo.STAFF_USER}",
    )


def test_axe_finds_no_serious_or_critical_violations_on_the_ai_and_task_pages(
    page: Page, live: LiveServer
) -> None:
    handle, _ = withdrawn_member(live)
    found: list[str] = []
    for member in (handle, "jo.rivera"):  # a snapshot with a model table; and none at all
        sign_in(page, member)
        page.goto("/settings/your-data-in-ai")
        found += serious(page)
        page.get_by_role("button", name=f"Sign out {member}").click()
        page.wait_for_url(re.compile(r".*/$"))
    sign_in_staff(page, live)
    for url in ["/admin", "/admin/tasks", "/admin/notices", "/admin/notices/genai-training"]:
        page.goto(url)
        found += serious(page)
    page.goto("/notices")  # the public changelog
    found += serious(page)
    assert found == [], "\n".join(found)


# ---- a phone's width ------------------------------------------------------------------------

PHONE = {"width": 390, "height": 844}
APART_PX = 4  # the brand and the links keep at least this far apart
ONE_OF_EACH = re.compile(r"^/(in|posts|receipts)/[^/?]+")

LAYOUT = """() => {
    const box = (el) => { const r = el.getBoundingClientRect();
                          return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
    const brand = document.querySelector('header.top .brand');
    const links = document.querySelector('header.top nav ul');
    const links_on_page = [...document.querySelectorAll('a[href^="/"]:not([download])')]
        .map((a) => a.getAttribute('href'));
    return {scrollWidth: document.documentElement.scrollWidth, brand: box(brand),
            nav: box(links), links: links_on_page};
}"""


def apart(a: dict[str, float], b: dict[str, float]) -> bool:
    """True when two boxes are at least APART_PX apart, across or down."""
    return (
        a["right"] + APART_PX <= b["left"]
        or b["right"] + APART_PX <= a["left"]
        or a["bottom"] + APART_PX <= b["top"]
        or b["bottom"] + APART_PX <= a["top"]
    )


def narrow_problems(page: Page, starts: list[str], shots: Path, who: str) -> list[str]:
    """Visit ``starts`` and every page they link to (one of each kind of profile, post and
    receipt) at 390 px; what does not fit, one line each."""
    seen: set[str] = set()
    queue, found = list(starts), []
    while queue:
        url = queue.pop(0)
        key = ONE_OF_EACH.sub(r"/\1/*", url)
        if key in seen or url.split("?")[0].endswith((".json", ".atom")):  # data, not pages
            continue
        seen.add(key)
        page.goto(url)
        layout = page.evaluate(LAYOUT)
        if layout["scrollWidth"] > PHONE["width"] or not apart(layout["brand"], layout["nav"]):
            shot = shots / f"{who}-{len(seen)}.png"
            page.screenshot(path=str(shot), full_page=True)
            found.append(
                f"{who} {url}: scrollWidth {layout['scrollWidth']}, brand {layout['brand']}, "
                f"nav {layout['nav']} (see {shot})"
            )
        queue += [link for link in layout["links"] if link != "/signout"]
    assert len(seen) > len(starts), f"{who}: the pages link nowhere: {sorted(seen)}"
    return found


def test_every_page_fits_a_phone_without_sideways_scrolling_or_a_crowded_header(
    new_context: Callable[..., BrowserContext], live: LiveServer, tmp_path: Path
) -> None:
    withdrawn, _ = withdrawn_member(live)  # their "Your data in AI" has a model table
    found: list[str] = []
    members = {
        "jo.rivera": ["/", "/in/anna.keller", "/in/no-such-member"],
        "anna.keller": ["/", "/settings/data-privacy?subject=org-acme", "/in/acme"],
        withdrawn: ["/settings/your-data-in-ai"],
    }
    for member, starts in members.items():
        page = new_context(viewport=PHONE).new_page()
        sign_in(page, member)
        found += narrow_problems(page, starts, tmp_path, member)
    page = new_context(viewport=PHONE).new_page()
    found += narrow_problems(page, ["/", "/in/anna.keller"], tmp_path, "anonymous")
    sign_in_staff(page, live)
    found += narrow_problems(page, ["/admin"], tmp_path, "staff")
    assert found == [], "\n".join(found)


# ---- a notice, told on the next page ------------------------------------------------------

DEFAULT_ON = """
[purposes.genai-training]
title = "Use my data to train content-creation AI models"
description = "The platform may use your posts to train AI. It is now on by default in the US."
version = 2
categories = ["profile", "post", "comment", "article", "video", "ai-prompt"]
recipients = ["the platform", "its affiliates"]
default = "on"
grace_days = 30
public_signal = true
"""


@pytest.fixture
def told_live(demo_dir: demo.Demo, tmp_path: Path) -> Iterator[LiveServer]:
    """The demo after genai-training's version 2 was published: on by default in the US
    and India (after notice), the research purpose as it was."""
    shipped = load_policy_text()
    research = shipped[shipped.index("[purposes.third-party-research]") :]
    path = tmp_path / "policy.toml"
    path.write_text(DEFAULT_ON + "\n" + research)
    from askfirst import notices
    from askfirst.policy import load_policy as load

    with open_ledger(demo_dir.url, load(path), publishing=True) as ledger:
        notices.publish(
            ledger, ledger.policy, GENAI, changes="It is now on by default in the US and India.",
            actor="staff:pat",
        )  # fmt: skip
    with serving(demo_dir, path) as server:
        yield server


def test_a_member_is_told_on_their_next_page_and_can_say_no_at_once(
    browser: Browser, told_live: LiveServer
) -> None:
    ctx = browser.new_context(base_url=told_live.base_url)
    ctx.set_default_timeout(10_000)
    page = ctx.new_page()
    with told_live.ledger() as ledger:
        jo = subject_of(ledger, "jo.rivera")  # California: a default could apply after notice
    sign_in(page, "jo.rivera")
    banner = page.get_by_role("region", name=re.compile("We changed"))
    assert banner.is_visible()
    words = banner.inner_text()
    assert "version 2" in words and "Turns the default on in US and IN" in words
    starts = datetime.now(UTC) + timedelta(days=30)
    assert any(f"From {d.day} {d:%b %Y}" in words for d in (starts, starts + timedelta(days=1)))
    assert serious(page) == []
    with told_live.ledger() as ledger:
        told = [e for e in ledger.subject_events(jo) if e.type == EventType.NOTICE]
    assert [(e.value, e.notice_version) for e in told][-1] == ("in-app", 2)
    # the settings page now says when and how jo was told, and from when a default starts
    page.goto("/settings/data-privacy")
    assert page.get_by_role("region", name=re.compile("We changed")).count() == 0  # told once
    state = purpose_section(page, GENAI).locator(".state").inner_text()
    assert "We told you on" in state and "on this site" in state, state
    assert "unless you say no" in state
    # Say no now, from the banner on another page, is one click
    with told_live.ledger() as ledger, ledger.engine.begin() as conn:
        conn.execute(
            delete(notice_state).where(notice_state.c.subject_id == jo)
        )  # shown again: the banner is back on the next page (the test's doing, not the app's)
    page.goto("/settings")
    submit(page, page.get_by_role("button", name="Say no now"))
    page.wait_for_url("**/settings/data-privacy")
    state = purpose_section(page, GENAI).locator(".state").inner_text()
    assert said_on_today(state, "Not used: you said no"), state
    with told_live.ledger() as ledger:
        assert decide(ledger, jo, GENAI).reason == "withdrawn"
    ctx.close()


def test_the_one_click_no_from_an_email_works_once_in_a_browser(
    browser: Browser, live: LiveServer
) -> None:
    """The link in a notice e-mail, opened in a browser: a page with one button (opening
    it changes nothing), one click says no with a receipt, and the link then says it was
    used. No sign-in anywhere."""
    from askfirst import mail

    with live.ledger() as ledger:
        anna = subject_of(ledger, "anna.keller")
        version = ledger.policy.purpose(GENAI).version
        head = ledger.head()
    token = mail.make_token(mail.one_click_secret(live.demo.key_dir), anna, GENAI, version)
    ctx = browser.new_context(base_url=live.base_url)
    ctx.set_default_timeout(10_000)
    page = ctx.new_page()
    page.goto(f"/one-click/{token}")
    assert serious(page) == []
    with live.ledger() as ledger:
        assert ledger.head() == head  # opening the link wrote nothing
    submit(page, page.get_by_role("button", name="Say no"))
    assert serious(page) == []
    with live.ledger() as ledger:
        assert decide(ledger, anna, GENAI).reason == "withdrawn"
        last = ledger.head()
    assert last.seq == head.seq + 1
    page.goto(f"/one-click/{token}")  # a second time: used, and nothing more is written
    assert "used" in page.locator("main").inner_text().lower()
    with live.ledger() as ledger:
        assert ledger.head() == last
    ctx.close()
