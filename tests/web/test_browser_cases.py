"""Cases end to end in a real browser (issue 17): Debian's headless Chromium, a real local
SMTP server (aiosmtpd) and the demo's SQLite ledger, served by uvicorn.

A visitor reports a member's death on /requests with a PNG document chosen in the file
input; the link in the e-mail that arrives confirms it; reviewer ana proposes in her
browser and reviewer ben approves in his. Then someone asks to act for the member the same
way, is approved by the two the other way round, opens the sign-in link mailed to them,
lands on /representing, says no to one purpose and downloads the member's data. Last, the
demo's genai-training snapshot is rebuilt with ``askfirst snapshot rebuild``: the member's
records are gone from it and their names and handle from everyone else's.

The browser is the session's (``conftest.py``); the server, the contexts and axe come from
``test_browser`` (this module's ``live`` fixture serves the demo with mail set up, and
that module's ``new_context`` uses it).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import duckdb
import pytest
from aiosmtpd.controller import Controller
from PIL import Image
from playwright.sync_api import BrowserContext, Page
from sqlalchemy import select
from typer.testing import CliRunner

from askfirst import cases, demo, load_policy, open_ledger, privacy
from askfirst.cli import app as cli_app
from askfirst.decisions import decide, decide_many
from askfirst.ledger import Ledger
from askfirst.ledger.events import representative_actor
from askfirst.ledger.tables import lineage, subjects
from askfirst.lineage import list_snapshots
from test_mail import Sink, free_port

from . import test_browser as shared
from .test_browser import LiveServer, serious, serving, submit
from .test_training_api import relocate_snapshots

# The browser's contexts, as the other browser tests make them (a fixture is found by its
# name in this module; ``new_context`` takes this module's ``live``).
new_context = shared.new_context

GENAI, RESEARCH = "genai-training", "third-party-research"
KIN, SAM = "kin@example.com", "sam@example.com"


@dataclass
class MailServer:
    """What the local SMTP server received."""

    sink: Sink

    def to(self, address: str, subject_has: str) -> EmailMessage:
        """The one message to ``address`` whose subject has those words."""
        found = [
            m
            for m in self.sink.messages
            if str(m["To"]) == address and subject_has in str(m["Subject"])
        ]
        assert len(found) == 1, [(str(m["To"]), str(m["Subject"])) for m in self.sink.messages]
        return found[0]

    def link(self, address: str, subject_has: str, base_url: str, path: str) -> str:
        """The link to ``base_url + path...`` in that message's text."""
        body = self.to(address, subject_has).get_body(("plain",))
        assert body is not None
        text = body.get_content()
        found = re.search(re.escape(base_url + path) + r"\S+", text)
        assert found, text
        return found.group(0)


@pytest.fixture
def mail(monkeypatch: pytest.MonkeyPatch) -> Iterator[MailServer]:
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setenv("ASKFIRST_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
    monkeypatch.setenv("ASKFIRST_MAIL_FROM", "askfirst <privacy@example.com>")
    yield MailServer(sink)
    controller.stop()


@pytest.fixture
def live(
    demo_template: demo.Demo,
    demo_dir: demo.Demo,
    mail: MailServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LiveServer]:
    """The demo served with mail set up: its links point at this very server (the
    environment is set before the app is made, as an operator's would be)."""
    with open_ledger(demo_dir.url, load_policy()) as ledger:  # this test's own files
        relocate_snapshots(ledger, demo_template, demo_dir)

    def env(base_url: str) -> None:
        monkeypatch.setenv("ASKFIRST_BASE_URL", base_url)

    with serving(demo_dir, before_start=env) as server:
        yield server


# ---- helpers --------------------------------------------------------------------------------


def png_file(folder: Path, name: str) -> Path:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "gray").save(out, format="PNG")
    path = folder / name
    path.write_bytes(out.getvalue())
    return path


def staff_sign_in(page: Page, live: LiveServer, username: str) -> None:
    page.goto("/signin")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(live.demo.staff_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/admin")


def request_on_the_form(page: Page, kind: str, fields: dict[str, str], document: Path) -> int:
    """Fill /requests as a visitor would and send it; the case number the page names."""
    page.goto("/requests")
    page.get_by_role("radio", name=kind).check()
    for label, value in fields.items():
        page.get_by_label(label).fill(value)
    page.get_by_label("Documents").set_input_files(str(document))
    submit(page, page.get_by_role("button", name="Send the request"))
    heading = page.get_by_role("heading", level=1).inner_text()
    found = re.fullmatch(r"We received your request \(case (\d+)\)", heading)
    assert found, heading
    assert "We sent you an e-mail" in page.get_by_role("status").inner_text()
    return int(found.group(1))


def confirm_by_mail(page: Page, live: LiveServer, mail: MailServer, to: str, case_id: int) -> None:
    """Open the link the confirming e-mail holds, and press its button."""
    link = mail.link(to, f"case {case_id})", live.base_url, "/requests/confirm/")
    page.goto(link)
    assert page.get_by_role("heading", level=1).inner_text() == (
        f"Confirm your request (case {case_id})"
    )
    submit(page, page.get_by_role("button", name="Confirm my request"))
    assert page.get_by_role("heading", level=1).inner_text() == (
        f"Thank you: case {case_id} is confirmed"
    )


def open_case_page(page: Page, case_id: int) -> None:
    """From the review queue to the case, by its link."""
    page.goto("/admin/cases")
    page.get_by_role("link", name=str(case_id), exact=True).click()
    page.wait_for_url(f"**/admin/cases/{case_id}")


def propose(page: Page, case_id: int, reason: str) -> None:
    open_case_page(page, case_id)
    page.get_by_label("Why approve").fill(reason)
    submit(page, page.get_by_role("button", name="Propose to approve"))
    assert "Proposed: a second reviewer decides." in page.get_by_role("status").inner_text()
    # The proposer is offered no approval of their own proposal.
    assert page.get_by_role("button", name="Approve", exact=True).count() == 0


def approve(page: Page, case_id: int) -> str:
    open_case_page(page, case_id)
    submit(page, page.get_by_role("button", name="Approve", exact=True))
    heading = page.get_by_role("heading", level=1).inner_text()
    assert heading.endswith("— approved"), heading
    return page.get_by_role("status").inner_text()


@dataclass(frozen=True)
class Member:
    id: str
    handle: str
    names: list[str]


def member_in_the_snapshot(ledger: Ledger, besides: list[str]) -> Member:
    """A member (not one of ``besides``) whose own records and whose mentions in others'
    records are in the demo's genai-training snapshot, by their yes."""
    (snapshot,) = list_snapshots(ledger, GENAI)
    q = (
        select(lineage.c.subject_id, subjects.c.handle, subjects.c.names)
        .join(subjects, subjects.c.id == lineage.c.subject_id)
        .where(lineage.c.author_records > 0, lineage.c.mention_records > 0)
        .order_by(lineage.c.mention_records.desc(), lineage.c.subject_id)
    )
    with ledger.engine.connect() as conn:
        rows = conn.execute(q).all()
    assert snapshot["snapshot_id"]
    for subject, handle, names in rows:
        if handle not in besides and decide(ledger, subject, GENAI).allowed:
            return Member(subject, handle, json.loads(names))
    raise AssertionError("no member of the demo's snapshot is mentioned in it")


def snapshot_texts(folder: Path) -> list[tuple[str, str]]:
    """(record id, text) of every record in a snapshot's Parquet files."""
    files = str(folder / "data" / "*.parquet")
    rows = duckdb.sql(f"SELECT record_id, text FROM read_parquet('{files}')").fetchall()
    return [(str(r), str(t)) for r, t in rows]


def records_by(corpus: Path, author: str) -> set[str]:
    ids = set()
    for f in corpus.glob("*.jsonl"):
        for line in f.read_text("utf-8").splitlines():
            record = json.loads(line)
            if record["author_id"] == author:
                ids.add(record["record_id"])
    return ids


def mentions_of(member: Member, text: str) -> list[str]:
    low = text.lower()
    return [w for w in [*member.names, f"@{member.handle}"] if w.lower() in low]


# ---- the test -------------------------------------------------------------------------------


def test_a_death_and_a_representative_reviewed_by_two_in_the_browser(
    new_context: Callable[..., BrowserContext],
    live: LiveServer,
    mail: MailServer,
    tmp_path: Path,
) -> None:
    with live.ledger() as ledger:
        member = member_in_the_snapshot(ledger, live.demo.sample_members)
        (snapshot,) = list_snapshots(ledger, GENAI)
    old = Path(snapshot["path"])
    assert str(live.demo.folder) in str(old)  # this test's copy, not the shared template
    before = snapshot_texts(old)
    theirs = records_by(live.demo.folder / "corpus", member.id)
    assert theirs & {r for r, _ in before}, "the member's records are in the snapshot"
    assert any(mentions_of(member, t) for r, t in before if r not in theirs)

    visitor = new_context().new_page()
    ana = new_context().new_page()
    ben = new_context().new_page()
    staff_sign_in(ana, live, demo.REVIEWERS[0])
    staff_sign_in(ben, live, demo.REVIEWERS[1])
    found: list[str] = []

    # A death, reported by someone without an account, with a document.
    visitor.goto("/requests")
    found += serious(visitor)
    certificate = png_file(tmp_path, "certificate.png")
    death = request_on_the_form(
        visitor,
        "Report that a member died",
        {
            "The member's handle": member.handle,
            "A link to a public notice of the death": "https://news.example/obituary",
            "Your e-mail, to confirm this request": KIN,
        },
        certificate,
    )
    ana.goto("/admin/cases")
    assert ana.get_by_role("link", name=str(death), exact=True).count() == 0  # not confirmed
    confirm_by_mail(visitor, live, mail, KIN, death)

    ana.goto("/admin/cases")
    found += serious(ana)
    open_case_page(ana, death)
    found += serious(ana)
    doc = ana.get_by_role("link", name="Document 1")
    assert "image/png" in ana.get_by_role("listitem").filter(has=doc).inner_text()
    href = doc.get_attribute("href")
    assert href is not None
    shown = ana.request.get(href)  # what the reviewer opens is what the visitor sent
    assert shown.ok and shown.body() == certificate.read_bytes()
    propose(ana, death, "The obituary and the certificate agree.")
    assert approve(ben, death) == "Approved, and carried out."
    with live.ledger() as ledger:
        assert decide(ledger, member.id, GENAI).reason == "deceased"
        steps = [(s.step, s.actor) for s in cases.get(ledger, death).steps]
    assert steps == [
        ("open", f"requester:{death}"),
        ("verified", f"requester:{death}"),
        ("propose", "staff:ana"),
        ("approve", "staff:ben"),
    ]

    # Someone asks to act for the member; the two reviewers decide the other way round.
    visitor.goto("/requests")
    rep_case = request_on_the_form(
        visitor,
        "Act for a member who died",
        {
            "The member's handle": member.handle,
            "Your e-mail if you ask to act": SAM,
            "Your e-mail, to confirm this request": SAM,
        },
        png_file(tmp_path, "letter.png"),
    )
    confirm_by_mail(visitor, live, mail, SAM, rep_case)
    propose(ben, rep_case, "The letter of administration names them.")
    assert approve(ana, rep_case) == (
        "Approved. The representative was mailed a one-time sign-in link."
    )

    # The representative signs in with the link from their mail.
    rep = new_context().new_page()
    link = mail.link(SAM, "You may now act for", live.base_url, "/signin/link/")
    rep.goto(link)
    submit(rep, rep.get_by_role("button", name="Sign in"))
    rep.wait_for_url("**/representing")
    heading = rep.get_by_role("heading", level=1).inner_text()
    assert heading == f"You act for {', '.join(member.names)}", heading
    found += serious(rep)
    research = shared.POLICY.purpose(RESEARCH).title
    submit(rep, rep.get_by_role("button", name=f"Say no to {research}"))
    assert rep.get_by_role("status").inner_text().startswith(f"Saved: you objected to “{research}”")
    with live.ledger() as ledger:
        said = [e for e in ledger.subject_events(member.id) if e.purpose == RESEARCH][-1]
    assert (said.type, said.value, said.actor) == (
        "choice",
        "object",
        representative_actor(rep_case),
    )
    with rep.expect_download() as info:
        rep.get_by_role("link", name="Download their data (JSON)").click()
    saved = tmp_path / "member-data.json"
    info.value.save_as(saved)
    report = json.loads(saved.read_text("utf-8"))
    assert report["subject"]["id"] == member.id
    # The link works once.
    again = new_context().new_page()
    again.goto(link)
    with again.expect_navigation() as used:
        again.get_by_role("button", name="Sign in").click()
    assert used.value is not None and used.value.status == 400
    assert "used or expired" in again.get_by_role("main").inner_text()
    assert found == [], "\n".join(found)

    # The snapshot, rebuilt after the death, holds nothing of the member's.
    args = ["snapshot", "rebuild", snapshot["snapshot_id"], "-q", "--json"]
    args += ["--db", live.demo.url, "--key-dir", str(live.demo.key_dir)]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    (rebuilt,) = json.loads(result.output)
    assert rebuilt["excluded"].get("deceased", 0) > 0
    after = snapshot_texts(Path(rebuilt["path"]))
    assert after and not (theirs & {r for r, _ in after})
    left = [(r, t) for r, t in after if mentions_of(member, t)]
    assert left == [], left
    with live.ledger() as ledger:
        table = decide_many(ledger, GENAI, [member.id])
        assert table.to_pylist()[0]["reason"] == "deceased"
        assert privacy.profile(ledger, member.id).status == "deceased"
