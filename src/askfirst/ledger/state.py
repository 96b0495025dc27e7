"""What the decision rules read about a subject, and how it is folded from the events.

Two tables say which event sets which field of a subject's state: :data:`SUBJECT_FIELDS`
(the subject's own fields) and :data:`PURPOSE_FIELDS` (the purpose's two: the latest
choice, the first delivery of the current notice). From them come every reading of the
fold:

- :meth:`State.fold` — one subject's events, in Python (a single decision, propagation);
- :func:`historic_sql` — every subject's state as of a past time, as one SQL query over
  ``events`` (SQLite and PostgreSQL alike; for a list of subjects);
- ``history`` — the same for every subject, from the events kept as columns in the
  process (a decision for everyone at a past time);
- :func:`current_queries` — the same state read from the current-state tables, which
  ``projections`` keeps in step with the same tables.

Tests hold them to each other for any event history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from askfirst.ledger.events import Event, EventType

if TYPE_CHECKING:
    import pyarrow as pa


class SubjectField(NamedTuple):
    """One event type's mark on a subject's state: the latest such event's value goes
    in ``value`` (None: the value is not kept) and its seq in ``seq``."""

    event: EventType
    value: str | None
    seq: str


# Columns of ``subject_state`` and fields of :class:`State`, in that table's order.
SUBJECT_FIELDS: tuple[SubjectField, ...] = (
    SubjectField(EventType.SUBJECT, None, "registered_seq"),
    SubjectField(EventType.JURISDICTION, "jurisdiction", "jurisdiction_seq"),
    SubjectField(EventType.STATUS, "status", "status_seq"),
    SubjectField(EventType.MINOR, "minor", "minor_seq"),
    SubjectField(EventType.GPC, None, "gpc_seq"),
)
STATUS_BEFORE_ANY = "active"  # a subject's status until a status event says otherwise


def field_value(field: SubjectField, value: str | None) -> str | None:
    """What an event of ``field``'s type leaves in ``field.value``: its value, except
    that a status event without one leaves the status a subject starts with (import
    checks always give one)."""
    if field.event == EventType.STATUS and not value:
        return STATUS_BEFORE_ANY
    return value


class PurposeField(NamedTuple):
    """One event type's mark on a subject's state for one purpose: of the subject's
    events of that type about the purpose (only those under the purpose's current notice
    version, when ``current_only``), the ``first`` or the ``last`` sets ``fields``, each
    from one attribute of the event."""

    event: EventType
    keep: Literal["first", "last"]
    current_only: bool
    fields: tuple[tuple[str, str], ...]  # (State field, Event attribute); one is the seq

    @property
    def seq(self) -> str:
        """The field that holds the seq of the event (set whenever the others are)."""
        return next(name for name, attr in self.fields if attr == "seq")


# Fields of :class:`State` after the subject's own: the latest choice for the purpose, and
# the first delivery of the purpose's current notice version.
PURPOSE_FIELDS: tuple[PurposeField, ...] = (
    PurposeField(
        EventType.CHOICE, "last", False,
        (("choice_action", "value"), ("choice_version", "notice_version"), ("choice_seq", "seq")),
    ),
    PurposeField(
        EventType.NOTICE, "first", True, (("notice_seq", "seq"), ("notice_at", "recorded_at"))
    ),
)  # fmt: skip


@dataclass
class State:
    """What the rules read about one subject, for one purpose, as of one time."""

    registered_seq: int | None = None
    jurisdiction: str | None = None
    jurisdiction_seq: int | None = None
    status: str = STATUS_BEFORE_ANY
    status_seq: int | None = None
    minor: str | None = None
    minor_seq: int | None = None
    gpc_seq: int | None = None
    # The purpose's latest choice, and the first delivery of its current notice version.
    choice_action: str | None = None
    choice_version: int | None = None
    choice_seq: int | None = None
    notice_seq: int | None = None
    notice_at: int | None = None

    @classmethod
    def fold(cls, evs: Sequence[Event], purpose: str, version: int) -> State:
        """The state after ``evs`` (one subject's events, in seq order) for ``purpose``,
        whose current notice version is ``version``."""
        s = cls()
        for e in evs:
            mark = _BY_TYPE.get(e.type)
            if mark is not None:
                if mark.value is not None:
                    setattr(s, mark.value, field_value(mark, e.value))
                setattr(s, mark.seq, e.seq)
                continue
            pf = _PURPOSE_BY_TYPE.get(e.type)
            if (
                pf is None
                or e.purpose != purpose
                or (pf.current_only and e.notice_version != version)
                or (pf.keep == "first" and getattr(s, pf.seq) is not None)
            ):
                continue
            for name, attr in pf.fields:
                setattr(s, name, getattr(e, attr))
        return s


_BY_TYPE: dict[str, SubjectField] = {f.event: f for f in SUBJECT_FIELDS}
_PURPOSE_BY_TYPE: dict[str, PurposeField] = {f.event: f for f in PURPOSE_FIELDS}
FIELDS: tuple[str, ...] = tuple(State.__dataclass_fields__)
_TEXT_FIELDS = frozenset({"jurisdiction", "status", "minor", "choice_action"})


def arrow_schema() -> pa.Schema:
    """The state of many subjects as Arrow: ``subject_id`` and every :class:`State` field."""
    import pyarrow as pa

    return pa.schema(
        [("subject_id", pa.string())]
        + [(f, pa.string() if f in _TEXT_FIELDS else pa.int64()) for f in FIELDS]
    )


def _subject_columns() -> list[str]:
    out = []
    for f in SUBJECT_FIELDS:
        if f.value is not None:
            out.append(f.value)
        out.append(f.seq)
    return out


SUBJECT_COLUMNS: tuple[str, ...] = tuple(_subject_columns())


def _check_name(purpose: str) -> str:
    # Purpose names are policy keys checked against a strict pattern when the policy is
    # loaded; this keeps a name from ever reaching SQL otherwise.
    if not purpose.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"purpose name {purpose!r} cannot be used in a query")
    return purpose


def current_queries(purpose: str, version: int) -> dict[str, str]:
    """The current state, read as three tables to be joined on ``subject_id``:
    ``subjects`` (every subject's own fields), ``choices`` and ``notices`` (the purpose's
    fields, for the subjects that have them)."""
    p = _check_name(purpose)
    return {
        "subjects": f"SELECT subject_id, {', '.join(SUBJECT_COLUMNS)} FROM subject_state",
        "choices": (
            "SELECT subject_id, action AS choice_action, notice_version AS choice_version, "
            f"seq AS choice_seq FROM choice_state WHERE purpose = '{p}'"
        ),
        "notices": (
            "SELECT subject_id, seq AS notice_seq, recorded_at AS notice_at FROM notice_state "
            f"WHERE purpose = '{p}' AND version = {int(version)}"
        ),
    }


def current_sql(purpose: str, version: int, where: str = "") -> str:
    """:func:`current_queries` joined in one query (``where`` filters ``subject_id``)."""
    p = _check_name(purpose)
    cols = ", ".join(f"s.{c}" for c in SUBJECT_COLUMNS)
    return f"""
SELECT s.subject_id, {cols}, c.action AS choice_action,
       c.notice_version AS choice_version, c.seq AS choice_seq, n.seq AS notice_seq,
       n.recorded_at AS notice_at
FROM subject_state s
LEFT JOIN choice_state c ON c.subject_id = s.subject_id AND c.purpose = '{p}'
LEFT JOIN notice_state n ON n.subject_id = s.subject_id AND n.purpose = '{p}'
     AND n.version = {int(version)}
{where.replace("subject_id", "s.subject_id")}"""


def historic_sql(
    purpose: str, version: int, at: int, where: str = "", until_seq: int | None = None
) -> str:
    """Every subject's state as of ``at`` (and, given ``until_seq``, counting no event
    after it), folded from ``events`` in SQL; ``where`` filters ``subject_id``."""
    p = _check_name(purpose)
    filt = where.replace("WHERE", "AND")
    if until_seq is not None:
        filt += f" AND seq <= {int(until_seq)}"
    types = ", ".join(f"'{f.event.value}'" for f in SUBJECT_FIELDS)
    picks = []
    for f in SUBJECT_FIELDS:
        if f.value is not None:
            value = f"max(CASE WHEN l.type = '{f.event.value}' THEN l.value END)"
            if f.value == "status":
                value = f"coalesce({value}, '{STATUS_BEFORE_ANY}')"
            picks.append(f"{value} AS {f.value}")
        picks.append(f"max(CASE WHEN l.type = '{f.event.value}' THEN l.seq END) AS {f.seq}")
    choice = EventType.CHOICE.value
    picks += [
        f"max(CASE WHEN l.type = '{choice}' THEN l.value END) AS choice_action",
        f"max(CASE WHEN l.type = '{choice}' THEN l.notice_version END) AS choice_version",
        f"max(CASE WHEN l.type = '{choice}' THEN l.seq END) AS choice_seq",
        "max(n.seq) AS notice_seq",
        "max(n.recorded_at) AS notice_at",
    ]
    columns = ",\n  ".join(picks)
    return f"""
WITH last AS (
  SELECT e.subject_id, e.type, e.value, e.notice_version, e.seq FROM events e
  JOIN (SELECT max(seq) AS seq FROM events
        WHERE recorded_at <= {int(at)} {filt}
          AND (type IN ({types}) OR (type = '{choice}' AND purpose = '{p}'))
        GROUP BY subject_id, type) l ON e.seq = l.seq),
notice AS (
  SELECT subject_id, min(seq) AS seq, min(recorded_at) AS recorded_at FROM events
  WHERE type = '{EventType.NOTICE.value}' AND purpose = '{p}'
    AND notice_version = {int(version)} AND recorded_at <= {int(at)} {filt}
  GROUP BY subject_id)
SELECT l.subject_id,
  {columns}
FROM last l LEFT JOIN notice n ON n.subject_id = l.subject_id
GROUP BY l.subject_id"""
