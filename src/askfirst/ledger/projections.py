"""Current-state tables, kept in step with the events, and rebuilt from them to check.

:func:`apply` folds a batch of newly chained events into the projection tables inside
the append's transaction. :func:`mismatches` rebuilds the projections from the events
and lists every row that disagrees, for ``askfirst ledger verify``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from askfirst.ledger import store
from askfirst.ledger.events import Event, EventType, parse_authority
from askfirst.ledger.state import STATUS_BEFORE_ANY, SUBJECT_COLUMNS, SUBJECT_FIELDS
from askfirst.ledger.tables import authority_state, choice_state, notice_state, subject_state

# The subject fields a later event updates (registration inserts the row).
_UPDATED = [f for f in SUBJECT_FIELDS if f.event != EventType.SUBJECT]


def _updates() -> dict[EventType, Any]:
    out: dict[EventType, Any] = {}
    for etype, value_col, seq_col in _UPDATED:
        values: dict[str, Any] = {seq_col: bindparam("s")}
        if value_col:
            values[value_col] = bindparam("v")
        where = subject_state.c.subject_id == bindparam("sid")
        out[etype] = store.Prepared(update(subject_state).where(where).values(values))
    return out


@functools.cache
def _upserts(name: str) -> tuple[Any, Any]:
    """The choice upsert and the notice insert for one kind of database (built once, on
    first use: a command that appends nothing does not load the dialects)."""
    import importlib

    dialect: Any = importlib.import_module(f"sqlalchemy.dialects.{name}")
    choice = dialect.insert(choice_state).values(
        {c.name: bindparam(c.name) for c in choice_state.c}
    )
    choice = choice.on_conflict_do_update(
        index_elements=["subject_id", "purpose"],
        set_={
            "action": choice.excluded.action,
            "notice_version": choice.excluded.notice_version,
            "seq": choice.excluded.seq,
        },
    )
    notice = (
        dialect.insert(notice_state)
        .values({c.name: bindparam(c.name) for c in notice_state.c})
        .on_conflict_do_nothing()
    )
    return store.Prepared(choice), store.Prepared(notice)


# Built once; appends are the hot path.
_UPDATE = _updates()
_INSERT_SUBJECT = store.Prepared(
    insert(subject_state).values({c.name: bindparam(c.name) for c in subject_state.c})
)
_SUBJECT_BLANK = {c.name: None for c in subject_state.c}


def apply(conn: Connection, events: Sequence[Event]) -> None:
    """Fold chained events (in seq order) into the projection tables."""
    registered: list[dict[str, Any]] = []
    latest: dict[tuple[str, str], Event] = {}  # (subject, type) -> last event
    choices: dict[tuple[str, str], Event] = {}
    notices: dict[tuple[str, str, int], Event] = {}
    authority: dict[tuple[str, str, str], int | None] = {}  # None: revoked
    for e in events:
        if e.type == EventType.SUBJECT:
            registered.append(
                {
                    "subject_id": e.subject,
                    "kind": e.value,
                    "registered_seq": e.seq,
                    "status": STATUS_BEFORE_ANY,
                }
            )
        elif e.type == EventType.CHOICE:
            choices[(e.subject, e.purpose or "")] = e
        elif e.type == EventType.NOTICE:
            notices.setdefault((e.subject, e.purpose or "", e.notice_version or 0), e)
        elif e.type == EventType.AUTHORITY:
            action, role, delegate = parse_authority(e.value or "") or ("", "", "")
            authority[(e.subject, delegate, role)] = e.seq if action == "grant" else None
        else:
            latest[(e.subject, e.type)] = e
    _INSERT_SUBJECT.run(conn, [{**_SUBJECT_BLANK, **r} for r in registered])
    for etype, stmt in _UPDATE.items():
        rows = [
            {"sid": e.subject, "v": e.value, "s": e.seq}
            for (_, t), e in latest.items()
            if t == etype
        ]
        stmt.run(conn, rows)
    upsert_choice, insert_notice = _upserts(conn.dialect.name)
    if choices:
        upsert_choice.run(
            conn,
            [
                {
                    "subject_id": s,
                    "purpose": p,
                    "action": e.value,
                    "notice_version": e.notice_version,
                    "seq": e.seq,
                }
                for (s, p), e in choices.items()
            ],
        )
    if notices:
        insert_notice.run(
            conn,
            [
                {
                    "subject_id": s,
                    "purpose": p,
                    "version": v,
                    "seq": e.seq,
                    "recorded_at": e.recorded_at,
                }
                for (s, p, v), e in notices.items()
            ],
        )

    if authority:
        _apply_authority(conn, authority)


def _apply_authority(conn: Connection, authority: dict[tuple[str, str, str], int | None]) -> None:
    t = authority_state
    key = (t.c.subject_id == bindparam("sid")) & (t.c.delegate_id == bindparam("did"))
    key &= t.c.role == bindparam("r")
    rows = [{"sid": s, "did": d, "r": r} for (s, d, r) in authority]
    conn.execute(delete(t).where(key), rows)
    granted = [
        {"subject_id": s, "delegate_id": d, "role": r, "seq": seq}
        for (s, d, r), seq in authority.items()
        if seq is not None
    ]
    if granted:
        conn.execute(insert(t), granted)


# ---- rebuilding from the events ---------------------------------------------------------


class Rebuild:
    """The projections as the events say they should be, folded one event at a time
    (``verify`` feeds it the events it is already reading for the hash chain), then
    compared with the tables."""

    def __init__(self) -> None:
        self.subjects: dict[str, list[Any]] = {}
        self.choices: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.notices: dict[tuple[str, str, int], tuple[Any, ...]] = {}
        self.authority: dict[tuple[str, str, str], int | None] = {}

    def add(
        self,
        typ: str,
        subject: str,
        purpose: str | None,
        value: str | None,
        notice_version: int | None,
        seq: int,
        recorded_at: int,
    ) -> None:
        if typ == EventType.CHOICE:
            self.choices[(subject, purpose or "")] = (value, notice_version, seq)
        elif typ == EventType.NOTICE:
            key = (subject, purpose or "", notice_version or 0)
            if key not in self.notices:
                self.notices[key] = (seq, recorded_at)
        elif typ == EventType.AUTHORITY:
            action, role, delegate = parse_authority(value or "") or ("", "", "")
            self.authority[(subject, delegate, role)] = seq if action == "grant" else None
        elif typ == EventType.SUBJECT:
            row: list[Any] = [None] * len(_ROW)
            row[0], row[_ROW.index("registered_seq")] = value, seq
            row[_ROW.index("status")] = STATUS_BEFORE_ANY
            self.subjects[subject] = row
        elif typ in _SLOTS and subject in self.subjects:
            slot, seq_slot = _SLOTS[typ]
            row = self.subjects[subject]
            if slot is not None:
                row[slot] = value
            row[seq_slot] = seq

    def mismatches(self, conn: Connection, limit: int = 20) -> list[str]:
        """Each projection row that disagrees with the events (at most ``limit``)."""
        t = authority_state
        tables: list[tuple[str, dict[Any, Any], Any]] = [
            (
                "authority_state",
                {k: (v,) for k, v in self.authority.items() if v is not None},
                select(t.c.subject_id, t.c.delegate_id, t.c.role, t.c.seq),
            ),
            (
                "subject_state",
                {k: tuple(v) for k, v in self.subjects.items()},
                select(*subject_state.c),
            ),
            (
                "choice_state",
                self.choices,
                select(
                    choice_state.c.subject_id,
                    choice_state.c.purpose,
                    choice_state.c.action,
                    choice_state.c.notice_version,
                    choice_state.c.seq,
                ),
            ),
            (
                "notice_state",
                self.notices,
                select(
                    notice_state.c.subject_id,
                    notice_state.c.purpose,
                    notice_state.c.version,
                    notice_state.c.seq,
                    notice_state.c.recorded_at,
                ),
            ),
        ]
        out: list[str] = []
        for table, want, query in tables:
            nkey = {"authority_state": 3, "subject_state": 1, "choice_state": 2}.get(table, 3)
            have = {
                (r[0] if nkey == 1 else tuple(r[:nkey])): tuple(r[nkey:])
                for r in conn.execute(query).all()
            }
            for key in sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k)):
                name = key if isinstance(key, str) else "/".join(str(k) for k in key)
                w, h = want.get(key), have.get(key)
                if h is None:
                    out.append(f"{table}: row {name!r} is missing (the events have it)")
                elif w is None:
                    out.append(f"{table}: row {name!r} has no events behind it")
                else:
                    out.append(f"{table}: row {name!r} disagrees with the events: {h} != {w}")
                if len(out) >= limit:
                    return out
        return out


# A subject_state row after its key, and where each event type's value and seq go in it.
_ROW = ("kind", *SUBJECT_COLUMNS)
_SLOTS: dict[str, tuple[int | None, int]] = {
    f.event: (_ROW.index(f.value) if f.value else None, _ROW.index(f.seq)) for f in _UPDATED
}
