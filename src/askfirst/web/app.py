"""The web application: ``create_app(settings)`` builds it, never at import time.

It holds the cross-cutting parts: the open ledger, sessions, security headers, HEAD
wherever GET is answered, request-body caps and the per-address limit on the API open
without sign-in (``limits.py``), and the error handlers. The member pages live in ``pages.py``,
the HTTP API in ``api.py`` and ``training_api.py``, sign-in and permissions in
``auth.py``, how errors are answered in ``errors.py``; the settings it is built from are
:class:`askfirst.config.WebSettings`. The modules import downwards only: ``auth`` <-
``errors`` <- the routers <- ``app``.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from askfirst import mail
from askfirst.config import WebSettings
from askfirst.errors import AskfirstError
from askfirst.ledger import Ledger
from askfirst.policy import load_policy
from askfirst.propagation import open_ledger
from askfirst.receipts import signing_key
from askfirst.recipients import deliver_due
from askfirst.web import api, case_pages, cases_api, one_click, pages, training_api
from askfirst.web.errors import error_page, status_for, wants_html
from askfirst.web.limits import (
    BATCH_BODY_BYTES,
    RECEIPT_BODY_BYTES,
    AnonymousLimit,
    BodyLimit,
    RateLimiter,
    SigninLimits,
)

__all__ = ["WebSettings", "create_app", "session_secret"]

HERE = Path(__file__).parent
logger = logging.getLogger("askfirst.web")
SESSION_KEY_FILE = "session.key"
# The API routes anyone may call without signing in, limited per client address.
ANONYMOUS_ROUTES = frozenset(
    {("POST", "/v1/receipts/verify"), ("POST", "/requests"), ("POST", "/v1/cases")}
)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "interest-cohort=(), browsing-topics=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def session_secret(key_dir: Path) -> str:
    """The session-signing secret, made on first start and kept beside the receipt key."""
    path = key_dir / SESSION_KEY_FILE
    if not path.exists():
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(settings: WebSettings) -> FastAPI:
    ledger = open_ledger(settings.database_url, load_policy(settings.policy_path))
    key = signing_key(ledger, settings.key_dir)  # recorded in the ledger when made
    # Notices by e-mail go out from a thread beside the partners' when SMTP is set up.
    smtp = mail.Smtp.from_env() if settings.send_notices else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        sender = None
        if settings.send_notices:
            sender = threading.Thread(
                target=_send_notices, args=(ledger, stop), name="askfirst-notices", daemon=True
            )
            sender.start()
        mailer = None
        if smtp is not None:
            secret = mail.one_click_secret(settings.key_dir)
            mailer = threading.Thread(
                target=_send_mail,
                args=(ledger, smtp, secret, stop),
                name="askfirst-mail",
                daemon=True,
            )
            mailer.start()
        yield
        stop.set()
        for thread in (sender, mailer):
            if thread is not None:
                thread.join(timeout=15)
        ledger.close()

    app = FastAPI(
        title="askfirst",
        version="1",
        description="Members' say-so for AI training and research: choices, decisions, "
        "receipts and the consent ledger.",
        lifespan=lifespan,
        docs_url=None,  # the schema is at /openapi.json; no third-party scripts on our pages
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.ledger = ledger
    app.state.receipt_key = key
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.signin_limits = SigninLimits(
        settings.signin_attempts, settings.signin_address_attempts, settings.signin_window_s
    )
    # Inside the security headers, so that a 413 or 429 carries them too.
    app.add_middleware(
        BodyLimit,
        default=settings.max_body_bytes,
        routes={
            ("POST", "/v1/decisions/batch"): max(settings.max_body_bytes, BATCH_BODY_BYTES),
            ("POST", "/v1/receipts/verify"): min(settings.max_body_bytes, RECEIPT_BODY_BYTES),
            ("POST", "/requests"): max(settings.max_body_bytes, case_pages.REQUEST_BODY_BYTES),
            ("POST", "/v1/cases"): max(settings.max_body_bytes, cases_api.CASE_BODY_BYTES),
        },
    )
    app.add_middleware(
        AnonymousLimit,
        limiter=RateLimiter(settings.anonymous_requests, settings.anonymous_window_s),
        routes=ANONYMOUS_ROUTES,
    )

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith(("/v1/", "/signin", "/settings", "/admin", "/receipts")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings.key_dir),
        session_cookie="askfirst_session",
        max_age=settings.session_lifetime_s,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    app.add_middleware(HeadAsGet)  # outermost: every layer inside sees a GET

    @app.exception_handler(AskfirstError)
    async def library_error(request: Request, exc: AskfirstError) -> Response:
        status = status_for(exc)
        if wants_html(request):
            return error_page(request, status, str(exc))
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        location = (exc.headers or {}).get("Location")
        if 300 <= exc.status_code < 400 and location:
            return RedirectResponse(location, status_code=exc.status_code)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # name every method of the path, not just one route's
            headers["Allow"] = ", ".join(_methods_of(request))
        if wants_html(request):
            page = error_page(request, exc.status_code, str(exc.detail))
            page.headers.update(headers)
            return page
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}"
        if wants_html(request):
            return error_page(request, 422, message)
        return JSONResponse({"error": message, "details": errors}, status_code=422)

    app.include_router(api.router)
    app.include_router(training_api.router)
    app.include_router(one_click.router)
    app.include_router(cases_api.router)
    app.state.routes = [
        *api.router.routes,
        *training_api.router.routes,
        *one_click.router.routes,
        *cases_api.router.routes,
        *case_pages.router.routes,
        *pages.router.routes,
    ]
    app.include_router(case_pages.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    return app


def _methods_of(request: Request) -> list[str]:
    """The methods answered at this request's path: those of every route with the same
    path template as the first route that matches it (the one Starlette picked)."""
    routes = [r for r in request.app.state.routes if isinstance(r, Route) and r.methods]
    for route in routes:
        for method in route.methods or ():
            if route.matches({**request.scope, "method": method})[0] == Match.FULL:
                same = (r for r in routes if r.path == route.path)
                methods = {m for r in same for m in r.methods or ()}
                return sorted(methods | {"HEAD"} if "GET" in methods else methods)
    return []


class HeadAsGet:
    """HEAD is answered wherever GET is: the GET answer's status and headers (its
    Content-Length included), without the body. FastAPI's routes answer GET alone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


def _send_notices(ledger: Ledger, stop: threading.Event, every_s: float = 5.0) -> None:
    """Send partners' notices as they fall due, until ``stop`` is set."""
    while not stop.is_set():
        wait = every_s
        try:
            sent = deliver_due(ledger)
            if sent.next_due_in_s is not None:
                wait = min(every_s, max(sent.next_due_in_s, 0.05))
        except Exception:
            logger.exception("sending partners' notices failed; will try again")
        stop.wait(wait)


def _send_mail(ledger: Ledger, smtp: mail.Smtp, secret: str, stop: threading.Event) -> None:
    """Send notices by e-mail as they fall due, until ``stop`` is set."""
    while not stop.is_set():
        wait = 5.0
        try:
            sent = mail.send_due(ledger, smtp, secret)
            if sent.next_due_in_s is not None:
                wait = min(wait, max(sent.next_due_in_s, 0.05))
        except Exception:
            logger.exception("sending notices by e-mail failed; will try again")
        stop.wait(wait)
