"""What research partners are owed about the snapshots they received (GDPR Art. 19).

Notices are queued in the outbox inside the transaction that causes them — a
withdrawal reaching a snapshot (``propagation``), a snapshot retired by its rebuild
(``lineage``) — and sent later, with retries, by ``askfirst.recipients``. A notice names
the snapshot, never the person.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert, select

from askfirst import times
from askfirst.ledger.events import Event
from askfirst.ledger.tables import deliveries, outbox, snapshots


def notice_key(*parts: object) -> str:
    """The idempotency key of one notice, from what makes it that notice: the same
    notice always has the same key."""
    blob = "\x1f".join(str(p) for p in parts).encode()
    return hashlib.sha256(blob).hexdigest()[:48]


def outbox_row(recipient: int, payload: dict[str, Any], at: int) -> dict[str, Any]:
    """A notice owed to a partner, due at once; ``payload["id"]`` is its key."""
    return {
        "recipient": recipient,
        "idempotency_key": payload["id"],
        "kind": payload["type"],
        "payload": json.dumps(payload, sort_keys=True),
        "created_at": at,
        "attempts": 0,
        "next_attempt_at": at,
    }


def queue_rebuilt(conn: Connection, old: int, new_id: str, at: int) -> int:
    """Tell every partner that received snapshot ``old`` that it was retired and which
    snapshot replaces it (they may ask for the new one); returns the notices queued."""
    row = conn.execute(
        select(snapshots.c.snapshot_id, snapshots.c.purpose).where(snapshots.c.id == old)
    ).one()
    sent = (
        conn.execute(select(deliveries.c.recipient).where(deliveries.c.snapshot == old))
        .scalars()
        .all()
    )
    rows = []
    for recipient in sent:
        payload = {
            "type": "snapshot.rebuilt",
            "id": notice_key(recipient, row.snapshot_id, new_id),
            "snapshot_id": row.snapshot_id,
            "replaced_by": new_id,
            "purpose": row.purpose,
            "retired_at": times.iso(at),
            "action": (
                "This snapshot is retired: delete every copy of it and of anything derived "
                "from it. The snapshot that replaces it holds no withdrawn data; ask us for "
                "it if you still need it."
            ),
        }
        rows.append(outbox_row(recipient, payload, at))
    if rows:
        conn.execute(insert(outbox), rows)
    return len(rows)


def queue_withdrawn(
    conn: Connection,
    subject: str,
    fresh: Sequence[Any],
    ended: dict[str, tuple[str, int]],
    trigger: Event,
    at: int,
) -> int:
    """Tell every partner that received one of ``fresh`` (snapshots holding ``subject``'s
    data, newly reached by the use ending, with ``ended``'s reason by purpose) to stop
    using and delete it; returns the notices queued."""
    if not fresh:
        return 0
    by_snapshot = {row.id: row for row in fresh}
    sent = conn.execute(
        select(deliveries.c.snapshot, deliveries.c.recipient).where(
            deliveries.c.snapshot.in_(list(by_snapshot))
        )
    ).all()
    rows = []
    for snap, recipient in sent:
        row = by_snapshot[snap]
        # The partner never learns who: the snapshot holds no author ids, and the notice
        # asks them to stop using and delete the whole snapshot.
        payload = {
            "type": "snapshot.data-withdrawn",
            "id": notice_key(recipient, row.snapshot_id, subject, trigger.seq),
            "snapshot_id": row.snapshot_id,
            "purpose": row.purpose,
            "reason": ended[row.purpose][0],
            "withdrawn_at": times.iso(at),
            "action": (
                "Stop using this snapshot and delete every copy of it and of anything "
                "derived from it (GDPR Art. 17 and 19). A rebuilt snapshot without the "
                "withdrawn data will be offered to you."
            ),
        }
        rows.append(outbox_row(recipient, payload, at))
    if rows:
        conn.execute(insert(outbox), rows)
    return len(rows)
