"""Who is asking, and what they may do: sessions, API tokens, CSRF and sign-in limits.

A request is made by a :class:`Principal`: a member or staff account signed in with a
session cookie, or a service holding a bearer token with scopes. A member acts for
their own subject and for the organizations whose page the ledger says they run; a
token bound to a subject acts only for it; staff act through audited admin actions.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request

from askfirst import accounts, notices, privacy
from askfirst.config import WebSettings
from askfirst.ledger import Ledger
from askfirst.ledger.events import representative_actor

SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN = "decisions:read", "choices:write", "admin"


@dataclass(frozen=True)
class Principal:
    kind: str  # member / staff / token / representative
    name: str
    subject: str | None = None
    scopes: frozenset[str] = frozenset()
    acts_for: frozenset[str] = field(default_factory=frozenset)
    via_session: bool = False
    role: str | None = None  # a staff member's (by session or their own token)
    case: int | None = None  # a representative's: the case that gave them authority

    @property
    def actor(self) -> str:
        """How the ledger names this principal when it records an event."""
        if self.kind == "staff":
            return f"staff:{self.name}"
        if self.kind == "representative" and self.case is not None:
            return representative_actor(self.case)
        if self.subject:
            return self.subject
        return f"staff:token:{self.name}" if self.is_staff else f"service:{self.name}"

    @property
    def permissions(self) -> frozenset[str]:
        """What this principal may do as staff (``askfirst.accounts.PERMISSIONS``)."""
        if self.kind == "staff" and self.role is not None:
            return accounts.PERMISSIONS.get(self.role, frozenset())
        if self.kind == "token" and SCOPE_ADMIN in self.scopes:
            return accounts.PERMISSIONS["service"]
        return frozenset()

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def is_staff(self) -> bool:
        """Staff of any role, or a service's admin token: may read what staff read."""
        return self.can("read")

    def may_act_for(self, subject: str) -> bool:
        return subject in self.acts_for

    def may_read(self, subject: str) -> bool:
        return self.is_staff or subject in self.acts_for


FOLLOW_S = 1.0  # how often a server looks for notices another process published


async def get_ledger(request: Request) -> Ledger:
    """The app's ledger; at most once a second, bound again to the notices published
    since (one small query), so a server follows a publication made elsewhere at once
    rather than deciding on terms that changed under it."""
    ledger: Ledger = request.app.state.ledger
    state = request.app.state
    now = time.monotonic()
    if now - getattr(state, "notices_checked", 0.0) >= FOLLOW_S:
        state.notices_checked = now
        notices.follow(ledger, state.settings.policy_path)
    return ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]


def _member(ledger: Ledger, account: accounts.Account) -> Principal:
    assert account.subject_id is not None
    managed = privacy.managed_by(ledger, account.subject_id)
    return Principal(
        kind="member",
        name=account.username,
        subject=account.subject_id,
        acts_for=frozenset({account.subject_id, *managed}),
        via_session=True,
    )


def start_session(request: Request, ledger: Ledger, account: accounts.Account) -> None:
    """Sign ``account`` in: a fresh cookie (no fixation) carrying only a new session's id."""
    request.session.clear()
    request.session["sid"] = accounts.start_session(ledger, account.id)


def end_session(request: Request, ledger: Ledger) -> None:
    """Sign out: the session is deleted server-side, so a copy of the cookie is worthless."""
    session_id = request.session.get("sid")
    if isinstance(session_id, str):
        accounts.end_session(ledger, session_id)
    request.session.clear()


def session_account(request: Request, ledger: Ledger) -> accounts.Account | None:
    """The account behind the session cookie; None (and the cookie cleared) when it names
    no live session: signed out, expired, its account gone or closed, or an old cookie."""
    session_id = request.session.get("sid")
    if not isinstance(session_id, str):
        if "account" in request.session:  # a cookie from before server-side sessions
            request.session.clear()
        return None
    settings: WebSettings = request.app.state.settings
    limits = accounts.SessionLimits(settings.session_lifetime_s, settings.session_idle_s)
    account = accounts.session_account(ledger, session_id, limits)
    if account is None:
        request.session.clear()
    return account


def current(request: Request, ledger: LedgerDep) -> Principal | None:
    """The principal behind this request, or None for an anonymous visitor."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        token = accounts.token_for(ledger, secret.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise HTTPException(
                401,
                "the bearer token is unknown or revoked",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if token.staff is not None:  # a staff member's own token: them, in their role
            return Principal(
                "staff", token.staff.username, None, token.scopes, role=token.staff.role
            )
        bound = frozenset({token.subject_id}) if token.subject_id else frozenset()
        return Principal("token", token.name, token.subject_id, token.scopes, bound)
    account = session_account(request, ledger)
    if account is None:
        return None
    if account.kind == "staff":
        return Principal(
            "staff",
            account.username,
            scopes=frozenset({SCOPE_ADMIN}),
            via_session=True,
            role=account.role,
        )
    if account.kind == "representative":
        assert account.subject_id is not None
        # They act for the member on /representing alone (say no, download the member's
        # data, close the account), never through the member's own pages or the API:
        # so they act for nobody by ``acts_for``.
        return Principal(
            "representative",
            account.username,
            subject=account.subject_id,
            via_session=True,
            case=int(account.username.removeprefix("rep-")),
        )
    member = _member(ledger, account)
    if request.headers.get("sec-gpc") == "1" and member.subject:
        privacy.note_gpc(ledger, member.subject)
    return member


MaybePrincipal = Annotated[Principal | None, Depends(current)]


async def signed_in(principal: MaybePrincipal) -> Principal:
    if principal is None:
        raise HTTPException(
            401, "sign in, or send a bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(signed_in)]


def forbidden(why: str) -> HTTPException:
    """A 403 saying why; raise it before anything is written."""
    return HTTPException(403, why)


def require_readable(principal: Principal, subject: str) -> None:
    """403 unless ``principal`` may read ``subject``'s data (its own, a page it runs, staff)."""
    if not principal.may_read(subject):
        raise forbidden(f"you may not read the data of subject {subject!r}")


_WHO_MAY = {
    permission: sorted(r for r, p in accounts.PERMISSIONS.items() if permission in p)
    for permission in ("read", "cases", "notices", "operate", "staff")
}


def require(principal: Principal, permission: str) -> None:
    """403 unless ``principal`` holds ``permission`` (``askfirst.accounts.PERMISSIONS``)."""
    if not principal.can(permission):
        roles = ", ".join(
            r if r != "service" else "a service's admin token" for r in _WHO_MAY[permission]
        )
        raise forbidden(f"this needs the {permission!r} permission, which {roles} hold")


def require_staff(principal: Principal) -> None:
    """403 unless ``principal`` may read what staff read (any staff role, or a service's
    token with the admin scope)."""
    require(principal, "read")


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use; forms carry it back."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, supplied: str | None) -> None:
    expected = request.session.get("csrf")
    if (
        not isinstance(expected, str)
        or not supplied
        or not secrets.compare_digest(expected, supplied)
    ):
        raise HTTPException(403, "the form's CSRF token is missing or stale; reload the page")


def check_session_write(request: Request, principal: Principal) -> None:
    """A cookie-authenticated API write must prove it comes from our own pages."""
    if principal.via_session:
        check_csrf(request, request.headers.get("x-csrf-token"))


class SigninCounter(Protocol):
    """Failed sign-ins by client address and account (``limits.SigninLimits``, which
    ``create_app`` keeps in ``app.state.signin_limits``)."""

    def wait(self, address: str, account: str) -> int: ...

    def failed(self, address: str, account: str) -> None: ...


def _signin_limits(request: Request) -> SigninCounter:
    limits: SigninCounter = request.app.state.signin_limits
    return limits


def signin_wait(request: Request, username: str) -> int:
    """Seconds before this client may try to sign in as ``username`` again (0: now): the
    account, or this client's address, has failed to sign in too often lately."""
    address = request.client.host if request.client else "?"
    return _signin_limits(request).wait(address, accounts.normal_username(username))


def note_signin_failure(request: Request, username: str) -> None:
    address = request.client.host if request.client else "?"
    _signin_limits(request).failed(address, accounts.normal_username(username))
