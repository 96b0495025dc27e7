""" "Your data in AI": which snapshots and models used a member's data, and what happened
after they said no — as plain data for the page, its JSON twin and the API.

For each snapshot holding the subject's data (as author, or as someone mentioned in
another member's post): when it was built and as of when, under which choice the data
went in, and — once the member withdrew — whether it was rebuilt without them; for each
model version trained on it, whether its retraining or unlearning is pending or done.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from askfirst import lineage, times
from askfirst.decisions import decide
from askfirst.ledger.ledger import Ledger
from askfirst.ledger.tables import model_snapshots, models, snapshots, tasks, withdrawals
from askfirst.privacy import day, in_words, profile

ROLE_WORDS = {
    "author": "your own content",
    "mention": "other members' posts that mention you",
    "author+mention": "your own content, and other members' posts that mention you",
}


def _snapshot_story(entry: dict[str, Any], withdrawal: Any | None) -> str:
    if entry["status"] == "retired":
        when = day(times.to_micros(times.parse(entry["retired_at"])))
        if withdrawal is not None:
            return f"Rebuilt without your data on {when}; the old copy was deleted."
        return f"Rebuilt on {when}; the old copy was deleted."
    if withdrawal is not None:
        return (
            f"Waiting to be rebuilt without your data since {day(withdrawal.recorded_at)}. "
            "It may not be used meanwhile."
        )
    return "In use."


def _model_story(task: Any | None, withdrawal: Any | None) -> str:
    if task is None:
        return (
            "Trained with your data, which you allowed."
            if withdrawal is None
            else ("Trained with your data.")
        )
    if task.status == "open":
        return f"Retraining or unlearning pending since {day(task.opened_at)}."
    return f"Retrained or unlearned without your data on {day(task.closed_at)}."


def data_in_ai(ledger: Ledger, subject: str) -> dict[str, Any]:
    """Everything the "Your data in AI" page shows for ``subject``, JSON-ready."""
    profile(ledger, subject)  # UnknownSubject if there is no such subject
    held = lineage.snapshots_of(ledger, subject)
    numbers = [h["number"] for h in held]
    with ledger.engine.connect() as conn:
        withdrawn = {
            w.snapshot: w
            for w in conn.execute(
                select(withdrawals).where(
                    withdrawals.c.subject_id == subject, withdrawals.c.snapshot.in_(numbers)
                )
            )
        }
        trained = conn.execute(
            select(model_snapshots.c.snapshot, models)
            .join(models, models.c.id == model_snapshots.c.model)
            .where(model_snapshots.c.snapshot.in_(numbers))
            .order_by(models.c.id)
        ).all()
        task_rows = {
            (t.model, t.snapshot): t
            for t in conn.execute(
                select(tasks).where(tasks.c.subject_id == subject).order_by(tasks.c.id)
            )
        }
        q = select(snapshots.c.id, snapshots.c.purpose).where(snapshots.c.id.in_(numbers))
        purposes_of = {n: p for n, p in conn.execute(q)}
    out = []
    for h in held:
        p = ledger.policy.purposes.get(h["purpose"])
        d = decide(ledger, subject, purposes_of[h["number"]], times.parse(h["as_of"]))
        choice_event = None
        if d.event_seq is not None:
            found = ledger.events(after=d.event_seq - 1, limit=1)
            choice_event = found[0] if found else None
        w = withdrawn.get(h["number"])
        role = "+".join(h["roles"])
        model_list = []
        for row in trained:
            if row.snapshot != h["number"]:
                continue
            t = task_rows.get((row.id, h["number"]))
            model_list.append(
                {
                    "name": row.name,
                    "version": row.version,
                    "owner": row.owner,
                    "registered_at": times.iso(row.created_at),
                    "task": None
                    if t is None
                    else {
                        "id": t.id,
                        "status": t.status,
                        "opened_at": times.iso(t.opened_at),
                        "closed_at": times.iso(t.closed_at) if t.closed_at is not None else None,
                        "note": t.note,
                    },
                    "in_words": _model_story(t, w),
                }
            )
        out.append(
            {
                "snapshot_id": h["snapshot_id"],
                "purpose": h["purpose"],
                "purpose_title": p.title if p else h["purpose"],
                "as_of": h["as_of"],
                "built_at": h["created_at"],
                "status": h["status"],
                "role": role,
                "role_in_words": ROLE_WORDS.get(role, role),
                "author_records": h["author_records"],
                "mention_records": h["mention_records"],
                "included_under": {
                    "reason": str(d.reason),
                    "event_seq": d.event_seq,
                    "in_words": in_words(d, choice_event, ledger.policy),
                },
                "withdrawn": None
                if w is None
                else {"at": times.iso(w.recorded_at), "reason": w.reason, "event_seq": w.event_seq},
                "rebuilt_as": h.get("replaced_by"),
                "in_words": _snapshot_story(h, w),
                "models": model_list,
            }
        )
    pending = sum(
        1 for s in out for m in s["models"] if m["task"] and m["task"]["status"] == "open"
    )
    return {
        "subject": subject,
        "snapshots": out,
        "summary": {
            "snapshots": len(out),
            "snapshots_waiting_for_rebuild": sum(
                1 for s in out if s["withdrawn"] and s["status"] != "retired"
            ),
            "models": len({(m["name"], m["version"]) for s in out for m in s["models"]}),
            "retraining_pending": pending,
        },
    }
