"""Who may call what: every endpoint in the OpenAPI, tried by every caller who must be refused.

DESIGN.md rule 10: everyone acts only for themselves unless the ledger shows the
authority. For each endpoint (taken from ``app.openapi()``, so that a new endpoint without
a rule here fails :func:`test_every_openapi_operation_has_an_authorization_rule`), aimed at
a subject that is not the caller's: anonymous visitors get 401; another member's session
(with a valid CSRF token, so CSRF is not what stops it), tokens of the wrong scope, and
staff asking for what staff may not do get 403; never a 2xx or a 5xx, and neither the
ledger head nor the model registry and its tasks move. The same requests made by their
rightful caller succeed, so a refusal is never just a malformed request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from askfirst import privacy
from askfirst.ledger import Ledger
from askfirst.lineage import list_snapshots
from askfirst.models import list_models, list_tasks

GENAI, RESEARCH = "genai-training", "third-party-research"
ANNA, JO, PRIYA, ACME = "m001", "m101", "m171", "org-acme"

# Callers. "owner" is the subject's rightful caller; the rest may be refused.
ANONYMOUS = "anonymous"
OTHER_MEMBER = "another member's session"
READ_TOKEN = "decisions:read token"
WRITE_OTHER = "choices:write token bound to another subject"
ADMIN_TOKEN = "admin token"
STAFF = "staff session"
WRONG_CALLERS = [ANONYMOUS, OTHER_MEMBER, READ_TOKEN, WRITE_OTHER, ADMIN_TOKEN, STAFF]
STAFF_CALLERS = frozenset({ADMIN_TOKEN, STAFF})


@dataclass(frozen=True)
class Target:
    """A subject that is not the caller's, and who is who around it."""

    subject: str
    owner: str  # the member who may act for it (itself, or a page admin)
    owner_subject: str
    other: str  # a member who may not
    other_subject: str
    receipt_seq: int = 0  # a choice of the subject's, for its receipt
    snapshot_id: str = ""  # the demo's training snapshot, for registering a model on it
    task_id: int = 0  # the demo's open retraining task


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, Any] | None = None
    body: Any = None
    # Who, besides the rightful caller, may legitimately make this call.
    also_allowed: frozenset[str] = frozenset()
    # Who makes it rightfully: the subject's "member" session, or a token of a scope.
    rightful: str = "member"
    public: bool = False
    # What the rightful caller gets when it is not a 2xx: an answer from past the checks
    # of who may ask (publishing a notice the demo's policy file has no new version of).
    rightful_answer: tuple[int, str] | None = None


def _choice(t: Target, action: str) -> Call:
    return Call(
        "POST",
        f"/v1/subjects/{t.subject}/choices",
        body={"purpose": RESEARCH, "action": action},
        # Staff may stop a use for a member, never start one.
        also_allowed=STAFF_CALLERS if action in ("withdraw", "object") else frozenset(),
    )


def _new_subject(t: Target) -> Call:
    return Call(
        "POST",
        "/v1/subjects",
        body=[{"id": f"authz-new-{t.subject}", "jurisdiction": "FR"}],
        also_allowed=STAFF_CALLERS,
        rightful=ADMIN_TOKEN,
    )


def _staff_only(method: str, url: str, body: Any = None, params: Any = None) -> Call:
    """A call for staff alone (a staff session or an admin-scope token), whoever it is about."""
    return Call(
        method, url, params=params, body=body, also_allowed=STAFF_CALLERS, rightful=ADMIN_TOKEN
    )


# One rule per operation in the OpenAPI: the calls to try for a target subject.
RULES: dict[tuple[str, str], Callable[[Target], list[Call]]] = {
    ("GET", "/v1/health"): lambda t: [Call("GET", "/v1/health", public=True)],
    ("GET", "/v1/ledger/head"): lambda t: [Call("GET", "/v1/ledger/head", public=True)],
    ("POST", "/v1/subjects"): lambda t: [_new_subject(t)],
    ("GET", "/v1/subjects/{subject_id}"): lambda t: [
        Call("GET", f"/v1/subjects/{t.subject}", also_allowed=STAFF_CALLERS)
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
    # The published notices are public; publishing one is staff's.
    ("GET", "/v1/notices"): lambda t: [Call("GET", "/v1/notices", public=True)],
    ("POST", "/v1/purposes/{purpose}/notices"): lambda t: [
        replace(
            _staff_only("POST", f"/v1/purposes/{GENAI}/notices", body={"changes": "authz"}),
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
        )
    ],
    ("GET", "/v1/tasks"): lambda t: [
        _staff_only("GET", "/v1/tasks"),
        _staff_only("GET", "/v1/tasks", params={"status": "all", "subject": t.subject}),
    ],
    ("POST", "/v1/tasks/{task_id}/close"): lambda t: [
        _staff_only("POST", f"/v1/tasks/{t.task_id}/close", body={"note": "handled by hand"})
    ],
    # Where a subject's data went in AI: the subject, a page admin for it, and staff.
    ("GET", "/v1/subjects/{subject_id}/ai"): lambda t: [
        Call("GET", f"/v1/subjects/{t.subject}/ai", also_allowed=STAFF_CALLERS)
    ],
}


def _operations(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    )


def test_every_openapi_operation_has_an_authorization_rule(app: FastAPI) -> None:
    operations = _operations(app)
    assert len(operations) >= 11
    missing = [op for op in operations if op not in RULES]
    assert not missing, f"endpoints with no authorization rule in this file: {missing}"
    stale = [op for op in RULES if op not in operations]
    assert not stale, f"rules for endpoints the app no longer has: {stale}"


# ---- callers ---------------------------------------------------------------------------


@dataclass
class Caller:
    name: str
    client: TestClient
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, call: Call) -> Any:
        return self.client.request(
            call.method, call.url, params=call.params, json=call.body, headers=self.headers
        )


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
def target(request: pytest.FixtureRequest, app: FastAPI) -> Target:
    t: Target = TARGETS[request.param]
    ledger: Ledger = app.state.ledger
    (snapshot,) = list_snapshots(ledger, GENAI)  # the demo trains one model on one snapshot
    (task,) = list_tasks(ledger, status="open")  # and one member in it then says no
    return Target(
        **{
            **t.__dict__,
            "receipt_seq": _receipt_seq(ledger, t),
            "snapshot_id": snapshot["snapshot_id"],
            "task_id": task["id"],
        }
    )


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

    def make(name: str) -> Caller:
        if name in made:
            return made[name]
        if name == ANONYMOUS:
            caller = Caller(name, bare())
        elif name in (OTHER_MEMBER, "owner", STAFF):
            username = {OTHER_MEMBER: target.other, "owner": target.owner, STAFF: "staff"}[name]
            session = signed_in(username)
            caller = Caller(name, session, dict(session.csrf_header))
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


def _registry(ledger: Ledger) -> tuple[list[tuple[str, str]], list[tuple[int, str]]]:
    """The model versions and every task's status: what a model or task call would change."""
    return (
        [(m["name"], m["version"]) for m in list_models(ledger)],
        [(t["id"], t["status"]) for t in list_tasks(ledger, status=None)],
    )


@pytest.mark.parametrize("caller_name", WRONG_CALLERS)
def test_wrong_callers_are_refused_and_nothing_is_written(
    app: FastAPI, target: Target, callers: Callable[[str], Caller], caller_name: str
) -> None:
    caller = callers(caller_name)
    ledger: Ledger = app.state.ledger
    problems: list[str] = []
    tried = 0
    for operation in _operations(app):
        assert operation in RULES, f"no authorization rule for {operation}"
        for call in RULES[operation](target):
            if call.public or caller_name in call.also_allowed or caller_name == call.rightful:
                continue
            tried += 1
            before = ledger.head()
            registry = _registry(ledger)
            r = caller.send(call)
            expected = 401 if caller_name == ANONYMOUS else 403
            what = f"{call.method} {call.url} {call.params or ''} {call.body or ''}"
            if r.status_code != expected:
                problems.append(f"{what}: {r.status_code} (expected {expected}) {r.text[:200]}")
            elif "error" not in r.json():
                problems.append(f"{what}: refusal without a JSON error: {r.text[:200]}")
            if ledger.head() != before:
                problems.append(f"{what}: the ledger head moved from {before.seq}")
            if _registry(ledger) != registry:
                problems.append(f"{what}: the model registry or its tasks changed")
    assert tried > 0
    assert not problems, f"{caller_name} on {target.subject}:\n" + "\n".join(problems)


@pytest.mark.parametrize("caller_name", WRONG_CALLERS)
def test_public_endpoints_answer_everyone_and_write_nothing(
    app: FastAPI, target: Target, callers: Callable[[str], Caller], caller_name: str
) -> None:
    caller = callers(caller_name)
    ledger: Ledger = app.state.ledger
    before = ledger.head()
    public = [c for op in _operations(app) for c in RULES[op](target) if c.public]
    assert public
    for call in public:
        r = caller.send(call)
        assert r.status_code == 200, (call, r.status_code, r.text[:200])
    assert ledger.head() == before


# ---- the rightful callers --------------------------------------------------------------


def test_every_call_succeeds_for_its_rightful_caller(
    app: FastAPI, target: Target, callers: Callable[[str], Caller]
) -> None:
    """So that the refusals above are about who asks, not about a malformed request."""
    problems = []
    for operation in _operations(app):
        for call in RULES[operation](target):
            who = ANONYMOUS if call.public else call.rightful
            r = callers("owner" if who == "member" else who).send(call)
            if call.rightful_answer is not None:
                status, words = call.rightful_answer
                if r.status_code != status or words not in r.text:
                    problems.append(f"{call.method} {call.url} as {who}: {r.status_code} {r.text}")
            elif not 200 <= r.status_code < 300:
                problems.append(f"{call.method} {call.url} as {who}: {r.status_code} {r.text}")
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


@pytest.mark.parametrize("caller_name", [ADMIN_TOKEN, STAFF])
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


@pytest.mark.parametrize("caller_name", [ADMIN_TOKEN, STAFF])
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
