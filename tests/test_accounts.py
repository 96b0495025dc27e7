"""Sign-in accounts and API tokens, on SQLite and again on PostgreSQL.

What a stolen database must not give away: no password and no token secret is stored,
only their hashes. What a caller must not get: an account for a subject that does not
exist, a second account under a taken name, a token that outlives its revocation, or a
choices:write token that may act for everyone.
"""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from askfirst import Ledger, SubjectIn
from askfirst.accounts import (
    authenticate,
    create_account,
    create_token,
    get_account,
    hash_password,
    revoke_token,
    token_for,
)
from askfirst.errors import InputError, UnknownSubject
from askfirst.ledger.tables import accounts, api_tokens

PASSWORD = "correct horse battery"


@pytest.fixture
def members(ledger: Ledger) -> Ledger:
    ledger.register(
        [
            SubjectIn(id="m1", jurisdiction="DE", handle="anna"),
            SubjectIn(id="m2", jurisdiction="US-CA", handle="jo"),
        ]
    )
    return ledger


def rows(ledger: Ledger, table: sa.Table) -> list[dict[str, object]]:
    with ledger.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table))]


# ---- accounts ---------------------------------------------------------------------------


def test_password_is_stored_only_as_an_argon2_hash(members: Ledger) -> None:
    member = create_account(members, "anna", PASSWORD, kind="member", subject="m1")
    staff = create_account(members, "alex", PASSWORD, kind="staff", role="admin")
    assert (member.kind, member.subject_id) == ("member", "m1")
    assert (staff.kind, staff.subject_id) == ("staff", None)

    stored = rows(members, accounts)
    assert len(stored) == 2
    for row in stored:
        assert PASSWORD not in repr(row)
        assert str(row["password_hash"]).startswith("$argon2id$")
    # The same password hashes differently for each account (salted).
    assert stored[0]["password_hash"] != stored[1]["password_hash"]


def test_authenticate_accepts_the_password_and_nothing_else(members: Ledger) -> None:
    made = create_account(members, "Anna", PASSWORD, kind="member", subject="m1")
    assert made.username == "anna"  # usernames are case-insensitive

    assert authenticate(members, " ANNA ", PASSWORD) == made
    assert get_account(members, made.id) == made
    assert authenticate(members, "anna", PASSWORD[:-1]) is None
    assert authenticate(members, "nobody", PASSWORD) is None


def test_an_unknown_username_costs_a_hash_with_the_same_settings() -> None:
    """The hash an unknown username is checked against (so timing does not tell which
    names exist) is made with the settings real passwords get: the same work."""
    from askfirst.accounts import _DUMMY, _hasher

    assert not _hasher.check_needs_rehash(_DUMMY)
    assert _hasher.verify(_DUMMY, "askfirst-no-such-user")


def test_a_short_password_is_refused_and_nothing_is_written(members: Ledger) -> None:
    with pytest.raises(InputError, match="at least 8 characters"):
        create_account(members, "anna", "seven77", kind="member", subject="m1")
    with pytest.raises(InputError, match="at least 8 characters"):
        create_account(members, "alex", "", kind="staff", role="admin")
    with pytest.raises(InputError, match="at least 8 characters"):
        hash_password("short")
    assert rows(members, accounts) == []
    create_account(members, "anna", "eight888", kind="member", subject="m1")
    assert len(rows(members, accounts)) == 1


def test_a_taken_username_is_refused(members: Ledger) -> None:
    first = create_account(members, "anna", PASSWORD, kind="member", subject="m1")
    with pytest.raises(InputError, match="already taken"):
        create_account(members, " ANNA ", "another password", kind="member", subject="m2")
    with pytest.raises(InputError, match="already taken"):
        create_account(
            members, "anna", "", kind="staff", role="admin", password_hash=hash_password(PASSWORD)
        )
    assert len(rows(members, accounts)) == 1
    # The first owner's password still works, the second one's never did.
    assert authenticate(members, "anna", "another password") is None
    assert get_account(members, first.id) == first


def test_bad_usernames_are_refused(members: Ledger) -> None:
    for username in ("", "   ", "anna keller", "anna\tk", "x" * 256):
        with pytest.raises(InputError, match="username"):
            create_account(members, username, PASSWORD, kind="staff", role="admin")
    assert rows(members, accounts) == []


def test_a_member_account_needs_an_existing_subject(members: Ledger) -> None:
    with pytest.raises(UnknownSubject, match="'m9'"):
        create_account(members, "ghost", PASSWORD, kind="member", subject="m9")
    with pytest.raises(InputError, match="needs --subject"):
        create_account(members, "ghost", PASSWORD, kind="member")
    with pytest.raises(InputError, match="staff account takes none"):
        create_account(members, "ghost", PASSWORD, kind="staff", subject="m1", role="admin")
    with pytest.raises(InputError, match="member or staff"):
        create_account(members, "ghost", PASSWORD, kind="admin")
    assert rows(members, accounts) == []


# ---- API tokens -------------------------------------------------------------------------


def test_token_secret_is_shown_once_and_stored_only_as_its_sha256(members: Ledger) -> None:
    token, secret = create_token(members, "search-indexer", ["decisions:read"])
    assert secret.startswith("afk_")
    assert len(secret) >= 4 + 40  # 256 random bits
    assert token.scopes == frozenset({"decisions:read"})
    assert token.subject_id is None

    [row] = rows(members, api_tokens)
    assert row["token_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(row)
    assert secret.removeprefix("afk_") not in repr(row)

    found = token_for(members, secret)
    assert found == token
    _, other_secret = create_token(members, "other", ["admin"])
    assert other_secret != secret
    assert token_for(members, other_secret) != token


def test_token_for_finds_nothing_for_wrong_secrets(members: Ledger) -> None:
    _, secret = create_token(members, "svc", ["decisions:read"])
    assert token_for(members, secret[:-1]) is None
    assert token_for(members, secret + "x") is None
    assert token_for(members, "afk_") is None
    assert token_for(members, "") is None
    # The stored hash itself is not a secret that works.
    [row] = rows(members, api_tokens)
    assert token_for(members, str(row["token_hash"])) is None
    assert token_for(members, "afk_" + str(row["token_hash"])) is None


def test_a_revoked_token_is_unusable(members: Ledger) -> None:
    token, secret = create_token(members, "svc", ["decisions:read", "admin"])
    assert token_for(members, secret) == token
    revoke_token(members, "svc")
    assert token_for(members, secret) is None
    with pytest.raises(InputError, match="no live token named 'svc'"):
        revoke_token(members, "svc")
    with pytest.raises(InputError, match="no live token named 'nope'"):
        revoke_token(members, "nope")
    # Revoking one leaves the others alone.
    other, other_secret = create_token(members, "svc2", ["decisions:read"])
    assert token_for(members, other_secret) == other


def test_a_subject_token_acts_for_that_subject(members: Ledger) -> None:
    token, secret = create_token(members, "anna-app", ["choices:write"], subject="m1")
    assert token.subject_id == "m1"
    found = token_for(members, secret)
    assert found is not None
    assert found.subject_id == "m1"
    assert found.scopes == frozenset({"choices:write"})


def test_choices_write_without_a_subject_is_refused(members: Ledger) -> None:
    for scopes in (
        ["choices:write"],
        ["decisions:read", "choices:write"],
        ["admin", "choices:write"],
    ):
        with pytest.raises(InputError, match="choices:write token acts for one subject"):
            create_token(members, "everyone", scopes)
    assert rows(members, api_tokens) == []


def test_unknown_or_missing_scope_is_refused(members: Ledger) -> None:
    for scopes in (["root"], ["decisions:read", "decisions:write"], ["ADMIN"], ["admin "], []):
        with pytest.raises(InputError, match="scope"):
            create_token(members, "svc", scopes)
    assert rows(members, api_tokens) == []


def test_token_needs_a_known_subject_and_a_free_name(members: Ledger) -> None:
    with pytest.raises(UnknownSubject, match="'m9'"):
        create_token(members, "ghost", ["choices:write"], subject="m9")
    with pytest.raises(InputError, match="name"):
        create_token(members, "  ", ["admin"])
    create_token(members, "svc", ["admin"])
    with pytest.raises(InputError, match="already exists"):
        create_token(members, "svc", ["decisions:read"])
    assert len(rows(members, api_tokens)) == 1


def test_a_password_changed_from_the_command_line_ends_every_session(members: Ledger) -> None:
    from typer.testing import CliRunner

    from askfirst.accounts import SessionLimits, session_account, start_session
    from askfirst.cli import app

    account = create_account(members, "anna", "first password 1", kind="member", subject="m1")
    sid = start_session(members, account.id)
    limits = SessionLimits(lifetime_s=3600, idle_s=3600)
    assert session_account(members, sid, limits) is not None
    result = CliRunner().invoke(
        app,
        ["accounts", "password", "Anna", "--password-stdin", "--db", members.url],
        input="second password 2\n",
    )
    assert result.exit_code == 0, result.output
    assert "its sessions have ended" in result.output
    assert session_account(members, sid, limits) is None
    assert authenticate(members, "anna", "first password 1") is None
    assert authenticate(members, "anna", "second password 2") is not None
    refused = CliRunner().invoke(
        app, ["accounts", "password", "nobody", "--password-stdin", "--db", members.url],
        input="long enough password\n",
    )  # fmt: skip
    assert refused.exit_code != 0 and "no account named 'nobody'" in refused.output
