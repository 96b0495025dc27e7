"""The ``askfirst`` command: one small function per command, each calling the library.

Library errors become one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from askfirst import config, times
from askfirst.decisions import EXPLAIN, decide
from askfirst.errors import AskfirstError, InputError, PolicyError, StorageError
from askfirst.ledger import Ledger, NewEvent
from askfirst.ledger.imports import import_events, import_subjects
from askfirst.policy import NEVER_USED, Policy, load_policy

app = typer.Typer(
    help="askfirst: use members' content for AI and research only with their say-so.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Check the policy.", no_args_is_help=True)
subjects_app = typer.Typer(
    help="Members, organizations and people without accounts.", no_args_is_help=True
)
events_app = typer.Typer(help="Read and import ledger events.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger's head and its verification.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(subjects_app, name="subjects")
app.add_typer(events_app, name="events")
app.add_typer(ledger_app, name="ledger")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Db = Annotated[
    str,
    typer.Option(
        config.DATABASE_URL.option, envvar=config.DATABASE_URL.env, help=config.DATABASE_URL.help
    ),
]
PolicyFile = Annotated[
    Path | None,
    typer.Option(config.POLICY.option, envvar=config.POLICY.env, help=config.POLICY.help),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str, code: int = 1) -> None:
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn library errors into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except AskfirstError as e:
            _fail(str(e))
        except SQLAlchemyError as e:
            _fail(f"database error: {getattr(e, 'orig', None) or e}".splitlines()[0])
        raise AssertionError("unreachable")

    return wrapper


def _open(db: str, policy: Path | None, *, create: bool = False) -> Ledger:
    return Ledger.open(db, load_policy(policy), create=create)


def _time(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return times.parse(value, field=field)
    except ValueError as e:
        raise InputError(str(e)) from None


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# ---- init, policy ----------------------------------------------------------------------


@app.command()
@handles_errors
def init(db: Db = config.DATABASE_URL.default or "") -> None:
    """Create the ledger's database, or upgrade its schema to this version."""
    with Ledger.open(db, load_policy(None), create=True) as ledger:
        head = ledger.head()
    out.print(f"ledger ready at {db} (head seq {head.seq})", markup=False)


def _summary(policy: Policy) -> None:
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
    try:
        policy = load_policy(file)
    except PolicyError as e:
        _fail(str(e))
    _summary(policy)


# ---- subjects and events ---------------------------------------------------------------


@subjects_app.command("import")
@handles_errors
def subjects_import(
    file: Annotated[Path, typer.Argument(help="JSONL: one subject per line.")],
    since: Annotated[
        str | None, typer.Option(help="When their state began to hold (ISO time; default now).")
    ] = None,
    db: Db = config.DATABASE_URL.default or "",
    policy: PolicyFile = None,
) -> None:
    """Register subjects from a JSONL file, all or nothing."""
    with _open(db, policy) as ledger:
        evs = import_subjects(ledger, file, since=_time(since, "--since"))
    n = sum(1 for e in evs if e.type == "subject")
    out.print(f"imported {n} subjects ({len(evs)} events, head seq {evs[-1].seq})", markup=False)


@app.command()
@handles_errors
def record(
    action: Annotated[
        Literal["grant", "withdraw", "object"], typer.Argument(help="grant, withdraw or object.")
    ],
    subject: Annotated[str, typer.Option(help="The subject whose choice this is.")],
    purpose: Annotated[str, typer.Option(help="The purpose, e.g. genai-training.")],
    actor: Annotated[str | None, typer.Option(help="Who acts (default: the subject).")] = None,
    db: Db = config.DATABASE_URL.default or "",
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Record a member's choice for one purpose."""
    with _open(db, policy) as ledger:
        ev = ledger.append(
            NewEvent(
                type="choice",
                subject=subject,
                actor=actor or subject,
                source="cli",
                purpose=purpose,
                value=action,
            )
        )
    if as_json:
        _print_json(ev.to_json())
    else:
        out.print(
            f"recorded seq {ev.seq}: {subject} {action} {purpose} "
            f"(notice v{ev.notice_version}, actor {ev.actor}, hash {ev.hash[:16]})",
            markup=False,
        )


@events_app.command("import")
@handles_errors
def events_import(
    file: Annotated[Path, typer.Argument(help="JSONL: one event per line.")],
    db: Db = config.DATABASE_URL.default or "",
    policy: PolicyFile = None,
) -> None:
    """Append events from a JSONL file, all or nothing."""
    with _open(db, policy) as ledger:
        evs = import_events(ledger, file)
    out.print(f"imported {len(evs)} events (seq {evs[0].seq}..{evs[-1].seq})", markup=False)


@events_app.command("list")
@handles_errors
def events_list(
    subject: Annotated[str | None, typer.Option(help="Only this subject's events.")] = None,
    after: Annotated[int, typer.Option(help="Start after this seq.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    db: Db = config.DATABASE_URL.default or "",
    as_json: Json = False,
) -> None:
    """List events, oldest first."""
    with _open(db, None) as ledger:
        evs = ledger.events(after=after, limit=limit, subject=subject)
    if as_json:
        _print_json([e.to_json() for e in evs])
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
def ledger_head(db: Db = config.DATABASE_URL.default or "", as_json: Json = False) -> None:
    """Print the ledger head: seq and hash. Keep it somewhere else to check later."""
    with _open(db, None) as ledger:
        head = ledger.head()
    if as_json:
        _print_json(head.to_json())
    else:
        out.print(f"{head.seq} {head.hash}", markup=False)


@ledger_app.command("verify")
@handles_errors
def ledger_verify(
    expected_head: Annotated[
        str | None,
        typer.Option(help="A head (HASH or SEQ:HASH) recorded earlier outside the database."),
    ] = None,
    db: Db = config.DATABASE_URL.default or "",
) -> None:
    """Recompute the hash chain and the projections; exit 1 on any disagreement."""
    with _open(db, None) as ledger:
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


# ---- decisions -------------------------------------------------------------------------


@app.command("decide")
@handles_errors
def decide_cmd(
    subject: Annotated[str, typer.Option(help="The subject.")],
    purpose: Annotated[str, typer.Option(help="The purpose.")],
    at: Annotated[str | None, typer.Option(help="ISO time (default now).")] = None,
    db: Db = config.DATABASE_URL.default or "",
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """May this subject's data be used for this purpose (at this time), and why."""
    with _open(db, policy) as ledger:
        d = decide(ledger, subject, purpose, _time(at, "--at"))
    if as_json:
        _print_json(d.to_json())
        return
    seq = f", ledger event {d.event_seq}" if d.event_seq is not None else ""
    out.print(
        f"{'yes' if d.allowed else 'no'}: {d.reason} ({EXPLAIN[d.reason]}{seq})", markup=False
    )


@app.command()
@handles_errors
def demo(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for the demo's database.")] = Path(
        "askfirst-demo"
    ),
) -> None:
    """Walk through askfirst on a small demo platform (embedded SQLite in --dir)."""
    from askfirst.demo import run

    run(dir, out)


def main() -> None:
    try:
        app()
    except StorageError as e:  # pragma: no cover - raised outside a command
        err.print(f"error: {e}", markup=False)
        sys.exit(1)
