"""The model registry, and the retraining / unlearning tasks a withdrawal opens.

A model version names the snapshots it was trained on. When a subject's data must no
longer be used, every model version trained on a snapshot holding it gets an open task
(``askfirst.propagation``). A task closes when a new version of the same model is
registered, trained on a snapshot rebuilt from that one without the subject's data — or
when someone closes it by hand, with a note saying why.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from askfirst import lineage, times
from askfirst.errors import InputError, NotFound
from askfirst.ledger import store
from askfirst.ledger.ledger import Ledger
from askfirst.ledger.tables import lineage as lineage_t
from askfirst.ledger.tables import model_snapshots, models, snapshots, tasks, withdrawals
from askfirst.lineage import holding
from askfirst.propagation import open_tasks

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
MAX_SHARDS = 65_536


def _check(name: str, version: str, snapshot_ids: list[str], shards: int | None) -> None:
    if not _NAME.match(name):
        raise InputError(f"model name {name!r}: use letters, digits and . _ : / @ + -")
    if not _VERSION.match(version):
        raise InputError(f"model version {version!r}: use letters, digits and . _ + -")
    if not snapshot_ids:
        raise InputError("name at least one snapshot the model was trained on (--snapshot)")
    if shards is not None and not 1 <= shards <= MAX_SHARDS:
        raise InputError(f"shards {shards}: give a number from 1 to {MAX_SHARDS}")


def _trained_on(conn: Connection, snapshot_id: str) -> Any:
    """The copy of a snapshot a model names: the newest whose data still exists."""
    rows = lineage.resolve(conn, snapshot_id)
    held = [r for r in rows if r.status != "retired"]
    if not held:
        newer = lineage.links(conn, rows).get(rows[-1].replaced_by or 0)
        hint = f"; it was rebuilt as {newer[:16]}" if newer else ""
        raise InputError(f"snapshot {rows[-1].snapshot_id[:16]} is retired{hint}")
    return held[-1]


def register_model(
    ledger: Ledger,
    name: str,
    version: str,
    snapshot_ids: list[str],
    *,
    owner: str | None = None,
    shards: int | None = None,
    actor: str = "system",
) -> dict[str, Any]:
    """Record that model ``name`` ``version`` was trained on these snapshots.

    Tasks the new version settles (same model, trained on a snapshot rebuilt from the
    one a task names, without the subject) are closed. A snapshot already stale gives
    the new version the tasks its withdrawals call for.
    """
    _check(name, version, snapshot_ids, shards)
    now = times.to_micros(times.now())
    with store.write(ledger.engine) as conn:
        ledger.lock_head(conn)  # a withdrawal committing now either sees this model or ...
        trained = {}  # ... has marked the snapshot stale before we read it
        for sid in snapshot_ids:
            row = _trained_on(conn, sid)
            trained[row.id] = row
        try:
            number = conn.execute(
                insert(models)
                .values(
                    name=name,
                    version=version,
                    owner=owner,
                    shards=shards,
                    registered_by=actor,
                    created_at=now,
                )
                .returning(models.c.id)
            ).scalar_one()
        except IntegrityError:
            raise InputError(f"model {name} version {version} is already registered") from None
        conn.execute(insert(model_snapshots), [{"model": number, "snapshot": s} for s in trained])
        closed = _settle(conn, number, name, version, list(trained), actor, now)
        opened = _inherit_withdrawals(conn, list(trained.values()), now)
    out = get_model(ledger, name, version)
    out["tasks_closed_now"], out["tasks_opened_now"] = closed, opened
    return out


def _ancestors(conn: Connection, snapshot: int) -> list[int]:
    """The snapshots ``snapshot`` was rebuilt from, nearest first."""
    out: list[int] = []
    at: int | None = snapshot
    while at is not None and len(out) < 10_000:
        at = conn.execute(select(snapshots.c.rebuilt_from).where(snapshots.c.id == at)).scalar()
        if at is not None:
            out.append(at)
    return out


def _settle(
    conn: Connection,
    number: int,
    name: str,
    version: str,
    trained: list[int],
    actor: str,
    now: int,
) -> int:
    """Close the open tasks of model ``name`` that a version trained on ``trained`` settles."""
    closed = 0
    for snap in trained:
        older = _ancestors(conn, snap)
        if not older:
            continue
        sid = conn.execute(select(snapshots.c.snapshot_id).where(snapshots.c.id == snap)).scalar()
        candidates = conn.execute(
            select(tasks.c.id, tasks.c.subject_id)
            .join(models, models.c.id == tasks.c.model)
            .where(
                models.c.name == name,
                tasks.c.status == "open",
                tasks.c.snapshot.in_(older),
            )
        ).all()
        for task_id, subject in candidates:
            still_in = conn.execute(
                select(lineage_t.c.subject_id).where(
                    lineage_t.c.snapshot == snap, lineage_t.c.subject_id == subject
                )
            ).first()
            if still_in is not None:
                continue
            conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id)
                .values(
                    status="closed",
                    closed_at=now,
                    closed_by=actor,
                    closed_with_model=number,
                    note=f"retrained as {name} {version} on snapshot {str(sid)[:16]}",
                )
            )
            closed += 1
    return closed


def _inherit_withdrawals(conn: Connection, trained: list[Any], now: int) -> int:
    opened = 0
    for row in trained:
        if row.status != "stale":
            continue
        for w in conn.execute(select(withdrawals).where(withdrawals.c.snapshot == row.id)).all():
            held = holding(conn, w.subject_id, {row.id: row})
            opened += open_tasks(conn, w.subject_id, held, w.event_seq, now)
    return opened


def _model_json(conn: Connection, row: Any) -> dict[str, Any]:
    trained = conn.execute(
        select(snapshots.c.snapshot_id, snapshots.c.purpose, snapshots.c.status)
        .join(model_snapshots, model_snapshots.c.snapshot == snapshots.c.id)
        .where(model_snapshots.c.model == row.id)
        .order_by(snapshots.c.id)
    ).all()
    open_n = _count(conn, row.id, "open")
    closed_n = _count(conn, row.id, "closed")
    return {
        "number": row.id,
        "name": row.name,
        "version": row.version,
        "owner": row.owner,
        "shards": row.shards,
        "registered_by": row.registered_by,
        "registered_at": times.iso(row.created_at),
        "snapshots": [
            {"snapshot_id": s.snapshot_id, "purpose": s.purpose, "status": s.status}
            for s in trained
        ],
        "open_tasks": open_n,
        "closed_tasks": closed_n,
    }


def _count(conn: Connection, model: int, status: str) -> int:
    q = (
        select(func.count())
        .select_from(tasks)
        .where(tasks.c.model == model, tasks.c.status == status)
    )
    return int(conn.execute(q).scalar() or 0)


def get_model(ledger: Ledger, name: str, version: str) -> dict[str, Any]:
    with ledger.engine.connect() as conn:
        row = conn.execute(
            select(models).where(models.c.name == name, models.c.version == version)
        ).first()
        if row is None:
            raise InputError(f"no model {name} version {version}; 'askfirst model list' shows them")
        return _model_json(conn, row)


def list_models(ledger: Ledger) -> list[dict[str, Any]]:
    """Every registered model version, newest first."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(select(models).order_by(models.c.id.desc())).all()
        return [_model_json(conn, r) for r in rows]


def _task_json(row: Any, now: int) -> dict[str, Any]:
    end = row.closed_at if row.closed_at is not None else now
    return {
        "id": row.id,
        "status": row.status,
        "model": {"name": row.name, "version": row.version, "owner": row.owner},
        "snapshot_id": row.snapshot_id,
        "purpose": row.purpose,
        "subject": row.subject_id,
        "role": row.role,
        "shards": json.loads(row.shards) if row.shards is not None else None,
        "event_seq": row.event_seq,
        "opened_at": times.iso(row.opened_at),
        "age_days": round((end - row.opened_at) / (86_400 * times.MICROS), 1),
        "closed_at": times.iso(row.closed_at) if row.closed_at is not None else None,
        "closed_by": row.closed_by,
        "note": row.note,
        "what": (
            f"retrain or unlearn: subject {row.subject_id}, snapshot {row.snapshot_id[:16]}, "
            + (
                "shards " + ", ".join(str(s) for s in json.loads(row.shards))
                if row.shards is not None
                else "every shard"
            )
        ),
    }


_TASKS = (
    select(
        tasks,
        models.c.name,
        models.c.version,
        models.c.owner,
        snapshots.c.snapshot_id,
        snapshots.c.purpose,
    )
    .join(models, models.c.id == tasks.c.model)
    .join(snapshots, snapshots.c.id == tasks.c.snapshot)
)


def list_tasks(
    ledger: Ledger,
    *,
    status: str | None = "open",
    subject: str | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Tasks, oldest first, each with its age in days (to now, or to when it closed)."""
    if status not in (None, "open", "closed"):
        raise InputError(f"status {status!r}: use open or closed")
    q = _TASKS.order_by(tasks.c.opened_at, tasks.c.id)
    if status is not None:
        q = q.where(tasks.c.status == status)
    if subject is not None:
        q = q.where(tasks.c.subject_id == subject)
    if model is not None:
        q = q.where(models.c.name == model)
    now = times.to_micros(times.now())
    with ledger.engine.connect() as conn:
        return [_task_json(r, now) for r in conn.execute(q)]


def close_task(ledger: Ledger, task_id: int, note: str, *, actor: str) -> dict[str, Any]:
    """Close a task by hand; the note says what was done (or why nothing is needed)."""
    note = note.strip()
    if not note:
        raise InputError("say in --note what was done about the task")
    now = times.to_micros(times.now())
    with store.write(ledger.engine) as conn:
        row = conn.execute(select(tasks.c.status).where(tasks.c.id == task_id)).first()
        if row is None:
            raise NotFound(f"no task {task_id}; 'askfirst task list' shows them")
        if row.status != "open":
            raise InputError(f"task {task_id} is already closed")
        conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(status="closed", closed_at=now, closed_by=actor, note=note)
        )
        return _task_json(conn.execute(_TASKS.where(tasks.c.id == task_id)).one(), now)
