"""Who may call what: every route of the app, tried by every caller who must be refused.

DESIGN.md rule 10: everyone acts only for themselves unless the ledger shows the
authority; issue 17 adds staff roles and a deceased member's representatives. Every
operation in the OpenAPI has a rule in :data:`RULES`, and every other route of the app (the
pages, their JSON twins and their forms) a rule in :data:`PAGE_RULES` or a place, with the
reason, in :data:`PUBLIC_ROUTES`. Both lists are read from the app, so a new route without
a rule fails :func:`test_every_openapi_operation_has_an_authorization_rule` or
:func:`test_every_route_of_the_app_has_a_rule_or_is_public`.

The callers: an anonymous visitor; the member who may act for the target subject (itself,
or a page admin); another member; a session of each staff role (admin, policy-editor,
reviewer, auditor); a staff member's own token (a reviewer's, an admin's); a service's
tokens (decisions:read, choices:write bound to another subject, admin); and a deceased
member's representative, signed in by the one-time link their case made. What staff may
do is the permission table of issue 17 (:data:`ROLE_PERMISSIONS`, which must be
``askfirst.accounts.PERMISSIONS``); a representative may use only /representing.

Aimed at a subject that is not the caller's, a refused call gets 401 (the API, anonymous),
a 303 to /signin (a page, anonymous) or 403 (404 for a receipt, which says no more) —
never a 2xx or a 5xx — and neither the ledger head nor the cases, the directory, the
accounts and tokens, the model registry and its tasks move. The same requests made by
their rightful caller (and every other caller they allow) succeed and do what they say,
so that a refusal is never just a malformed request. A session's API writes need the
page's CSRF token, as every form does. Last, four eyes: one reviewer with two tokens is
still one reviewer, and a service's admin token is no reviewer at all.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from starlette.routing import Route

from askfirst import accounts, cases, config, demo, evidence, privacy
from askfirst.accounts import create_token
from askfirst.decisions import decide
from askfirst.ledger import Ledger
from askfirst.ledger.events import representative_actor
from askfirst.ledger.tables import accounts as accounts_table
from askfirst.ledger.tables import api_tokens, case_steps, lineage, subject_state, subjects
from askfirst.ledger.tables import cases as cases_table
from askfirst.ledger.tables import evidence as evidence_table
from askfirst.lineage import list_snapshots
from askfirst.models import list_models, list_tasks
from test_mail import Sink, free_port

from .conftest import WebClient, csrf_in

GENAI, RESEARCH = "genai-training", "third-party-research"
ANNA, JO, PRIYA, ACME = "m001", "m101", "m171", "org-acme"

# Callers. "owner" is the subject's rightful caller; the rest may be refused.
ANONYMOUS = "anonymous"
OTHER_MEMBER = "another member's session"
READ_TOKEN = "decisions:read token"
WRITE_OTHER = "choices:write token bound to another subject"
ADMIN_TOKEN = "a service's admin token"
STAFF = "admin's session"
EDITOR = "policy editor's session"
REVIEWER = "reviewer's session"
AUDITOR = "auditor's session"
REVIEWER_TOKEN = "reviewer's own token"
ADMIN_OWN_TOKEN = "admin's own token"
REPRESENTATIVE = "representative's session"
WRONG_CALLERS = [
    ANONYMOUS,
    OTHER_MEMBER,
    READ_TOKEN,
    WRITE_OTHER,
    ADMIN_TOKEN,
    STAFF,
    EDITOR,
    REVIEWER,
    AUDITOR,
    REVIEWER_TOKEN,
    ADMIN_OWN_TOKEN,
    REPRESENTATIVE,
]
# Issue 17's table: what each staff role (and a service's admin-scope token) may do.
ROLE_PERMISSIONS = {
    "reviewer": {"read", "cases"},
    "policy-editor": {"read", "notices"},
    "auditor": {"read"},
    "admin": {"read", "operate", "staff"},
    "service": {"read", "operate", "notices"},
}
CALLER_ROLE = {
    ADMIN_TOKEN: "service",
    STAFF: "admin",
    EDITOR: "policy-editor",
    REVIEWER: "reviewer",
    AUDITOR: "auditor",
    REVIEWER_TOKEN: "reviewer",
    ADMIN_OWN_TOKEN: "admin",
}
# Callers with a session, whose forms can carry its CSRF token.
SESSIONS = frozenset({"owner", OTHER_MEMBER, STAFF, EDITOR, REVIEWER, AUDITOR, REPRESENTATIVE})


def holding(permission: str) -> frozenset[str]:
    """The callers whose role holds ``permission``."""
    return frozenset(c for c, role in CALLER_ROLE.items() if permission in ROLE_PERMISSIONS[role])


def in_person(permission: str) -> frozenset[str]:
    """The callers holding ``permission`` who can send a page's form (a session's)."""
    return holding(permission) & SESSIONS


READERS = holding("read")
OPERATORS = holding("operate")
STAFF_CALLERS = READERS  # staff of any role, and a service's admin token, read what staff read
# Anyone signed in but a representative, who acts only on /representing.
SIGNED_IN = frozenset(WRONG_CALLERS) - {ANONYMOUS, REPRESENTATIVE}


@dataclass(frozen=True)
class Target:
    """A subject that is not the caller's, who is who around it, and what the demo (and
    this test's cases) give the calls to aim at."""

    subject: str
    owner: str  # the member who may act for it (itself, or a page admin)
    owner_subject: str
    other: str  # a member who may not
    other_subject: str
    receipt_seq: int = 0  # a choice of the subject's, for its receipt
    snapshot_id: str = ""  # the demo's training snapshot, for registering a model on it
    task_id: int = 0  # the demo's open retraining task (closed through the API)
    page_task_id: int = 0  # a second open task (closed through the console's form)
    cases: dict[str, int] = field(default_factory=dict)  # what each case is for -> its id
    doc_id: int = 0  # the document of case "read"
    rep_subject: str = ""  # the deceased member a representative acts for
    rep_case: int = 0  # the representative's case
    rep_secret: str = ""  # their one-time sign-in link
    rep_receipt_seq: int = 0  # a choice the representative made for the member


@dataclass(frozen=True)
class Written:
    """What a call could change: compared before and after every refused call."""

    head: Any
    tables: dict[str, list[tuple[Any, ...]]]

    def moved(self, after: Written) -> list[str]:
        out = [] if after.head == self.head else [f"the ledger head (from {self.head.seq})"]
        return out + [name for name, rows in self.tables.items() if after.tables[name] != rows]


# What a successful call did: given what was written before and after, and the answer;
# None when it did what it says, else the problem in words.
Effect = Callable[[Ledger, Written, Written, Any], str | None]


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, Any] | None = None
    body: Any = None
    form: dict[str, str] | None = None  # a page's form (the caller's CSRF token is added)
    # Who, besides the rightful caller, may legitimately make this call.
    also_allowed: frozenset[str] = frozenset()
    # Who makes it rightfully: the subject's "member" session, or another caller.
    rightful: str = "member"
    public: bool = False
    writes: bool = False  # a public call that writes (opening a case)
    public_status: int = 200
    # What the rightful caller gets when it is not a 2xx: an answer from past the checks
    # of who may ask (publishing a notice the demo's policy file has no new version of).
    rightful_answer: tuple[int, str] | None = None
    refused: int = 403  # what a signed-in caller who may not is answered
    effect: Effect | None = None

    @property
    def is_page(self) -> bool:
        return not self.url.startswith("/v1/")

    def refusal(self, caller: str) -> int:
        if caller == ANONYMOUS:
            return 303 if self.is_page and not self.url.endswith(".json") else 401
        return self.refused

    def __str__(self) -> str:
        extra = self.body if self.body is not None else self.form
        return f"{self.method} {self.url} {self.params or ''} {extra or ''}".rstrip()


# ---- effects ------------------------------------------------------------------------------


def _latest_choice(subject: str, purpose: str, value: str, actor: str) -> Effect:
    def check(ledger: Ledger, before: Written, after: Written, r: Any) -> str | None:
        last = [e for e in ledger.subject_events(subject) if e.purpose == purpose]
        if not last or (last[-1].type, last[-1].value, last[-1].actor) != ("choice", value, actor):
            return f"{subject}'s latest {purpose} choice is not a {value} by {actor}"
        return None

    return check


def _case_is(case_id: int, status: str) -> Effect:
    def check(ledger: Ledger, before: Written, after: Written, r: Any) -> str | None:
        now = cases.get(ledger, case_id).status
        return None if now == status else f"case {case_id} is {now}, not {status}"

    return check


def _task_closed(task_id: int) -> Effect:
    def check(ledger: Ledger, before: Written, after: Written, r: Any) -> str | None:
        (task,) = [t for t in list_tasks(ledger, status=None) if t["id"] == task_id]
        return None if task["status"] == "closed" else f"task {task_id} is {task['status']}"

    return check


def _nothing_written(ledger: Ledger, before: Written, after: Written, r: Any) -> str | None:
    moved = before.moved(after)
    return f"it wrote: {', '.join(moved)}" if moved else None


def _subject_registered(subject: str) -> Effect:
    def check(ledger: Ledger, before: Written, after: Written, r: Any) -> str | None:
        return None if ledger.subject_exists(subject) else f"{subject} was not registered"

    return check


def _names_are(subject: str, names: list[str]) -> Effect:
    def check(ledger: Ledger, before: Written, after: Written, r: Any) -> str | None:
        now = privacy.profile(ledger, subject).names
        return None if list(now) == names else f"{subject}'s names are {now}, not {names}"

    return check


def _model_listed(name: str) -> Effect:
    def check(ledger: Ledger, before: Written, after: Written, r: Any) -> str | None:
        listed = [m["name"] for m in list_models(ledger)]
        return None if name in listed else f"model {name} is not listed"

    return check


def _all_off(subject: str) -> Effect:
    def check(ledger: Ledger, before: Written, after: Written, r: Any) -> str | None:
        on = [p for p in ledger.policy.purposes if decide(ledger, subject, p).allowed]
        return f"{subject} is still used for {on}" if on else None

    return check


def _member_accounts_gone(subject: str) -> Effect:
    def check(ledger: Ledger, before: Written, after: Written, r: Any) -> str | None:
        q = select(accounts_table.c.username).where(
            accounts_table.c.subject_id == subject, accounts_table.c.kind == "member"
        )
        with ledger.engine.connect() as conn:
            left = list(conn.execute(q).scalars())
        return f"{subject}'s own accounts remain: {left}" if left else None

    return check


# ---- the API's rules ----------------------------------------------------------------------


def _choice(t: Target, action: str) -> Call:
    return Call(
        "POST",
        f"/v1/subjects/{t.subject}/choices",
        body={"purpose": RESEARCH, "action": action},
        # Staff may stop a use for a member, never start one.
        also_allowed=OPERATORS if action in ("withdraw", "object") else frozenset(),
        effect=_latest_choice(t.subject, RESEARCH, action, t.owner_subject),
    )


def _new_subject(t: Target) -> Call:
    new = f"authz-new-{t.subject}"
    return Call(
        "POST",
        "/v1/subjects",
        body=[{"id": new, "jurisdiction": "FR"}],
        also_allowed=OPERATORS,
        rightful=ADMIN_TOKEN,
        effect=_subject_registered(new),
    )


def _staff_only(
    method: str,
    url: str,
    body: Any = None,
    params: Any = None,
    *,
    permission: str = "read",
    effect: Effect | None = None,
) -> Call:
    """A call for staff alone (those holding ``permission``), whoever it is about."""
    return Call(
        method,
        url,
        params=params,
        body=body,
        also_allowed=holding(permission),
        rightful=ADMIN_TOKEN,
        effect=effect,
    )


def _review(t: Target, face: str, step: str) -> Call:
    """A reviewer's step on one of the target's cases, through the API or the console.
    Reviewing is done in person: a reviewer's session, or (through the API) their token."""
    case_id = t.cases[f"{face}-{step}"]
    status = {"propose": "proposed", "reject": "rejected", "approve": "approved"}[step]
    if face == "api":
        return Call(
            "POST",
            f"/v1/cases/{case_id}/{step}",
            body={"reason": "authz"},
            also_allowed=frozenset({REVIEWER, REVIEWER_TOKEN}),
            rightful=REVIEWER,
            effect=_case_is(case_id, status),
        )
    return Call(
        "POST",
        f"/admin/cases/{case_id}/{step}",
        form={"reason": "authz"},
        also_allowed=in_person("cases"),
        rightful=REVIEWER,
        effect=_case_is(case_id, status),
    )


def _new_names(t: Target) -> list[str]:
    return [f"Authz Name {t.subject}"]


# One rule per operation in the OpenAPI: the calls to try for a target subject.
RULES: dict[tuple[str, str], Callable[[Target], list[Call]]] = {
    ("GET", "/v1/health"): lambda t: [Call("GET", "/v1/health", public=True)],
    ("GET", "/v1/ledger/head"): lambda t: [Call("GET", "/v1/ledger/head", public=True)],
    ("POST", "/v1/subjects"): lambda t: [_new_subject(t)],
    ("GET", "/v1/subjects/{subject_id}"): lambda t: [
        Call("GET", f"/v1/subjects/{t.subject}", also_allowed=STAFF_CALLERS)
    ],
    # The directory entry: the member (or a page admin for its page), and staff who operate.
    ("PATCH", "/v1/subjects/{subject_id}"): lambda t: [
        Call(
            "PATCH",
            f"/v1/subjects/{t.subject}",
            body={"names": _new_names(t)},
            also_allowed=OPERATORS,
            effect=_names_are(t.subject, _new_names(t)),
        )
    ],
    ("GET", "/v1/subjects/{subject_id}/events"): lambda t: [
        Call("GET", f"/v1/subjects/{t.subject}/events", also_allowed=STAFF_CALLERS),
        Call(
            "GET",
            f"/v1/subjects/{t.subject}/events",
            params={"after": 0, "limit": 1},
            also_allowed=STAFF_CALLERS,
        ),
    ],
    ("POST", "/v1/subjects/{subject_id}/choices"): lambda t: [
        _choice(t, "grant"),
        _choice(t, "withdraw"),
        _choice(t, "object"),
    ],
    ("GET", "/v1/decisions/{subject_id}"): lambda t: [
        Call(
            "GET",
            f"/v1/decisions/{t.subject}",
            params={"purpose": GENAI},
            also_allowed=STAFF_CALLERS | {READ_TOKEN},
        )
    ],
    ("POST", "/v1/decisions/batch"): lambda t: [
        Call(
            "POST",
            "/v1/decisions/batch",
            body={"purpose": GENAI, "subjects": [t.subject]},
            also_allowed=STAFF_CALLERS,
            rightful=READ_TOKEN,
            effect=_nothing_written,
        )
    ],
    ("GET", "/v1/events"): lambda t: [
        Call("GET", "/v1/events", also_allowed=STAFF_CALLERS, rightful=ADMIN_TOKEN)
    ],
    ("GET", "/v1/receipts/{seq}"): lambda t: [
        Call("GET", f"/v1/receipts/{t.receipt_seq}", also_allowed=STAFF_CALLERS)
    ],
    # Anyone holding a receipt may check it; it reveals nothing the receipt does not hold.
    ("POST", "/v1/receipts/verify"): lambda t: [
        Call("POST", "/v1/receipts/verify", body={"not": "a receipt"}, public=True)
    ],
    # The published notices are public; publishing one is for those holding 'notices'.
    ("GET", "/v1/notices"): lambda t: [Call("GET", "/v1/notices", public=True)],
    ("POST", "/v1/purposes/{purpose}/notices"): lambda t: [
        replace(
            _staff_only(
                "POST",
                f"/v1/purposes/{GENAI}/notices",
                body={"changes": "authz"},
                permission="notices",
                effect=_nothing_written,
            ),
            rightful_answer=(400, "version 1 of 'genai-training' was already published"),
        )
    ],
    # The model registry and the retraining tasks are staff's, whoever's data they hold.
    ("GET", "/v1/models"): lambda t: [_staff_only("GET", "/v1/models")],
    ("POST", "/v1/models"): lambda t: [
        _staff_only(
            "POST",
            "/v1/models",
            body={"name": f"authz-{t.subject}", "version": "1", "snapshots": [t.snapshot_id]},
            permission="operate",
            effect=_model_listed(f"authz-{t.subject}"),
        )
    ],
    ("GET", "/v1/tasks"): lambda t: [
        _staff_only("GET", "/v1/tasks"),
        _staff_only("GET", "/v1/tasks", params={"status": "all", "subject": t.subject}),
    ],
    ("POST", "/v1/tasks/{task_id}/close"): lambda t: [
        _staff_only(
            "POST",
            f"/v1/tasks/{t.task_id}/close",
            body={"note": "handled by hand"},
            permission="operate",
            effect=_task_closed(t.task_id),
        )
    ],
    # Where a subject's data went in AI: the subject, a page admin for it, and staff.
    ("GET", "/v1/subjects/{subject_id}/ai"): lambda t: [
        Call("GET", f"/v1/subjects/{t.subject}/ai", also_allowed=STAFF_CALLERS)
    ],
    # Anyone may open a case (a visitor's waits for the e-mail link; see
    # test_anyone_may_open_a_case_and_only_staff_skip_the_confirming_mail).
    ("POST", "/v1/cases"): lambda t: [
        Call(
            "POST",
            "/v1/cases",
            body={
                "kind": "objection",
                "names": ["Authz Person"],
                "reporter_email": "someone@example.com",
            },
            public=True,
            writes=True,
            public_status=201,
        )
    ],
    # Cases and their evidence are read by staff; reviewed by reviewers, in person.
    ("GET", "/v1/cases"): lambda t: [
        _staff_only("GET", "/v1/cases"),
        _staff_only("GET", "/v1/cases", params={"status": "approved"}),
    ],
    ("GET", "/v1/cases/{case_id}"): lambda t: [_staff_only("GET", f"/v1/cases/{t.cases['read']}")],
    ("POST", "/v1/cases/{case_id}/propose"): lambda t: [_review(t, "api", "propose")],
    ("POST", "/v1/cases/{case_id}/reject"): lambda t: [_review(t, "api", "reject")],
    ("POST", "/v1/cases/{case_id}/approve"): lambda t: [_review(t, "api", "approve")],
}


# ---- the pages' rules ---------------------------------------------------------------------

# Routes anyone may use, signed in or not, and why.
PUBLIC_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): "the API's description",
    ("GET", "/"): "the home page",
    ("GET", "/index.json"): "the home page",
    ("GET", "/signin"): "signing in",
    ("GET", "/signin.json"): "signing in",
    ("POST", "/signin"): "signing in",
    ("POST", "/signout"): "signing out (its CSRF token is the session's)",
    ("GET", "/in/{handle}"): "a member's public profile",
    ("GET", "/in/{handle}.json"): "a member's public profile",
    ("GET", "/posts/{record_id}"): "a public post",
    ("GET", "/posts/{record_id}.json"): "a public post",
    ("GET", "/notices"): "the public changelog of notices",
    ("GET", "/notices.json"): "the public changelog of notices",
    ("GET", "/notices.atom"): "the public changelog of notices",
    ("GET", "/.well-known/askfirst-receipt-keys.json"): "the keys receipts are checked with",
    ("GET", "/one-click/{token}"): "the signed link in a notice e-mail is the proof",
    ("POST", "/one-click/{token}"): "the signed link in a notice e-mail is the proof",
    ("GET", "/one-click/{token}/receipt.json"): "the signed link in a notice e-mail is the proof",
    ("GET", "/requests"): "anyone may ask (a death, a representative, an objection, erasure)",
    ("GET", "/requests.json"): "anyone may ask",
    ("POST", "/requests"): "anyone may ask; a visitor's request waits for the e-mail link",
    ("GET", "/requests/confirm/{token}"): "the signed link mailed to the requester",
    ("POST", "/requests/confirm/{token}"): "the signed link mailed to the requester",
    ("GET", "/signin/link/{secret}"): "a representative's one-time sign-in link",
    ("POST", "/signin/link/{secret}"): "a representative's one-time sign-in link",
}


def _staff_page(path: Callable[[Target], str]) -> Callable[[Target], list[Call]]:
    """A console page every staff role reads (and a service's admin token)."""
    return lambda t: [Call("GET", path(t), also_allowed=READERS, rightful=AUDITOR)]


def _own_page(path: str) -> Callable[[Target], list[Call]]:
    """A settings page about the target subject: only who may act for it."""
    return lambda t: [Call("GET", path, params={"subject": t.subject})]


def _receipt_page(suffix: str) -> Callable[[Target], list[Call]]:
    return lambda t: [
        Call("GET", f"/receipts/{t.receipt_seq}{suffix}", also_allowed=READERS, refused=404)
    ]


def _representing(method: str, path: str, **kw: Any) -> Callable[[Target], list[Call]]:
    return lambda t: [Call(method, path, rightful=REPRESENTATIVE, **kw)]


PAGE_RULES: dict[tuple[str, str], Callable[[Target], list[Call]]] = {
    # The console: staff of every role read it.
    ("GET", "/admin"): _staff_page(lambda t: "/admin"),
    ("GET", "/admin.json"): _staff_page(lambda t: "/admin.json"),
    ("GET", "/admin/tasks"): _staff_page(lambda t: "/admin/tasks"),
    ("GET", "/admin/tasks.json"): _staff_page(lambda t: "/admin/tasks.json"),
    ("GET", "/admin/notices"): _staff_page(lambda t: "/admin/notices"),
    ("GET", "/admin/notices.json"): _staff_page(lambda t: "/admin/notices.json"),
    ("GET", "/admin/notices/{purpose}"): _staff_page(lambda t: f"/admin/notices/{GENAI}"),
    ("GET", "/admin/notices/{purpose}.json"): _staff_page(lambda t: f"/admin/notices/{GENAI}.json"),
    ("GET", "/admin/cases"): _staff_page(lambda t: "/admin/cases"),
    ("GET", "/admin/cases.json"): _staff_page(lambda t: "/admin/cases.json"),
    ("GET", "/admin/cases/{case_id}"): _staff_page(lambda t: f"/admin/cases/{t.cases['read']}"),
    ("GET", "/admin/cases/{case_id}.json"): _staff_page(
        lambda t: f"/admin/cases/{t.cases['read']}.json"
    ),
    ("GET", "/admin/cases/{case_id}/evidence/{doc_id}"): _staff_page(
        lambda t: f"/admin/cases/{t.cases['read']}/evidence/{t.doc_id}"
    ),
    # Its forms: each for the role that holds the permission, in person.
    ("POST", "/admin/notices/{purpose}/publish"): lambda t: [
        Call(
            "POST",
            f"/admin/notices/{GENAI}/publish",
            form={"changes": "authz"},
            also_allowed=in_person("notices"),
            rightful=EDITOR,
            rightful_answer=(400, "was already published"),
            effect=_nothing_written,
        )
    ],
    ("POST", "/admin/tasks/{task_id}/close"): lambda t: [
        Call(
            "POST",
            f"/admin/tasks/{t.page_task_id}/close",
            form={"note": "handled by hand"},
            also_allowed=in_person("operate"),
            rightful=STAFF,
            effect=_task_closed(t.page_task_id),
        )
    ],
    ("POST", "/admin/cases/{case_id}/{step}"): lambda t: [
        _review(t, "page", "propose"),
        _review(t, "page", "reject"),
        _review(t, "page", "approve"),
    ],
    # Settings & Privacy: the hub holds nothing of anyone's; the rest is the subject's.
    ("GET", "/settings"): lambda t: [Call("GET", "/settings", also_allowed=SIGNED_IN)],
    ("GET", "/settings.json"): lambda t: [Call("GET", "/settings.json", also_allowed=SIGNED_IN)],
    ("GET", "/settings/data-privacy"): _own_page("/settings/data-privacy"),
    ("GET", "/settings/data-privacy.json"): _own_page("/settings/data-privacy.json"),
    ("GET", "/settings/your-data-in-ai"): _own_page("/settings/your-data-in-ai"),
    ("GET", "/settings/your-data-in-ai.json"): _own_page("/settings/your-data-in-ai.json"),
    ("POST", "/settings/data-privacy/choice"): lambda t: [
        Call(
            "POST",
            "/settings/data-privacy/choice",
            form={"purpose": GENAI, "action": "withdraw", "subject": t.subject},
            effect=_latest_choice(t.subject, GENAI, "withdraw", t.owner_subject),
        )
    ],
    ("POST", "/settings/data-privacy/all-off"): lambda t: [
        Call(
            "POST",
            "/settings/data-privacy/all-off",
            form={"subject": t.subject},
            effect=_all_off(t.subject),
        )
    ],
    # A receipt: its subject, those who act for it, and staff; to anyone else, no receipt.
    ("GET", "/receipts/{seq}"): _receipt_page(""),
    ("GET", "/receipts/{seq}.json"): _receipt_page(".json"),
    # A deceased member's representative, and nobody else.
    ("GET", "/representing"): _representing("GET", "/representing"),
    ("GET", "/representing.json"): _representing("GET", "/representing.json"),
    ("GET", "/representing/report.json"): lambda t: [
        Call("GET", "/representing/report.json", rightful=REPRESENTATIVE)
    ],
    ("POST", "/representing/choice"): lambda t: [
        Call(
            "POST",
            "/representing/choice",
            form={"purpose": GENAI, "action": "object"},
            rightful=REPRESENTATIVE,
            effect=_latest_choice(t.rep_subject, GENAI, "object", representative_actor(t.rep_case)),
        )
    ],
    ("POST", "/representing/close"): lambda t: [
        Call(
            "POST",
            "/representing/close",
            form={},
            rightful=REPRESENTATIVE,
            effect=_member_accounts_gone(t.rep_subject),
        )
    ],
}


def _operations(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    )


def _walk(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            yield from _walk(included.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Route):
            path = re.sub(r":\w+}", "}", prefix + route.path)  # {seq:int} -> {seq}
            for method in route.methods or ():
                if method != "HEAD":  # answered wherever GET is (app.HeadAsGet)
                    yield method, path


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app answers, but its static files."""
    return sorted(set(_walk(app.routes)))


def _page_routes(app: FastAPI) -> list[tuple[str, str]]:
    """The routes outside the OpenAPI that are not public: those PAGE_RULES must cover."""
    api = set(_operations(app))
    return [r for r in _routes(app) if r not in api and r not in PUBLIC_ROUTES]


def test_every_openapi_operation_has_an_authorization_rule(app: FastAPI) -> None:
    operations = _operations(app)
    assert len(operations) >= 11
    missing = [op for op in operations if op not in RULES]
    assert not missing, f"endpoints with no authorization rule in this file: {missing}"
    stale = [op for op in RULES if op not in operations]
    assert not stale, f"rules for endpoints the app no longer has: {stale}"


def test_every_route_of_the_app_has_a_rule_or_is_public(app: FastAPI) -> None:
    routes = _routes(app)
    assert set(_operations(app)) <= set(routes)
    pages = _page_routes(app)
    assert len(pages) >= 30, pages
    missing = [r for r in pages if r not in PAGE_RULES]
    assert not missing, f"routes with no authorization rule and not public: {missing}"
    stale = [r for r in [*PAGE_RULES, *PUBLIC_ROUTES] if r not in routes]
    assert not stale, f"rules for routes the app no longer has: {stale}"
    both = [r for r in PAGE_RULES if r in PUBLIC_ROUTES or r in RULES]
    assert not both, f"routes both public and ruled: {both}"


def test_the_permission_table_is_the_issues() -> None:
    assert {role: set(p) for role, p in accounts.PERMISSIONS.items()} == ROLE_PERMISSIONS
    assert set(accounts.STAFF_ROLES) == set(ROLE_PERMISSIONS) - {"service"}


def _all_calls(app: FastAPI, target: Target) -> list[Call]:
    """Every rule's calls: the API's operations, then the other routes, in order."""
    calls = []
    for operation in _operations(app):
        assert operation in RULES, f"no authorization rule for {operation}"
        calls += RULES[operation](target)
    for route in _page_routes(app):
        assert route in PAGE_RULES, f"no authorization rule for {route}"
        calls += PAGE_RULES[route](target)
    return calls


# ---- the world the calls are aimed at ----------------------------------------------------


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "gray").save(out, format="PNG")
    return out.getvalue()


def _evidence_store(key_dir: Any) -> evidence.Store:
    """The store the app keeps evidence in (as case_pages.evidence_store finds it)."""
    url = os.environ.get(config.EVIDENCE_URL.env)
    return evidence.store_from_settings(url, evidence.default_folder_for(key_dir))


def _bystanders(ledger: Ledger, n: int) -> list[str]:
    """Active members in no snapshot, not among the targets' people: whose death (or
    representative) moves nothing the other calls look at."""
    q = (
        select(subject_state.c.subject_id)
        .where(
            subject_state.c.kind == "member",
            subject_state.c.status == "active",
            subject_state.c.subject_id.not_in(select(lineage.c.subject_id)),
            subject_state.c.subject_id.not_in([ANNA, JO, PRIYA]),
        )
        .order_by(subject_state.c.subject_id)
        .limit(n)
    )
    with ledger.engine.connect() as conn:
        found = list(conn.execute(q).scalars())
    assert len(found) == n
    return found


def _second_task(ledger: Ledger, snapshot_id: str, first: int) -> int:
    """A second open retraining task: another author in the trained snapshot says no."""
    q = (
        select(lineage.c.subject_id)
        .where(lineage.c.author_records > 0, lineage.c.subject_id.not_in([ANNA, JO, PRIYA]))
        .order_by(lineage.c.subject_id)
    )
    with ledger.engine.connect() as conn:
        authors = list(conn.execute(q).scalars())
    for author in authors:
        if decide(ledger, author, GENAI).allowed:
            privacy.choose(ledger, author, GENAI, "withdraw", actor=author, source="test")
            opened = [t["id"] for t in list_tasks(ledger, status="open") if t["id"] != first]
            assert len(opened) == 1, opened
            return int(opened[0])
    raise AssertionError(f"no author of snapshot {snapshot_id} is in it by their yes")


def _reported_death(ledger: Ledger, store: evidence.Store, subject: str, doc: bool) -> int:
    """A death reported by a visitor, who then confirmed their e-mail: open for review."""
    files = [evidence.check(png(), name="certificate.png")] if doc else []
    made = cases.open_case(
        ledger,
        "death",
        actor="requester",
        subject=subject,
        reporter_email="kin@example.com",
        link="https://news.example/obituary",
        files=files,
        store_=store if files else None,
        verify_reporter=True,
        source="web",
    )
    return cases.verify_reporter(ledger, made.id).id


def _world(ledger: Ledger, key_dir: Any, snapshot_id: str, task_id: int) -> dict[str, Any]:
    """Cases in each state the review calls need, a second open task, and an approved
    representative of a deceased member (with the secret of their sign-in link)."""
    store = _evidence_store(key_dir)
    x_api, x_page, deceased = _bystanders(ledger, 3)
    ids: dict[str, int] = {"read": _reported_death(ledger, store, x_api, doc=True)}
    for face, who in (("api", x_api), ("page", x_page)):
        for step in ("propose", "reject", "approve"):
            ids[f"{face}-{step}"] = _reported_death(ledger, store, who, doc=False)
        cases.propose(ledger, ids[f"{face}-approve"], "ben", "the obituary agrees")
    (doc,) = cases.get(ledger, ids["read"]).evidence

    death = _reported_death(ledger, store, deceased, doc=False)
    cases.propose(ledger, death, "ana", "the obituary agrees")
    cases.approve(ledger, death, "ben", store_=store)
    rep = cases.open_case(
        ledger,
        "representative",
        actor="requester",
        subject=deceased,
        email="sam@example.com",
        reporter_email="sam@example.com",
        files=[evidence.check(png(), name="letter.png")],
        store_=store,
    )
    cases.propose(ledger, rep.id, "ben", "the letter of administration")
    done = cases.approve(ledger, rep.id, "ana", store_=store)
    assert done.signin_secret is not None
    said = privacy.choose(
        ledger, deceased, RESEARCH, "object", actor=representative_actor(rep.id), source="test"
    )
    return {
        "snapshot_id": snapshot_id,
        "task_id": task_id,
        "page_task_id": _second_task(ledger, snapshot_id, task_id),
        "cases": ids,
        "doc_id": doc.id,
        "rep_subject": deceased,
        "rep_case": rep.id,
        "rep_secret": done.signin_secret,
        "rep_receipt_seq": said.event.seq,
    }


def _receipt_seq(ledger: Ledger, target: Target) -> int:
    seqs = [e.seq for e in ledger.subject_events(target.subject) if e.type == "choice"]
    if seqs:
        return seqs[-1]
    made = privacy.choose(
        ledger, target.subject, GENAI, "grant", actor=target.owner_subject, source="test"
    )
    return made.event.seq


TARGETS = {
    # priya.raman's own data, tried by jo.rivera (who runs a company page, but not hers).
    "member": Target(PRIYA, "priya.raman", PRIYA, "jo.rivera", JO),
    # Acme's page, run by anna.keller and jo.rivera, tried by priya.raman.
    "organization": Target(ACME, "anna.keller", ANNA, "priya.raman", PRIYA),
}


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest, app: FastAPI, demo_dir: demo.Demo) -> Target:
    t: Target = TARGETS[request.param]
    ledger: Ledger = app.state.ledger
    (snapshot,) = list_snapshots(ledger, GENAI)  # the demo trains one model on one snapshot
    (task,) = list_tasks(ledger, status="open")  # and one member in it then says no
    return Target(
        **{
            **t.__dict__,
            "receipt_seq": _receipt_seq(ledger, t),
            **_world(ledger, demo_dir.key_dir, snapshot["snapshot_id"], task["id"]),
        }
    )


# ---- callers ---------------------------------------------------------------------------


@dataclass
class Caller:
    name: str
    client: TestClient
    headers: dict[str, str] = field(default_factory=dict)
    csrf: str = ""

    def send(self, call: Call, *, csrf: bool = True) -> Any:
        headers = dict(self.headers)
        if not csrf:
            headers.pop("X-CSRF-Token", None)
        form = None
        if call.form is not None:
            form = {**call.form, "csrf_token": self.csrf if csrf else ""}
        return self.client.request(
            call.method,
            call.url,
            params=call.params,
            json=call.body,
            data=form,
            headers=headers,
            follow_redirects=False,
        )


def _representative(app: FastAPI, secret: str) -> WebClient:
    """A representative signed in as a person would: the link's page, then its button."""
    c = WebClient(app)
    page = c.get(f"/signin/link/{secret}")
    assert page.status_code == 200, page.text
    r = c.post(f"/signin/link/{secret}", data={"csrf_token": csrf_in(page.text)})
    assert r.status_code == 200 and r.url.path == "/representing", (r.status_code, r.url)
    c.csrf = csrf_in(r.text)
    return c


@pytest.fixture
def callers(
    app: FastAPI,
    target: Target,
    signed_in: Callable[..., Any],
    token: Callable[..., Any],
) -> Iterator[Callable[[str], Caller]]:
    """``callers(name)`` -> that caller, made on first use."""
    made: dict[str, Caller] = {}
    clients: list[TestClient] = []

    def bare() -> TestClient:
        c = TestClient(app)
        clients.append(c)
        return c

    def session(name: str, c: WebClient) -> Caller:
        return Caller(name, c, dict(c.csrf_header), c.csrf)

    def make(name: str) -> Caller:
        if name in made:
            return made[name]
        usernames = {
            OTHER_MEMBER: target.other,
            "owner": target.owner,
            STAFF: demo.STAFF_USER,
            EDITOR: demo.EDITOR_USER,
            REVIEWER: demo.REVIEWERS[0],
            AUDITOR: demo.AUDITOR_USER,
        }
        own_tokens = {REVIEWER_TOKEN: demo.REVIEWERS[0], ADMIN_OWN_TOKEN: demo.STAFF_USER}
        if name == ANONYMOUS:
            caller = Caller(name, bare())
        elif name in usernames:
            caller = session(name, signed_in(usernames[name]))
        elif name == REPRESENTATIVE:
            rep = _representative(app, target.rep_secret)
            clients.append(rep)
            caller = session(name, rep)
        elif name in own_tokens:
            staff = own_tokens[name]
            _, secret = create_token(app.state.ledger, f"{staff}-own", ["admin"], staff=staff)
            caller = Caller(name, bare(), {"Authorization": f"Bearer {secret}"})
        else:
            scopes, subject = {
                READ_TOKEN: (["decisions:read"], None),
                WRITE_OTHER: (["choices:write"], target.other_subject),
                ADMIN_TOKEN: (["admin"], None),
            }[name]
            caller = Caller(name, bare(), dict(token(scopes, subject=subject).headers))
        made[name] = caller
        return caller

    yield make
    for c in clients:
        c.close()


# ---- refusals --------------------------------------------------------------------------


def _written(ledger: Ledger) -> Written:
    """What a call could change, besides the ledger: the cases and their steps and
    evidence, the directory, accounts and tokens, the model versions and every task."""

    def rows(conn: Any, *columns: Any) -> list[tuple[Any, ...]]:
        return sorted(tuple(r) for r in conn.execute(select(*columns)))

    with ledger.engine.connect() as conn:
        tables = {
            "cases": rows(conn, cases_table.c.id, cases_table.c.status, cases_table.c.subject_id),
            "case steps": rows(conn, case_steps.c.seq, case_steps.c.case_id, case_steps.c.step),
            "evidence": rows(conn, evidence_table.c.id, evidence_table.c.case_id),
            "directory": rows(conn, subjects.c.id, subjects.c.handle, subjects.c.names),
            "accounts": rows(
                conn,
                accounts_table.c.id,
                accounts_table.c.username,
                accounts_table.c.kind,
                accounts_table.c.role,
            ),
            "tokens": rows(conn, api_tokens.c.id, api_tokens.c.revoked_at),
        }
    tables["models"] = sorted((m["name"], m["version"]) for m in list_models(ledger))
    tables["tasks"] = sorted((t["id"], t["status"]) for t in list_tasks(ledger, status=None))
    return Written(ledger.head(), tables)


def _refusal_problems(call: Call, caller: str, r: Any) -> list[str]:
    """What is wrong with ``r`` as ``caller``'s refusal of ``call``."""
    expected = call.refusal(caller)
    if r.status_code != expected:
        return [f"{call}: {r.status_code} (expected {expected}) {r.text[:200]}"]
    if expected == 303:
        where = r.headers.get("location", "")
        return [] if where.startswith("/signin") else [f"{call}: sent to {where}, not /signin"]
    if (
        call.is_page
        and not call.url.endswith(".json")
        and "text/html" in r.headers.get("content-type", "")
    ):
        return []  # an error page, which still shows who is signed in
    try:
        body = r.json()
    except ValueError:
        return [f"{call}: refusal without a JSON error: {r.text[:200]}"]
    return [] if "error" in body else [f"{call}: refusal without a JSON error: {r.text[:200]}"]


def _refused(ledger: Ledger, caller: Caller, calls: Iterable[Call]) -> tuple[int, list[str]]:
    """Send each call as ``caller``: how many, and what went wrong (an answer that is not
    the refusal, or anything written)."""
    tried, problems = 0, []
    for call in calls:
        tried += 1
        before = _written(ledger)
        r = caller.send(call)
        problems += _refusal_problems(call, caller.name, r)
        moved = before.moved(_written(ledger))
        if moved:
            problems.append(f"{call}: {', '.join(moved)} moved")
    return tried, problems


def _may(call: Call, caller: str) -> bool:
    return call.public or caller in call.also_allowed or caller == call.rightful


@pytest.mark.parametrize("caller_name", WRONG_CALLERS)
def test_wrong_callers_are_refused_and_nothing_is_written(
    app: FastAPI, target: Target, callers: Callable[[str], Caller], caller_name: str
) -> None:
    caller = callers(caller_name)
    calls = [c for c in _all_calls(app, target) if not _may(c, caller_name)]
    tried, problems = _refused(app.state.ledger, caller, calls)
    assert tried > 0
    assert not problems, f"{caller_name} on {target.subject}:\n" + "\n".join(problems)


@pytest.mark.parametrize("target", ["member"], indirect=True)
def test_a_representative_reaches_their_member_only_through_representing(
    app: FastAPI, target: Target, callers: Callable[[str], Caller]
) -> None:
    """Every route but /representing refuses a representative even about the member they
    act for: there they may say no, download the member's data and close the account;
    elsewhere they are nobody (no settings page with a yes button, no staff reads)."""
    theirs = replace(target, subject=target.rep_subject, receipt_seq=target.rep_receipt_seq)
    calls = [c for c in _all_calls(app, theirs) if not _may(c, REPRESENTATIVE)]
    assert any(c.url.startswith(f"/v1/subjects/{target.rep_subject}") for c in calls)
    tried, problems = _refused(app.state.ledger, callers(REPRESENTATIVE), calls)
    assert tried > 30
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("caller_name", WRONG_CALLERS)
def test_public_endpoints_answer_everyone_and_write_nothing(
    app: FastAPI, target: Target, callers: Callable[[str], Caller], caller_name: str
) -> None:
    caller = callers(caller_name)
    ledger: Ledger = app.state.ledger
    before = ledger.head()
    public = [c for op in _operations(app) for c in RULES[op](target) if c.public and not c.writes]
    assert public
    for call in public:
        r = caller.send(call)
        assert r.status_code == call.public_status, (call, r.status_code, r.text[:200])
    assert ledger.head() == before


@pytest.fixture
def mailbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    """A real SMTP server the app mails the confirming link of a visitor's case to."""
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setenv("ASKFIRST_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
    monkeypatch.setenv("ASKFIRST_MAIL_FROM", "privacy@example.com")
    monkeypatch.setenv("ASKFIRST_BASE_URL", "http://testserver")
    yield sink
    controller.stop()


# Whose case goes to the reviewers at once: reviewers, and those who operate for subjects.
TRUSTED_OPENERS = holding("cases") | holding("operate")


@pytest.mark.parametrize("target", ["member"], indirect=True)
def test_anyone_may_open_a_case_and_only_staff_skip_the_confirming_mail(
    app: FastAPI, target: Target, callers: Callable[[str], Caller], mailbox: Sink
) -> None:
    (call,) = RULES[("POST", "/v1/cases")](target)
    problems = []
    for name in WRONG_CALLERS:
        r = callers(name).send(call)
        if r.status_code != 201:
            problems.append(f"{name}: {r.status_code} {r.text[:200]}")
            continue
        case = cases.get(app.state.ledger, r.json()["id"])
        trusted = name in TRUSTED_OPENERS
        if (case.status, r.json()["confirm_needed"]) != (
            ("open", False) if trusted else ("unverified", True)
        ):
            problems.append(f"{name}: case {case.id} is {case.status}, {r.json()}")
        if not trusted and case.opened_by != f"requester:{case.id}":
            problems.append(f"{name}: case {case.id} was opened by {case.opened_by}")
    assert not problems, "\n".join(problems)
    untrusted = len(set(WRONG_CALLERS) - TRUSTED_OPENERS)
    assert len(mailbox.messages) == untrusted


@pytest.mark.parametrize("target", ["member"], indirect=True)
def test_session_writes_to_the_api_need_the_csrf_header(
    app: FastAPI, target: Target, callers: Callable[[str], Caller]
) -> None:
    """Every API write its rightful caller makes with a session is refused without the
    page's CSRF token in X-CSRF-Token, and writes nothing."""
    problems: list[str] = []
    tried = 0
    for call in _all_calls(app, target):
        who = "owner" if call.rightful == "member" else call.rightful
        if call.is_page or call.method == "GET" or call.public or who not in SESSIONS:
            continue
        tried += 1
        caller = callers(who)
        before = _written(app.state.ledger)
        r = caller.send(call, csrf=False)
        if r.status_code != 403:
            problems.append(f"{call} as {who}: {r.status_code} {r.text[:200]}")
        moved = before.moved(_written(app.state.ledger))
        if moved:
            problems.append(f"{call} as {who}: {', '.join(moved)} moved")
    assert tried >= 5
    assert not problems, "\n".join(problems)


# ---- the rightful callers --------------------------------------------------------------


def _answered_as_allowed(call: Call, r: Any) -> str | None:
    """What is wrong with ``r`` as the answer to an allowed caller, if anything."""
    if call.rightful_answer is not None:
        status, words = call.rightful_answer
        if r.status_code == status and words in r.text.replace("&#39;", "'"):
            return None
    elif call.is_page and r.status_code == 303:
        return "sent to sign in" if r.headers["location"].startswith("/signin") else None
    elif 200 <= r.status_code < 300:
        return None
    return f"{r.status_code} {r.text[:300]}"


def test_every_call_succeeds_for_its_rightful_caller(
    app: FastAPI, target: Target, callers: Callable[[str], Caller], mailbox: Sink
) -> None:
    """So that the refusals above are about who asks, not about a malformed request; and
    each call does what it says."""
    ledger: Ledger = app.state.ledger
    problems = []
    for call in _all_calls(app, target):
        who = ANONYMOUS if call.public else call.rightful
        caller = callers("owner" if who == "member" else who)  # made before looking
        before = _written(ledger)
        r = caller.send(call)
        what = f"{call} as {who}"
        wrong = _answered_as_allowed(call, r)
        if wrong:
            problems.append(f"{what}: {wrong}")
        if call.effect is not None:
            wrong = call.effect(ledger, before, _written(ledger), r)
            if wrong:
                problems.append(f"{what}: {wrong}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", ["member"], indirect=True)
@pytest.mark.parametrize(
    "caller_name", [STAFF, ADMIN_OWN_TOKEN, ADMIN_TOKEN, EDITOR, REVIEWER_TOKEN]
)
def test_every_write_succeeds_for_each_other_caller_it_allows(
    app: FastAPI, target: Target, callers: Callable[[str], Caller], caller_name: str
) -> None:
    """The writes a rule allows besides its rightful caller succeed for them too, and do
    what they say (a choice's actor is checked in test_staff_may_stop_a_use_for_a_subject)."""
    ledger: Ledger = app.state.ledger
    caller = callers(caller_name)
    problems, tried = [], 0
    for call in _all_calls(app, target):
        if call.method == "GET" or call.public or caller_name not in call.also_allowed:
            continue
        if caller_name == call.rightful:
            continue  # test_every_call_succeeds_for_its_rightful_caller
        tried += 1
        before = _written(ledger)
        r = caller.send(call)
        wrong = _answered_as_allowed(call, r)
        if wrong is None and call.effect is not None and not call.url.endswith("/choices"):
            wrong = call.effect(ledger, before, _written(ledger), r)
        if wrong:
            problems.append(f"{call}: {wrong}")
    assert tried > 0
    assert not problems, f"{caller_name}:\n" + "\n".join(problems)


def test_every_read_answers_everyone_it_allows(
    app: FastAPI, target: Target, callers: Callable[[str], Caller]
) -> None:
    """Each caller a GET's rule allows gets a 2xx, not only its rightful caller."""
    problems = []
    for call in _all_calls(app, target):
        if call.method != "GET" or call.public:
            continue
        for who in sorted(call.also_allowed | {call.rightful}):
            r = callers("owner" if who == "member" else who).send(call)
            if not 200 <= r.status_code < 300:
                problems.append(f"{call} as {who}: {r.status_code} {r.text[:200]}")
    assert not problems, "\n".join(problems)


def test_members_own_choice_is_recorded_with_them_as_actor(
    app: FastAPI, target: Target, callers: Callable[[str], Caller]
) -> None:
    owner = callers("owner")
    r = owner.send(_choice(target, "grant"))
    assert r.status_code == 201, r.text
    ev = app.state.ledger.head()
    assert r.json()["event"]["seq"] == ev.seq
    last = app.state.ledger.events(after=ev.seq - 1)[0]
    assert (last.subject, last.actor, last.value) == (target.subject, target.owner_subject, "grant")


@pytest.mark.parametrize("caller_name", sorted(OPERATORS))
@pytest.mark.parametrize("action", ["withdraw", "object"])
def test_staff_may_stop_a_use_for_a_subject(
    app: FastAPI,
    target: Target,
    callers: Callable[[str], Caller],
    caller_name: str,
    action: str,
) -> None:
    caller = callers(caller_name)
    before = app.state.ledger.head().seq
    r = caller.send(_choice(target, action))
    assert r.status_code == 201, r.text
    event = r.json()["event"]
    assert event["seq"] == before + 1
    assert event["subject"] == target.subject
    assert event["actor"].startswith("staff:")
    d = callers(READ_TOKEN).send(
        Call("GET", f"/v1/decisions/{target.subject}", params={"purpose": RESEARCH})
    )
    assert d.json()["reason"] == "withdrawn"


@pytest.mark.parametrize("caller_name", sorted(STAFF_CALLERS))
def test_staff_may_read_any_subject(
    target: Target, callers: Callable[[str], Caller], caller_name: str
) -> None:
    caller = callers(caller_name)
    for url in (
        f"/v1/subjects/{target.subject}",
        f"/v1/subjects/{target.subject}/events",
        f"/v1/receipts/{target.receipt_seq}",
        f"/v1/subjects/{target.subject}/ai",
    ):
        r = caller.send(Call("GET", url))
        assert r.status_code == 200, (url, r.text)


def test_staff_session_api_write_needs_the_csrf_header(
    app: FastAPI, target: Target, signed_in: Callable[..., Any]
) -> None:
    staff = signed_in("staff")
    before = app.state.ledger.head()
    r = staff.post(
        f"/v1/subjects/{target.subject}/choices", json={"purpose": GENAI, "action": "withdraw"}
    )
    assert r.status_code == 403
    assert app.state.ledger.head() == before


def test_staff_session_registering_subjects_needs_the_csrf_header(
    app: FastAPI, signed_in: Callable[..., Any]
) -> None:
    staff = signed_in("staff")
    before = app.state.ledger.head()
    r = staff.post("/v1/subjects", json=[{"id": "csrf-less", "jurisdiction": "FR"}])
    assert r.status_code == 403, r.text
    assert app.state.ledger.head() == before


# ---- the pages that act on a subject ---------------------------------------------------


def test_another_members_settings_pages_are_refused_and_nothing_is_written(
    app: FastAPI, target: Target, callers: Callable[[str], Caller]
) -> None:
    other = callers(OTHER_MEMBER)
    csrf = other.headers["X-CSRF-Token"]
    ledger: Ledger = app.state.ledger
    before = ledger.head()
    answers = {
        "view": other.client.get(f"/settings/data-privacy?subject={target.subject}"),
        "view json": other.client.get(f"/settings/data-privacy.json?subject={target.subject}"),
        "choose": other.client.post(
            "/settings/data-privacy/choice",
            data={
                "purpose": GENAI,
                "action": "grant",
                "csrf_token": csrf,
                "subject": target.subject,
            },
        ),
        "all off": other.client.post(
            "/settings/data-privacy/all-off",
            data={"csrf_token": csrf, "subject": target.subject},
        ),
    }
    for what, r in answers.items():
        assert r.status_code == 403, (what, r.status_code, r.text[:200])
    receipt = other.client.get(f"/receipts/{target.receipt_seq}.json")
    assert receipt.status_code in (403, 404), receipt.text[:200]
    assert ledger.head() == before


# ---- four eyes: one person is one reviewer, however many sessions and tokens --------------


def _case_rows(ledger: Ledger) -> tuple[Any, ...]:
    with ledger.engine.connect() as conn:
        return (
            ledger.head(),
            sorted(tuple(r) for r in conn.execute(select(cases_table.c.id, cases_table.c.status))),
            conn.execute(select(func.count()).select_from(case_steps)).scalar_one(),
        )


@pytest.mark.parametrize("target", ["member"], indirect=True)
def test_two_tokens_of_one_reviewer_are_one_reviewer(app: FastAPI, target: Target) -> None:
    ledger: Ledger = app.state.ledger
    case_id = target.cases["api-propose"]
    first = {"Authorization": f"Bearer {create_token(ledger, 'ana-1', ['admin'], staff='ana')[1]}"}
    second = {"Authorization": f"Bearer {create_token(ledger, 'ana-2', ['admin'], staff='ana')[1]}"}
    with TestClient(app) as c:
        r = c.post(f"/v1/cases/{case_id}/propose", json={"reason": "agrees"}, headers=first)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "proposed" and r.json()["steps"][-1]["actor"] == "staff:ana"
        before = _case_rows(ledger)
        r = c.post(f"/v1/cases/{case_id}/approve", json={}, headers=second)
        assert r.status_code == 403, r.text
        assert "second, different reviewer" in r.json()["error"]
        assert _case_rows(ledger) == before
        subject = cases.get(ledger, case_id).subject
        assert subject is not None
        assert decide(ledger, subject, GENAI).reason != "deceased"


@pytest.mark.parametrize("target", ["member"], indirect=True)
def test_a_services_admin_token_can_neither_propose_nor_approve(
    app: FastAPI, target: Target, token: Callable[..., Any]
) -> None:
    """A service's token with the admin scope has no staff member behind it: it may not
    take a reviewer's place, neither as the first nor as the second."""
    ledger: Ledger = app.state.ledger
    service = token(["admin"]).headers
    open_case, proposed = target.cases["api-propose"], target.cases["api-approve"]
    before = _case_rows(ledger)
    with TestClient(app) as c:
        for case_id, step in ((open_case, "propose"), (proposed, "approve"), (open_case, "reject")):
            r = c.post(f"/v1/cases/{case_id}/{step}", json={"reason": "x"}, headers=service)
            assert r.status_code == 403, (step, r.text)
            assert "'cases' permission" in r.json()["error"], r.text
    assert _case_rows(ledger) == before
    assert cases.get(ledger, open_case).status == "open"
    assert cases.get(ledger, proposed).status == "proposed"
