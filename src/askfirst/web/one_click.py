"""The one-click "no" from a notice e-mail (RFC 8058), without signing in.

``GET /one-click/TOKEN`` shows one button and changes nothing (mail scanners open links
to look at them); ``POST /one-click/TOKEN`` — the button, or a mail client's own
``List-Unsubscribe=One-Click`` POST — records the withdrawal and spends the link
(:func:`askfirst.mail.say_no`). The signed token is the proof of who is asking, so these
routes take no CSRF token and no session. A tampered, expired or used link gets a page
that says so (4xx) and writes nothing. ``GET /one-click/TOKEN/receipt.json`` hands the
signed receipt of a used link's "no" to whoever holds the link.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.templating import Jinja2Templates

from askfirst import mail, privacy, receipts
from askfirst.web.auth import LedgerDep

router = APIRouter(include_in_schema=False)
STATUS = {"tampered": 400, "expired": 410, "used": 409}
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
Token = Annotated[str, Path(min_length=1, max_length=2048)]


def _secret(request: Request) -> str:
    return mail.one_click_secret(request.app.state.settings.key_dir)


def _render(request: Request, template: str, data: dict[str, Any], status: int = 200) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    context = {
        "data": data,
        "principal": None,
        "csrf": "",
        "json_url": "/notices.json",
        "page": "one-click",
    }
    response = templates.TemplateResponse(request, template, context, status_code=status)
    response.headers.update(NO_STORE)
    return response


def _refused(request: Request, error: mail.LinkRefused) -> Response:
    return _render(
        request,
        "one_click_refused.html",
        {"why": error.why, "message": str(error)},
        STATUS[error.why],
    )


def _title(request: Request, purpose: str) -> str:
    ledger = request.app.state.ledger
    p = ledger.policy.purposes.get(purpose)
    return p.title if p is not None else purpose


@router.get("/one-click/{token}")
def one_click_form(token: Token, request: Request, ledger: LedgerDep) -> Response:
    """The button that says no; nothing is recorded by opening this page."""
    try:
        link = mail.link_state(ledger, _secret(request), token)
    except mail.LinkRefused as e:
        return _refused(request, e)
    return _render(
        request,
        "one_click.html",
        {"title": _title(request, link.purpose), "action": f"/one-click/{token}"},
    )


@router.post("/one-click/{token}")
def one_click_no(token: Token, request: Request, ledger: LedgerDep) -> Response:
    """Say no: a withdrawal by the subject, recorded once; the page shows the receipt."""
    try:
        choice = mail.say_no(ledger, _secret(request), token)
    except mail.LinkRefused as e:
        return _refused(request, e)
    title = _title(request, choice.event.purpose or "")
    return _render(
        request,
        "one_click_done.html",
        {
            "title": title,
            "in_words": choice.in_words(title),
            "changed": choice.changed,
            "seq": choice.event.seq,
            "receipt_url": f"/one-click/{token}/receipt.json",
            "signed_in_receipt_url": f"/receipts/{choice.event.seq}",
        },
    )


@router.get("/one-click/{token}/receipt.json")
def one_click_receipt(token: Token, request: Request, ledger: LedgerDep) -> Response:
    """The signed receipt of the "no" a used link recorded, as a file to keep."""
    try:
        seq = mail.used_seq(ledger, _secret(request), token)
    except mail.LinkRefused as e:
        return _refused(request, e)
    if seq is None:
        return _render(
            request,
            "one_click_refused.html",
            {"why": "unused", "message": "This link has not been used: there is no receipt yet."},
            404,
        )
    [event] = ledger.events(after=seq - 1, limit=1)
    url = privacy.settings_url(str(request.base_url), event.subject)
    body = receipts.build(ledger, event, request.app.state.receipt_key, withdraw_url=url)
    return Response(
        json.dumps(body, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="askfirst-receipt-{seq}.json"',
            **NO_STORE,
        },
    )
