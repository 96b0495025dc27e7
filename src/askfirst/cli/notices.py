"""Commands for notices: publishing a purpose's terms, and the public changelog."""

from datetime import date
from typing import Annotated

import typer

from askfirst import times
from askfirst.cli.common import (
    DB_DEFAULT,
    Db,
    Json,
    PolicyFile,
    handles_errors,
    ledger_from,
    out,
    parse_time,
    print_json,
    print_rows,
)
from askfirst.errors import InputError

notice_app = typer.Typer(
    help="Notices: publish a purpose's terms before any default applies, and list them."
)
notice_app.info.no_args_is_help = True


def _day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(f"--earliest-default {value!r}: give a date, YYYY-MM-DD") from None


@notice_app.command("publish")
@handles_errors
def publish(
    purpose: Annotated[str, typer.Argument(help="The purpose whose terms to publish.")],
    changes: Annotated[
        str, typer.Option(help="What changed since the last version, in plain words.")
    ],
    earliest_default: Annotated[
        str | None,
        typer.Option(
            help="No default starts before this date (YYYY-MM-DD); at the earliest the day "
            "after the grace period from now."
        ),
    ] = None,
    actor: Annotated[
        str, typer.Option(help="Who publishes, as the ledger will name them (staff:NAME).")
    ] = "system",
    at: Annotated[
        str | None,
        typer.Option(
            help="When it was published (ISO 8601), when migrating a platform's history; "
            "default now. Never before the ledger head."
        ),
    ] = None,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Publish the policy file's current version of PURPOSE: its terms go into the
    public changelog and their hash into the ledger. Members can then be told of it."""
    from askfirst import notices

    when = parse_time(at, "--at")
    with ledger_from(db, policy, publishing=True) as ledger:
        made = notices.publish(
            ledger,
            ledger.policy,
            purpose,
            changes=changes,
            actor=actor,
            source="cli",
            earliest=_day(earliest_default),
            at=None if when is None else times.to_micros(when),
        )
        before = [p for p in notices.published(ledger.engine)[purpose] if p.seq < made.seq]
    if as_json:
        print_json(made.to_json())
        return
    t = made.terms
    out.print(
        f"published {purpose} version {t.version} at seq {made.seq} "
        f"({times.iso(made.published_at)}; terms sha256:{made.hash[:16]})"
    )
    for line in notices.what_changed(before[-1].terms if before else None, t):
        out.print(f"  {line}")


@notice_app.command("status")
@handles_errors
def status(
    purpose: Annotated[str, typer.Argument(help="The purpose whose current notice to report.")],
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Per jurisdiction, for PURPOSE's current version: how many subjects a default could
    reach, how many were told (by channel), are inside the grace period, are in by
    default, said yes, said no."""
    from askfirst.reports import STATUS_COUNTS, notice_status

    with ledger_from(db, policy) as ledger:
        report = notice_status(ledger, purpose)
    if as_json:
        print_json(report)
        return
    published = report["published"]
    out.print(
        f"{purpose} version {report['version']}: "
        + (
            f"published {published['published_at'][:10]} (seq {published['seq']}), "
            f"default {report['default']}"
            if published
            else "not published: nobody can be told of it, so no default can apply"
        ),
        markup=False,
    )
    header = ["where", "regime", *(c.replace("_", " ") for c in STATUS_COUNTS)]
    rows = [
        [j["jurisdiction"] or "unknown", j["regime"], *(str(j[c]) for c in STATUS_COUNTS)]
        for j in report["jurisdictions"]
    ]
    rows.append(["all", "", *(str(report["totals"][c]) for c in STATUS_COUNTS)])
    print_rows(header, rows)


@notice_app.command("list")
@handles_errors
def list_notices(
    purpose: Annotated[
        str | None, typer.Argument(help="Only this purpose (default: every one).")
    ] = None,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Every published version of every purpose, newest first: the public changelog."""
    from askfirst import notices

    with ledger_from(db, policy) as ledger:
        if purpose is not None:
            ledger.policy.purpose(purpose)  # an unknown purpose is named, not listed empty
        entries = [
            e
            for e in notices.changelog(notices.published(ledger.engine))
            if purpose is None or e.published.terms.purpose == purpose
        ]
    if as_json:
        print_json([e.to_json() for e in entries])
        return
    if not entries:
        out.print("no notice has been published yet")
        return
    print_rows(
        ["purpose", "version", "published", "seq", "widens", "what changed"],
        [
            [
                e.published.terms.purpose,
                str(e.published.terms.version),
                times.iso(e.published.published_at),
                str(e.published.seq),
                "yes" if e.widens else "no",
                " ".join(e.changes),
            ]
            for e in entries
        ],
    )


@notice_app.command("send")
@handles_errors
def send(
    purpose: Annotated[str, typer.Argument(help="The purpose whose current notice to mail.")],
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Queue the current notice of PURPOSE by e-mail for every subject with an address
    who lives where its default could apply and has not been told of this version;
    'askfirst outbox run' (or 'askfirst serve') sends them."""
    from askfirst import mail

    with ledger_from(db, policy) as ledger:
        queued = mail.queue_notices(ledger, purpose)
        why = mail.why_nobody(ledger, purpose)
        owed = mail.pending(ledger)
    if as_json:
        print_json({"purpose": purpose, "queued": queued, "pending": owed, "nobody_because": why})
        return
    if why is not None:
        out.print(f"queued 0: {why}", markup=False)
        return
    out.print(
        f"queued {queued} e-mail(s) of {purpose}; {owed} waiting to be sent "
        "('askfirst outbox run' sends them)",
        markup=False,
    )
