"""Commands for the gate: build, list and show snapshots, export decisions for other
engines, and the lineage of a subject's data."""

import contextlib
import functools
from pathlib import Path
from typing import Annotated

import typer

from askfirst import config
from askfirst.cli.common import (
    DB_DEFAULT,
    Db,
    Json,
    KeyDir,
    PolicyFile,
    Quiet,
    handles_errors,
    ledger_from,
    out,
    parse_time,
    print_json,
    print_rows,
    progress,
)
from askfirst.errors import InputError

snapshot_app = typer.Typer(help="Consented training snapshots (the gate).", no_args_is_help=True)
export_app = typer.Typer(help="Export decisions for other engines.", no_args_is_help=True)
lineage_app = typer.Typer(help="Which snapshots hold whose data.", no_args_is_help=True)


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
    quiet: Quiet = False,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    key_dir: KeyDir = Path(config.KEY_DIR.default or ""),
    as_json: Json = False,
) -> None:
    """Build the snapshot of a corpus that may be used for a purpose (once a subject has
    been erased, with the key folder, whose names key finds their names)."""
    from askfirst.gate import build_snapshot
    from askfirst.gate.corpus import count_hint

    if spark_master is not None and engine != "spark":
        raise InputError("--spark-master goes with --engine spark")
    bar = progress(quiet)
    with ledger_from(db, policy) as ledger, bar or contextlib.nullcontext():
        update = None
        if bar is not None:
            task = bar.add_task("gate", total=count_hint(corpus))
            update = functools.partial(bar.update, task)
        manifest = build_snapshot(
            ledger,
            purpose,
            corpus,
            out_dir,
            as_of=parse_time(as_of, "--as-of"),
            engine=engine,
            on_mention=on_mention,
            verify_ledger=verify_ledger,
            progress=(lambda n: update(completed=n)) if update else None,
            spark_master=spark_master,
            key_dir=key_dir,
        )
    if as_json:
        print_json(manifest.to_json())
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
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """The snapshots built, newest first (piped: whole values, tab-separated)."""
    from askfirst import lineage

    with ledger_from(db, policy) as ledger:
        rows = lineage.list_snapshots(ledger, purpose)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no snapshots yet; build one with 'askfirst snapshot build'")
        return
    print_rows(
        ("snapshot", "purpose", "as of", "status", "records", "path"),
        (
            (
                r["snapshot_id"],
                r["purpose"],
                r["as_of"],
                r["status"],
                f"{r['output_records']:,} of {r['input_records']:,}",
                r["path"],
            )
            for r in rows
        ),
        abbreviate={"snapshot": 16},
    )


@snapshot_app.command("show")
@handles_errors
def snapshot_show(
    snapshot_id: Annotated[
        str, typer.Argument(help="The snapshot id (or its first 8+ characters).")
    ],
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """A snapshot's manifest and where its copies are (JSON)."""
    from askfirst import lineage

    with ledger_from(db, policy) as ledger:
        print_json(lineage.show(ledger, snapshot_id))


@snapshot_app.command("reconcile")
@handles_errors
def snapshot_reconcile(
    folder: Annotated[
        list[Path] | None,
        typer.Option("--folder", help="Also clear killed builds' hidden folders here."),
    ] = None,
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """Finish what killed builds left (every build does this first): remove their
    registry entries and folders, never a committed snapshot (JSON)."""
    from askfirst.gate.build import reconcile

    with ledger_from(db, policy) as ledger:
        print_json(reconcile(ledger, folder or []).to_json())


@export_app.command("decisions")
@handles_errors
def export_decisions(
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
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
) -> None:
    """Write every subject's decision (subject, allowed, reason, event_seq) as Parquet."""
    from askfirst import gate

    with ledger_from(db, policy) as ledger:
        n = gate.export_decisions(
            ledger, purpose, out_file, at=parse_time(as_of, "--as-of"), for_gate=for_gate
        )
    out.print(f"{n:,} decisions written to {out_file}", markup=False)


@lineage_app.command("subject")
@handles_errors
def lineage_subject(
    subject: Annotated[str, typer.Argument(help="The subject id.")],
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    as_json: Json = False,
) -> None:
    """The snapshots holding a subject's data, with counts and role (piped: whole values,
    tab-separated)."""
    from askfirst import lineage

    with ledger_from(db, policy) as ledger:
        if not ledger.subject_exists(subject):
            raise InputError(f"unknown subject {subject!r}")
        rows = lineage.snapshots_of(ledger, subject)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(f"{subject}: in no snapshot", markup=False)
        return
    print_rows(
        ("snapshot", "purpose", "as of", "status", "as author", "as mention"),
        (
            (
                r["snapshot_id"],
                r["purpose"],
                r["as_of"],
                r["status"],
                str(r["author_records"]),
                str(r["mention_records"]),
            )
            for r in rows
        ),
        abbreviate={"snapshot": 16},
    )
