"""How the web app answers an error: JSON for the API and the JSON twins, a page for pages.

A library error (:mod:`askfirst.errors`) becomes a 4xx with its own message
(:func:`status_for`); :data:`ERROR_RESPONSES` describes those answers in /openapi.json
for every router under /v1; :func:`error_page` shows the error on a page that still
shows who is signed in.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from askfirst.errors import (
    AskfirstError,
    InputError,
    NotAuthorized,
    NotFound,
    PolicyError,
    StorageError,
    UnknownPurpose,
    UnknownSubject,
)
from askfirst.web.auth import csrf_token, current


class ErrorPublic(BaseModel):
    error: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorPublic, "description": "Bad input; the message names it"},
    401: {"model": ErrorPublic, "description": "Sign in, or send a bearer token"},
    403: {"model": ErrorPublic, "description": "Not yours to read or change; nothing written"},
    404: {"model": ErrorPublic, "description": "No such subject, purpose or event"},
}


def status_for(error: AskfirstError) -> int:
    """The HTTP status a library error is answered with."""
    if isinstance(error, NotAuthorized):
        return 403
    if isinstance(error, UnknownSubject | UnknownPurpose | NotFound):
        return 404
    if isinstance(error, InputError):
        return 400
    if isinstance(error, StorageError | PolicyError):
        return 503  # the server's own store or policy file, not the request, is at fault
    return 409


def wants_html(request: Request) -> bool:
    """Pages answer errors in HTML; the API and JSON twins answer in JSON."""
    path = request.url.path
    return not (path.startswith("/v1/") or path.endswith(".json") or path == "/openapi.json")


def error_page(request: Request, status: int, message: str) -> Response:
    """The error, on a page that still shows who is signed in."""
    try:
        principal = current(request, request.app.state.ledger)
    except (AskfirstError, StarletteHTTPException):
        principal = None
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request,
        "error.html",
        {
            "status": status,
            "message": message,
            "principal": principal,
            "csrf": csrf_token(request) if principal else "",
            "json_url": "/index.json",
            "page": "error",
        },
        status_code=status,
    )
