"""Verification: recompute the hash chain from the first event and compare projections.

Finds any event edited, deleted, inserted or reordered in the database and names the
first bad seq; a head row that does not match the last event (events cut off the end);
and, given a head recorded earlier outside the database, a history rewritten wholesale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select

from askfirst.ledger import projections
from askfirst.ledger.events import GENESIS, EventType, Head, event_hash
from askfirst.ledger.tables import events, ledger_head, notices

# What verify proves, and what it does not: the registry of snapshots, models and tasks and
# the outbox are plain tables beside the chain, so an edit there is not found by verify.
COVERS = (
    "the events' hash chain, their projections (subjects, choices, notices, authority) "
    "and the published notices' terms"
)
DOES_NOT_COVER = "snapshots, lineage, models, retraining tasks and the outbox"


@dataclass
class VerifyReport:
    """What ``verify`` found. ``ok`` only when the chain and every projection agree."""

    events_checked: int = 0
    head: Head | None = None
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    projection_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.projection_problems


_SQL = (
    "SELECT seq, type, subject_id, purpose, value, notice_version, actor, source, "
    "recorded_at, prev_hash, hash FROM events WHERE seq > {after} ORDER BY seq LIMIT {limit}"
)
_CHUNK = 250_000


def _parse_expected(expected: str) -> tuple[int | None, str]:
    """HASH, SEQ:HASH, or 'SEQ HASH' as ``askfirst ledger head`` prints it."""
    expected = ":".join(expected.split())
    if ":" in expected:
        seq, _, digest = expected.partition(":")
        if not seq.isdigit():
            raise ValueError(f"expected head {expected!r}: use HASH, SEQ:HASH or 'SEQ HASH'")
        return int(seq), digest.lower()
    return None, expected.strip().lower()


def _pages(conn: Connection) -> Iterator[Sequence[Any]]:
    """Every event in seq order, a page of rows at a time (seq is the page key)."""
    after = -(1 << 62)
    cur = conn.connection.cursor()
    try:
        while True:
            cur.execute(_SQL.format(after=after, limit=_CHUNK))
            rows = cur.fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]
            if type(last) is not int:  # a tampered seq; the page was still checked
                return
            after = last
    finally:
        cur.close()


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read transaction, so that appends during verification are not seen half-way."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _well_typed(row: Sequence[Any]) -> bool:
    # Every other field is covered by the hash (a value of another type hashes differently);
    # these two are compared as numbers before the hash is checked.
    return type(row[0]) is int and type(row[8]) is int


def verify(engine: Engine, expected_head: str | None = None) -> VerifyReport:
    """Recompute the chain of the ledger on ``engine`` and compare its projections."""
    report = VerifyReport()
    want_seq, want_hash = _parse_expected(expected_head) if expected_head else (None, None)
    found_expected: int | None = None
    expected_seq, prev, last_at, count = 1, GENESIS, 0, 0

    def bad(seq: int, why: str) -> None:
        if report.first_bad_seq is None:
            report.first_bad_seq = seq
            report.problems.append(f"seq {seq}: {why}")

    rebuild = projections.Rebuild()
    with _snapshot(engine) as conn:
        for rows in _pages(conn):
            for row in rows:
                count += 1
                rebuild.add(row[1], row[2], row[3], row[4], row[5], row[0], row[8])
                digest = row[10]
                if want_hash is not None and digest == want_hash:
                    found_expected = row[0]
                if report.first_bad_seq is not None:
                    continue
                if not _well_typed(row):
                    bad(expected_seq, "a field holds a value of the wrong type: it was edited")
                    continue
                seq, typ, subj, purp, val, nv, actor, src, at, prev_hash, _ = row
                if seq > expected_seq:
                    bad(
                        expected_seq,
                        f"missing: the events {expected_seq}..{seq - 1} were deleted, or "
                        "seq numbers were changed",
                    )
                elif seq < expected_seq:
                    bad(seq, "seq repeats or goes backwards")
                elif prev_hash != prev:
                    bad(
                        seq,
                        "prev_hash does not match the hash of the event before: an event "
                        "was inserted, deleted or reordered",
                    )
                elif event_hash(seq, typ, subj, purp, val, nv, actor, src, at, prev_hash) != digest:
                    bad(seq, "its content does not match its hash: the event was edited")
                elif at < last_at:
                    bad(seq, "recorded before the event ahead of it: events were reordered")
                expected_seq, prev, last_at = seq + 1, digest, at
        row = conn.execute(
            select(ledger_head.c.seq, ledger_head.c.hash, ledger_head.c.recorded_at)
        ).one()
        head = Head(row.seq, row.hash, row.recorded_at)
        report.projection_problems = rebuild.mismatches(conn) + _terms_problems(conn)
    report.events_checked = count
    report.head = head
    last_seq = expected_seq - 1
    if report.first_bad_seq is None and (head.seq != last_seq or head.hash != prev):
        if head.seq > last_seq:
            bad(
                last_seq + 1,
                f"missing: the ledger head is seq {head.seq} but the events end at "
                f"{last_seq}: events were cut off the end",
            )
        else:
            bad(
                head.seq + 1,
                f"the ledger head is seq {head.seq} ({head.hash[:12]}...) but the events "
                f"end at seq {last_seq}",
            )
    if want_hash is not None and (
        found_expected is None or (want_seq is not None and found_expected != want_seq)
    ):
        where = f"seq {want_seq}" if want_seq is not None else "any seq"
        report.problems.append(
            f"the expected head {want_hash[:16]}... is not at {where} in this ledger: the "
            "history up to it was rewritten or cut"
        )
    return report


def _terms_problems(conn: Connection) -> list[str]:
    """Each published notice's terms against the ``notice-published`` event that vouches
    for them (its value is their SHA-256): terms edited, moved or gone are named."""
    vouched = {
        seq: (purpose, version, value)
        for seq, purpose, version, value in conn.execute(
            select(events.c.seq, events.c.purpose, events.c.notice_version, events.c.value).where(
                events.c.type == EventType.PUBLISHED
            )
        )
    }
    problems = []
    rows = conn.execute(
        select(notices.c.purpose, notices.c.version, notices.c.seq, notices.c.terms, notices.c.hash)
    )
    for purpose, version, seq, terms, digest in rows:
        what = f"notices: the terms of {purpose!r} version {version}"
        event = vouched.pop(seq, None)
        if event is None:
            problems.append(f"{what} name seq {seq}, which published no notice")
        elif event != (purpose, version, f"sha256:{digest}"):
            problems.append(f"{what} do not match the event that published them (seq {seq})")
        elif hashlib.sha256(terms.encode()).hexdigest() != digest:
            problems.append(f"{what} were edited since they were published (seq {seq})")
    for seq, (purpose, version, _) in sorted(vouched.items()):
        problems.append(
            f"notices: the terms published at seq {seq} ({purpose!r} version {version}) are gone"
        )
    return problems
