"""Sign-in accounts (members and staff), their sessions and API tokens, for the embedded mode.

Passwords are hashed with Argon2id; API tokens are random 256-bit strings shown once and
stored only as their SHA-256 (a token is not guessable, so a fast hash is enough to make
a stolen table useless). A member account belongs to one subject; a token may be bound to
one subject, and then acts only for it.

A sign-in session is held server-side so that it can be ended: a random 256-bit id that
the browser's (signed) cookie carries, stored as its SHA-256 with the account and when it
was made and last used. It ends when its member signs out, when the account's password
changes, when the account's subject is closed, after an absolute lifetime and after an
idle time without a request; an ended session is a signed-out visitor.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, bindparam, delete, insert, select, update

from askfirst import times
from askfirst.errors import InputError, UnknownSubject
from askfirst.ledger import Ledger, store
from askfirst.ledger.tables import accounts, api_tokens, sessions, signin_links, subject_state

SCOPES = ("decisions:read", "choices:write", "admin")
# A staff member's role, and what each may do (the one table every check reads):
#   read     — every admin page and report, the ledger's events, the cases and evidence
#   cases    — propose, approve and reject cases (two reviewers for what cannot be undone)
#   notices  — publish a purpose's notice
#   operate  — record for subjects (stop a use), models, snapshots, recipients, close tasks
#   staff    — manage staff accounts and their tokens
STAFF_ROLES = ("reviewer", "policy-editor", "auditor", "admin")
PERMISSIONS: dict[str, frozenset[str]] = {
    "reviewer": frozenset({"read", "cases"}),
    "policy-editor": frozenset({"read", "notices"}),
    "auditor": frozenset({"read"}),
    "admin": frozenset({"read", "operate", "staff"}),
    # a service's token with the admin scope (a machine, not a person): all but the people's
    # decisions — reviewing cases and managing staff need a named staff member
    "service": frozenset({"read", "operate", "notices"}),
}
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
    kind: str  # member / staff / representative
    subject_id: str | None
    role: str | None = None  # a staff member's role


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    scopes: frozenset[str]
    subject_id: str | None
    staff: Account | None = None  # a staff member's own token acts as them, in their role


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
    role: str | None = None,
) -> Account:
    """A member account (for ``subject``) or a staff account (with ``role``, one of
    :data:`STAFF_ROLES`).

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
    if kind == "staff" and role not in STAFF_ROLES:
        raise InputError(f"a staff account needs a role: --role {' or '.join(STAFF_ROLES)}")
    if kind != "staff" and role is not None:
        raise InputError("only staff accounts have a role")
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
                role=role,
            )
        )
        (account_id,) = row.inserted_primary_key or (0,)
    return Account(int(account_id), username, kind, subject, role)


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
    return _account(row)


def _account(row: Any) -> Account:
    return Account(row.id, row.username, row.kind, row.subject_id, row.role)


def get_account(ledger: Ledger, account_id: int) -> Account | None:
    with ledger.engine.connect() as conn:
        row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    return _account(row) if row else None


def change_password(ledger: Ledger, username: str, password: str) -> Account:
    """Set a new password for the account and end all its sessions (signed in anywhere,
    it must sign in again with the new password)."""
    hashed = hash_password(password)
    name = normal_username(username)
    with ledger.engine.begin() as conn:
        row = conn.execute(select(accounts).where(accounts.c.username == name)).first()
        if row is None:
            raise InputError(f"no account named {name!r}")
        conn.execute(update(accounts).where(accounts.c.id == row.id).values(password_hash=hashed))
        end_sessions(conn, row.id)
    return _account(row)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    ledger: Ledger,
    name: str,
    scopes: list[str],
    *,
    subject: str | None = None,
    staff: str | None = None,
) -> tuple[Token, str]:
    """A new API token; returns it with its secret, which is not stored and not shown again.

    With ``staff`` (a staff account's name) the token is that person's own: it acts as
    them, in their role, and the ledger names them (``staff:NAME``) for what it records —
    so one person with a session and a token is still one reviewer."""
    name = name.strip()
    owner: Account | None = None
    if staff is not None:
        if subject is not None:
            raise InputError("a staff member's token acts for nobody else: drop --subject")
        owner = _staff_account(ledger, staff)
        scopes = [*scopes, "admin"] if "admin" not in scopes else scopes
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
                account_id=owner.id if owner else None,
            )
        )
        (token_id,) = row.inserted_primary_key or (0,)
    return Token(int(token_id), name, frozenset(scopes), subject, owner), secret


def _staff_account(ledger: Ledger, username: str) -> Account:
    name = normal_username(username)
    with ledger.engine.connect() as conn:
        row = conn.execute(
            select(accounts).where(accounts.c.username == name, accounts.c.kind == "staff")
        ).first()
    if row is None:
        raise InputError(f"no staff account named {name!r}")
    return _account(row)


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
    token_id, name, scopes, subject, owned_by, owner, username, role = row
    if owned_by is not None and owner is None:
        return None  # its staff member's account is gone, and the token with it
    staff = Account(owner, username, "staff", None, role) if owner is not None else None
    return Token(token_id, name, frozenset(scopes.split()), subject, staff)


_TOKEN = store.Prepared(  # looked up on every API request
    select(
        api_tokens.c.id,
        api_tokens.c.name,
        api_tokens.c.scopes,
        api_tokens.c.subject_id,
        api_tokens.c.account_id,
        accounts.c.id,
        accounts.c.username,
        accounts.c.role,
    )
    .select_from(api_tokens.outerjoin(accounts, accounts.c.id == api_tokens.c.account_id))
    .where(api_tokens.c.token_hash == bindparam("h"), api_tokens.c.revoked_at.is_(None))
)


# ---- sessions ---------------------------------------------------------------------------

# A closed account's sessions end at once (deactivated members may come back; a
# deceased member's account may still be run by whoever manages the memorial page).
ENDS_SESSIONS = ("closed", "erased")
# last_seen_at is written at most this often, so that a page's many requests cost one write.
_TOUCH_EVERY_US = 60 * times.MICROS


@dataclass(frozen=True)
class SessionLimits:
    """How long a session lasts: in all, and without a request."""

    lifetime_s: int = 8 * 3600
    idle_s: int = 30 * 60


def start_session(ledger: Ledger, account_id: int) -> str:
    """A new session for the account; returns its id, which only the cookie keeps."""
    session_id = secrets.token_urlsafe(32)
    now = times.to_micros(times.now())
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(sessions).values(
                id_hash=_digest(session_id), account_id=account_id, created_at=now, last_seen_at=now
            )
        )
    return session_id


def end_session(ledger: Ledger, session_id: str) -> None:
    """End one session (signing out); an unknown id is no error."""
    with ledger.engine.begin() as conn:
        conn.execute(delete(sessions).where(sessions.c.id_hash == _digest(session_id)))


def end_sessions(conn: Connection, account_id: int) -> int:
    """End every session of the account, inside the caller's transaction; how many ended."""
    done = conn.execute(delete(sessions).where(sessions.c.account_id == account_id))
    return done.rowcount or 0


def session_account(
    ledger: Ledger, session_id: str, limits: SessionLimits, *, now_us: int | None = None
) -> Account | None:
    """The account behind a live session, noting that it was used; None when the session
    is unknown, ended, past its lifetime or idle time, or its account is gone or closed
    (an expired or closed one is deleted on the way)."""
    now = times.to_micros(times.now()) if now_us is None else now_us
    digest = _digest(session_id)
    q = (
        select(sessions.c.created_at, sessions.c.last_seen_at, accounts, subject_state.c.status)
        .join(accounts, accounts.c.id == sessions.c.account_id)
        .outerjoin(subject_state, subject_state.c.subject_id == accounts.c.subject_id)
        .where(sessions.c.id_hash == digest)
    )
    with ledger.engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    expired = (
        now - row.created_at >= limits.lifetime_s * times.MICROS
        or now - row.last_seen_at >= limits.idle_s * times.MICROS
    )
    if expired or row.status in ENDS_SESSIONS:
        with ledger.engine.begin() as conn:
            if expired:
                conn.execute(delete(sessions).where(sessions.c.id_hash == digest))
            else:
                end_sessions(conn, row.id)
        return None
    if now - row.last_seen_at >= _TOUCH_EVERY_US:
        with ledger.engine.begin() as conn:
            conn.execute(
                update(sessions).where(sessions.c.id_hash == digest).values(last_seen_at=now)
            )
    return _account(row)


# ---- one-time sign-in links (a representative's first sign-in) ----------------------------


def use_signin_link(ledger: Ledger, secret: str) -> Account | None:
    """The account a one-time sign-in link is for, marking the link used; None when the
    link is unknown, used or expired (each works once)."""
    now = times.to_micros(times.now())
    digest = _digest(secret)
    with store.write(ledger.engine) as conn:
        done = conn.execute(
            update(signin_links)
            .where(
                signin_links.c.token_hash == digest,
                signin_links.c.used_at.is_(None),
                signin_links.c.expires_at > now,
            )
            .values(used_at=now)
        )
        if done.rowcount != 1:
            return None
        row = conn.execute(
            select(accounts)
            .join(signin_links, signin_links.c.account_id == accounts.c.id)
            .where(signin_links.c.token_hash == digest)
        ).first()
    return _account(row) if row else None
