"""The ``askfirst`` command: one small function per command, each calling the library.

This module assembles the app from the command modules (``ledger``, ``web``, ``gate``,
``training``), which share ``common``: the options, opening the ledger, and the output.
Library errors become one line on stderr and a non-zero exit code, never a traceback.

Every command runs in a fresh process, so start-up counts: the library loads inside the
commands, and the command modules leave out ``from __future__ import annotations`` (Typer
reads every command's annotations on each run; strings would be compiled again each time).
"""

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from askfirst import config, times
from askfirst.cli import cases, gate, notices, training, web
from askfirst.cli import ledger as ledger_commands
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
)
from askfirst.errors import InputError, StorageError

app = typer.Typer(
    help="askfirst: use members' content for AI and research only with their say-so.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: Rich markup would eat "[spark]" in "pip install 'askfirst[spark]'".
    rich_markup_mode=None,
)
receipt_app = typer.Typer(help="Consent receipts.", no_args_is_help=True)
# askfirst.receipts.WELL_KNOWN, written out: importing the receipts (and the ledger) to
# write --help would slow every command (tests/test_startup.py checks they agree).
WELL_KNOWN = "/.well-known/askfirst-receipt-keys.json"

app.command()(ledger_commands.init)


@app.command()
@handles_errors
def record(
    action: Annotated[
        Literal["grant", "withdraw", "object"], typer.Argument(help="grant, withdraw or object.")
    ],
    subject: Annotated[str, typer.Option(help="The subject whose choice this is.")],
    purpose: Annotated[str, typer.Option(help="The purpose, e.g. genai-training.")],
    actor: Annotated[str | None, typer.Option(help="Who acts (default: the subject).")] = None,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """Record a member's choice for one purpose (saying again what it already is
    records nothing, and says so)."""
    from askfirst import privacy

    with ledger_from(db, policy) as ledger:
        made = privacy.choose(
            ledger, subject, purpose, action, actor=actor or subject, source="cli"
        )
    ev = made.event
    if as_json:
        print_json({**ev.to_json(), "changed": made.changed})
    elif made.changed:
        out.print(
            f"recorded seq {ev.seq}: {subject} {action} {purpose} "
            f"(notice v{ev.notice_version}, actor {ev.actor}, hash {ev.hash[:16]})",
            markup=False,
        )
    else:
        out.print(
            f"unchanged: {subject} already said {action} to {purpose} (seq {ev.seq}, "
            f"{times.iso(ev.recorded_at)}); nothing new was recorded",
            markup=False,
        )


app.command("decide")(ledger_commands.decide)
app.command()(web.serve)
app.command()(web.demo)
for sub, name in (
    (ledger_commands.policy_app, "policy"),
    (ledger_commands.subjects_app, "subjects"),
    (ledger_commands.events_app, "events"),
    (ledger_commands.ledger_app, "ledger"),
    (web.staff_app, "staff"),
    (web.accounts_app, "accounts"),
    (web.tokens_app, "tokens"),
    (receipt_app, "receipt"),
    (gate.snapshot_app, "snapshot"),
    (gate.export_app, "export"),
    (gate.lineage_app, "lineage"),
    (training.model_app, "model"),
    (training.task_app, "task"),
    (training.recipient_app, "recipient"),
    (training.outbox_app, "outbox"),
    (training.report_app, "report"),
    (notices.notice_app, "notice"),
    (cases.case_app, "case"),
):
    app.add_typer(sub, name=name)


@receipt_app.command("verify")
@handles_errors
def receipt_verify(
    file: Annotated[Path, typer.Argument(help="A receipt JSON file.")],
    key_dir: Annotated[
        Path | None,
        typer.Option(
            config.KEY_DIR.option,
            envvar=config.KEY_DIR.env,
            help="Trust the keys in the service's key folder (its current and retired keys).",
        ),
    ] = None,
    keys_url: Annotated[
        str | None,
        typer.Option(
            "--keys-url",
            help=f"Trust the keys the service publishes, e.g. https://HOST{WELL_KNOWN}.",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            config.DATABASE_URL.option,
            envvar=config.DATABASE_URL.env,
            help="Trust the keys the ledger recorded, and check that its event says what "
            "the receipt says.",
        ),
    ] = None,
) -> None:
    """Check a consent receipt: signed by a key of the service's, and (given --db) the
    ledger's event says what the receipt says."""
    from askfirst import receipts

    try:
        data = json.loads(file.read_text("utf-8"))
    except OSError as e:
        raise InputError(f"{file}: cannot read: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{file}: not JSON: {e}") from None
    if not (key_dir or keys_url or db):  # a signature alone proves only that some key signed
        raise InputError(
            "nothing says which keys are the service's: give --keys-url "
            f"https://HOST{receipts.WELL_KNOWN}, --key-dir DIR or --db URL"
        )
    anchors = [receipts.KeySet.from_folder(key_dir)] if key_dir else []
    if keys_url:
        anchors.append(receipts.KeySet.from_url(keys_url))
    if db:
        with ledger_from(db, None) as ledger:
            problems = receipts.verify(data, anchors, ledger)
    else:
        problems = receipts.verify(data, anchors)
    if problems:
        for problem in problems:
            err.print(f"error: {problem}", markup=False)
        raise typer.Exit(1)
    event = data.get("event", {})
    purpose = (data.get("purposes") or [{}])[0].get("purposeId")
    checked = " and the ledger agrees" if db else ""
    out.print(
        f"valid: {data.get('piiPrincipalId')} {event.get('eventState')} for {purpose} "
        f"at {event.get('eventTime')} (ledger seq {data['ledger']['eventSeq']}, key "
        f"{data['signature']['keyId']}){checked}",
        markup=False,
    )


@receipt_app.command("new-key")
@handles_errors
def receipt_new_key(
    key_dir: KeyDir = Path(config.KEY_DIR.default or ""),
    db: Db = DB_DEFAULT,
) -> None:
    """Rotate the receipt-signing key: make a new one and record it in the ledger. The old
    key stays recorded and published, so its receipts still verify; restart the server
    to sign with the new one."""
    from askfirst import receipts

    with ledger_from(db, None) as ledger:
        key, event = receipts.new_key(ledger, key_dir)
    where = f"ledger seq {event.seq}" if event else "already in the ledger"
    out.print(f"new receipt signing key {key.key_id} in {key_dir} ({where})", markup=False)


def main() -> None:
    try:
        app()
    except StorageError as e:  # pragma: no cover - raised outside a command
        err.print(f"error: {e}", markup=False)
        sys.exit(1)
