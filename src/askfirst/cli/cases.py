"""Commands for cases: deaths, representatives, objections and erasures, reviewed by staff.

The command line trusts its operator as the database does: ``--staff NAME`` names the
staff account a step is recorded for. Two reviewers are still two accounts — the ledger
refuses an approval by the account that proposed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from askfirst import config, times
from askfirst.cli.common import (
    DB_DEFAULT,
    Db,
    Json,
    KeyDir,
    PolicyFile,
    err,
    handles_errors,
    ledger_from,
    out,
    print_json,
    print_rows,
)
from askfirst.errors import InputError

if TYPE_CHECKING:
    from askfirst.cases import Case
    from askfirst.evidence import Store
    from askfirst.ledger import Ledger

case_app = typer.Typer(
    help="Cases: deaths, representatives, objections and erasures, each reviewed by staff."
)
case_app.info.no_args_is_help = True

Staff = Annotated[str, typer.Option(help="The reviewer's staff account name.")]
KEY_DIR_DEFAULT = Path(config.KEY_DIR.default or "askfirst-keys")


def evidence_store(key_dir: Path) -> Store:
    """Where evidence is kept: ``ASKFIRST_EVIDENCE_URL``, else a folder beside the keys."""
    from askfirst import evidence

    return evidence.store_from_settings(
        os.environ.get(config.EVIDENCE_URL.env), evidence.default_folder_for(key_dir)
    )


def _show(case_json: dict[str, object], as_json: bool) -> None:
    if as_json:
        print_json(case_json)
        return
    c = case_json
    out.print(f"case {c['id']}: {c['kind']} — {c['status']}", markup=False)
    for key in ("subject", "names", "email", "requester_email", "link", "statement"):
        if c.get(key):
            out.print(f"  {key}: {c[key]}", markup=False)
    for d in c["evidence"]:  # type: ignore[attr-defined]
        out.print(
            f"  evidence {d['id']}: {d['media_type']}, {d['size']} bytes, "
            f"sha256 {d['sha256'][:16]}…",
            markup=False,
        )
    for s in c["steps"]:  # type: ignore[attr-defined]
        reason = f" — {s['reason']}" if s.get("reason") else ""
        out.print(f"  seq {s['seq']} {s['at']} {s['step']} by {s['actor']}{reason}", markup=False)


@case_app.command("open")
@handles_errors
def open_(
    kind: Annotated[str, typer.Argument(help="death, representative, objection or erasure.")],
    subject: Annotated[str | None, typer.Option(help="The member the case is about.")] = None,
    names: Annotated[
        list[str] | None, typer.Option("--names", help="An objection's names (repeat).")
    ] = None,
    email: Annotated[
        str | None,
        typer.Option(help="Whom the case is for: a representative's sign-in link goes here."),
    ] = None,
    reporter_email: Annotated[
        str | None, typer.Option(help="Who reported it, to answer them.")
    ] = None,
    link: Annotated[str | None, typer.Option(help="A death's obituary or notice (URL).")] = None,
    statement: Annotated[str | None, typer.Option(help="What the requester says.")] = None,
    evidence_file: Annotated[
        list[Path] | None,
        typer.Option("--evidence", help="A PDF, PNG or JPEG of at most 10 MB (repeat)."),
    ] = None,
    actor: Annotated[
        str, typer.Option(help="Who opens it, as the ledger will name them.")
    ] = "system",
    key_dir: KeyDir = KEY_DIR_DEFAULT,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Open a case. Its evidence is checked by content and stored outside the database;
    only its SHA-256 goes into the ledger."""
    from askfirst import cases, evidence

    files = []
    for path in evidence_file or []:
        try:
            with path.open("rb") as f:
                files.append(evidence.check(f, name=str(path)))
        except OSError as e:
            raise InputError(f"{path}: {e.strerror or e}") from None
    with ledger_from(db, policy) as ledger:
        case = cases.open_case(
            ledger,
            kind,
            actor=actor,
            subject=subject,
            names=names or [],
            email=email,
            reporter_email=reporter_email,
            link=link,
            statement=statement,
            files=files,
            store_=evidence_store(key_dir),
        )
    _show(case.to_json(), as_json)


@case_app.command("list")
@handles_errors
def list_(
    status: Annotated[
        str | None,
        typer.Option(
            help="unverified, open, proposed, approved or rejected (default: "
            "open and proposed, the review queue)."
        ),
    ] = None,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """The cases awaiting a reviewer, oldest first (or those in one status)."""
    from askfirst import cases

    with ledger_from(db, policy) as ledger:
        found = cases.listed(ledger, status=status)
    if as_json:
        print_json([c.to_json() for c in found])
        return
    rows = [
        [
            str(c.id),
            c.kind,
            c.status,
            c.subject or ", ".join(c.names),
            times.iso(c.opened_at),
            c.proposer or "",
        ]
        for c in found
    ]
    print_rows(["id", "kind", "status", "about", "opened_at", "proposed_by"], rows)


@case_app.command("show")
@handles_errors
def show(
    case_id: Annotated[int, typer.Argument(help="The case's id.")],
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """One case: what was asked, its evidence, and every step with who took it."""
    from askfirst import cases

    with ledger_from(db, policy) as ledger:
        _show(cases.get(ledger, case_id).to_json(), as_json)


@case_app.command("propose")
@handles_errors
def propose(
    case_id: Annotated[int, typer.Argument(help="The case's id.")],
    staff: Staff,
    reason: Annotated[str, typer.Option(help="Why, in words kept with the step.")],
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Propose to approve a death, a representative or an erasure: a second reviewer decides."""
    from askfirst import cases

    with ledger_from(db, policy) as ledger:
        _show(cases.propose(ledger, case_id, staff, reason).to_json(), as_json)


@case_app.command("reject")
@handles_errors
def reject(
    case_id: Annotated[int, typer.Argument(help="The case's id.")],
    staff: Staff,
    reason: Annotated[str, typer.Option(help="Why, in words kept with the step.")],
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Reject a case."""
    from askfirst import cases

    with ledger_from(db, policy) as ledger:
        _show(cases.reject(ledger, case_id, staff, reason).to_json(), as_json)


@case_app.command("approve")
@handles_errors
def approve(
    case_id: Annotated[int, typer.Argument(help="The case's id.")],
    staff: Staff,
    reason: Annotated[str | None, typer.Option(help="Why, in words kept with the step.")] = None,
    key_dir: KeyDir = KEY_DIR_DEFAULT,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Approve a case (a death, a representative or an erasure: a reviewer other than its
    proposer) and carry it out at once."""
    from askfirst import cases, directory
    from askfirst.gate import named

    with ledger_from(db, policy) as ledger:
        case = cases.get(ledger, case_id)
        if case.kind == "erasure" and case.subject:  # while their names are still known
            named.record_named(ledger, case.subject)
        done = cases.approve(
            ledger,
            case_id,
            staff,
            reason,
            store_=evidence_store(key_dir),
            names_key=directory.names_key(key_dir),
        )
        if done.case.kind in ("death", "objection") and done.case.subject:
            named.reach_named(ledger, done.case.subject)  # their names, now protected
        if done.signin_secret is not None:
            _mail_signin(ledger, done.case, done.signin_secret)
    _show(done.case.to_json(), as_json)


@case_app.command("send-link")
@handles_errors
def send_link(
    case_id: Annotated[int, typer.Argument(help="An approved representative's case.")],
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """Send an approved representative a new one-time sign-in link (any unused one ends)."""
    from askfirst import cases

    with ledger_from(db, policy) as ledger:
        case = cases.get(ledger, case_id)
        secret = cases.renew_signin_link(ledger, case)
        _mail_signin(ledger, case, secret)


def _mail_signin(ledger: Ledger, case: Case, secret: str) -> None:
    """Mail a representative's sign-in link; say so (and how to retry) when it cannot go."""
    from askfirst import case_mail
    from askfirst.mail import Smtp

    assert case.email is not None
    smtp = Smtp.from_env()
    if smtp is None:
        err.print(
            f"the sign-in link was not sent: set {config.SMTP_URL.env} (and "
            f"{config.MAIL_FROM.env}, {config.BASE_URL.env}), then run 'askfirst case "
            f"send-link {case.id}'",
            markup=False,
        )
        return
    try:
        case_mail.send(
            smtp, case_mail.signin_message(smtp, case.email, case.id, case.subject or "", secret)
        )
    except OSError as e:
        err.print(
            f"the sign-in link was not sent ({e}); run 'askfirst case send-link "
            f"{case.id}' to try again",
            markup=False,
        )
        return
    out.print(f"a one-time sign-in link was mailed to {case.email}", markup=False)
