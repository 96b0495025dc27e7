"""Current-state tables, kept in step with the events, and rebuilt from them to check.

:func:`apply` folds a batch of newly chained events into the projection tables inside
the append's transaction. :func:`mismatches` rebuilds the projections from the events
and lists every row that disagrees, for ``askfirst ledger verify``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from askfirst.ledger import store
from askfirst.ledger.events import Event, EventType, parse_authority
from askfirst.ledger.tables import authority_state, choice_state, notice_state, subject_state

# event type -> (value column, seq column) in subject_state
SUBJECT_COLUMNS = {
    EventType.STATUS: ("status", "status_seq"),
    EventType.JURISDICTION: ("jurisdiction", "jurisdiction_seq"),
    EventType.MINOR: ("minor", "minor_seq"),
    EventType.GPC: (None, "gpc_seq"),
}


def _updates() -> dict[EventType, Any]:
    out: dict[EventType, Any] = {}
    for etype, (value_col, seq_col) in SUBJECT_COLUMNS.items():
        values: dict[str, Any] = {seq_col: bindparam("s")}
        if value_col:
            values[value_col] = bindparam("v")
        where = subject_state.c.subject_id == bindparam("sid")
        out[etype] = store.Prepared(update(subject_state).where(where).values(values))
    return out


def _upserts(dialect: Any) -> tuple[Any, Any]:
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
_UPSERT = {"postgresql": _upserts(postgresql), "sqlite": _upserts(sqlite)}
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
                    "status": "active",
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
    upsert_choice, insert_notice = _UPSERT[conn.dialect.name]
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

_LAST_BY_TYPE = """
SELECT e.subject_id, e.type, e.value, e.seq FROM events e
JOIN (SELECT max(seq) AS seq FROM events
      WHERE type IN ('subject', 'status', 'jurisdiction', 'minor', 'gpc')
      GROUP BY subject_id, type) l ON e.seq = l.seq
"""
_LAST_CHOICE = """
SELECT e.subject_id, e.purpose, e.value, e.notice_version, e.seq FROM events e
JOIN (SELECT max(seq) AS seq FROM events WHERE type = 'choice'
      GROUP BY subject_id, purpose) l ON e.seq = l.seq
"""
_AUTHORITY = "SELECT subject_id, value, seq FROM events WHERE type = 'authority' ORDER BY seq"
_FIRST_NOTICE = """
SELECT e.subject_id, e.purpose, e.notice_version, e.seq, e.recorded_at FROM events e
JOIN (SELECT min(seq) AS seq FROM events WHERE type = 'notice-delivered'
      GROUP BY subject_id, purpose, notice_version) f ON e.seq = f.seq
"""


def _rebuild(conn: Connection) -> tuple[dict[Any, tuple[Any, ...]], ...]:
    subj: dict[str, dict[str, Any]] = {}
    for sid, etype, value, seq in conn.exec_driver_sql(_LAST_BY_TYPE):
        row = subj.setdefault(
            sid,
            {
                "kind": None,
                "registered_seq": None,
                "jurisdiction": None,
                "jurisdiction_seq": None,
                "status": "active",
                "status_seq": None,
                "minor": None,
                "minor_seq": None,
                "gpc_seq": None,
            },
        )
        if etype == EventType.SUBJECT:
            row["kind"], row["registered_seq"] = value, seq
        else:
            value_col, seq_col = SUBJECT_COLUMNS[EventType(etype)]
            if value_col:
                row[value_col] = value
            row[seq_col] = seq
    cols = [c.name for c in subject_state.c if c.name != "subject_id"]
    subjects = {sid: tuple(r[c] for c in cols) for sid, r in subj.items()}
    choices = {(s, p): (v, nv, q) for s, p, v, nv, q in conn.exec_driver_sql(_LAST_CHOICE)}
    granted: dict[tuple[str, str, str], int | None] = {}
    for sid, value, seq in conn.exec_driver_sql(_AUTHORITY):
        action, role, delegate = parse_authority(value or "") or ("", "", "")
        granted[(sid, delegate, role)] = seq if action == "grant" else None
    authority = {k: (seq,) for k, seq in granted.items() if seq is not None}
    notices = {(s, p, v): (q, t) for s, p, v, q, t in conn.exec_driver_sql(_FIRST_NOTICE)}
    return subjects, choices, notices, authority


def mismatches(conn: Connection, limit: int = 20) -> list[str]:
    """Describe each projection row that disagrees with the events (at most ``limit``)."""
    want_subjects, want_choices, want_notices, want_authority = _rebuild(conn)
    cols = [c.name for c in subject_state.c if c.name != "subject_id"]
    have_subjects = {
        r[0]: tuple(r[1:])
        for r in conn.execute(
            select(subject_state.c.subject_id, *[subject_state.c[c] for c in cols])
        )
    }
    have_choices = {
        (r[0], r[1]): tuple(r[2:])
        for r in conn.execute(
            select(
                choice_state.c.subject_id,
                choice_state.c.purpose,
                choice_state.c.action,
                choice_state.c.notice_version,
                choice_state.c.seq,
            )
        )
    }
    have_notices = {
        (r[0], r[1], r[2]): tuple(r[3:])
        for r in conn.execute(
            select(
                notice_state.c.subject_id,
                notice_state.c.purpose,
                notice_state.c.version,
                notice_state.c.seq,
                notice_state.c.recorded_at,
            )
        )
    }
    have_authority = {
        (r[0], r[1], r[2]): (r[3],)
        for r in conn.execute(
            select(
                authority_state.c.subject_id,
                authority_state.c.delegate_id,
                authority_state.c.role,
                authority_state.c.seq,
            )
        )
    }
    out: list[str] = []
    for table, want, have in (
        ("authority_state", want_authority, have_authority),
        ("subject_state", want_subjects, have_subjects),
        ("choice_state", want_choices, have_choices),
        ("notice_state", want_notices, have_notices),
    ):
        for key in sorted(want.keys() | have.keys(), key=repr):
            w, h = want.get(key), have.get(key)
            if w == h:
                continue
            name = key if isinstance(key, str) else "/".join(str(k) for k in key)
            if h is None:
                out.append(f"{table}: row {name!r} is missing (the events have it)")
            elif w is None:
                out.append(f"{table}: row {name!r} has no events behind it")
            else:
                out.append(f"{table}: row {name!r} disagrees with the events: {h} != {w}")
            if len(out) >= limit:
                return out
    return out
