"""The demo platform: a small network on embedded SQLite, and a walk through askfirst.

``askfirst demo`` creates (or reuses) a folder with a ledger, registers members across
opt-in and opt-out places, records what they chose, and shows the decisions with their
reasons, a withdrawal taking effect at once, and the ledger verifying.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from askfirst import times
from askfirst.decisions import EXPLAIN, decide, decide_many
from askfirst.ledger import Ledger, NewEvent, SubjectIn
from askfirst.policy import load_policy

PURPOSE = "genai-training"

MEMBERS = [
    SubjectIn(id="m-anna", jurisdiction="DE", handle="anna.k", names=["Anna Keller"]),
    SubjectIn(id="m-luc", jurisdiction="FR", handle="lucm", names=["Luc Martin"]),
    SubjectIn(id="m-priya", jurisdiction="IN", handle="priya", names=["Priya Raman"]),
    SubjectIn(id="m-jo", jurisdiction="US-CA", handle="jo", names=["Jo Rivera"]),
    SubjectIn(id="m-sam", jurisdiction="US-TX", handle="samw", names=["Sam Walker"]),
    SubjectIn(id="m-ines", jurisdiction="BR", handle="ines", names=["Inês Costa"]),
    SubjectIn(id="m-olu", jurisdiction="GB", handle="olu", names=["Olu Adeyemi"]),
    SubjectIn(id="m-mia", jurisdiction="US-NY", handle="mia", birth_date=None, minor=True),
    SubjectIn(id="m-hans", jurisdiction="CH", handle="hans", names=["Hans Weber"]),
    SubjectIn(id="m-kai", jurisdiction="DE", handle="kai", names=["Kai Braun"]),
    SubjectIn(id="org-acme", kind="organization", jurisdiction="US", handle="acme"),
    SubjectIn(id="p-rosa", kind="person", names=["Rosa Diaz"]),
]


def _choice(subject: str, action: str, at: int) -> NewEvent:
    return NewEvent(
        type="choice",
        subject=subject,
        actor=subject,
        source="demo",
        purpose=PURPOSE,
        value=action,
        recorded_at=at,
    )


def _seed(ledger: Ledger) -> None:
    start = times.now() - timedelta(days=120)
    ledger.register(MEMBERS, actor="system:demo", source="demo", since=start)
    t = times.to_micros(start)
    day = 86_400 * times.MICROS
    ledger.append_many(
        [
            _choice("m-anna", "grant", t + 10 * day),
            _choice("m-priya", "grant", t + 11 * day),
            _choice("m-jo", "grant", t + 12 * day),
            _choice("m-mia", "grant", t + 13 * day),
            _choice("m-olu", "grant", t + 14 * day),
            _choice("p-rosa", "object", t + 15 * day),
            NewEvent(
                type="gpc",
                subject="m-jo",
                actor="m-jo",
                source="demo",
                value="1",
                recorded_at=t + 20 * day,
            ),
            _choice("m-kai", "grant", t + 30 * day),
            NewEvent(
                type="status",
                subject="m-kai",
                actor="system:demo",
                source="demo",
                value="deceased",
                recorded_at=t + 60 * day,
            ),
        ]
    )


def _table(ledger: Ledger, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("subject", "lives in", "used?", "reason", "why"):
        table.add_column(col)
    where = {m.id: m.jurisdiction or "unknown" for m in MEMBERS}
    for row in decide_many(ledger, PURPOSE, [m.id for m in MEMBERS]).to_pylist():
        table.add_row(
            row["subject"],
            where[row["subject"]],
            "[green]yes[/]" if row["allowed"] else "[red]no[/]",
            row["reason"],
            EXPLAIN[row["reason"]],
        )
    return table


def run(folder: Path, out: Console) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'askfirst.db'}"
    with Ledger.open(url, load_policy(), create=True) as ledger:
        fresh = ledger.head().seq == 0
        if fresh:
            _seed(ledger)
        out.print(
            f"[bold]askfirst demo[/] — a ledger at {folder / 'askfirst.db'}"
            + ("" if fresh else " (reused)")
        )
        out.print(
            f"Purpose [bold]{PURPOSE}[/]: "
            f"{ledger.policy.purpose(PURPOSE).title}. Off by default, everywhere.\n"
        )
        out.print(_table(ledger, "Who may be used, and why"))

        before = decide(ledger, "m-anna", PURPOSE)
        ev = ledger.append(
            NewEvent(
                type="choice",
                subject="m-anna",
                actor="m-anna",
                source="demo",
                purpose=PURPOSE,
                value="grant" if not before.allowed else "withdraw",
            )
        )
        after = decide(ledger, "m-anna", PURPOSE)
        out.print(
            f"\nm-anna changes her mind ({ev.value}, ledger seq {ev.seq}): "
            f"was {before.reason}, now [bold]{after.reason}[/] — at once, one action."
        )
        report = ledger.verify()
        head = ledger.head()
        status = "[green]verified[/]" if report.ok else "[red]FAILED[/]"
        out.print(
            f"Ledger {status}: {report.events_checked} events, head {head.seq} {head.hash[:16]}…"
        )
    out.print(
        "\nTry it yourself:\n"
        f"  askfirst decide --db {url} --subject m-jo --purpose {PURPOSE}\n"
        f"  askfirst record withdraw --db {url} --subject m-priya --purpose {PURPOSE}\n"
        f"  askfirst events list --db {url} --subject m-jo\n"
        f"  askfirst ledger verify --db {url}"
    )
