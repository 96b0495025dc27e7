"""Publishing a purpose's terms (issue 16): the ledger vouches for each version, the
policy file and the published notices never disagree, widening and narrowing are read
from the published versions, and no default applies before a notice was published,
delivered and given its grace period, nor before the date the notice named.

The clock is injected: events and publications carry their own times, decisions are
asked at chosen times. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from askfirst import (
    InputError,
    Ledger,
    NewEvent,
    PolicyError,
    SubjectIn,
    decide,
    decide_many,
    notices,
    open_ledger,
    parse_policy,
)
from askfirst.ledger.tables import events
from askfirst.ledger.tables import notices as notices_table
from test_gate import ok, one_line_error, run

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
DAY = timedelta(days=1)


def micros(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def policy_toml(version: int = 1, categories: str = '"profile", "post"', *,
                recipients: str = '"the platform"', default: str = "on",
                grace: int = 10) -> str:  # fmt: skip
    return f"""
[purposes.feed-ai]
title = "Use my posts to train the feed's AI"
version = {version}
categories = [{categories}]
recipients = [{recipients}]
default = "{default}"
grace_days = {grace}

[jurisdictions]
opt_out = ["US"]
"""


def write_policy(folder: Path, text: str, name: str = "policy.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def v1(db_url: str) -> Iterator[Ledger]:
    """Version 1 of feed-ai (default on in the US, 10 days' grace) published at T0; an
    adult member in the US (us1, us2) and one in Germany (de1), registered after."""
    led = open_ledger(db_url, parse_policy(policy_toml(), "v1.toml"), create=True)
    notices.publish(led, led.policy, "feed-ai", changes="First version.", actor="staff:pat",
                    at=micros(T0))  # fmt: skip
    led.register(
        [SubjectIn(id="us1", jurisdiction="US"), SubjectIn(id="us2", jurisdiction="US"),
         SubjectIn(id="de1", jurisdiction="DE")],
        since=T0 + timedelta(hours=1),
    )  # fmt: skip
    yield led
    led.close()


def deliver(led: Ledger, sid: str, at: datetime, channel: str = "email") -> int:
    return led.append(
        NewEvent("notice-delivered", sid, "system", "test", "feed-ai", channel, None, micros(at))
    ).seq


def said(led: Ledger, sid: str, action: str, at: datetime) -> int:
    return led.append(NewEvent("choice", sid, sid, "test", "feed-ai", action, None, micros(at))).seq


def reason(led: Ledger, sid: str, at: datetime) -> str:
    one = str(decide(led, sid, "feed-ai", at=at).reason)
    many = decide_many(led, "feed-ai", subjects=[sid], at=at).to_pylist()[0]["reason"]
    assert one == many
    return one


# ---- publishing ----------------------------------------------------------------------------


def test_a_published_version_is_vouched_for_by_the_chain(v1: Ledger) -> None:
    (entry,) = notices.changelog(notices.published(v1.engine))
    terms = entry.published.terms
    assert (terms.version, terms.changes, terms.categories) == (1, "First version.",
                                                               ("profile", "post"))  # fmt: skip
    assert terms.places == ("US",) and terms.grace_days == 10
    # no default before the day after T0 + 10 days' grace, whoever was told when
    assert terms.earliest_default == date(2026, 1, 16)
    with v1.engine.connect() as conn:
        event = conn.execute(sa.select(events).where(events.c.seq == entry.published.seq)).one()
        kept = conn.execute(sa.select(notices_table.c.terms)).scalar_one()
    assert (event.type, event.subject_id, event.actor) == ("notice-published", "system",
                                                          "staff:pat")  # fmt: skip
    assert event.value == "sha256:" + hashlib.sha256(kept.encode()).hexdigest()
    assert v1.verify().ok


def test_the_same_version_is_published_once(v1: Ledger) -> None:
    head = v1.head()
    with pytest.raises(InputError, match=r"version 1 of 'feed-ai' was already published"):
        notices.publish(v1, v1.policy, "feed-ai", changes="Again.", actor="staff:pat")
    assert v1.head() == head


def test_a_notice_that_was_never_published_cannot_be_delivered(db_url: str) -> None:
    with open_ledger(db_url, parse_policy(policy_toml(), "p.toml"), create=True) as led:
        led.register([SubjectIn(id="us1", jurisdiction="US")])
        head = led.head()
        with pytest.raises(InputError, match="never published"):
            deliver(led, "us1", datetime.now(UTC))
        assert led.head() == head


# ---- the policy file and the published notices agree -----------------------------------------


def test_a_policy_file_ahead_of_the_published_notices_is_refused_until_published(
    v1: Ledger, tmp_path: Path
) -> None:
    v2 = write_policy(tmp_path, policy_toml(2, '"profile", "post", "video"'))
    db = v1.url
    line = one_line_error(
        run("decide", "--subject", "us1", "--purpose", "feed-ai", "--policy", v2, "--db", db),
        "version 2", "latest published notice of it is version 1", "notice publish feed-ai",
    )  # fmt: skip
    assert str(v2) in line
    res = run("notice", "publish", "feed-ai", "--changes", "Adds videos.", "--policy", v2,
              "--db", db, "--json")  # fmt: skip
    published = json.loads(ok(res))
    assert (published["version"], published["categories"]) == (2, ["profile", "post", "video"])
    ok(run("decide", "--subject", "us1", "--purpose", "feed-ai", "--policy", v2, "--db", db))
    # and now the old file is behind what members were told
    old = write_policy(tmp_path, policy_toml(), "old.toml")
    one_line_error(
        run("decide", "--subject", "us1", "--purpose", "feed-ai", "--policy", old, "--db", db),
        "version 1", "version 2 was already published",
    )  # fmt: skip


def test_terms_changed_without_a_new_version_are_refused_naming_the_change(
    v1: Ledger, tmp_path: Path
) -> None:
    quiet = write_policy(tmp_path, policy_toml(1, '"profile", "post", "video"'))
    for args in (
        ("decide", "--subject", "us1", "--purpose", "feed-ai"),
        ("notice", "publish", "feed-ai", "--changes", "Nothing, honest."),
    ):
        one_line_error(
            run(*args, "--policy", quiet, "--db", v1.url),
            "differs from its published notice", "categories", "'video'", "new version",
        )  # fmt: skip
    with pytest.raises(PolicyError, match="differs from its published notice"):
        open_ledger(v1.url, parse_policy(policy_toml(1, grace=2), "g.toml")).close()


# ---- widening and narrowing, from the published versions ---------------------------------------


def republish(led: Ledger, text: str, changes: str, at: datetime) -> Ledger:
    policy = parse_policy(text, "next.toml")
    notices.publish(led, policy, "feed-ai", changes=changes, actor="staff:pat", at=micros(at))
    return led


def test_widening_makes_earlier_grants_need_consent_again(v1: Ledger) -> None:
    said(v1, "de1", "grant", T0 + 2 * DAY)
    assert reason(v1, "de1", T0 + 3 * DAY) == "granted"
    republish(v1, policy_toml(2, '"profile", "post", "video"'), "Adds videos.", T0 + 4 * DAY)
    assert reason(v1, "de1", T0 + 5 * DAY) == "reconsent-needed"
    said(v1, "de1", "grant", T0 + 6 * DAY)  # a yes to version 2
    assert reason(v1, "de1", T0 + 7 * DAY) == "granted"
    # a new recipient widens as much as a new category
    republish(v1, policy_toml(3, '"profile", "post", "video"',
                              recipients='"the platform", "its affiliates"'),
              "Shares with affiliates.", T0 + 8 * DAY)  # fmt: skip
    assert reason(v1, "de1", T0 + 9 * DAY) == "reconsent-needed"
    (v3, v2, first) = notices.changelog(notices.published(v1.engine))
    assert (v3.widens, v2.widens, first.widens) == (True, True, False)
    assert v2.changes == ["Adds categories: video."]
    assert v3.changes == ["Adds recipients: its affiliates."]


def test_narrowing_keeps_earlier_grants(v1: Ledger) -> None:
    said(v1, "de1", "grant", T0 + 2 * DAY)
    republish(v1, policy_toml(2, '"profile"'), "No longer uses posts.", T0 + 4 * DAY)
    assert reason(v1, "de1", T0 + 5 * DAY) == "granted"
    (v2, _) = notices.changelog(notices.published(v1.engine))
    assert (v2.widens, v2.changes) == (False, ["Removes categories: post."])


# ---- no default without notice ------------------------------------------------------------


def test_the_default_waits_for_delivery_grace_and_the_published_date(v1: Ledger) -> None:
    """us1 is told on the day it is published: the grace period ends on day 10 after, but
    the notice promised no default before 16 Jan; us2 is told later, and waits its own
    ten days; de1 lives where consent is needed, and is never in by default."""
    deliver(v1, "us1", T0 + timedelta(hours=2))
    deliver(v1, "de1", T0 + timedelta(hours=3))
    deliver(v1, "us2", T0 + 20 * DAY, channel="in-app")
    assert reason(v1, "us1", T0 + 5 * DAY) == "notice-pending"  # inside its grace period
    after_grace = T0 + 10 * DAY + timedelta(hours=3)  # 15 Jan: grace over, the date not yet
    assert reason(v1, "us1", after_grace) == "notice-pending"
    assert reason(v1, "us1", datetime(2026, 1, 16, tzinfo=UTC)) == "default-after-notice"
    assert reason(v1, "us2", T0 + 25 * DAY) == "notice-pending"
    assert reason(v1, "us2", T0 + 30 * DAY + timedelta(seconds=1)) == "default-after-notice"
    for day in (5, 16, 40, 400):
        assert reason(v1, "de1", T0 + day * DAY) == "no-consent"


def test_a_no_during_the_grace_period_stays_no(v1: Ledger) -> None:
    deliver(v1, "us1", T0 + timedelta(hours=2))
    said(v1, "us1", "withdraw", T0 + 3 * DAY)
    for day in (5, 16, 60):
        assert reason(v1, "us1", T0 + day * DAY) == "withdrawn"


def test_a_new_version_needs_its_own_notice_before_any_default(v1: Ledger) -> None:
    deliver(v1, "us1", T0 + timedelta(hours=2))
    assert reason(v1, "us1", T0 + 20 * DAY) == "default-after-notice"
    republish(v1, policy_toml(2, '"profile"'), "No longer uses posts.", T0 + 21 * DAY)
    assert reason(v1, "us1", T0 + 22 * DAY) == "notice-pending"


def test_the_earliest_default_date_can_be_later_never_sooner(db_url: str) -> None:
    with open_ledger(db_url, parse_policy(policy_toml(), "p.toml"), create=True) as led:
        with pytest.raises(InputError, match="too soon"):
            notices.publish(led, led.policy, "feed-ai", changes="x", actor="system",
                            at=micros(T0), earliest=date(2026, 1, 10))  # fmt: skip
        made = notices.publish(led, led.policy, "feed-ai", changes="x", actor="system",
                               at=micros(T0), earliest=date(2026, 3, 1))  # fmt: skip
        assert made.terms.earliest_default == date(2026, 3, 1)
        led.register([SubjectIn(id="us1", jurisdiction="US")], since=T0)
        deliver(led, "us1", T0)
        assert reason(led, "us1", datetime(2026, 2, 28, 23, tzinfo=UTC)) == "notice-pending"
        assert reason(led, "us1", datetime(2026, 3, 1, tzinfo=UTC)) == "default-after-notice"


def test_an_off_by_default_purpose_names_no_default_date(db_url: str) -> None:
    with open_ledger(db_url, parse_policy(policy_toml(default="off"), "p.toml"),
                     create=True) as led:  # fmt: skip
        made = notices.publish(led, led.policy, "feed-ai", changes="x", actor="system")
        assert (made.terms.places, made.terms.earliest_default) == ((), None)
        with pytest.raises(InputError, match="off by default"):
            notices.publish(led, parse_policy(policy_toml(2, default="off"), "p2"), "feed-ai",
                            changes="y", actor="system", earliest=date(2030, 1, 1))  # fmt: skip


# ---- the command line -------------------------------------------------------------------------


def test_notice_list_is_the_changelog_newest_first(v1: Ledger, tmp_path: Path) -> None:
    text = policy_toml(2, '"profile", "post", "video"')
    republish(v1, text, "Adds videos.", T0 + 4 * DAY)
    current = write_policy(tmp_path, text)
    rows = json.loads(ok(run("notice", "list", "--json", "--db", v1.url, "--policy", current)))
    assert [(r["version"], r["widens"], r["what_changed"][0]) for r in rows] == [
        (2, True, "Adds categories: video."),
        (1, False, "First published: uses profile and post; shared with the platform."),
    ]
    assert rows[0]["seq"] > rows[1]["seq"]
    one_line_error(run("notice", "list", "nope", "--db", v1.url, "--policy", current), "nope")


def test_publishing_from_the_command_line_needs_what_changed(v1: Ledger, tmp_path: Path) -> None:
    v2 = write_policy(tmp_path, policy_toml(2, '"profile"'))
    head = v1.head()
    one_line_error(
        run("notice", "publish", "feed-ai", "--changes", "  ", "--policy", v2, "--db", v1.url),
        "what changed",
    )  # fmt: skip
    one_line_error(
        run("notice", "publish", "feed-ai", "--changes", "x", "--earliest-default", "soon",
            "--policy", v2, "--db", v1.url),
        "--earliest-default", "YYYY-MM-DD",
    )  # fmt: skip
    assert v1.head() == head


# ---- what the member is told, and what the settings page says ---------------------------------


def _state(led: Ledger, sid: str) -> str:
    from askfirst import privacy

    (p,) = privacy.overview(led, sid)["purposes"]
    return str(p["in_words"])


def test_the_settings_page_says_whether_and_how_the_member_was_told(v1: Ledger) -> None:
    assert _state(v1, "us1") == "Not used: we have not told you about this yet."
    owed = notices.owed(v1, "us1", at=micros(T0 + 2 * DAY))
    assert [(o.published.terms.version, o.widened) for o in owed] == [(1, False)]
    # told now, a default could start after the grace period (and not before 16 Jan)
    assert owed[0].starts == micros(T0 + 12 * DAY)
    early = notices.owed(v1, "us1", at=micros(T0 + timedelta(hours=2)))
    assert early[0].starts == micros(datetime(2026, 1, 16, tzinfo=UTC))
    assert notices.owed(v1, "de1") == []  # consent is needed there: no default to warn of
    deliver(v1, "us1", T0 + 2 * DAY)
    assert notices.owed(v1, "us1") == []  # told once
    # long after: the default applies, and the page says how it came to
    assert _state(v1, "us1") == (
        "Used: we told you on 7 Jan 2026 by e-mail and you did not say no. You can say no "
        "at any time."
    )


def test_inside_the_grace_period_the_page_names_the_day_a_default_would_start(
    db_url: str,
) -> None:
    from askfirst import privacy

    now = datetime.now(UTC)
    with open_ledger(db_url, parse_policy(policy_toml(), "p.toml"), create=True) as led:
        notices.publish(led, led.policy, "feed-ai", changes="x", actor="system",
                        at=micros(now - 40 * DAY))  # fmt: skip
        led.register([SubjectIn(id="us1", jurisdiction="US")], since=now - 30 * DAY)
        told = now - 3 * DAY
        deliver(led, "us1", told)
        starts = notices.default_starts(led.policy.purpose("feed-ai"), led.policy, micros(told))
        assert _state(led, "us1") == (
            f"Not used yet: We told you on {privacy.day(micros(told))} by e-mail. From "
            f"{privacy.day(starts)}, your profile and posts may be used for “Use my posts to "
            "train the feed's AI” unless you say no. Saying no now means it never starts."
        )
        assert starts == micros(told + 10 * DAY)


def test_notice_status_counts_who_was_told_and_who_is_waiting(v1: Ledger, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    deliver(v1, "us1", now - timedelta(days=2), channel="in-app")  # inside its grace period
    deliver(v1, "de1", now - timedelta(days=1))  # told, but consent is needed there
    current = write_policy(tmp_path, policy_toml())
    report = json.loads(ok(run("notice", "status", "feed-ai", "--json", "--db", v1.url,
                               "--policy", current)))  # fmt: skip
    by_place = {j["jurisdiction"]: j for j in report["jurisdictions"]}
    assert by_place["US"] == {
        "jurisdiction": "US", "regime": "opt-out", "subjects": 2, "could_default": 2,
        "told_email": 0, "told_in_app": 1, "told_other": 0, "in_grace": 1, "have_default": 0,
        "said_yes": 0, "said_no": 0,
    }  # fmt: skip
    assert (by_place["DE"]["could_default"], by_place["DE"]["told_email"]) == (0, 1)
    text = ok(run("notice", "status", "feed-ai", "--db", v1.url, "--policy", current))
    assert text.splitlines()[0].startswith("feed-ai version 1: published 2026-01-05 (seq 1)")
    assert "in grace" in text.splitlines()[1]
    one_line_error(run("notice", "status", "nope", "--db", v1.url, "--policy", current), "nope")


def test_a_purpose_never_published_is_listed_as_such_and_never_on_by_default(
    db_url: str,
) -> None:
    """A fresh ledger whose policy was never published may be used (a yes is a yes), but
    the public changelog says so, and no default can apply: nobody can have been told."""
    from fastapi.testclient import TestClient

    from askfirst.web.app import WebSettings, create_app

    with open_ledger(db_url, parse_policy(policy_toml(), "p.toml"), create=True) as led:
        led.register([SubjectIn(id="us1", jurisdiction="US")])
        assert reason(led, "us1", datetime.now(UTC) + 400 * DAY) == "notice-pending"
    if not db_url.startswith("sqlite"):
        return  # the page itself is the same on either store
    import tempfile

    keys = Path(tempfile.mkdtemp())
    policy = write_policy(keys, policy_toml())
    app = create_app(WebSettings(db_url, keys, policy_path=policy, secure_cookies=False))
    with TestClient(app) as c:
        data = c.get("/notices.json").json()
    app.state.ledger.close()
    assert data["notices"] == []
    assert data["unpublished"] == [
        {"purpose": "feed-ai", "title": "Use my posts to train the feed's AI", "version": 1}
    ]


def test_a_default_spread_to_new_places_without_a_new_version_is_refused(
    v1: Ledger, tmp_path: Path
) -> None:
    """Adding a place where the default applies is a widening members must be told of:
    under the same version it is refused, naming the places."""
    wider = write_policy(
        tmp_path, policy_toml().replace('opt_out = ["US"]', 'opt_out = ["US", "BR"]')
    )
    one_line_error(
        run("decide", "--subject", "us1", "--purpose", "feed-ai", "--policy", wider,
            "--db", v1.url),
        "differs from its published notice", "places a default could apply", "'BR'",
    )  # fmt: skip
