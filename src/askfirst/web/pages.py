"""Server-rendered pages, each with a JSON twin at the same path plus ``.json``.

Sign-in; Settings & Privacy -> Data privacy (one button to say yes, one to say no, one
to turn everything off); consent receipts to download; members' public profiles and posts,
which carry machine-readable do-not-train signals while a purpose the policy marks
``public_signal`` may not use the member's data; and the staff console's home.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from askfirst import accounts, notices, privacy, receipts, times
from askfirst.data_in_ai import data_in_ai
from askfirst.decisions import decide
from askfirst.ledger.tables import content
from askfirst.models import list_tasks
from askfirst.policy import load_policy
from askfirst.reports import choice_counts, decision_counts, notice_status
from askfirst.web.auth import (
    LedgerDep,
    MaybePrincipal,
    Principal,
    check_csrf,
    csrf_token,
    end_session,
    note_signin_failure,
    require,
    signin_wait,
    start_session,
)
from askfirst.web.auth import (
    csrf_token as session_csrf,  # the sign-in form's field shadows the name
)

router = APIRouter(include_in_schema=False)
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
# The data of an organization's page, in words for the page admin who reads about it.
PAGE_DATA_WORDS = {
    "profile": "this page's profile",
    "post": "the page's posts",
    "comment": "the page's comments",
    "article": "the page's articles",
    "video": "the page's videos",
    "ai-prompt": "what the page's admins type into AI features",
}
# Machine-readable "do not train" signals for crawlers: the older noai convention, the
# W3C TDM Reservation Protocol, and the IETF AI Preferences vocabulary.
DO_NOT_TRAIN = {
    "X-Robots-Tag": "noai, noimageai",
    "tdm-reservation": "1",
    "Content-Usage": "train-ai=n",
}


def render_page(
    name: str, template: str, *, public_form: bool = False
) -> Callable[[Request, dict[str, Any], Principal | None], Response]:
    """Render ``data`` as the page, or as JSON when the path ends in .json. A page with a
    form anyone may send (``public_form``) carries a CSRF token for visitors too."""

    def render(request: Request, data: dict[str, Any], principal: Principal | None) -> Response:
        if request.url.path.endswith(".json"):
            return JSONResponse(data)
        context = {
            "data": data,
            "principal": principal,
            "csrf": csrf_token(request) if principal or public_form else "",
            "json_url": _twin_url(request),
            "page": name,
            "banners": _banners(request, principal),
        }
        return _templates(request).TemplateResponse(request, template, context)

    return render


def _banners(request: Request, principal: Principal | None) -> list[dict[str, Any]]:
    """The notices a signed-in member has not been told of yet, each shown once on the
    next page they open, and recorded as delivered (channel ``in-app``) as it is shown."""
    if principal is None or principal.kind != "member" or principal.subject is None:
        return []
    ledger = request.app.state.ledger
    owed = notices.owed(ledger, principal.subject)
    if not owed:
        return []
    notices.record_told(
        ledger, principal.subject, owed, channel="in-app", actor="system:web", source="web"
    )
    history = notices.published(ledger.engine)
    banners = []
    for o in owed:
        terms = o.published.terms
        earlier = [p.terms for p in history.get(terms.purpose, []) if p.seq < o.published.seq]
        banners.append(
            {
                "purpose": terms.purpose,
                "title": terms.title,
                "version": terms.version,
                "changes": notices.what_changed(earlier[-1] if earlier else None, terms),
                "widened": o.widened,
                "starts": privacy.day(o.starts) if o.starts is not None else None,
                "read_more": f"/notices#n-{terms.purpose}-{terms.version}",
            }
        )
    return banners


def _twin_url(request: Request) -> str:
    """This page's JSON twin: the same path plus ``.json`` (``/`` -> ``/index.json``),
    with the same query (``?subject=`` names whose page it is)."""
    path = request.url.path
    twin = "/index.json" if path == "/" else path.rstrip("/") + ".json"
    return f"{twin}?{request.url.query}" if request.url.query else twin


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


def require_signed_in(principal: Principal | None, request: Request) -> Principal:
    if principal is None:
        if request.url.path.endswith(".json"):
            raise HTTPException(401, "sign in first")
        raise HTTPException(303, headers={"Location": f"/signin?next={request.url.path}"})
    return principal


# ---- home and sign-in ------------------------------------------------------------------


@router.get("/", name="home")
@router.get("/index.json")
def home(request: Request, principal: MaybePrincipal, ledger: LedgerDep) -> Response:
    data = {
        "service": "askfirst",
        "signed_in_as": principal.name if principal else None,
        "purposes": [{"name": p.name, "title": p.title} for p in ledger.policy.purposes.values()],
        "links": {
            "settings": "/settings",
            "data_privacy": "/settings/data-privacy",
            "signin": "/signin",
            "api": "/openapi.json",
        },
    }
    return render_page("home", "home.html")(request, data, principal)


@router.get("/signin", name="signin")
@router.get("/signin.json")
def signin_form(request: Request, principal: MaybePrincipal, next: str = "/settings") -> Response:
    data = {
        "signed_in_as": principal.name if principal else None,
        "next": _safe_next(next),
        "fields": ["username", "password"],
    }
    if request.url.path.endswith(".json"):
        return JSONResponse(data)
    context = {
        "data": data,
        "principal": principal,
        "csrf": csrf_token(request),
        "json_url": "/signin.json",
        "page": "signin",
        "error": None,
    }
    return _templates(request).TemplateResponse(request, "signin.html", context)


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/settings"


@router.post("/signin")
def signin(
    request: Request,
    ledger: LedgerDep,
    username: Annotated[str, Form(max_length=255)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/settings",
) -> Response:
    check_csrf(request, csrf_token)
    wait = signin_wait(request, username)
    if wait:
        minutes = max(1, math.ceil(wait / 60))
        raise HTTPException(
            429,
            f"too many failed sign-ins; try again in {minutes} minute{'s' if minutes > 1 else ''}",
            headers={"Retry-After": str(wait)},
        )
    account = accounts.authenticate(ledger, username, password)
    error, status = None, 401
    if account is None:
        note_signin_failure(request, username)
        error = "That username and password do not match."
    elif (
        account.subject_id is not None
        and privacy.profile(ledger, account.subject_id).status in accounts.ENDS_SESSIONS
    ):
        error, status = "This account is closed: it can no longer sign in.", 403
    if account is None or error:
        context = {
            "data": {"next": _safe_next(next)},
            "principal": None,
            "csrf": session_csrf(request),
            "json_url": "/signin.json",
            "page": "signin",
            "error": error,
        }
        return _templates(request).TemplateResponse(
            request, "signin.html", context, status_code=status
        )
    start_session(request, ledger, account)
    target = "/admin" if account.kind == "staff" else _safe_next(next)
    return RedirectResponse(target, status_code=303)


@router.post("/signout")
def signout(
    request: Request, ledger: LedgerDep, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    check_csrf(request, csrf_token)
    end_session(request, ledger)
    return RedirectResponse("/", status_code=303)


# ---- Settings & Privacy ----------------------------------------------------------------


@router.get("/settings", name="settings")
@router.get("/settings.json")
def settings_hub(request: Request, principal: MaybePrincipal) -> Response:
    who = require_signed_in(principal, request)
    if who.kind == "representative":
        raise HTTPException(403, "a representative acts for the member on /representing")
    data = {
        "sections": [
            {
                "title": "Data privacy",
                "url": "/settings/data-privacy",
                "summary": "How your data is used to train AI and for research, and your choices.",
            },
            {
                "title": "Your data in AI",
                "url": "/settings/your-data-in-ai",
                "summary": "Which training snapshots and AI models used your data, and what "
                "happened after you said no.",
            },
        ],
        "signed_in_as": who.name,
    }
    return render_page("settings", "settings.html")(request, data, who)


def _name(ledger: LedgerDep, subject: str) -> str:
    """How a page names a subject: its first directory name, else its handle, else its id."""
    who = privacy.profile(ledger, subject)
    return (who.names or [who.handle or subject])[0]


def _subject(principal: Principal, subject: str | None) -> str:
    target = subject or principal.subject
    if target is None:
        raise HTTPException(400, "staff accounts have no data privacy settings of their own")
    if not principal.may_act_for(target):
        raise HTTPException(403, f"you may not see or change the settings of {target!r}")
    return target


@router.get("/settings/data-privacy", name="data_privacy")
@router.get("/settings/data-privacy.json")
def data_privacy(
    request: Request, principal: MaybePrincipal, ledger: LedgerDep, subject: str | None = None
) -> Response:
    who = require_signed_in(principal, request)
    target = _subject(who, subject)
    data = privacy.overview(ledger, target)
    data["name"] = _name(ledger, target)
    data["about_page"] = data["kind"] == "organization"
    if data["about_page"]:  # the page's data, not the reader's own
        for p in data["purposes"]:
            p["categories_in_words"] = [PAGE_DATA_WORDS.get(c, c) for c in p["categories"]]
    data["managed_pages"] = [
        {"subject": org, "name": _name(ledger, org)} for org in sorted(who.acts_for - {who.subject})
    ]
    data["acting_for_other"] = target != who.subject
    data["flash"] = request.session.pop("flash", None)
    return render_page("data-privacy", "data_privacy.html")(request, data, who)


@router.get("/settings/your-data-in-ai", name="your_data_in_ai")
@router.get("/settings/your-data-in-ai.json")
def your_data_in_ai(
    request: Request, principal: MaybePrincipal, ledger: LedgerDep, subject: str | None = None
) -> Response:
    who = require_signed_in(principal, request)
    target = _subject(who, subject)
    data = data_in_ai(ledger, target)
    data["name"] = _name(ledger, target)
    data["acting_for_other"] = target != who.subject
    return render_page("your-data-in-ai", "your_data_in_ai.html")(request, data, who)


def _back(subject: str, principal: Principal) -> str:
    suffix = f"?subject={subject}" if subject != principal.subject else ""
    return f"/settings/data-privacy{suffix}"


@router.post("/settings/data-privacy/choice")
def data_privacy_choice(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    purpose: Annotated[str, Form(max_length=64)],
    action: Annotated[str, Form(max_length=16)],
    csrf_token: Annotated[str, Form()] = "",
    subject: Annotated[str | None, Form(max_length=255)] = None,
) -> Response:
    who = require_signed_in(principal, request)
    check_csrf(request, csrf_token)
    target = _subject(who, subject)
    made = privacy.choose(ledger, target, purpose, action, actor=who.actor, source="web")
    request.session["flash"] = {
        "text": made.in_words(ledger.policy.purpose(purpose).title),
        "receipt_seq": made.event.seq,
    }
    return RedirectResponse(_back(target, who), status_code=303)


@router.post("/settings/data-privacy/all-off")
def data_privacy_all_off(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    csrf_token: Annotated[str, Form()] = "",
    subject: Annotated[str | None, Form(max_length=255)] = None,
) -> Response:
    who = require_signed_in(principal, request)
    check_csrf(request, csrf_token)
    target = _subject(who, subject)
    made = [
        c.event
        for c in privacy.turn_off_all(ledger, target, actor=who.actor, source="web")
        if c.changed
    ]
    request.session["flash"] = {
        "text": "Saved: every AI and research use is off. It applies now."
        if made
        else "Nothing changed: every AI and research use was already off, so nothing new "
        "was recorded.",
        "receipt_seq": made[-1].seq if made else None,
    }
    return RedirectResponse(_back(target, who), status_code=303)


ReceiptSeq = Annotated[int, Path(ge=1, le=(1 << 63) - 1)]


def _receipt(request: Request, who: Principal, ledger: LedgerDep, seq: int) -> dict[str, Any]:
    """The signed receipt for choice event ``seq``, if ``who`` may see it (its subject, or
    those who act for or read for it); else 404, saying no more."""
    evs = ledger.events(after=seq - 1, limit=1)
    ev = evs[0] if evs and evs[0].seq == seq else None
    if ev is None or ev.type != "choice" or not who.may_read(ev.subject):
        raise HTTPException(404, f"you have no receipt {seq}")
    url = privacy.settings_url(str(request.base_url), ev.subject)
    return receipts.build(ledger, ev, request.app.state.receipt_key, withdraw_url=url)


@router.get("/receipts/{seq:int}.json")
def download_receipt(
    seq: ReceiptSeq, request: Request, principal: MaybePrincipal, ledger: LedgerDep
) -> Response:
    """The signed receipt as a file to keep (the readable page's JSON twin)."""
    body = _receipt(request, require_signed_in(principal, request), ledger, seq)
    return Response(
        json.dumps(body, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="askfirst-receipt-{seq}.json"'},
    )


@router.get("/receipts/{seq:int}", name="receipt")
def receipt_page(
    seq: ReceiptSeq, request: Request, principal: MaybePrincipal, ledger: LedgerDep
) -> Response:
    """A receipt in words: what was chosen, for which purpose, when, by whom."""
    who = require_signed_in(principal, request)
    body = _receipt(request, who, ledger, seq)
    data = privacy.receipt_in_words(ledger, body)
    data["keys_url"] = str(request.base_url).rstrip("/") + receipts.WELL_KNOWN
    return render_page("receipt", "receipt.html")(request, data, who)


@router.get(receipts.WELL_KNOWN)
def receipt_keys(ledger: LedgerDep) -> Response:
    """The service's receipt-signing public keys (a JSON Web Key Set), old ones included,
    so that anyone can check a receipt without trusting the receipt's own word."""
    return JSONResponse(receipts.jwks(ledger))


# ---- public pages ----------------------------------------------------------------------


def _training_signals(ledger: LedgerDep, subject: str) -> tuple[str | None, dict[str, str]]:
    """What ``subject``'s public pages say about AI training, and the do-not-train headers
    they carry. Only the policy's ``public_signal`` purposes count: while any of them may
    not use the subject's data, "not allowed" and the headers; with none, nothing."""
    purposes = ledger.policy.public_signal_purposes
    if not purposes:
        return None, {}
    if all(decide(ledger, subject, p.name).allowed for p in purposes):
        return "allowed", {}
    return "not allowed", dict(DO_NOT_TRAIN)


def _page_and_twin(path: str, name: str) -> Callable[[Endpoint], Endpoint]:
    """Route ``path`` and its JSON twin ``path + '.json'`` to the endpoint: the twin
    first, or the page's last parameter would take "name.json" for a name."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.get(f"{path}.json")(endpoint)
        router.get(path, name=name)(endpoint)
        return endpoint

    return register


def _posts(ledger: LedgerDep, author: str, limit: int = 20) -> list[dict[str, Any]]:
    q = (
        select(content)
        .where(content.c.author_id == author, content.c.public.is_(True))
        .order_by(content.c.created_at.desc())
        .limit(limit)
    )
    with ledger.engine.connect() as conn:
        return [
            {
                "record_id": r.record_id,
                "category": r.category,
                "text": r.text,
                "created_at": times.iso(r.created_at),
            }
            for r in conn.execute(q)
        ]


@_page_and_twin("/in/{handle}", name="profile")
def public_profile(
    handle: str, request: Request, principal: MaybePrincipal, ledger: LedgerDep
) -> Response:
    subject = privacy.subject_for_handle(ledger, handle)
    if subject is None:
        raise HTTPException(404, f"no member with the handle {handle!r}")
    who = privacy.profile(ledger, subject)
    if who.status in ("closed", "deactivated"):
        raise HTTPException(404, f"no member with the handle {handle!r}")
    ai_training, headers = _training_signals(ledger, subject)
    data = {
        "handle": who.handle,
        "names": who.names,
        "kind": who.kind,
        "deceased": who.status == "deceased",
        "ai_training": ai_training,
        "posts": _posts(ledger, subject),
    }
    response = render_page("profile", "profile.html")(request, data, principal)
    response.headers.update(headers)
    return response


@_page_and_twin("/posts/{record_id}", name="post")
def public_post(
    record_id: str, request: Request, principal: MaybePrincipal, ledger: LedgerDep
) -> Response:
    q = select(content).where(content.c.record_id == record_id, content.c.public.is_(True))
    with ledger.engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        raise HTTPException(404, f"no public post {record_id!r}")
    author = privacy.profile(ledger, row.author_id)
    ai_training, headers = _training_signals(ledger, row.author_id)
    data = {
        "record_id": row.record_id,
        "category": row.category,
        "text": row.text,
        "created_at": times.iso(row.created_at),
        "author": author.handle,
        "author_names": author.names,
        "ai_training": ai_training,
    }
    response = render_page("post", "post.html")(request, data, principal)
    response.headers.update(headers)
    return response


# ---- the public changelog of notices -------------------------------------------------------


def _changelog(ledger: Any) -> list[dict[str, Any]]:
    entries = notices.changelog(notices.published(ledger.engine))
    titles = {name: p.title for name, p in ledger.policy.purposes.items()}
    return [
        {**e.to_json(), "purpose_title": titles.get(e.published.terms.purpose)} for e in entries
    ]


@router.get("/notices", name="notices")
@router.get("/notices.json")
def notices_page(request: Request, principal: MaybePrincipal, ledger: LedgerDep) -> Response:
    """Every published version of every purpose, newest first, with what it added or
    removed: anyone can see a quiet widening or a default switched back on."""
    published = notices.published(ledger.engine)
    data = {
        "notices": _changelog(ledger),
        # Purposes whose terms were never published: nobody can have been told of them,
        # so no default of theirs can apply to anyone.
        "unpublished": [
            {"purpose": name, "title": p.title, "version": p.version}
            for name, p in ledger.policy.purposes.items()
            if name not in published
        ],
        "feed": "/notices.atom",
        "head": ledger.head().to_json(),
    }
    return render_page("notices", "notices.html")(request, data, principal)


@router.get("/notices.atom")
def notices_feed(request: Request, ledger: LedgerDep) -> Response:
    """The changelog as an Atom feed (RFC 4287), for feed readers and watchers."""
    entries = _changelog(ledger)
    base = str(request.base_url).rstrip("/")
    return _templates(request).TemplateResponse(
        request,
        "notices_atom.xml",
        {
            "entries": entries,
            "base": base,
            "host": request.url.hostname or "askfirst",
            "updated": entries[0]["published_at"] if entries else "1970-01-01T00:00:00Z",
        },
        media_type="application/atom+xml",
    )


# ---- staff ------------------------------------------------------------------------------


@router.get("/admin", name="admin")
@router.get("/admin.json")
def admin_home(request: Request, principal: MaybePrincipal, ledger: LedgerDep) -> Response:
    who = staff_only(principal, request)
    data = {
        "head": ledger.head().to_json(),
        "choices": choice_counts(ledger),
        "decisions": decision_counts(ledger),
        "open_tasks": len(list_tasks(ledger, status="open")),
    }
    return render_page("admin", "admin.html")(request, data, who)


@router.get("/admin/tasks", name="admin_tasks")
@router.get("/admin/tasks.json")
def admin_tasks(request: Request, principal: MaybePrincipal, ledger: LedgerDep) -> Response:
    who = staff_only(principal, request)
    data = {
        "open": list_tasks(ledger, status="open"),
        "may_close": who.can("operate"),
        "flash": request.session.pop("flash", None),
    }
    return render_page("admin-tasks", "admin_tasks.html")(request, data, who)


def staff_only(
    principal: Principal | None, request: Request, permission: str = "read"
) -> Principal:
    """The signed-in staff member, if they hold ``permission``; else 403 (a visitor who is
    not signed in is sent to sign in)."""
    who = require_signed_in(principal, request)
    if not who.is_staff:
        raise HTTPException(403, "the admin area is for staff")
    require(who, permission)
    return who


@router.get("/admin/notices", name="admin_notices")
@router.get("/admin/notices.json")
def admin_notices(request: Request, principal: MaybePrincipal, ledger: LedgerDep) -> Response:
    """Each purpose: the version its policy file says now and the version last published;
    a version the file is ahead with can be published here."""
    who = staff_only(principal, request)
    file = load_policy(request.app.state.settings.policy_path)
    published = notices.published(ledger.engine)
    rows = []
    for name, purpose in file.purposes.items():
        history = published.get(name, [])
        last = history[-1] if history else None
        rows.append(
            {
                "purpose": name,
                "title": purpose.title,
                "file_version": purpose.version,
                "published_version": last.terms.version if last else None,
                "published_at": times.iso(last.published_at) if last else None,
                "may_publish": last is None or purpose.version > last.terms.version,
                "default": purpose.default,
                "grace_days": purpose.grace_days,
            }
        )
    data = {"purposes": rows, "policy_file": file.source, "changelog": "/notices"}
    return render_page("admin-notices", "admin_notices.html")(request, data, who)


@router.post("/admin/notices/{purpose}/publish")
def admin_publish_notice(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    purpose: Annotated[str, Path(min_length=1, max_length=64)],
    changes: Annotated[str, Form(max_length=notices.MAX_CHANGES)],
    csrf_token: Annotated[str, Form()] = "",
    earliest_default: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    who = staff_only(principal, request, "notices")
    check_csrf(request, csrf_token)
    try:
        earliest = date.fromisoformat(earliest_default) if earliest_default else None
    except ValueError:
        raise HTTPException(400, f"earliest default {earliest_default!r}: give a date") from None
    made = notices.publish_file(
        ledger,
        request.app.state.settings.policy_path,
        purpose,
        changes=changes,
        earliest=earliest,
        actor=who.actor,
        source="web",
    )
    return RedirectResponse(f"/notices#n-{purpose}-{made.terms.version}", status_code=303)


def _chart(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bars for the choices-over-time chart, one panel per regime: per week a yes bar
    above the axis and a no bar below it, scaled to the busiest week."""
    weeks = sorted({row["week"] for row in series})
    top = max([1, *(max(row["yes"], row["no"]) for row in series)])
    width, half = 12, 60  # px per week, px from the axis to the top
    panels = []
    for regime in ("opt-in", "opt-out"):
        rows = {row["week"]: row for row in series if row["regime"] == regime}
        bars = []
        for i, week in enumerate(weeks):
            row = rows.get(week, {"yes": 0, "no": 0})
            yes, no = row["yes"], row["no"]
            bars.append(
                {
                    "x": 40 + i * width,
                    "yes_y": half - round(yes / top * half),
                    "yes_h": round(yes / top * half),
                    "no_h": round(no / top * half),
                    "title": f"week of {week}: {yes} yes, {no} no",
                }
            )
        panels.append(
            {
                "regime": regime,
                "bars": bars,
                "width": 40 + len(weeks) * width + 10,
                "height": 2 * half + 20,
                "axis": half,
                "top": top,
                "first": weeks[0] if weeks else None,
                "last": weeks[-1] if weeks else None,
                "yes": sum(r["yes"] for r in rows.values()),
                "no": sum(r["no"] for r in rows.values()),
            }
        )
    return panels


@router.get("/admin/notices/{purpose}", name="admin_notice_status")
@router.get("/admin/notices/{purpose}.json")
def admin_notice_status(
    request: Request,
    principal: MaybePrincipal,
    ledger: LedgerDep,
    purpose: Annotated[str, Path(min_length=1, max_length=64)],
) -> Response:
    """Who a purpose's current notice could reach, who was told and how, and what they
    chose, per jurisdiction; and a chart of yes and no over time per regime."""
    who = staff_only(principal, request)
    data = notice_status(ledger, purpose)
    if not request.url.path.endswith(".json"):
        data["chart"] = _chart(data["choices_over_time"])
    return render_page("admin-notices", "admin_notice_status.html")(request, data, who)
