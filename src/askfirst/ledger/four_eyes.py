"""Rule 13: two people decide what one person cannot undo.

A death, a representative's authority and an erasure take effect only through a case
that one staff member proposed and a second, different one approved. The ledger holds
this itself, so that no adapter can skip it: a ``case`` event's step is checked against
the case's earlier steps in the chain, and the effect (``status`` deceased or erased,
``authority`` granting a representative) is accepted only right behind the approval that
orders it, from the same reviewer, in the same append.

The platform's own import (actor ``system`` or ``system:NAME``, never ``staff:``) may
record a death or a representative it established itself (for example the memorial
requests it handled before askfirst); an erasure has no such path, because only a case
deletes what is personal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, bindparam, select

from askfirst.errors import InputError, NotAuthorized
from askfirst.ledger.events import (
    SERVICE,
    EventType,
    NewEvent,
    parse_authority,
    parse_case,
)
from askfirst.ledger.tables import events

# Kinds of case whose approval needs a proposal by another reviewer first.
FOUR_EYES = ("death", "representative", "erasure")
# A reviewer acts in person: ``staff:NAME`` (a staff account, by session or its own token).
_REVIEWER = re.compile(r"staff:(?!token:)[^\s:]+")
# What each kind of case may change once approved, as (event type, value) -> kind.
_EFFECTS = {
    (EventType.STATUS, "deceased"): "death",
    (EventType.STATUS, "erased"): "erasure",
}

_CASE_EVENTS = select(events.c.actor, events.c.value).where(
    events.c.type == EventType.CASE,
    events.c.subject_id.in_(bindparam("ids", expanding=True)),
)


@dataclass
class CaseHistory:
    """The steps so far of the cases a batch touches, and the approvals made in it."""

    steps: dict[int, list[tuple[str, str, str]]] = field(
        default_factory=dict
    )  # (step, kind, actor)
    approved: list[tuple[str, str, str, int]] = field(
        default_factory=list
    )  # subject, kind, actor, id

    def add(self, subject: str, step: str, kind: str, case_id: int, actor: str) -> None:
        self.steps.setdefault(case_id, []).append((step, kind, actor))
        if step == "approve":
            self.approved.append((subject, kind, actor, case_id))


def load(conn: Connection, batch: Sequence[NewEvent]) -> CaseHistory:
    """The chain's steps of every case a ``case`` event in ``batch`` names (nothing is read
    for a batch without one)."""
    history = CaseHistory()
    wanted = sorted({e.subject for e in batch if e.type == EventType.CASE})
    if not wanted:
        return history
    ids = {c[2] for e in batch if e.type == EventType.CASE and (c := parse_case(e.value or ""))}
    for actor, value in conn.execute(_CASE_EVENTS, {"ids": wanted}):
        parsed = parse_case(value or "")
        if parsed is not None and parsed[2] in ids:
            history.steps.setdefault(parsed[2], []).append((parsed[0], parsed[1], actor))
    return history


def check_step(new: NewEvent, history: CaseHistory) -> None:
    """Raise unless ``new`` (a ``case`` event) is a step its case may take now."""
    parsed = parse_case(new.value or "")
    assert parsed is not None  # check_shape ran first
    step, kind, case_id, _ = parsed
    before = history.steps.get(case_id, [])
    if before and any(k != kind for _, k, _ in before):
        raise InputError(f"case {case_id} is not a {kind} case")
    if (kind == "objection") != (new.subject == SERVICE) and step == "open":
        if kind == "objection":
            raise InputError("an objection case is opened before its person is registered")
        raise InputError(f"a {kind} case names the member it is about")
    done = [s for s, _, _ in before]
    if step == "open":
        if before:
            raise InputError(f"case {case_id} is already open")
    elif not before:
        raise InputError(f"case {case_id} was never opened")
    elif ("approve" in done or "reject" in done) and (
        step != "close-account" or "approve" not in done
    ):
        raise InputError(f"case {case_id} is already decided")
    if step in ("propose", "approve", "reject") and not _REVIEWER.fullmatch(new.actor):
        raise NotAuthorized(
            f"actor {new.actor!r} may not {step} case {case_id}: only a reviewer acting in "
            "person ('staff:NAME', signed in or with their own token) reviews a case"
        )
    if step == "propose" and "propose" in done:
        raise InputError(f"case {case_id} is already proposed; a second reviewer approves it")
    if step == "approve" and kind in FOUR_EYES:
        proposers = [a for s, _, a in before if s == "propose"]
        if not proposers:
            raise InputError(
                f"case {case_id} ({kind}) needs a proposal first: one reviewer proposes, "
                "a second approves"
            )
        if new.actor in proposers:
            raise NotAuthorized(
                f"{new.actor} proposed case {case_id}, so may not approve it too: a "
                f"{kind} needs a second, different reviewer"
            )
    if step == "close-account" and (kind != "representative" or "approve" not in done):
        raise InputError(f"case {case_id} is not an approved representative's case")
    history.add(new.subject, step, kind, case_id, new.actor)


def check_effect(new: NewEvent, history: CaseHistory) -> None:
    """Raise unless a death, an erasure or a representative's authority in ``new`` follows
    an approval of its case in the same append (or, but for an erasure, comes from the
    platform's own import)."""
    kind = _EFFECTS.get((EventType(new.type), new.value or ""))
    if new.type == EventType.AUTHORITY:
        parsed = parse_authority(new.value or "")
        if parsed and parsed[0] == "grant" and parsed[1] == "representative":
            kind = "representative"
    if kind is None:
        return
    if (new.actor == "system" or new.actor.startswith("system:")) and kind != "erasure":
        return
    for subject, approved_kind, actor, case_id in history.approved:
        if (subject, approved_kind, actor) == (new.subject, kind, new.actor) and (
            new.source == f"case:{case_id}"
        ):
            return
    words = {"death": "a death", "representative": "a representative", "erasure": "an erasure"}
    raise NotAuthorized(
        f"{words[kind]} for {new.subject!r} takes effect only through a case that one "
        f"reviewer proposed and another approved ('askfirst case open {kind}'), not from "
        f"{new.actor!r} alone"
    )
