"""The HTTP API under /v1: subjects, choices, decisions, events, receipts, ledger head.

Every route checks who may do what before it touches the ledger; a refusal is 403 and
writes nothing. Bodies and answers are Pydantic models, with separate Create and Public
shapes, so /openapi.json describes exactly what is accepted and returned.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from askfirst import directory, notices, privacy, receipts, times
from askfirst.decisions import decide, decide_many
from askfirst.errors import UnknownSubject
from askfirst.ledger import Event, SubjectIn
from askfirst.web.auth import (
    SCOPE_READ,
    SCOPE_WRITE,
    LedgerDep,
    PrincipalDep,
    check_session_write,
    forbidden,
    require,
    require_readable,
)
from askfirst.web.errors import ERROR_RESPONSES, ErrorPublic
from askfirst.web.limits import StrictJsonRoute

router = APIRouter(
    prefix="/v1", tags=["v1"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)
MAX_BATCH = 10_000
MAX_SEQ = (1 << 63) - 1
Id = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S+$")]
Seq = Annotated[int, Path(ge=0, le=MAX_SEQ)]
After = Annotated[int, Query(ge=0, le=MAX_SEQ)]
At = Annotated[
    str | None,
    Query(
        max_length=64,
        description="ISO 8601 time with a zone, e.g. 2026-03-01T12:00:00Z; default now",
    ),
]


class Health(BaseModel):
    ok: bool


class HeadPublic(BaseModel):
    seq: int
    hash: str
    recorded_at: str | None


class EventPublic(BaseModel):
    seq: int
    type: str
    subject: str
    purpose: str | None
    value: str | None
    notice_version: int | None
    actor: str
    source: str
    recorded_at: str
    prev_hash: str
    hash: str


class ChoiceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str = Field(min_length=1, max_length=64)
    action: Literal["grant", "withdraw", "object"]


class ChoicePublic(BaseModel):
    event: EventPublic = Field(description="The choice event the answer stands on")
    changed: bool = Field(
        description="False when the answer was already this one: nothing new was recorded, "
        "and ``event`` is the earlier choice it stands on (the answer is then 200, not 201)"
    )
    message: str = Field(description="What happened, in words")
    receipt_url: str


class DecisionPublic(BaseModel):
    subject: str
    purpose: str
    at: str
    allowed: bool
    reason: str
    event_seq: int | None


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str = Field(min_length=1, max_length=64)
    subjects: list[Id] = Field(min_length=1, max_length=MAX_BATCH)
    at: str | None = Field(
        default=None, max_length=64, description="ISO 8601 time with a zone; default now"
    )


class BatchDecision(BaseModel):
    subject: str
    allowed: bool
    reason: str
    event_seq: int | None


class BatchResponse(BaseModel):
    purpose: str
    at: str
    decisions: list[BatchDecision]


class PurposeState(BaseModel):
    name: str
    title: str
    categories: list[str]
    recipients: list[str]
    notice_version: int
    allowed: bool
    reason: str
    in_words: str
    event_seq: int | None
    gpc_conflict: bool
    receipt_seq: int | None


class SubjectPublic(BaseModel):
    subject: str
    kind: str
    handle: str | None
    jurisdiction: str | None
    regime: str
    gpc_honoured_at: str | None
    purposes: list[PurposeState]


class FormerPublic(BaseModel):
    kind: Literal["handle", "name"]
    value: str
    until: str = Field(description="Until when it still resolves to the subject and is redacted")


class DirectoryEntryPublic(BaseModel):
    subject: str
    handle: str | None
    names: list[str]
    email: str | None
    former: list[FormerPublic] = Field(
        description="Handles and names the subject gave up, protected for the period the "
        "policy sets ([names] former_protected_days)"
    )


class RegisterResponse(BaseModel):
    registered: int
    head: HeadPublic


class ReceiptCheck(BaseModel):
    valid: bool
    problems: list[str]


def _event(e: Event) -> EventPublic:
    return EventPublic(**e.to_json())


def _time(at: str | None) -> datetime | None:
    if at is None:
        return None
    try:
        return times.parse(at, field="at")
    except ValueError as e:  # a string, as the schema says, but not a time we can use
        raise HTTPException(400, str(e)) from None


@router.get("/health", response_model=Health, summary="Is the service up")
def health() -> Health:
    return Health(ok=True)


@router.get("/ledger/head", response_model=HeadPublic, summary="The ledger head (public)")
def ledger_head(ledger: LedgerDep) -> HeadPublic:
    return HeadPublic(**ledger.head().to_json())


@router.post(
    "/subjects",
    response_model=RegisterResponse,
    status_code=201,
    summary="Register subjects (admin)",
)
def register_subjects(
    request: Request,
    principal: PrincipalDep,
    ledger: LedgerDep,
    subjects: Annotated[list[SubjectIn], Body(min_length=1, max_length=MAX_BATCH)],
) -> RegisterResponse:
    require(principal, "operate")
    check_session_write(request, principal)
    ledger.register(subjects, actor=principal.actor, source="api")
    return RegisterResponse(registered=len(subjects), head=HeadPublic(**ledger.head().to_json()))


@router.get(
    "/subjects/{subject_id}", response_model=SubjectPublic, summary="A subject's settings and state"
)
def get_subject(subject_id: str, principal: PrincipalDep, ledger: LedgerDep) -> dict[str, Any]:
    require_readable(principal, subject_id)
    return privacy.overview(ledger, subject_id)


@router.patch(
    "/subjects/{subject_id}",
    response_model=DirectoryEntryPublic,
    summary="Change a subject's handle, names or e-mail (the member, or staff)",
    responses={
        409: {"model": ErrorPublic, "description": "The handle is someone else's"},
        422: {"model": ErrorPublic, "description": "A field is not valid; the message names it"},
    },
)
def update_subject(
    subject_id: str,
    body: directory.SubjectChange,
    request: Request,
    principal: PrincipalDep,
    ledger: LedgerDep,
) -> dict[str, Any]:
    """A field left out stays as it is; ``null`` clears the handle or the e-mail. The
    new handle and names apply at once; the ones given up stay protected for the period
    the policy sets. Returns the subject's directory entry."""
    own = principal.kind == "member" and principal.may_act_for(subject_id)
    if not (own or principal.can("operate")):
        raise forbidden(f"you may not change the directory entry of subject {subject_id!r}")
    check_session_write(request, principal)
    return directory.apply_change(ledger, subject_id, body).to_json()


@router.get(
    "/subjects/{subject_id}/events",
    response_model=list[EventPublic],
    summary="A subject's ledger events",
)
def subject_events(
    subject_id: str,
    principal: PrincipalDep,
    ledger: LedgerDep,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventPublic]:
    require_readable(principal, subject_id)
    if not ledger.subject_exists(subject_id):
        raise UnknownSubject(subject_id)
    return [_event(e) for e in ledger.events(after=after, limit=limit, subject=subject_id)]


@router.post(
    "/subjects/{subject_id}/choices",
    response_model=ChoicePublic,
    status_code=201,
    summary="Say yes or no for one purpose",
    responses={200: {"model": ChoicePublic, "description": "Already so; nothing recorded"}},
)
def make_choice(
    subject_id: str,
    body: ChoiceCreate,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    ledger: LedgerDep,
) -> ChoicePublic:
    if (
        principal.kind == "token"
        and SCOPE_WRITE not in principal.scopes
        and not principal.can("operate")
    ):
        raise forbidden("this token lacks the choices:write scope")
    if not (principal.may_act_for(subject_id) or principal.can("operate")):
        raise forbidden(f"you may not change the choices of subject {subject_id!r}")
    check_session_write(request, principal)
    made = privacy.choose(
        ledger, subject_id, body.purpose, body.action, actor=principal.actor, source="api"
    )
    if not made.changed:
        response.status_code = 200
    ev = made.event
    return ChoicePublic(
        event=_event(ev),
        changed=made.changed,
        message=made.in_words(ledger.policy.purpose(body.purpose).title),
        receipt_url=f"/v1/receipts/{ev.seq}",
    )


@router.post(
    "/decisions/batch", response_model=BatchResponse, summary="Decisions for up to 10,000 subjects"
)
def batch_decisions(body: BatchRequest, principal: PrincipalDep, ledger: LedgerDep) -> Response:
    if SCOPE_READ not in principal.scopes and not principal.is_staff:
        raise forbidden("batch decisions need the decisions:read scope")
    at = _time(body.at) or times.now()
    table = decide_many(ledger, body.purpose, body.subjects, at)
    # Already in the documented shape: serialised directly, not re-validated row by row.
    body_json = json.dumps(
        {"purpose": body.purpose, "at": times.iso(at), "decisions": table.to_pylist()},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return Response(body_json, media_type="application/json")


@router.get(
    "/decisions/{subject_id}",
    response_model=DecisionPublic,
    summary="May this subject's data be used for a purpose, and why",
)
def one_decision(
    subject_id: str,
    principal: PrincipalDep,
    ledger: LedgerDep,
    purpose: Annotated[str, Query(min_length=1, max_length=64)],
    at: At = None,
) -> DecisionPublic:
    if SCOPE_READ not in principal.scopes:
        require_readable(principal, subject_id)
    return DecisionPublic(**decide(ledger, subject_id, purpose, _time(at)).to_json())


@router.get("/events", response_model=list[EventPublic], summary="Ledger events (admin)")
def list_events(
    principal: PrincipalDep,
    ledger: LedgerDep,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventPublic]:
    require(principal, "read")
    return [_event(e) for e in ledger.events(after=after, limit=limit)]


class NoticeCreate(BaseModel):
    """A new version of a purpose's terms: the policy file says what they are; this says
    what changed, in plain words, and when a default could start at the earliest."""

    model_config = ConfigDict(extra="forbid")
    changes: str = Field(min_length=1, max_length=notices.MAX_CHANGES)
    earliest_default: date | None = None


class NoticePublic(BaseModel):
    purpose: str
    version: int
    title: str
    description: str
    changes: str
    categories: list[str]
    recipients: list[str]
    default: Literal["on", "off"]
    grace_days: int
    places: list[str]
    earliest_default: date | None
    seq: int
    published_at: str
    hash: str


@router.get("/notices", response_model=list[NoticePublic], summary="Every published notice")
def list_notices(ledger: LedgerDep) -> list[dict[str, Any]]:
    """Every published version of every purpose, newest first (public, as /notices is)."""
    return [e.published.to_json() for e in notices.changelog(notices.published(ledger.engine))]


@router.post(
    "/purposes/{purpose}/notices",
    response_model=NoticePublic,
    status_code=201,
    summary="Publish the policy file's current terms of a purpose (admin)",
)
def publish_notice(
    purpose: Annotated[str, Path(min_length=1, max_length=64)],
    body: NoticeCreate,
    request: Request,
    principal: PrincipalDep,
    ledger: LedgerDep,
) -> dict[str, Any]:
    require(principal, "notices")
    check_session_write(request, principal)
    made = notices.publish_file(
        ledger,
        request.app.state.settings.policy_path,
        purpose,
        changes=body.changes,
        earliest=body.earliest_default,
        actor=principal.actor,
        source="api",
    )
    return made.to_json()


@router.post(
    "/receipts/verify",
    response_model=ReceiptCheck,
    summary="Check a receipt: signed by a key of this service's, and the ledger agrees",
)
def verify_receipt(
    receipt: Annotated[dict[str, Any], Body()], request: Request, ledger: LedgerDep
) -> ReceiptCheck:
    # The key must be one the key folder and the ledger both know, and the ledger's event
    # must say what the receipt says.
    anchor = receipts.KeySet.from_folder(request.app.state.settings.key_dir)
    problems = receipts.verify(receipt, [anchor], ledger)
    return ReceiptCheck(valid=not problems, problems=problems)


@router.get("/receipts/{seq:int}", summary="The signed consent receipt for a choice")
def get_receipt(
    seq: Seq, request: Request, principal: PrincipalDep, ledger: LedgerDep
) -> dict[str, Any]:
    evs = ledger.events(after=seq - 1, limit=1) if seq >= 1 else []
    if not evs or evs[0].seq != seq:
        raise HTTPException(404, f"no ledger event {seq}")
    require_readable(principal, evs[0].subject)
    url = privacy.settings_url(str(request.base_url), evs[0].subject)
    return receipts.build(ledger, evs[0], request.app.state.receipt_key, withdraw_url=url)
