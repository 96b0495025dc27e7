"""Withdrawals that reach back: from one ledger event to every snapshot and model it touches.

When an event ends a subject's use for a purpose that reaches back — a withdrawal or an
objection, a GPC signal, a closure, a death, becoming a minor, moving to where consent is
needed — then, in the same transaction as the event itself:

- every snapshot for that purpose holding the subject's data (as author or as a kept
  mention) is marked ``stale``, and the withdrawal is recorded against it;
- every model version trained on such a snapshot gets an open task, "retrain or unlearn
  subject S, snapshot X, shards [...]";
- every research partner that received such a snapshot is owed a notice, queued in the
  outbox (sent later, with retries: see ``askfirst.recipients``).

Whether the event ends the use is not guessed from its type: the subject's decision is
made again at the new head, by the same rules as every other decision. The append holds
the chain's write lock, so concurrent withdrawals are propagated one after another and
none is lost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from askfirst import notices
from askfirst.errors import PolicyError
from askfirst.ledger.events import Event, EventType
from askfirst.ledger.ledger import Ledger
from askfirst.ledger.state import State
from askfirst.ledger.tables import events, model_snapshots, models, snapshots, tasks, withdrawals
from askfirst.lineage import HELD_SNAPSHOTS, holding, shard_key, shards_of
from askfirst.outbox import queue_withdrawn
from askfirst.policy import Policy, load_policy
from askfirst.rules import ALLOWED, Context, evaluate

# Events that can end a use; any other event (a grant, a notice) cannot.
_MAY_END = {EventType.GPC, EventType.STATUS, EventType.MINOR, EventType.JURISDICTION}
_EVENTS_OF = select(*events.c).where(events.c.subject_id == bindparam("sid")).order_by(events.c.seq)


@dataclass
class Propagated:
    """What one append set in motion (for callers and benchmarks)."""

    stale: set[int] = field(default_factory=set)  # snapshots newly marked stale
    withdrawals: int = 0
    tasks: int = 0
    notices: int = 0


def may_end_use(e: Event) -> bool:
    if e.type == EventType.CHOICE:
        return e.value in ("withdraw", "object")
    return e.type in _MAY_END and not (e.type == EventType.STATUS and e.value == "active")


def propagate(conn: Connection, policy: Policy, batch: Sequence[Event]) -> Propagated:
    """Carry the ends of use in ``batch`` (just appended, on ``conn``) back to snapshots,
    models and partners. Runs inside the append's transaction."""
    done = Propagated()
    new_subjects = {e.subject for e in batch if e.type == EventType.SUBJECT}
    last: dict[str, Event] = {}
    for e in batch:
        if e.subject not in new_subjects and may_end_use(e):
            last[e.subject] = e
    if not last:
        return done
    snaps = {row.id: row for row in conn.execute(HELD_SNAPSHOTS)}
    if not snaps:
        return done
    at = batch[-1].recorded_at
    for subject, trigger in last.items():
        held = holding(conn, subject, snaps)
        if held:
            _one_subject(conn, policy, subject, trigger, held, at, done)
    return done


def _one_subject(
    conn: Connection,
    policy: Policy,
    subject: str,
    trigger: Event,
    held: list[Any],
    at: int,
    done: Propagated,
) -> None:
    history = [Event(*row) for row in conn.execute(_EVENTS_OF, {"sid": subject})]
    ended: dict[str, tuple[str, int]] = {}  # purpose -> (reason, event seq)
    for purpose in {row.purpose for row in held}:
        p = policy.purposes.get(purpose)
        if p is None:  # the policy no longer has it: nothing may use it (fail closed)
            ended[purpose] = ("unknown-purpose", trigger.seq)
            continue
        if not p.reaches_back:
            continue
        state = State.fold(history, p.name, p.version)
        reason, seq = evaluate(state, Context(policy, p, at))
        if reason not in ALLOWED:
            ended[purpose] = (str(reason), seq if seq is not None else trigger.seq)
    hit = [row for row in held if row.purpose in ended]
    if not hit:
        return
    already = {
        snap
        for (snap,) in conn.execute(
            select(withdrawals.c.snapshot).where(
                withdrawals.c.subject_id == subject,
                withdrawals.c.snapshot.in_([row.id for row in hit]),
            )
        )
    }
    fresh = [row for row in hit if row.id not in already]
    if fresh:
        conn.execute(
            insert(withdrawals),
            [
                {
                    "snapshot": row.id,
                    "subject_id": subject,
                    "event_seq": ended[row.purpose][1],
                    "reason": ended[row.purpose][0],
                    "recorded_at": at,
                }
                for row in fresh
            ],
        )
        done.withdrawals += len(fresh)
    live = [row.id for row in hit if row.status == "live"]
    if live:
        conn.execute(
            update(snapshots)
            .where(snapshots.c.id.in_(live), snapshots.c.status == "live")
            .values(status="stale", stale_since=at)
        )
        done.stale.update(live)
    done.tasks += open_tasks(conn, subject, hit, trigger.seq, at)
    done.notices += queue_withdrawn(conn, subject, fresh, ended, trigger, at)


def task_role(author_records: int, mention_records: int) -> str:
    roles = [r for r, n in (("author", author_records), ("mention", mention_records)) if n]
    return "+".join(roles)


def task_shards(subject: str, held: Any, shards: int | None) -> list[int] | None:
    """The shards of a model sharded ``shards`` ways that hold the subject's data."""
    if not shards:
        return None
    keys: list[int] = []
    if held.author_records:
        keys.append(shard_key(subject))
    if held.mention_records:
        if held.mention_keys is None:
            return None  # in too many records to list: every shard
        keys.extend(json.loads(held.mention_keys))
    return shards_of(keys, shards)


def open_tasks(conn: Connection, subject: str, held: list[Any], event_seq: int, at: int) -> int:
    """Open a task for every model trained on one of ``held`` (snapshots holding the
    subject), unless that model already has one for it (open, or closed: a model that was
    retrained or unlearned without the subject does not hold them again); returns how
    many were opened."""
    by_snapshot = {row.id: row for row in held}
    trained = conn.execute(
        select(model_snapshots.c.model, model_snapshots.c.snapshot, models.c.shards)
        .join(models, models.c.id == model_snapshots.c.model)
        .where(model_snapshots.c.snapshot.in_(list(by_snapshot)))
    ).all()
    if not trained:
        return 0
    open_now = {
        (m, s)
        for m, s in conn.execute(
            select(tasks.c.model, tasks.c.snapshot).where(tasks.c.subject_id == subject)
        )
    }
    rows = []
    for model, snap, shards in trained:
        if (model, snap) in open_now:
            continue
        h = by_snapshot[snap]
        picked = task_shards(subject, h, shards)
        rows.append(
            {
                "model": model,
                "snapshot": snap,
                "subject_id": subject,
                "role": task_role(h.author_records, h.mention_records),
                "shards": None if picked is None else json.dumps(picked),
                "event_seq": event_seq,
                "opened_at": at,
                "status": "open",
            }
        )
    if rows:
        conn.execute(insert(tasks), rows)
    return len(rows)


def open_ledger(
    url: str, policy: Policy | None = None, *, create: bool = False, publishing: bool = False
) -> Ledger:
    """Open the consent ledger at ``url`` (with ``create``, make or upgrade its schema),
    checked against ``policy`` (default: the shipped one), with reaching back installed:
    every append carries its ends of use back in its own transaction. The way to open a
    ledger; ``Ledger.open`` needs to be told what to run after an append.

    The policy must agree with the notices published in the ledger (``notices.bind``:
    PolicyError naming both if not); with ``publishing``, a policy one version ahead of
    them is taken as it is, to be published (``notices.publish``)."""
    ledger = Ledger.open(url, policy or load_policy(), create=create, after_append=propagate)
    try:
        versions = notices.published(ledger.engine)
        try:
            ledger.policy = notices.bind(ledger.policy, versions)
        except PolicyError:
            if not publishing:
                raise
    except BaseException:
        ledger.close()
        raise
    return ledger
