"""Verification: recompute the hash chain from the first event and compare projections.

Finds any event edited, deleted, inserted or reordered in the database and names the
first bad seq; a head row that does not match the last event (events cut off the end);
and, given a head recorded earlier outside the database, a history rewritten wholesale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from askfirst.ledger import projections, store
from askfirst.ledger.events import GENESIS, event_hash

if TYPE_CHECKING:
    from askfirst.ledger.ledger import Ledger, VerifyReport

_SQL = (
    "SELECT seq, type, subject_id, purpose, value, notice_version, actor, source, "
    "recorded_at, prev_hash, hash FROM events WHERE seq > {after} ORDER BY seq LIMIT {limit}"
)
_CHUNK = 250_000


def _parse_expected(expected: str) -> tuple[int | None, str]:
    if ":" in expected:
        seq, _, digest = expected.partition(":")
        if not seq.isdigit():
            raise ValueError(f"expected head {expected!r}: use HASH or SEQ:HASH")
        return int(seq), digest.lower()
    return None, expected.strip().lower()


def verify(ledger: Ledger, expected_head: str | None = None) -> VerifyReport:
    from askfirst.ledger.ledger import VerifyReport

    report = VerifyReport()
    want_seq, want_hash = _parse_expected(expected_head) if expected_head else (None, None)
    found_expected: int | None = None
    expected_seq, prev, last_at, count = 1, GENESIS, 0, 0

    def bad(seq: int, why: str) -> None:
        if report.first_bad_seq is None:
            report.first_bad_seq = seq
            report.problems.append(f"seq {seq}: {why}")

    after = -1 << 62
    while True:
        batch = store.read_arrow(ledger.engine, _SQL.format(after=after, limit=_CHUNK))
        if batch.num_rows == 0:
            break
        cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        after = cols[0][-1]
        for seq, typ, subj, purp, val, nv, actor, src, at, prev_hash, digest in zip(
            *cols, strict=True
        ):
            count += 1
            if report.first_bad_seq is None:
                if seq != expected_seq:
                    if seq > expected_seq:
                        bad(
                            expected_seq,
                            f"missing: the events {expected_seq}..{seq - 1} "
                            "were deleted, or seq numbers were changed",
                        )
                    else:
                        bad(seq, "seq repeats or goes backwards")
                elif prev_hash != prev:
                    bad(
                        seq,
                        "prev_hash does not match the hash of the event before: an "
                        "event was inserted, deleted or reordered",
                    )
                elif event_hash(seq, typ, subj, purp, val, nv, actor, src, at, prev_hash) != digest:
                    bad(seq, "its content does not match its hash: the event was edited")
                elif at < last_at:
                    bad(seq, "recorded before the event ahead of it: events were reordered")
            if want_hash is not None and digest == want_hash:
                found_expected = seq
            expected_seq, prev, last_at = seq + 1, digest, at
    report.events_checked = count
    head = ledger.head()
    report.head = head
    last_seq = expected_seq - 1
    if report.first_bad_seq is None and (head.seq != last_seq or head.hash != prev):
        if head.seq > last_seq:
            bad(
                last_seq + 1,
                f"missing: the ledger head is seq {head.seq} but the events end "
                f"at {last_seq}: events were cut off the end",
            )
        else:
            bad(
                head.seq + 1,
                f"the ledger head is seq {head.seq} ({head.hash[:12]}...) but "
                f"the events end at seq {last_seq}",
            )
    if want_hash is not None and (
        found_expected is None or (want_seq is not None and found_expected != want_seq)
    ):
        where = f"seq {want_seq}" if want_seq is not None else "any seq"
        report.problems.append(
            f"the expected head {want_hash[:16]}... is not at {where} in this ledger: the "
            "history up to it was rewritten or cut"
        )
    with ledger.engine.connect() as conn:
        report.projection_problems = projections.mismatches(conn)
    return report
