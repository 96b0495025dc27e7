"""Rule 10: everyone acts only for themselves unless the ledger shows the authority."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from askfirst import InputError, Ledger, NewEvent, NotAuthorized, SubjectIn, decide
from askfirst.ledger.events import authority_value

GENAI = "genai-training"


def choice(subject: str, action: str, actor: str) -> NewEvent:
    return NewEvent(
        type="choice", subject=subject, actor=actor, source="test", purpose=GENAI, value=action
    )


def authority(
    subject: str, role: str, delegate: str, action: str = "grant", actor: str = "staff:dana"
) -> NewEvent:
    return NewEvent(
        type="authority",
        subject=subject,
        actor=actor,
        source="test",
        value=authority_value(action, role, delegate),
    )


@pytest.fixture
def page(ledger: Ledger) -> Ledger:
    ledger.register(
        [
            SubjectIn(id="acme", kind="organization", jurisdiction="US"),
            SubjectIn(id="m1", jurisdiction="US"),
            SubjectIn(id="m2", jurisdiction="US"),
            SubjectIn(id="m3", jurisdiction="DE"),
        ]
    )
    return ledger


def test_a_page_admin_makes_the_organizations_choices_until_revoked(page: Ledger) -> None:
    with pytest.raises(NotAuthorized):
        page.append(choice("acme", "grant", actor="m1"))
    page.append(authority("acme", "page-admin", "m1"))
    ev = page.append(choice("acme", "grant", actor="m1"))
    assert ev.actor == "m1"
    assert decide(page, "acme", GENAI).reason == "granted"
    with pytest.raises(NotAuthorized):  # the other member is no admin
        page.append(choice("acme", "withdraw", actor="m2"))
    page.append(authority("acme", "page-admin", "m1", action="revoke"))
    with pytest.raises(NotAuthorized):
        page.append(choice("acme", "withdraw", actor="m1"))
    assert page.verify().ok


def test_a_representative_may_stop_a_use_but_never_start_one(page: Ledger) -> None:
    page.append(choice("m3", "grant", actor="m3"))
    # The platform's own record (a representative it verified before askfirst); staff
    # alone may not (rule 13: a case reviewed by two, see tests/test_cases.py).
    with pytest.raises(NotAuthorized, match="only through a case"):
        page.append(authority("m3", "representative", "m1"))
    page.append(authority("m3", "representative", "m1", actor="system"))
    with pytest.raises(NotAuthorized):
        page.append(choice("m3", "grant", actor="m1"))
    page.append(choice("m3", "withdraw", actor="m1"))
    assert decide(page, "m3", GENAI).reason == "withdrawn"


def test_only_the_platform_records_who_may_act_for_whom(page: Ledger) -> None:
    head = page.head()
    with pytest.raises(NotAuthorized):
        page.append(authority("acme", "page-admin", "m1", actor="m1"))
    assert page.head() == head


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (authority("m1", "page-admin", "m2"), "not an organization"),
        (authority("acme", "representative", "m1"), "not a member"),
        (authority("acme", "page-admin", "acme"), "not a registered member"),
        (authority("acme", "page-admin", "ghost"), "not a registered member"),
    ],
)
def test_authority_must_fit_the_subject(page: Ledger, event: NewEvent, fragment: str) -> None:
    head = page.head()
    with pytest.raises(InputError, match=fragment):
        page.append(event)
    assert page.head() == head


def test_a_hand_made_authority_row_is_reported_by_verify(page: Ledger) -> None:
    page.append(authority("acme", "page-admin", "m1"))
    with page.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO authority_state (subject_id, delegate_id, role, seq) "
                "VALUES ('acme', 'm2', 'page-admin', 5)"
            )
        )
    report = page.verify()
    assert not report.ok
    assert report.projection_problems[0].startswith("authority_state: row 'acme/m2/page-admin'")
