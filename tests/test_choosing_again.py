"""Saying again what the answer already is: acknowledged, and nothing new recorded.

A yes when the answer is yes, or a no when it is no, leaves the ledger head where it
was and comes back with the event the answer stands on (``changed`` False); everything
else a choice can be — a first answer, a change, a yes under a newer notice, a yes that
confirms it after a GPC signal — is recorded as before. On SQLite and PostgreSQL, through
the library and the ``askfirst record`` command.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from askfirst import Ledger, NewEvent, SubjectIn, open_ledger, privacy
from askfirst.cli import app
from askfirst.errors import NotAuthorized, UnknownSubject
from askfirst.policy import parse_policy

POLICY = parse_policy(
    """
[purposes.ranking]
title = "Rank my feed with AI"
version = 1
categories = ["profile", "post"]
default = "off"
honours_gpc = true

[purposes.training]
title = "Train AI on my posts and comments"
version = 2
categories = ["profile", "post", "comment"]
default = "off"
honours_gpc = false

[[purposes.training.history]]
version = 1
categories = ["profile", "post"]
""",
    "test_choosing_again policy",
)


@pytest.fixture
def led(db_url: str) -> Iterator[Ledger]:
    with open_ledger(db_url, POLICY, create=True) as ledger:
        ledger.register([SubjectIn(id="m1", jurisdiction="DE"), SubjectIn(id="m2")])
        yield ledger


def say(ledger: Ledger, action: str, purpose: str = "ranking", **kw: str) -> privacy.Choice:
    return privacy.choose(
        ledger, kw.get("subject", "m1"), purpose, action, actor=kw.get("actor", "m1"), source="t"
    )


@pytest.mark.parametrize("action", ["grant", "withdraw", "object"])
def test_the_same_answer_twice_is_recorded_once(led: Ledger, action: str) -> None:
    first = say(led, action)
    assert first.changed
    head = led.head()
    again = say(led, action)
    assert not again.changed
    assert again.event == first.event
    assert led.head() == head
    assert again.in_words("Rank my feed with AI").startswith(
        "Nothing changed: the answer to “Rank my feed with AI” was already "
    )
    assert first.in_words("Rank my feed with AI").startswith("Saved: you ")


def test_a_change_of_answer_is_recorded(led: Ledger) -> None:
    assert say(led, "grant").changed
    assert say(led, "withdraw").changed
    assert say(led, "object").changed  # another kind of no: an objection of its own
    assert say(led, "grant").changed
    assert [e.value for e in led.subject_events("m1") if e.type == "choice"] == [
        "grant",
        "withdraw",
        "object",
        "grant",
    ]


def test_a_yes_under_an_older_notice_is_given_again(led: Ledger) -> None:
    led.append(
        NewEvent(
            type="choice",
            subject="m1",
            actor="m1",
            source="t",
            purpose="training",
            value="grant",
            notice_version=1,
        )
    )
    again = say(led, "grant", "training")
    assert again.changed and again.event.notice_version == 2
    assert not say(led, "grant", "training").changed


def test_a_yes_after_a_gpc_signal_confirms_it(led: Ledger) -> None:
    say(led, "grant")
    assert privacy.note_gpc(led, "m1") is not None
    assert say(led, "grant").changed  # the purpose honours GPC: this yes now stands
    assert not say(led, "grant").changed
    # A purpose that ignores GPC keeps its yes as it was.
    say(led, "grant", "training")
    assert not say(led, "grant", "training").changed


def test_already_so_is_never_said_to_one_who_may_not_say_it(led: Ledger) -> None:
    say(led, "grant")
    head = led.head()
    with pytest.raises(NotAuthorized):
        say(led, "grant", actor="m2")
    with pytest.raises(NotAuthorized):
        say(led, "grant", subject="m1", actor="staff:alex")  # staff may not start a use
    with pytest.raises(UnknownSubject):
        say(led, "withdraw", subject="ghost", actor="ghost")
    assert led.head() == head
    # Staff may stop a use; a stop that is already in place is acknowledged.
    assert say(led, "withdraw", actor="staff:alex").changed
    assert not say(led, "withdraw", actor="staff:alex").changed


def test_turning_everything_off_twice_records_it_once(led: Ledger) -> None:
    say(led, "withdraw")
    made = privacy.turn_off_all(led, "m1", actor="m1", source="t")
    assert [(c.event.purpose, c.changed) for c in made] == [
        ("ranking", False),
        ("training", True),
    ]
    head = led.head()
    assert not any(c.changed for c in privacy.turn_off_all(led, "m1", actor="m1", source="t"))
    assert led.head() == head


# ---- askfirst record --------------------------------------------------------------------


def run(*args: str) -> Result:
    env = {"ASKFIRST_DATABASE_URL": None, "ASKFIRST_POLICY": None, "NO_COLOR": "1"}
    return CliRunner().invoke(app, list(args), env=env)


def test_record_says_so_when_the_answer_is_already_this_one(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'askfirst.db'}"
    assert run("init", "--db", db).exit_code == 0
    with open_ledger(db) as ledger:
        ledger.register([SubjectIn(id="m1", jurisdiction="DE")])
    args = ("record", "grant", "--subject", "m1", "--purpose", "genai-training", "--db", db)

    first = run(*args)
    assert first.exit_code == 0 and first.stdout.startswith("recorded seq 3: m1 grant")
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("unchanged: m1 already said grant to genai-training (seq 3")
    assert again.stdout.rstrip().endswith("nothing new was recorded")
    as_json = json.loads(run(*args, "--json").stdout)
    assert (as_json["seq"], as_json["changed"]) == (3, False)
    with open_ledger(db) as ledger:
        assert ledger.head().seq == 3
