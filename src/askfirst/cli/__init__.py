"""The ``askfirst`` command: one small function per command, each calling the library.

Library errors become one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from askfirst import accounts, config, receipts, times
from askfirst.decisions import EXPLAIN, decide
from askfirst.errors import AskfirstError, InputError, PolicyError, StorageError
from askfirst.ledger import Ledger, NewEvent
from askfirst.ledger.imports import import_events, import_subjects
from askfirst.policy import NEVER_USED, Policy, load_policy

if TYPE_CHECKING:
    from askfirst.web.app import WebSettings

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
staff_app = typer.Typer(help="Staff accounts for the admin area.", no_args_is_help=True)
accounts_app = typer.Typer(help="Members' local sign-in accounts.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for services.", no_args_is_help=True)
receipt_app = typer.Typer(help="Consent receipts.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
app.add_typer(staff_app, name="staff")
app.add_typer(accounts_app, name="accounts")
app.add_typer(tokens_app, name="tokens")
app.add_typer(receipt_app, name="receipt")

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
    after: Annotated[int, typer.Option(min=0, max=(1 << 63) - 1, help="Start after this seq.")] = 0,
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
        typer.Option(
            help="A head recorded earlier outside the database: HASH, SEQ:HASH, or "
            "'SEQ HASH' as 'askfirst ledger head' prints it."
        ),
    ] = None,
    db: Db = config.DATABASE_URL.default or "",
) -> None:
    """Recompute the hash chain and the projections; exit 1 on any disagreement."""
    if expected_head is not None:  # "SEQ HASH", as `ledger head` prints it, is SEQ:HASH
        expected_head = ":".join(expected_head.split())
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


KeyDir = Annotated[
    Path,
    typer.Option(config.KEY_DIR.option, envvar=config.KEY_DIR.env, help=config.KEY_DIR.help),
]
SecureCookies = Annotated[
    bool,
    typer.Option(
        config.SECURE_COOKIES.option,
        envvar=config.SECURE_COOKIES.env,
        help=config.SECURE_COOKIES.help,
    ),
]
Host = Annotated[str, typer.Option(help="Address to listen on.")]
Port = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]


def _serve(settings: WebSettings, host: str, port: int) -> None:
    import uvicorn

    from askfirst.web import create_app

    settings = dataclasses.replace(settings, send_notices=True)
    uvicorn.run(
        create_app(settings), host=host, port=port, log_level="warning", server_header=False
    )


@app.command()
@handles_errors
def serve(
    db: Db = config.DATABASE_URL.default or "",
    policy: PolicyFile = None,
    key_dir: KeyDir = Path(config.KEY_DIR.default or ""),
    secure_cookies: SecureCookies = True,
    host: Host = "127.0.0.1",
    port: Port = 8000,
) -> None:
    """Serve the web app (pages, staff console and /v1 API) on an existing ledger."""
    from askfirst.web.app import WebSettings

    settings = WebSettings(db, key_dir, policy, secure_cookies)
    out.print(f"askfirst on http://{host}:{port} (ledger {db})", markup=False)
    _serve(settings, host, port)


@app.command()
@handles_errors
def demo(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for the demo platform.")] = Path(
        "askfirst-demo"
    ),
    port: Port = 8000,
    host: Host = "127.0.0.1",
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open a browser.")] = False,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Build the demo and stop; do not serve it.")
    ] = False,
) -> None:
    """Build (or reuse) the demo platform in --dir, then serve it."""
    from askfirst import demo as demo_platform

    built = demo_platform.build(dir)
    base = f"http://{host}:{port}"
    demo_platform.summary(built, out, base)
    if no_serve:
        return
    if not no_open:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, [f"{base}/signin"]).start()
    from askfirst.web.app import WebSettings

    _serve(WebSettings(built.url, built.key_dir), host, port)


# ---- accounts, staff, tokens, receipts ------------------------------------------------


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = typer.prompt("Password", hide_input=True)
    if typer.prompt("Again", hide_input=True) != first:
        raise InputError("the two passwords differ")
    return str(first)


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


@staff_app.command("create")
@handles_errors
def staff_create(
    username: Annotated[str, typer.Argument(help="The staff member's sign-in name.")],
    password_stdin: PasswordStdin = False,
    db: Db = config.DATABASE_URL.default or "",
) -> None:
    """Create a staff account for the admin area."""
    with _open(db, None) as ledger:
        account = accounts.create_account(ledger, username, _password(password_stdin), kind="staff")
    out.print(f"staff account {account.username!r} created", markup=False)


@accounts_app.command("create")
@handles_errors
def accounts_create(
    username: Annotated[str, typer.Argument(help="The member's sign-in name.")],
    subject: Annotated[str, typer.Option(help="The member's subject id.")],
    password_stdin: PasswordStdin = False,
    db: Db = config.DATABASE_URL.default or "",
) -> None:
    """Create a member's local sign-in account (embedded mode)."""
    with _open(db, None) as ledger:
        account = accounts.create_account(
            ledger, username, _password(password_stdin), kind="member", subject=subject
        )
    out.print(f"member account {account.username!r} created for {subject}", markup=False)


@tokens_app.command("create")
@handles_errors
def tokens_create(
    name: Annotated[str, typer.Argument(help="A name for the token, e.g. the service's.")],
    scope: Annotated[
        list[str], typer.Option(help=f"Repeat for more: {', '.join(accounts.SCOPES)}.")
    ],
    subject: Annotated[
        str | None, typer.Option(help="Bind the token to one subject; needed for choices:write.")
    ] = None,
    db: Db = config.DATABASE_URL.default or "",
) -> None:
    """Create an API token. Its secret is printed once and stored only as a hash."""
    with _open(db, None) as ledger:
        token, secret = accounts.create_token(ledger, name, scope, subject=subject)
    err.print(
        f"token {token.name!r} ({' '.join(sorted(token.scopes))}) created; keep the "
        "secret below, it is not shown again",
        markup=False,
    )
    sys.stdout.write(secret + "\n")


@tokens_app.command("revoke")
@handles_errors
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    db: Db = config.DATABASE_URL.default or "",
) -> None:
    """Revoke an API token at once."""
    with _open(db, None) as ledger:
        accounts.revoke_token(ledger, name)
    out.print(f"token {name!r} revoked", markup=False)


@receipt_app.command("verify")
@handles_errors
def receipt_verify(
    file: Annotated[Path, typer.Argument(help="A receipt JSON file.")],
    key_dir: Annotated[
        Path | None,
        typer.Option(
            config.KEY_DIR.option,
            envvar=config.KEY_DIR.env,
            help="Check it was signed by this service's key (its folder).",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            config.DATABASE_URL.option,
            envvar=config.DATABASE_URL.env,
            help="Also check the ledger still holds the event and head it names.",
        ),
    ] = None,
) -> None:
    """Check a consent receipt's signature (and, given --db, that the ledger agrees)."""
    try:
        data = json.loads(file.read_text("utf-8"))
    except OSError as e:
        raise InputError(f"{file}: cannot read: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{file}: not JSON: {e}") from None
    key = receipts.ReceiptKey.load(key_dir, create=False) if key_dir else None
    if db:
        with _open(db, None) as ledger:
            problems = receipts.verify(data, key, ledger)
    else:
        problems = receipts.verify(data, key)
    if problems:
        for problem in problems:
            err.print(f"error: {problem}", markup=False)
        raise typer.Exit(1)
    event = data.get("event", {})
    purpose = (data.get("purposes") or [{}])[0].get("purposeId")
    checked = " and the ledger agrees" if db else ""
    out.print(
        f"valid: {data.get('piiPrincipalId')} {event.get('eventState')} for {purpose} "
        f"at {event.get('eventTime')} (ledger seq {data['ledger']['eventSeq']}){checked}",
        markup=False,
    )


# ---- the gate: snapshots, decision exports, lineage ---------------------------------------

snapshot_app = typer.Typer(help="Consented training snapshots (the gate).", no_args_is_help=True)
export_app = typer.Typer(help="Export decisions for other engines.", no_args_is_help=True)
lineage_app = typer.Typer(help="Which snapshots hold whose data.", no_args_is_help=True)
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(export_app, name="export")
app.add_typer(lineage_app, name="lineage")


def _progress(quiet: bool) -> Any:
    """A Rich progress bar on a terminal; nothing when quiet or piped."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    if quiet or not err.is_terminal:
        return None
    return Progress(
        SpinnerColumn(),
        TextColumn("records"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


@snapshot_app.command("build")
@handles_errors
def snapshot_build(
    purpose: Annotated[str, typer.Option(help="The purpose the snapshot is for.")],
    corpus: Annotated[Path, typer.Option(help="A Parquet, JSONL or CSV file, or a folder.")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="The new folder to build the snapshot in.")
    ],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="ISO time the snapshot is as of (default now).")
    ] = None,
    engine: Annotated[
        str, typer.Option(help="The engine: duckdb, or spark (pip install 'askfirst[spark]').")
    ] = "duckdb",
    spark_master: Annotated[
        str | None,
        typer.Option(
            "--spark-master",
            help="With --engine spark: the cluster's master URL (default local[2]).",
        ),
    ] = None,
    on_mention: Annotated[
        str,
        typer.Option(
            "--on-mention",
            help="What to do with a record that mentions someone who did not say yes: "
            "redact the mention, or drop the record.",
        ),
    ] = "redact",
    verify_ledger: Annotated[
        bool, typer.Option("--verify-ledger", help="Verify the whole ledger first.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    db: Db = config.DATABASE_URL.default or "",
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Build the snapshot of a corpus that may be used for a purpose."""
    from askfirst.gate import build_snapshot
    from askfirst.gate.corpus import count_hint

    if spark_master is not None and engine != "spark":
        raise InputError("--spark-master goes with --engine spark")
    bar = _progress(quiet)
    with _open(db, policy) as ledger, bar or contextlib.nullcontext():
        progress = None
        if bar is not None:
            task = bar.add_task("gate", total=count_hint(corpus))
            progress = functools.partial(bar.update, task)
        manifest = build_snapshot(
            ledger,
            purpose,
            corpus,
            out_dir,
            as_of=_time(as_of, "--as-of"),
            engine=engine,
            on_mention=on_mention,
            verify_ledger=verify_ledger,
            progress=(lambda n: progress(completed=n)) if progress else None,
            spark_master=spark_master,
        )
    if as_json:
        _print_json(manifest.to_json())
        return
    out.print(
        f"snapshot {manifest.snapshot_id}\n"
        f"  {manifest.output_records:,} of {manifest.input_records:,} records for "
        f"{manifest.purpose} as of {manifest.as_of}, in {out_dir}\n"
        f"  ledger head {manifest.ledger_head.seq}, "
        f"{manifest.redacted_mentions:,} mentions redacted",
        markup=False,
    )
    for reason, n in manifest.excluded.items():
        if n:
            out.print(f"  excluded {reason}: {n:,}", markup=False)


@snapshot_app.command("list")
@handles_errors
def snapshot_list(
    purpose: Annotated[str | None, typer.Option(help="Only this purpose.")] = None,
    db: Db = config.DATABASE_URL.default or "",
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """The snapshots built, newest first."""
    from askfirst import lineage

    with _open(db, policy) as ledger:
        rows = lineage.list_snapshots(ledger, purpose)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no snapshots yet; build one with 'askfirst snapshot build'")
        return
    table = Table("snapshot", "purpose", "as of", "status", "records", "path")
    for r in rows:
        table.add_row(
            r["snapshot_id"][:16],
            r["purpose"],
            r["as_of"],
            r["status"],
            f"{r['output_records']:,} of {r['input_records']:,}",
            r["path"],
        )
    out.print(table)


@snapshot_app.command("show")
@handles_errors
def snapshot_show(
    snapshot_id: Annotated[
        str, typer.Argument(help="The snapshot id (or its first 8+ characters).")
    ],
    db: Db = config.DATABASE_URL.default or "",
    policy: PolicyFile = None,
) -> None:
    """A snapshot's manifest and where its copies are (JSON)."""
    from askfirst import lineage

    with _open(db, policy) as ledger:
        _print_json(lineage.show(ledger, snapshot_id))


@export_app.command("decisions")
@handles_errors
def export_decisions_cmd(
    purpose: Annotated[str, typer.Option(help="The purpose.")],
    out_file: Annotated[Path, typer.Option("--out", help="The Parquet file to write.")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO time (default now).")] = None,
    for_gate: Annotated[
        bool,
        typer.Option(
            "--for-gate",
            help="The decisions a snapshot as of --as-of uses: yes only if also yes at the "
            "ledger head (a withdrawal since still counts), for engines that filter a "
            "training set themselves.",
        ),
    ] = False,
    db: Db = config.DATABASE_URL.default or "",
    policy: PolicyFile = None,
) -> None:
    """Write every subject's decision (subject, allowed, reason, event_seq) as Parquet."""
    from askfirst.gate import export_decisions

    with _open(db, policy) as ledger:
        n = export_decisions(
            ledger, purpose, out_file, at=_time(as_of, "--as-of"), for_gate=for_gate
        )
    out.print(f"{n:,} decisions written to {out_file}", markup=False)


@lineage_app.command("subject")
@handles_errors
def lineage_subject(
    subject: Annotated[str, typer.Argument(help="The subject id.")],
    db: Db = config.DATABASE_URL.default or "",
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """The snapshots holding a subject's data, with counts and role."""
    from askfirst import lineage

    with _open(db, policy) as ledger:
        if not ledger.subject_exists(subject):
            raise InputError(f"unknown subject {subject!r}")
        rows = lineage.snapshots_of(ledger, subject)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print(f"{subject}: in no snapshot", markup=False)
        return
    table = Table("snapshot", "purpose", "as of", "status", "as author", "as mention")
    for r in rows:
        table.add_row(
            r["snapshot_id"][:16],
            r["purpose"],
            r["as_of"],
            r["status"],
            str(r["author_records"]),
            str(r["mention_records"]),
        )
    out.print(table)


# The commands of withdrawals that reach back: models, tasks, rebuilds, partners, reports.
from askfirst.cli import training as _training  # noqa: E402, F401  (registers them)


def main() -> None:
    try:
        app()
    except StorageError as e:  # pragma: no cover - raised outside a command
        err.print(f"error: {e}", markup=False)
        sys.exit(1)
