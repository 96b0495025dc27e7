"""Pages for cases: the public request form, the reviewers' queue, a representative's page.

``/requests`` (anyone, no sign-in): report a death, ask to act for a member who died, ask
that your names not be used, ask to be forgotten. A visitor's request waits until they
open the link mailed to them; a signed-in member's own erasure needs no link.
``/admin/cases``: the review queue with each case's evidence, and the steps a reviewer
may take (two different reviewers for a death, a representative, an erasure).
``/signin/link/...``: a representative's one-time sign-in; ``/representing``: what they
may do for the member (say no, download the member's data, close the account).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Path, Request, Response, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from askfirst import accounts, case_mail, cases, config, directory, evidence, privacy, times
from askfirst.decisions import decide
from askfirst.errors import InputError
from askfirst.gate import named
from askfirst.ledger import Ledger
from askfirst.ledger.events import ACTIONS
from askfirst.mail import Smtp
from askfirst.models import close_task
from askfirst.reports import subject_report
from askfirst.web.auth import (
    LedgerDep,
    MaybePrincipal,
    Principal,
    check_csrf,
    require,
    start_session,
)
from askfirst.web.pages import render_page, require_signed_in, staff_only

router = APIRouter(include_in_schema=False)
log = logging.getLogger("askfirst.web")
MAX_FILES = 3
# What /requests may receive: its evidence and a little form text.
REQUEST_BODY_BYTES = MAX_FILES * evidence.MAX_BYTES + (1 << 20)
KIND_CHOICES = (
    ("death", "Report that a member died"),
    ("representative", "Act for a member who died (you need to show your authority)"),
    ("objection", "I have no account: do not use my name"),
    ("erasure", "Forget me (delete everything about me)"),
)


def evidence_store(request: Request) -> evidence.Store:
    store: evidence.Store | None = getattr(request.app.state, "evidence_store", None)
    if store is None:
        import os

        key_dir = request.app.state.settings.key_dir
        store = evidence.store_from_settings(
            os.environ.get(config.EVIDENCE_URL.env), evidence.default_folder_for(key_dir)
        )
        request.app.state.evidence_store = store
    return store


def smtp_settings() -> Smtp | None:
    return Smtp.from_env()


# ---- the public request form ----------------------------------------------------------


@router.get("/requests", name="requests")
@router.get("/requests.json")
def requests_form(request: Request, principal: MaybePrincipal) -> Response:
    data = {
        "kinds": [{"kind": k, "words": w} for k, w in KIND_CHOICES],
        "max_files": MAX_FILES,
        "max_bytes": evidence.MAX_BYTES,
        "media_types": list(evidence.MEDIA_TYPES),
        "signed_in_member": principal.subject if principal and principal.kind == "member" else None,
        "mail_configured": smtp_settings() is not None,
    }
    return render_page("requests", "requests.html", public_form=True)(request, data, principal)


@router.post("/requests")
async def requests_submit(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    kind: Annotated[str, Form(max_length=16)],
    csrf_token: Annotated[str, Form()] = "",
    member: Annotated[str, Form(max_length=255)] = "",
    names: Annotated[str, Form(max_length=4000)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    reporter_email: Annotated[str, Form(max_length=320)] = "",
    link: Annotated[str, Form(max_length=cases.MAX_LINK)] = "",
    statement: Annotated[str, Form(max_length=cases.MAX_TEXT)] = "",
    files: Annotated[list[UploadFile] | None, File()] = None,
) -> Response:
    check_csrf(request, csrf_token)
    uploads = [f for f in files or [] if f.filename or (f.size or 0) > 0]
    if len(uploads) > MAX_FILES:
        raise InputError(f"at most {MAX_FILES} documents per request")
    checked = []
    for f in uploads:
        checked.append(await run_in_threadpool(evidence.check, f.file, name=f.filename or "file"))
    is_member = principal is not None and principal.kind == "member" and principal.subject
    subject = None
    if member.strip():
        subject = privacy.subject_for_handle(ledger, member.strip())
        if subject is None:
            raise InputError(f"no member has the handle {member.strip()[:100]!r}")
    elif kind == "erasure" and is_member:
        subject = principal.subject if principal else None
    own_erasure = kind == "erasure" and is_member and principal and subject == principal.subject
    smtp = smtp_settings()
    if not own_erasure and smtp is None:
        raise HTTPException(
            503,
            "requests cannot be taken now: this service cannot send e-mail to confirm "
            "them. Please write to the platform's privacy team instead.",
        )
    made = await run_in_threadpool(
        cases.open_case,
        ledger,
        kind,
        actor=principal.actor if own_erasure and principal else "requester",
        subject=subject,
        names=names.splitlines(),
        email=email or None,
        reporter_email=reporter_email or None,
        link=link or None,
        statement=statement or None,
        files=checked,
        store_=evidence_store(request),
        verify_reporter=not own_erasure,
        source="web",
    )
    sent = True
    if not own_erasure and smtp is not None and made.requester_email:
        secret = case_mail.link_secret(request.app.state.settings.key_dir)
        message = case_mail.verification_message(
            smtp, made.requester_email, made.id, made.kind, case_mail.verify_token(secret, made.id)
        )
        try:
            await run_in_threadpool(case_mail.send, smtp, message)
        except OSError as e:
            log.warning("case %s: the confirming e-mail was not sent: %s", made.id, e)
            sent = False
    data = {"case": made.id, "kind": made.kind, "confirm_needed": not own_erasure, "sent": sent}
    if request.headers.get("accept", "").startswith("application/json"):
        return JSONResponse(data, status_code=201)
    return render_page("requests-sent", "requests_sent.html")(request, data, principal)


@router.get("/requests/confirm/{token}")
def requests_confirm_page(request: Request, principal: MaybePrincipal, token: str) -> Response:
    """The link in the e-mail shows a button; only pressing it confirms (mail scanners
    that open links must not confirm anything)."""
    secret = case_mail.link_secret(request.app.state.settings.key_dir)
    case_id = case_mail.read_verify_token(secret, token)
    data = {"case": case_id, "token": token}
    return render_page("requests-confirm", "requests_confirm.html", public_form=True)(
        request, data, principal
    )


@router.post("/requests/confirm/{token}")
def requests_confirm(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    token: str,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, csrf_token)
    secret = case_mail.link_secret(request.app.state.settings.key_dir)
    case_id = case_mail.read_verify_token(secret, token)
    made = cases.verify_reporter(ledger, case_id)
    data = {"case": made.id, "confirmed": True, "status": made.status}
    return render_page("requests-confirmed", "requests_confirmed.html")(request, data, principal)


# ---- the review queue ---------------------------------------------------------------------


@router.get("/admin/cases", name="admin_cases")
@router.get("/admin/cases.json")
def admin_cases(request: Request, principal: MaybePrincipal, ledger: LedgerDep) -> Response:
    who = staff_only(principal, request)
    data = {
        "queue": [c.to_json() for c in cases.listed(ledger)],
        "may_review": who.can("cases"),
        "you": who.actor,
    }
    return render_page("admin-cases", "admin_cases.html")(request, data, who)


@router.get("/admin/cases/{case_id}", name="admin_case")
@router.get("/admin/cases/{case_id}.json")
def admin_case(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    case_id: Annotated[int, Path(ge=1, le=2**62)],
) -> Response:
    who = staff_only(principal, request)
    case = cases.get(ledger, case_id)
    proposer = case.proposer
    data = {
        "case": case.to_json(),
        "needs_two": case.needs_two,
        "may_review": who.can("cases") and case.status in ("open", "proposed"),
        "may_propose": case.needs_two and case.status == "open",
        "may_approve": (not case.needs_two and case.status == "open")
        or (case.status == "proposed" and proposer != who.actor),
        "you_proposed": proposer == who.actor,
        "flash": request.session.pop("flash", None),
    }
    return render_page("admin-case", "admin_case.html")(request, data, who)


@router.get("/admin/cases/{case_id}/evidence/{doc_id}")
def admin_case_evidence(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    case_id: Annotated[int, Path(ge=1, le=2**62)],
    doc_id: Annotated[int, Path(ge=1, le=2**62)],
) -> Response:
    """A case's document, for reviewers to read: served as the type its content was
    checked to be, as a download, never run in the page's origin."""
    staff_only(principal, request)
    doc = cases.evidence_file(ledger, case_id, doc_id)
    body = evidence_store(request).open(doc.location)
    ext = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}[doc.media_type]
    return Response(
        body,
        media_type=doc.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="case-{case_id}-{doc_id}.{ext}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "no-store",
        },
    )


def _reviewer(principal: Principal | None, request: Request) -> Principal:
    who = staff_only(principal, request, "cases")
    if who.kind != "staff":
        raise HTTPException(403, "a case is reviewed by a staff member in person")
    return who


def _after(request: Request, case_id: int, text: str) -> Response:
    request.session["flash"] = {"text": text}
    return RedirectResponse(f"/admin/cases/{case_id}", status_code=303)


@router.post("/admin/cases/{case_id}/{step}")
def admin_case_step(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    case_id: Annotated[int, Path(ge=1, le=2**62)],
    step: Annotated[str, Path(pattern="^(propose|approve|reject)$")],
    csrf_token: Annotated[str, Form()] = "",
    reason: Annotated[str, Form(max_length=cases.MAX_TEXT)] = "",
) -> Response:
    who = _reviewer(principal, request)
    check_csrf(request, csrf_token)
    if step == "propose":
        cases.propose(ledger, case_id, who.name, reason, source="web")
        return _after(request, case_id, "Proposed: a second reviewer decides.")
    if step == "reject":
        cases.reject(ledger, case_id, who.name, reason, source="web")
        return _after(request, case_id, "Rejected.")
    done = approve_case(request, ledger, case_id, who, reason)
    return _after(request, case_id, done)


def approve_case(
    request: Request,
    ledger: Ledger,
    case_id: int,
    who: Principal,
    reason: str | None,
    source: str = "web",
) -> str:
    """Approve, carry it out, and mail a representative their sign-in link; what happened,
    in words."""
    key_dir = request.app.state.settings.key_dir
    case = cases.get(ledger, case_id)
    if case.kind == "erasure" and case.subject:  # while their names are still known
        named.record_named(ledger, case.subject)
    done = cases.approve(
        ledger,
        case_id,
        who.name,
        reason or None,
        store_=evidence_store(request),
        names_key=directory.names_key(key_dir),
        source=source,
    )
    if done.case.kind in ("death", "objection") and done.case.subject:
        named.reach_named(ledger, done.case.subject)  # their names, now protected
    if done.signin_secret is None:
        return "Approved, and carried out."
    smtp = smtp_settings()
    case = done.case
    if smtp is None or case.email is None:
        return (
            "Approved. The representative's sign-in link was not sent: mail is not set up "
            f"here. Run 'askfirst case send-link {case_id}' once it is."
        )
    try:
        case_mail.send(
            smtp,
            case_mail.signin_message(
                smtp, case.email, case.id, case.subject or "", done.signin_secret
            ),
        )
    except OSError as e:
        log.warning("case %s: the sign-in link was not sent: %s", case_id, e)
        return (
            "Approved. The sign-in link could not be sent; run "
            f"'askfirst case send-link {case_id}'."
        )
    return "Approved. The representative was mailed a one-time sign-in link."


# ---- a representative -------------------------------------------------------------------


@router.get("/signin/link/{secret}")
def signin_link_page(request: Request, principal: MaybePrincipal, secret: str) -> Response:
    return render_page("signin-link", "signin_link.html", public_form=True)(
        request, {"secret": secret}, principal
    )


@router.post("/signin/link/{secret}")
def signin_link(
    request: Request, ledger: LedgerDep, secret: str, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    check_csrf(request, csrf_token)
    account = accounts.use_signin_link(ledger, secret)
    if account is None:
        raise HTTPException(400, "this sign-in link is unknown, used or expired; ask for a new one")
    start_session(request, ledger, account)
    return RedirectResponse("/representing", status_code=303)


def _representative(principal: Principal | None, request: Request) -> Principal:
    who = require_signed_in(principal, request)
    if who.kind != "representative" or who.subject is None or who.case is None:
        raise HTTPException(403, "this page is for a deceased member's representative")
    return who


@router.get("/representing", name="representing")
@router.get("/representing.json")
def representing(request: Request, principal: MaybePrincipal, ledger: LedgerDep) -> Response:
    who = _representative(principal, request)
    assert who.subject is not None
    who_they_are = privacy.profile(ledger, who.subject)
    rows = []
    for name, purpose in ledger.policy.purposes.items():
        d = decide(ledger, who.subject, name)
        rows.append(
            {"purpose": name, "title": purpose.title, "allowed": d.allowed, "reason": d.reason}
        )
    data = {
        "member": {
            "id": who_they_are.subject,
            "names": who_they_are.names,
            "status": who_they_are.status,
        },
        "case": who.case,
        "purposes": rows,
        "may": ["withdraw", "object", "download", "close-account"],
        "flash": request.session.pop("flash", None),
    }
    return render_page("representing", "representing.html")(request, data, who)


@router.post("/representing/choice")
def representing_choice(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    purpose: Annotated[str, Form(max_length=64)],
    action: Annotated[str, Form(max_length=16)],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    who = _representative(principal, request)
    check_csrf(request, csrf_token)
    assert who.subject is not None
    if action not in ACTIONS:
        raise InputError(f"action {action!r} is not one of: withdraw, object")
    made = privacy.choose(ledger, who.subject, purpose, action, actor=who.actor, source="web")
    request.session["flash"] = {"text": made.in_words(ledger.policy.purpose(purpose).title)}
    return RedirectResponse("/representing", status_code=303)


@router.get("/representing/report.json")
def representing_report(request: Request, principal: MaybePrincipal, ledger: LedgerDep) -> Response:
    who = _representative(principal, request)
    assert who.subject is not None
    return JSONResponse(
        subject_report(ledger, who.subject),
        headers={"Content-Disposition": f'attachment; filename="{who.subject}-data.json"'},
    )


@router.post("/representing/close")
def representing_close(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    who = _representative(principal, request)
    check_csrf(request, csrf_token)
    assert who.case is not None
    cases.close_account(ledger, who.case)
    request.session["flash"] = {"text": "The account is closed: nobody can sign in to it now."}
    return RedirectResponse("/representing", status_code=303)


# ---- the console's task actions -----------------------------------------------------------


@router.post("/admin/tasks/{task_id}/close")
def admin_close_task(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    task_id: Annotated[int, Path(ge=1, le=2**62)],
    note: Annotated[str, Form(min_length=1, max_length=2000)],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    who = staff_only(principal, request, "operate")
    check_csrf(request, csrf_token)
    close_task(ledger, task_id, actor=who.actor, note=note)
    request.session["flash"] = {"text": f"Task {task_id} closed at {times.iso(times.now())}."}
    return RedirectResponse("/admin/tasks", status_code=303)


__all__ = ["REQUEST_BODY_BYTES", "approve_case", "evidence_store", "require", "router"]
