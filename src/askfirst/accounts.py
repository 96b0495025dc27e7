"""Sign-in accounts (members and staff) and API tokens, for the embedded mode.

Passwords are hashed with Argon2id; API tokens are random 256-bit strings shown once and
stored only as their SHA-256 (a token is not guessable, so a fast hash is enough to make
a stolen table useless). A member account belongs to one subject; a token may be bound to
one subject, and then acts only for it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, insert, select, update

from askfirst import times
from askfirst.errors import InputError, UnknownSubject
from askfirst.ledger import Ledger, store
from askfirst.ledger.tables import accounts, api_tokens

SCOPES = ("decisions:read", "choices:write", "admin")
TOKEN_PREFIX = "afk_"
# Argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): strong, and quick
# enough that sign-in stays responsive on a small server.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Checked against when a username is unknown, so that timing does not tell which exist.
# Made once with _hasher's settings (a hash at import would cost every command 0.1 s);
# tests/test_accounts.py checks that they still agree.
_DUMMY = (
    "$argon2id$v=19$m=19456,t=2,p=1$Al+yruaSrrPs4ndM1HQ26Q$"
    "hFKJl7F1w460i2FiJ1KO5EgPtyZf6Q/oE9bvwjpGPAg"
)


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    kind: str  # member / staff
    subject_id: str | None


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    scopes: frozenset[str]
    subject_id: str | None


def normal_username(username: str) -> str:
    """The username as accounts are stored and looked up: without surrounding whitespace,
    in lower case. Sign-in and its rate limit both key on this."""
    return username.strip().lower()


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise InputError("a password needs at least 8 characters")


def hash_password(password: str) -> str:
    _check_password(password)
    return _hasher.hash(password)


def create_account(
    ledger: Ledger,
    username: str,
    password: str,
    *,
    kind: str,
    subject: str | None = None,
    password_hash: str | None = None,
) -> Account:
    """A member account (for ``subject``) or a staff account.

    ``password_hash`` (from :func:`hash_password`) saves hashing again when many accounts
    share one password, as the demo's do.
    """
    username = normal_username(username)
    if not username or len(username) > 255 or any(c.isspace() for c in username):
        raise InputError(f"username {username!r} must be 1-255 characters without spaces")
    if kind not in ("member", "staff"):
        raise InputError(f"account kind {kind!r} must be member or staff")
    if (kind == "member") != (subject is not None):
        raise InputError("a member account needs --subject; a staff account takes none")
    if subject is not None and not ledger.subject_exists(subject):
        raise UnknownSubject(subject)
    hashed = password_hash or hash_password(password)
    with ledger.engine.begin() as conn:
        taken = conn.execute(select(accounts.c.id).where(accounts.c.username == username))
        if taken.first() is not None:
            raise InputError(f"username {username!r} is already taken")
        row = conn.execute(
            insert(accounts).values(
                username=username,
                kind=kind,
                subject_id=subject,
                password_hash=hashed,
                created_at=times.to_micros(times.now()),
            )
        )
        (account_id,) = row.inserted_primary_key or (0,)
    return Account(int(account_id), username, kind, subject)


def authenticate(ledger: Ledger, username: str, password: str) -> Account | None:
    """The account when the password matches; None otherwise (in constant-ish time)."""
    q = select(accounts).where(accounts.c.username == normal_username(username))
    with ledger.engine.connect() as conn:
        row = conn.execute(q).first()
    try:
        _hasher.verify(row.password_hash if row else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    return Account(row.id, row.username, row.kind, row.subject_id)


def get_account(ledger: Ledger, account_id: int) -> Account | None:
    with ledger.engine.connect() as conn:
        row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    return Account(row.id, row.username, row.kind, row.subject_id) if row else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    ledger: Ledger, name: str, scopes: list[str], *, subject: str | None = None
) -> tuple[Token, str]:
    """A new API token; returns it with its secret, which is not stored and not shown again."""
    name = name.strip()
    if not name or len(name) > 255:
        raise InputError("a token needs a name of 1-255 characters")
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InputError(f"unknown scope {bad[0]!r}" if bad else "a token needs a scope")
    if "choices:write" in scopes and subject is None:
        raise InputError(
            "a choices:write token acts for one subject: give --subject (nobody may make "
            "choices for everyone)"
        )
    if subject is not None and not ledger.subject_exists(subject):
        raise UnknownSubject(subject)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with ledger.engine.begin() as conn:
        if conn.execute(select(api_tokens.c.id).where(api_tokens.c.name == name)).first():
            raise InputError(f"a token named {name!r} already exists")
        row = conn.execute(
            insert(api_tokens).values(
                name=name,
                token_hash=_digest(secret),
                scopes=" ".join(sorted(set(scopes))),
                subject_id=subject,
                created_at=times.to_micros(times.now()),
            )
        )
        (token_id,) = row.inserted_primary_key or (0,)
    return Token(int(token_id), name, frozenset(scopes), subject), secret


def revoke_token(ledger: Ledger, name: str) -> None:
    with ledger.engine.begin() as conn:
        done = conn.execute(
            update(api_tokens)
            .where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=times.to_micros(times.now()))
        )
    if done.rowcount != 1:
        raise InputError(f"no live token named {name!r}")


def token_for(ledger: Ledger, secret: str) -> Token | None:
    """The live token with this secret, or None."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    with ledger.engine.connect() as conn:
        row = _TOKEN.one(conn, {"h": _digest(secret)})
    if row is None:
        return None
    token_id, name, scopes, subject = row
    return Token(token_id, name, frozenset(scopes.split()), subject)


_TOKEN = store.Prepared(  # looked up on every API request
    select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.scopes, api_tokens.c.subject_id).where(
        api_tokens.c.token_hash == bindparam("h"), api_tokens.c.revoked_at.is_(None)
    )
)
