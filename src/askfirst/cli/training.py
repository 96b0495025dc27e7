"""Commands for what happens after a snapshot is built: the model registry, retraining
tasks, rebuilds, research partners and their notices, and the reports."""

import contextlib
import functools
from pathlib import Path
from typing import Annotated, Any

import typer

from askfirst import config
from askfirst.cli.common import (
    DB_DEFAULT,
    Db,
    Json,
    KeyDir,
    PolicyFile,
    Quiet,
    err,
    handles_errors,
    ledger_from,
    out,
    print_json,
    print_rows,
    progress,
)
from askfirst.cli.gate import snapshot_app
from askfirst.errors import InputError

model_app = typer.Typer(help="Model versions and the snapshots they were trained on.")
task_app = typer.Typer(help="Retraining / unlearning tasks opened by withdrawals.")
recipient_app = typer.Typer(help="Research partners who receive snapshots.")
outbox_app = typer.Typer(
    help="Notices owed to research partners (signed webhooks) and to members (e-mail)."
)
report_app = typer.Typer(help="Training-content summaries and subject access reports.")
for sub in (model_app, task_app, recipient_app, outbox_app, report_app):
    sub.info.no_args_is_help = True

Actor = Annotated[str, typer.Option(help="Who is doing this, as the records will name them.")]


# ---- models -------------------------------------------------------------------------------


@model_app.command("register")
@handles_errors
def model_register(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[str, typer.Argument(help="This version.")],
    snapshot: Annotated[
        list[str],
        typer.Option("--snapshot", help="A snapshot it was trained on (repeat for more)."),
    ],
    owner: Annotated[
        str | None, typer.Option(help="Who answers for retraining it (an email address).")
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(help="Trained in N shards by shard_key % N (SISA), so tasks name shards."),
    ] = None,
    actor: Actor = "system",
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Record which snapshots a model version was trained on."""
    from askfirst.models import register_model

    with ledger_from(db, policy) as ledger:
        m = register_model(ledger, name, version, snapshot, owner=owner, shards=shards, actor=actor)
    if as_json:
        print_json(m)
        return
    out.print(
        f"model {m['name']} {m['version']}: trained on {len(m['snapshots'])} snapshot(s)",
        markup=False,
    )
    if m["tasks_closed_now"]:
        out.print(f"  closed {m['tasks_closed_now']} task(s) it settles", markup=False)
    if m["tasks_opened_now"]:
        out.print(
            f"  warning: opened {m['tasks_opened_now']} task(s): a snapshot it names is stale",
            markup=False,
        )


@model_app.command("list")
@handles_errors
def model_list(
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """The registered model versions, newest first."""
    from askfirst.models import list_models

    with ledger_from(db, policy) as ledger:
        rows = list_models(ledger)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no models yet; register one with 'askfirst model register'")
        return
    print_rows(
        ("model", "version", "owner", "shards", "snapshots", "open tasks"),
        (
            (
                r["name"],
                r["version"],
                r["owner"] or "",
                str(r["shards"] or ""),
                ", ".join(s["snapshot_id"] for s in r["snapshots"]),
                str(r["open_tasks"]),
            )
            for r in rows
        ),
        abbreviate={"snapshots": 12},
    )


# ---- tasks --------------------------------------------------------------------------------


@task_app.command("list")
@handles_errors
def task_list(
    status: Annotated[str, typer.Option(help="open, closed or all.")] = "open",
    subject: Annotated[str | None, typer.Option(help="Only this subject's.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's (by name).")] = None,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Retraining / unlearning tasks, oldest first, with their age."""
    from askfirst.models import list_tasks

    if status not in ("open", "closed", "all"):
        raise InputError(f"--status {status!r}: use open, closed or all")
    with ledger_from(db, policy) as ledger:
        rows = list_tasks(
            ledger, status=None if status == "all" else status, subject=subject, model=model
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(f"no {'' if status == 'all' else status + ' '}tasks")
        return
    print_rows(
        ("task", "status", "age (days)", "model", "what"),
        (
            (
                str(r["id"]),
                r["status"],
                f"{r['age_days']:.1f}",
                f"{r['model']['name']} {r['model']['version']}",
                r["what"],
            )
            for r in rows
        ),
    )


@task_app.command("close")
@handles_errors
def task_close(
    task_id: Annotated[int, typer.Argument(help="The task's number.")],
    note: Annotated[str, typer.Option(help="What was done (or why nothing is needed).")],
    actor: Actor = "system",
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """Close a task by hand, with a note."""
    from askfirst.models import close_task

    with ledger_from(db, policy) as ledger:
        t = close_task(ledger, task_id, note, actor=actor)
    out.print(f"task {t['id']} closed: {t['note']}", markup=False)


# ---- rebuilds and deliveries --------------------------------------------------------------


@snapshot_app.command("rebuild")
@handles_errors
def snapshot_rebuild(
    snapshot_id: Annotated[
        str | None, typer.Argument(help="The snapshot to rebuild (or its first 8+ characters).")
    ] = None,
    stale: Annotated[bool, typer.Option("--stale", help="Rebuild every stale snapshot.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where to build (default: NAME.r2 beside it).")
    ] = None,
    quiet: Quiet = False,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    key_dir: KeyDir = Path(config.KEY_DIR.default or ""),
    as_json: Json = False,
) -> None:
    """Rebuild a snapshot against today's ledger; retire the old one and delete its data."""
    from askfirst.gate.rebuild import rebuild_snapshot, rebuild_stale

    if stale == (snapshot_id is not None):
        raise InputError("name one snapshot to rebuild, or give --stale")
    if stale and out_dir is not None:
        raise InputError("--out goes with one snapshot, not with --stale")
    bar = progress(quiet)
    with ledger_from(db, policy) as ledger, bar or contextlib.nullcontext():
        counted = None
        if bar is not None:
            task = bar.add_task("gate", total=None)
            update = functools.partial(bar.update, task)
            counted = lambda n: update(completed=n)  # noqa: E731
        if stale:
            done = rebuild_stale(ledger, progress=counted, key_dir=key_dir)
        else:
            assert snapshot_id is not None
            done = rebuild_snapshot(
                ledger, snapshot_id, out=out_dir, progress=counted, key_dir=key_dir
            )
    if as_json:
        print_json([d.to_json() for d in done])
        return
    if not done:
        out.print("no stale snapshots")
    for d in done:
        out.print(
            f"snapshot {d.old_id[:16]} rebuilt as {d.new.snapshot_id[:16]} in {d.path}\n"
            f"  {d.new.output_records:,} records; the old one is retired and its "
            f"{d.deleted_files} data file(s) deleted",
            markup=False,
        )


@snapshot_app.command("deliver")
@handles_errors
def snapshot_deliver(
    snapshot_id: Annotated[str, typer.Argument(help="The snapshot given to the partner.")],
    to: Annotated[str, typer.Option("--to", help="The partner's name.")],
    actor: Actor = "system",
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """Record that a research partner received a snapshot (so withdrawals reach them)."""
    from askfirst.recipients import record_delivery

    with ledger_from(db, policy) as ledger:
        d = record_delivery(ledger, snapshot_id, to, actor=actor)
    out.print(f"recorded: {d['recipient']} received snapshot {d['snapshot_id'][:16]}", markup=False)


# ---- partners and the outbox --------------------------------------------------------------


@recipient_app.command("add")
@handles_errors
def recipient_add(
    name: Annotated[str, typer.Argument(help="The partner's name.")],
    url: Annotated[str, typer.Option(help="The partner's webhook URL for notices.")],
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """Register a research partner; prints its signing secret once."""
    from askfirst.recipients import add_recipient

    with ledger_from(db, policy) as ledger:
        r, secret = add_recipient(ledger, name, url)
    out.print(
        f"partner {r['name']} added; notices go to {r['url']}\n"
        f"signing secret (shown once; give it to the partner): {secret}",
        markup=False,
    )


@recipient_app.command("list")
@handles_errors
def recipient_list(
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """The research partners, with what they received and the notices still owed."""
    from askfirst.recipients import list_recipients

    with ledger_from(db, policy) as ledger:
        rows = list_recipients(ledger)
    if as_json:
        print_json(rows)
        return
    print_rows(
        ("partner", "webhook", "snapshots received", "notices pending"),
        (
            (r["name"], r["url"], str(r["snapshots_received"]), str(r["notices_pending"]))
            for r in rows
        ),
    )


@outbox_app.command("run")
@handles_errors
def outbox_run(
    until_empty: Annotated[
        bool, typer.Option("--until-empty", help="Stop once every notice is delivered.")
    ] = False,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", help="Stop after this long.")
    ] = None,
    base_delay: Annotated[
        float, typer.Option("--base-delay", help="First retry after this many seconds.")
    ] = 1.0,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    key_dir: KeyDir = Path(config.KEY_DIR.default or ""),
    as_json: Json = False,
) -> None:
    """Send the notices owed to partners, retrying with backoff while they are down, and
    the notices owed to members by e-mail when ASKFIRST_SMTP_URL is set (beside them).

    With --until-empty, the exit code is 3 if --max-seconds ran out first."""
    import threading

    from askfirst import mail
    from askfirst.recipients import run_outbox

    if base_delay <= 0:
        raise InputError("--base-delay must be more than 0 seconds")
    smtp = mail.Smtp.from_env()
    with ledger_from(db, policy) as ledger:
        mailed: list[mail.MailSent] = []
        failed: list[BaseException] = []
        mailer = None
        if smtp is not None:
            secret = mail.one_click_secret(key_dir)

            def send_mail() -> None:
                try:
                    mailed.append(
                        mail.run(
                            ledger,
                            smtp,
                            secret,
                            until_empty=until_empty,
                            max_seconds=max_seconds,
                            base_delay_s=base_delay,
                        )
                    )
                except BaseException as e:  # raised again in the command's own thread
                    failed.append(e)

            mailer = threading.Thread(target=send_mail, name="askfirst-mail", daemon=True)
            mailer.start()
        sent = run_outbox(
            ledger, until_empty=until_empty, max_seconds=max_seconds, base_delay_s=base_delay
        )
        if mailer is not None:
            mailer.join()
        if failed:
            raise failed[0]
        unsent = mail.pending(ledger) if smtp is None else 0
    sent_mail = mailed[0] if mailed else None
    if as_json:
        print_json(
            {**sent.to_json(), "mail": sent_mail.to_json() if sent_mail is not None else None}
        )
    else:
        out.print(
            f"delivered {sent.delivered}, failed tries {sent.failed}, still owed {sent.pending}",
            markup=False,
        )
        if sent_mail is not None:
            out.print(
                f"mail: sent {sent_mail.sent}, failed tries {sent_mail.failed}, dropped "
                f"{sent_mail.dropped} (no longer owed), still owed {sent_mail.pending}",
                markup=False,
            )
        elif unsent:
            out.print(
                f"mail: {unsent} e-mail(s) queued, not sent: set {config.SMTP_URL.env} "
                f"(and {config.MAIL_FROM.env}, {config.BASE_URL.env})",
                markup=False,
            )
    owed = sent.pending + (sent_mail.pending if sent_mail is not None else 0)
    if until_empty and owed:  # stopped by --max-seconds with notices still owed
        err.print(f"error: {owed} notice(s) still owed; run again later", markup=False)
        raise typer.Exit(3)


@outbox_app.command("list")
@handles_errors
def outbox_list(
    pending: Annotated[bool, typer.Option("--pending", help="Only those still owed.")] = False,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (as this command always does).")
    ] = False,
) -> None:
    """The notices, newest first (JSON)."""
    from askfirst.recipients import list_outbox

    with ledger_from(db, policy) as ledger:
        print_json(list_outbox(ledger, pending_only=pending))


# ---- reports ------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot write ({e.strerror})") from None


@report_app.command("training-content")
@handles_errors
def report_training_content(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[str, typer.Argument(help="Its version.")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the .md and .json files.")
    ] = Path("."),
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """The public summary of a model's training content (EU AI Act Art. 53(1)(d))."""
    import json

    from askfirst.reports import training_content, training_content_markdown

    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a folder; create it first")
    with ledger_from(db, policy) as ledger:
        report = training_content(ledger, name, version)
    stem = "training-content-" + "".join(
        c if c.isalnum() or c in "._-" else "_" for c in f"{name}-{version}"
    )
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    _write(js, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _write(md, training_content_markdown(report))
    out.print(f"wrote {md} and {js}", markup=False)


@report_app.command("subject")
@handles_errors
def report_subject(
    subject: Annotated[str, typer.Argument(help="The subject id.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the JSON here (default: print it).")
    ] = None,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """Everything askfirst holds about a subject (GDPR access request), as JSON."""
    import json

    from askfirst.reports import subject_report

    with ledger_from(db, policy) as ledger:
        report: dict[str, Any] = subject_report(ledger, subject)
    if out_file is None:
        print_json(report)
        return
    _write(out_file, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    out.print(f"wrote {out_file}", markup=False)
