"""Commands for the ledger and what it decides: init, the policy, subjects and events,
the ledger's head and its verification, and decide."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from askfirst import times
from askfirst.cli.common import (
    DB_DEFAULT,
    Db,
    Json,
    PolicyFile,
    err,
    fail,
    handles_errors,
    ledger_from,
    out,
    parse_time,
    print_json,
)
from askfirst.errors import InputError, PolicyError

if TYPE_CHECKING:
    from askfirst.policy import Policy

policy_app = typer.Typer(help="Check the policy.", no_args_is_help=True)
subjects_app = typer.Typer(
    help="Members, organizations and people without accounts.", no_args_is_help=True
)
events_app = typer.Typer(help="Read and import ledger events.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger's head and its verification.", no_args_is_help=True)


# ---- init, policy ----------------------------------------------------------------------


@handles_errors
def init(db: Db = DB_DEFAULT) -> None:
    """Create the ledger's database, or upgrade its schema to this version."""
    with ledger_from(db, None, create=True) as ledger:
        head = ledger.head()
    out.print(f"ledger ready at {db} (head seq {head.seq})", markup=False)


def _summary(policy: "Policy") -> None:
    from rich.table import Table

    from askfirst.policy import NEVER_USED

    out.print(f"policy {policy.source}: valid (hash {policy.hash[:16]})", markup=False)
    table = Table(title="What applies where", title_justify="left")
    table.add_column("purpose", no_wrap=True)
    table.add_column("v", justify="right")
    table.add_column("opt-in places (EEA, GB, CH, unknown, ...)")
    table.add_column("opt-out places: " + (", ".join(policy.jurisdiction_rules.opt_out) or "none"))
    table.add_column("categories")
    for p in policy.purposes.values():
        if p.default == "on":
            opt_out = f"on after notice + {p.grace_days} days, unless they say no"
        else:
            opt_out = "off until they say yes"
        table.add_row(
            p.name, str(p.version), "off until they say yes", opt_out, ", ".join(p.categories)
        )
    out.print(table)
    out.print(
        "never used by any purpose: " + ", ".join(f"{k} ({v})" for k, v in NEVER_USED.items()),
        markup=False,
    )


@policy_app.command("check")
def policy_check(
    file: Annotated[Path | None, typer.Argument(help="Policy TOML (default: shipped).")] = None,
) -> None:
    """Validate a policy and print what it means; exit 1 when it is invalid."""
    from askfirst.policy import load_policy

    try:
        policy = load_policy(file)
    except PolicyError as e:
        fail(str(e))
    _summary(policy)


# ---- subjects and events ---------------------------------------------------------------


@subjects_app.command("import")
@handles_errors
def subjects_import(
    file: Annotated[Path, typer.Argument(help="JSONL: one subject per line.")],
    since: Annotated[
        str | None, typer.Option(help="When their state began to hold (ISO time; default now).")
    ] = None,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """Register subjects from a JSONL file, all or nothing."""
    from askfirst.ledger.imports import import_subjects

    with ledger_from(db, policy) as ledger:
        evs = import_subjects(ledger, file, since=parse_time(since, "--since"))
    n = sum(1 for e in evs if e.type == "subject")
    out.print(f"imported {n} subjects ({len(evs)} events, head seq {evs[-1].seq})", markup=False)


@subjects_app.command("update")
@handles_errors
def subjects_update(
    subject: Annotated[str, typer.Argument(help="The subject whose entry changes.")],
    handle: Annotated[str | None, typer.Option(help="The new handle.")] = None,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="A name; give --name once per name (they replace all)."),
    ] = None,
    email: Annotated[str | None, typer.Option(help="The new e-mail address.")] = None,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Change a subject's handle, names or e-mail; the old handle and names stay
    protected for the policy's [names] former_protected_days."""
    from askfirst.directory import UNSET, update_subject

    if handle is None and name is None and email is None:
        raise InputError("give --handle, --name or --email")
    with ledger_from(db, policy) as ledger:
        entry = update_subject(
            ledger,
            subject,
            handle=UNSET if handle is None else handle,
            names=UNSET if name is None else name,
            email=UNSET if email is None else email,
        )
    if as_json:
        print_json(entry.to_json())
        return
    shown = ", ".join([*(f"@{entry.handle}",) * bool(entry.handle), *entry.names]) or "no name"
    out.print(f"subject {entry.subject}: {shown}", markup=False)
    for f in entry.former:
        out.print(
            f"  former {f.kind} {f.value!r} protected until {times.iso(f.until)}", markup=False
        )


@events_app.command("import")
@handles_errors
def events_import(
    file: Annotated[Path, typer.Argument(help="JSONL: one event per line.")],
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """Append events from a JSONL file, all or nothing."""
    from askfirst.ledger.imports import import_events

    with ledger_from(db, policy) as ledger:
        evs = import_events(ledger, file)
    out.print(f"imported {len(evs)} events (seq {evs[0].seq}..{evs[-1].seq})", markup=False)


@events_app.command("list")
@handles_errors
def events_list(
    subject: Annotated[str | None, typer.Option(help="Only this subject's events.")] = None,
    after: Annotated[int, typer.Option(min=0, max=(1 << 63) - 1, help="Start after this seq.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    db: Db = DB_DEFAULT,
    as_json: Json = False,
) -> None:
    """List events, oldest first."""
    with ledger_from(db, None) as ledger:
        evs = ledger.events(after=after, limit=limit, subject=subject)
    if as_json:
        print_json([e.to_json() for e in evs])
        return
    for e in evs:
        what = " ".join(str(x) for x in (e.purpose, e.value) if x)
        out.print(
            f"{e.seq:>8}  {times.iso(e.recorded_at)}  {e.type:<16} {e.subject:<16} "
            f"{what:<32} actor={e.actor}",
            markup=False,
        )


# ---- ledger ----------------------------------------------------------------------------


@ledger_app.command("head")
@handles_errors
def ledger_head(db: Db = DB_DEFAULT, as_json: Json = False) -> None:
    """Print the ledger head: seq and hash. Keep it somewhere else to check later."""
    with ledger_from(db, None) as ledger:
        head = ledger.head()
    if as_json:
        print_json(head.to_json())
    else:
        out.print(f"{head.seq} {head.hash}", markup=False)


@ledger_app.command("verify")
@handles_errors
def ledger_verify(
    expected_head: Annotated[
        str | None,
        typer.Option(
            help="A head recorded earlier outside the database: HASH, SEQ:HASH, or "
            "'SEQ HASH' as 'askfirst ledger head' prints it."
        ),
    ] = None,
    db: Db = DB_DEFAULT,
) -> None:
    """Recompute the hash chain and the projections; exit 1 on any disagreement.

    It does not check the snapshot registry, lineage, models, tasks or the outbox."""
    with ledger_from(db, None) as ledger:
        try:
            report = ledger.verify(expected_head)
        except ValueError as e:
            raise InputError(str(e)) from None
    for problem in report.problems + report.projection_problems:
        err.print(f"error: {problem}", markup=False)
    if not report.ok:
        if report.first_bad_seq is not None:
            err.print(f"first bad seq: {report.first_bad_seq}", markup=False)
        raise typer.Exit(1)
    assert report.head is not None
    out.print(
        f"ok: {report.events_checked} events, head {report.head.seq} {report.head.hash}",
        markup=False,
    )
    from askfirst.ledger.verify import COVERS, DOES_NOT_COVER

    out.print(f"  checked: {COVERS}; not checked: {DOES_NOT_COVER}", markup=False)


# ---- decisions -------------------------------------------------------------------------


@handles_errors
def decide(
    subject: Annotated[str, typer.Option(help="The subject.")],
    purpose: Annotated[str, typer.Option(help="The purpose.")],
    at: Annotated[str | None, typer.Option(help="ISO time (default now).")] = None,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """May this subject's data be used for this purpose (at this time), and why."""
    from askfirst.decisions import EXPLAIN
    from askfirst.decisions import decide as decide_one

    with ledger_from(db, policy) as ledger:
        d = decide_one(ledger, subject, purpose, parse_time(at, "--at"))
    if as_json:
        print_json(d.to_json())
        return
    seq = f", ledger event {d.event_seq}" if d.event_seq is not None else ""
    out.print(
        f"{'yes' if d.allowed else 'no'}: {d.reason} ({EXPLAIN[d.reason]}{seq})", markup=False
    )
