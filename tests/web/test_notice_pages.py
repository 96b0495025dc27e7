"""The public changelog of notices (issue 16): /notices, its JSON twin and an Atom feed
list every published version of every purpose with its date, what it added or removed,
and its ledger seq — so a quiet widening or a default switched back on shows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import feedparser
import pytest
from fastapi import FastAPI

from askfirst import demo, notices, parse_policy, privacy
from askfirst.accounts import create_token
from askfirst.decisions import decide_many
from askfirst.demo import EDITOR_USER, STAFF_USER
from askfirst.policy import default_policy_text
from askfirst.web.app import WebSettings, create_app

from .conftest import MEMBER_PASSWORD, WebClient, csrf_in, sign_in

WIDER = """
[purposes.genai-training]
title = "Use my data to train content-creation AI models"
description = "Now with your messages' metadata too."
version = 2
categories = ["profile", "post", "comment", "article", "video", "ai-prompt"]
recipients = ["the platform", "its affiliates", "model vendors"]
default = "on"
grace_days = 30
public_signal = true

[jurisdictions]
opt_out = ["US", "IN"]
"""


def _widen(app: FastAPI) -> None:
    """Publish a version 2 of genai-training that adds a recipient and turns the default
    on in the US and India (what the demo's shipped policy file would become)."""
    notices.publish(
        app.state.ledger,
        parse_policy(WIDER, "wider.toml"),
        "genai-training",
        changes="We now share with model vendors, and it is on by default in the US and India.",
        actor="staff:pat",
    )


def test_the_changelog_lists_every_version_newest_first(app: FastAPI, client: WebClient) -> None:
    first = client.get("/notices.json").json()["notices"]
    assert sorted(n["purpose"] for n in first) == ["genai-training", "third-party-research"]
    assert all(n["version"] == 1 and not n["widens"] for n in first)
    _widen(app)
    rows = client.get("/notices.json").json()["notices"]
    top = rows[0]
    assert (top["purpose"], top["version"], top["widens"]) == ("genai-training", 2, True)
    assert top["what_changed"][0] == "Adds recipients: model vendors."
    assert top["what_changed"][1].startswith("Turns the default on in US and IN, from ")
    assert top["seq"] > max(r["seq"] for r in rows[1:])
    page = client.get("/notices")
    assert page.status_code == 200
    text = page.text
    assert "version 2" in text and "This version widens the use" in text
    assert "Adds recipients: model vendors." in text
    assert f"ledger seq {top['seq']}" in text
    assert 'href="/notices.json"' in text  # the JSON twin


def test_the_atom_feed_parses_and_names_each_version(app: FastAPI, client: WebClient) -> None:
    _widen(app)
    r = client.get("/notices.atom")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/atom+xml")
    feed = feedparser.parse(r.content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10"
    titles = [e.title for e in feed.entries]
    assert titles[0] == "Use my data to train content-creation AI models — version 2 (widens)"
    assert len(feed.entries) == 3
    first = feed.entries[0]
    assert "Adds recipients: model vendors." in first.summary
    assert first.link.endswith("/notices#n-genai-training-2")
    assert len({e.id for e in feed.entries}) == 3
    assert feed.feed.updated == first.published


def test_the_changelog_is_public_and_linked_from_every_page(client: WebClient) -> None:
    home = client.get("/")
    assert 'href="/notices"' in home.text
    assert client.get("/notices").status_code == 200  # no sign-in


# ---- publishing from the API and the staff console ---------------------------------------------

V1_TERMS = 'recipients = ["the platform", "its affiliates"]\ndefault = "off"'
V2_TERMS = 'recipients = ["the platform", "its affiliates", "model vendors"]\ndefault = "off"'


@pytest.fixture
def edited(demo_dir: demo.Demo, tmp_path: Path) -> Iterator[tuple[FastAPI, Path]]:
    """The demo's app reading a policy file of its own (the shipped one, as published),
    which the test then edits as a policy editor would."""
    path = tmp_path / "policy.toml"
    path.write_text(default_policy_text())
    settings = WebSettings(demo_dir.url, demo_dir.key_dir, policy_path=path, secure_cookies=False)
    application = create_app(settings)
    yield application, path
    application.state.ledger.close()


def _edit_to_v2(path: Path) -> None:
    text = path.read_text()
    assert text.count(V1_TERMS) == 1 and text.count("version = 1") == 2
    path.write_text(text.replace(V1_TERMS, V2_TERMS).replace("version = 1", "version = 2", 1))


def test_an_admin_token_publishes_the_policy_files_new_version(
    edited: tuple[FastAPI, Path], demo_dir: demo.Demo
) -> None:
    app, path = edited
    _, admin = create_token(app.state.ledger, "pub-admin", ["admin"])
    _, reader = create_token(app.state.ledger, "pub-reader", ["decisions:read"])
    url = "/v1/purposes/genai-training/notices"
    body = {"changes": "We now share with model vendors."}
    with WebClient(app) as c:
        head = app.state.ledger.head()
        r = c.post(url, json=body, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 400 and "already published" in r.json()["error"], r.text
        _edit_to_v2(path)
        r = c.post(url, json=body, headers={"Authorization": f"Bearer {reader}"})
        assert r.status_code == 403, r.text
        assert app.state.ledger.head() == head
        r = c.post(url, json=body, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 201, r.text
        made = r.json()
        assert (made["version"], made["recipients"][-1]) == (2, "model vendors")
        assert made["seq"] == head.seq + 1
        listed = c.get("/v1/notices").json()
        assert (listed[0]["purpose"], listed[0]["version"]) == ("genai-training", 2)
        # the server follows the new version at once: a yes under version 1 must be given again
        assert app.state.ledger.policy.purpose("genai-training").version == 2


def test_staff_publish_from_the_console_with_a_csrf_token(
    edited: tuple[FastAPI, Path], demo_dir: demo.Demo
) -> None:
    app, path = edited
    _edit_to_v2(path)
    staff = sign_in(app, EDITOR_USER, demo_dir.staff_password)
    page = staff.get("/admin/notices")
    assert page.status_code == 200
    assert "Publish genai-training version 2" in page.text
    assert "Publish third-party-research" not in page.text  # nothing new to publish
    form = {"changes": "We now share with model vendors.", "csrf_token": "wrong"}
    head = app.state.ledger.head()
    r = staff.post("/admin/notices/genai-training/publish", data=form, follow_redirects=False)
    assert r.status_code == 403 and app.state.ledger.head() == head
    form["csrf_token"] = csrf_in(page.text)
    r = staff.post("/admin/notices/genai-training/publish", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/notices#n-genai-training-2"
    assert "version 2" in staff.get("/notices").text
    # a member cannot see the page, let alone publish
    member = sign_in(app, demo_dir.sample_members[0], MEMBER_PASSWORD)
    assert member.get("/admin/notices").status_code == 403
    staff.close()
    member.close()


# ---- the staff's view: who was told, and what they chose -------------------------------------


def test_staff_see_who_was_told_and_what_they_chose_per_jurisdiction(
    app: FastAPI, demo_dir: demo.Demo
) -> None:
    staff = sign_in(app, STAFF_USER, demo_dir.staff_password)
    data = staff.get("/admin/notices/genai-training.json").json()
    totals = data["totals"]
    # the demo told every member by e-mail; genai-training is off by default everywhere
    assert totals["told_email"] == 200 and totals["could_default"] == 0
    assert totals["have_default"] == 0 and totals["in_grace"] == 0
    by_place = {j["jurisdiction"]: j for j in data["jurisdictions"]}
    assert by_place["DE"]["regime"] == "opt-in" and by_place["US-CA"]["regime"] == "opt-out"
    assert sum(j["subjects"] for j in data["jurisdictions"]) == totals["subjects"]
    # the figures agree with the decisions themselves
    reasons = decide_many(app.state.ledger, "genai-training").column("reason").to_pylist()
    assert totals["said_yes"] == reasons.count("granted")
    assert totals["said_no"] == reasons.count("withdrawn") + reasons.count("gpc")
    weeks = data["choices_over_time"]
    assert sum(w["yes"] + w["no"] for w in weeks) == sum(
        1 for e in app.state.ledger.events(limit=100_000)
        if e.type == "choice" and e.purpose == "genai-training"
    )  # fmt: skip
    page = staff.get("/admin/notices/genai-training")
    assert page.status_code == 200
    assert page.text.count("<svg") == 2  # one panel per regime, drawn on the server
    assert "opt-out: " in page.text and "in by default" in page.text
    assert "<script" not in page.text
    member = sign_in(app, demo_dir.sample_members[0], MEMBER_PASSWORD)
    assert member.get("/admin/notices/genai-training.json").status_code == 403
    assert staff.get("/admin/notices/no-such-purpose").status_code == 404
    staff.close()
    member.close()


def test_a_default_on_notice_counts_who_it_could_reach_and_who_is_waiting(
    edited: tuple[FastAPI, Path], demo_dir: demo.Demo
) -> None:
    """After a version that is on by default in the US and India is published, nobody has
    the default yet: those told of it are inside their grace period."""
    app, path = edited
    text = path.read_text()
    path.write_text(
        text.replace(V1_TERMS, 'recipients = ["the platform", "its affiliates"]\ndefault = "on"')
        .replace("version = 1", "version = 2", 1)
        .replace('opt_out = ["US", "IN"]', 'opt_out = ["US", "IN"]')
    )
    notices.publish_file(app.state.ledger, path, "genai-training", changes="On by default "
                         "in the US and India.", actor="staff:pat")  # fmt: skip
    staff = sign_in(app, STAFF_USER, demo_dir.staff_password)
    before = staff.get("/admin/notices/genai-training.json").json()["totals"]
    assert before["told_in_app"] == 0 and before["have_default"] == 0
    member = sign_in(app, _undecided_in_the_us(app), MEMBER_PASSWORD)  # told on this page
    data = staff.get("/admin/notices/genai-training.json").json()
    us = [j for j in data["jurisdictions"] if j["regime"] == "opt-out"]
    assert sum(j["could_default"] for j in us) == before["could_default"] > 0
    assert data["totals"]["told_in_app"] == 1
    assert data["totals"]["in_grace"] == 1 and data["totals"]["have_default"] == 0
    staff.close()
    member.close()


def _undecided_in_the_us(app: FastAPI) -> str:
    """The username of a member in the US who never chose for genai-training."""
    ledger = app.state.ledger
    for sid in decide_many(ledger, "genai-training").column("subject").to_pylist():
        profile = privacy.profile(ledger, sid)
        in_us = (profile.jurisdiction or "").startswith("US") and profile.status == "active"
        if in_us and profile.kind == "member" and profile.handle and not _chose(app, sid):
            return profile.handle
    raise AssertionError("the demo has no undecided member in the US")


def _chose(app: FastAPI, subject: str | None) -> bool:
    return any(
        e.type == "choice" and e.purpose == "genai-training"
        for e in app.state.ledger.subject_events(subject or "")
    )


def test_a_server_follows_a_notice_published_by_another_process(
    edited: tuple[FastAPI, Path], demo_dir: demo.Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line publishes version 2 while the server runs: the server's next
    request is decided on version 2. Had the server's policy file stayed at version 1,
    its requests would be refused (503, naming both) rather than decided on old terms."""
    from askfirst import open_ledger
    from askfirst.policy import load_policy
    from askfirst.web import auth

    monkeypatch.setattr(auth, "FOLLOW_S", 0.0)  # look at every request
    app, path = edited
    reader = create_token(app.state.ledger, "follow-reader", ["decisions:read"])[1]
    bearer = {"Authorization": f"Bearer {reader}"}
    elsewhere = path.parent / "elsewhere.toml"
    elsewhere.write_text(path.read_text())
    _edit_to_v2(elsewhere)
    with open_ledger(demo_dir.url, load_policy(elsewhere), publishing=True) as other:
        notices.publish(other, other.policy, "genai-training", changes="Adds model vendors.",
                        actor="staff:pat")  # fmt: skip
    with WebClient(app) as c:
        r = c.get("/v1/decisions/m001?purpose=genai-training", headers=bearer)
        assert r.status_code == 503, r.text
        assert "version 1" in r.json()["error"] and "version 2" in r.json()["error"]
        _edit_to_v2(path)  # the server's own file catches up
        r = c.get("/v1/decisions/m001?purpose=genai-training", headers=bearer)
        assert r.status_code == 200, r.text
    assert app.state.ledger.policy.purpose("genai-training").version == 2
