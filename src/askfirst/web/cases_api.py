"""The /v1 API for cases: open one (anyone), read them (staff), and review them
(reviewers, in person: a staff member's session or their own token).

Evidence travels base64-encoded in the JSON body (at most :data:`MAX_FILES` documents,
each at most 10 MB once decoded); the body is capped before it is parsed.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from askfirst import case_mail, cases, evidence, privacy
from askfirst.errors import InputError
from askfirst.web.auth import (
    LedgerDep,
    MaybePrincipal,
    Principal,
    PrincipalDep,
    check_session_write,
    require,
)
from askfirst.web.case_pages import approve_case, evidence_store, smtp_settings
from askfirst.web.errors import ERROR_RESPONSES, ErrorPublic
from askfirst.web.limits import StrictJsonRoute

router = APIRouter(
    prefix="/v1", tags=["cases"], responses=ERROR_RESPONSES, route_class=StrictJsonRoute
)
MAX_FILES = 2
B64_MAX = evidence.MAX_BYTES * 4 // 3 + 4  # a document's base64 characters at most
CASE_BODY_BYTES = MAX_FILES * B64_MAX + (1 << 20)
Id = Annotated[int, Path(ge=1, le=2**62)]


class CaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["death", "representative", "objection", "erasure"]
    subject: str | None = Field(None, max_length=255, description="The member's id.")
    handle: str | None = Field(None, max_length=255, description="Or the member's handle.")
    names: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=cases.MAX_NAMES
    )
    email: str | None = Field(None, max_length=320)
    reporter_email: str | None = Field(None, max_length=320)
    link: str | None = Field(None, max_length=cases.MAX_LINK)
    statement: str | None = Field(None, max_length=cases.MAX_TEXT)
    evidence: list[Annotated[str, Field(max_length=B64_MAX)]] = Field(
        default_factory=list, max_length=MAX_FILES, description="Base64 PDF, PNG or JPEG."
    )


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=cases.MAX_TEXT)


def _decode(items: list[str]) -> list[evidence.Checked]:
    out = []
    for i, text in enumerate(items):
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"evidence[{i}] is not base64") from None
        out.append(evidence.check(data, name=f"evidence[{i}]"))
    return out


@router.post(
    "/cases",
    status_code=201,
    summary="Open a case (anyone)",
    responses={
        413: {"model": ErrorPublic, "description": "The body is over the cap"},
        429: {"model": ErrorPublic, "description": "Too many requests from this address"},
        503: {"model": ErrorPublic, "description": "Mail to confirm a request cannot be sent"},
    },
)
async def open_case(
    body: CaseCreate, request: Request, principal: MaybePrincipal, ledger: LedgerDep
) -> Response:
    """Anyone may open a case. A visitor's (or a service's) case waits until the
    ``reporter_email`` confirms it by the link mailed there; a member's own erasure, and a
    case staff open, go to the reviewers at once."""
    if principal is not None:
        check_session_write(request, principal)
    files = await run_in_threadpool(_decode, body.evidence)
    subject = body.subject
    if subject is None and body.handle:
        subject = privacy.subject_for_handle(ledger, body.handle)
        if subject is None:
            raise InputError(f"no member has the handle {body.handle[:100]!r}")
    trusted = principal is not None and (
        principal.can("cases")
        or principal.can("operate")
        or (principal.kind == "member" and body.kind == "erasure" and subject == principal.subject)
    )
    smtp = smtp_settings()
    if not trusted and smtp is None:
        raise HTTPException(
            503,
            "cases cannot be opened by the public now: this service "
            "cannot send the e-mail that confirms them",
        )
    made = await run_in_threadpool(
        cases.open_case,
        ledger,
        body.kind,
        actor=principal.actor if trusted and principal else "requester",
        subject=subject,
        names=body.names,
        email=body.email,
        reporter_email=body.reporter_email,
        link=body.link,
        statement=body.statement,
        files=files,
        store_=evidence_store(request),
        verify_reporter=not trusted,
        source="api",
    )
    sent = False
    if not trusted and smtp is not None and made.requester_email:
        sent = True
        secret = case_mail.link_secret(request.app.state.settings.key_dir)
        token = case_mail.verify_token(secret, made.id)
        message = case_mail.verification_message(
            smtp, made.requester_email, made.id, made.kind, token
        )
        try:
            await run_in_threadpool(case_mail.send, smtp, message)
        except OSError:
            sent = False  # the case waits unconfirmed; the answer says so
    data: dict[str, Any] = {
        "id": made.id,
        "kind": made.kind,
        "status": made.status,
        "confirm_needed": not trusted,
        "confirm_sent": sent,
    }
    if principal is not None and principal.can("read"):
        data = {**made.to_json(), **data}
    return JSONResponse(data, status_code=201)


@router.get("/cases", summary="Cases awaiting review, or those in one status (staff)")
def list_cases(
    principal: PrincipalDep, ledger: LedgerDep, status: str | None = None
) -> list[dict[str, Any]]:
    require(principal, "read")
    return [c.to_json() for c in cases.listed(ledger, status=status)]


@router.get("/cases/{case_id}", summary="One case with its steps and evidence (staff)")
def get_case(case_id: Id, principal: PrincipalDep, ledger: LedgerDep) -> dict[str, Any]:
    require(principal, "read")
    return cases.get(ledger, case_id).to_json()


def _reviewer(request: Request, principal: Principal) -> Principal:
    require(principal, "cases")
    if principal.kind != "staff":
        raise HTTPException(403, "a case is reviewed by a staff member in person")
    check_session_write(request, principal)
    return principal


@router.post("/cases/{case_id}/propose", summary="Propose to approve (reviewer)")
def propose(
    case_id: Id, body: Review, request: Request, principal: PrincipalDep, ledger: LedgerDep
) -> dict[str, Any]:
    who = _reviewer(request, principal)
    return cases.propose(ledger, case_id, who.name, body.reason or "", source="api").to_json()


@router.post("/cases/{case_id}/reject", summary="Reject (reviewer)")
def reject(
    case_id: Id, body: Review, request: Request, principal: PrincipalDep, ledger: LedgerDep
) -> dict[str, Any]:
    who = _reviewer(request, principal)
    return cases.reject(ledger, case_id, who.name, body.reason or "", source="api").to_json()


@router.post("/cases/{case_id}/approve", summary="Approve and carry out (a second reviewer)")
def approve(
    case_id: Id, body: Review, request: Request, principal: PrincipalDep, ledger: LedgerDep
) -> dict[str, Any]:
    who = _reviewer(request, principal)
    said = approve_case(request, ledger, case_id, who, body.reason, source="api")
    return {**cases.get(ledger, case_id).to_json(), "done": said}
