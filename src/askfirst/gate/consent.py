"""What the gate takes from the ledger: decisions pinned to one head, and the directory.

A build reads the ledger before it reads the corpus: the head it runs against, every
subject's decision for the purpose, and the names that are looked for in every record
(those of protected subjects). The handles and names of everyone else, which only a
record that may mention someone needs, are read when the first such record comes (see
:class:`Directory`). Engines (DuckDB and Spark) only ever see these Arrow tables, so
they give the same answers.

Reaching back (DESIGN.md) is ``decisions.decisions_for_use``: for a purpose that reaches
back, a subject counts as yes only if the decision is yes at the as-of time *and* at the
head the build runs against.

A handle or name a subject gave up lately (``directory``'s former names, still protected
when the build runs) counts as one of theirs: the handle resolves to them, the name is
looked for like their current ones. An erased subject's names and handles are known only
as keyed digests (``forgotten``), read with the names key from the key folder.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.engine import Engine

from askfirst import decisions, directory, times
from askfirst.errors import InputError
from askfirst.gate.forgotten import Forgotten
from askfirst.ledger import store
from askfirst.ledger.events import Head
from askfirst.ledger.ledger import Ledger
from askfirst.policy import Purpose
from askfirst.rules import decisions_schema, release_duckdb

DIRECTORY_SCHEMA = pa.schema(
    [
        ("subject", pa.string()),
        ("handle", pa.string()),
        ("names", pa.string()),  # a JSON array of strings
        ("protected", pa.int64()),  # 1: names are looked for in every record
    ]
)
_DIRECTORY_SQL = "SELECT id AS subject, handle, names FROM subjects"
# Protected subjects (people without accounts who objected, deceased members): their
# names are looked for in every record.
_NAMES_SQL = (
    "SELECT s.id AS subject, s.handle, s.names, 1 AS protected FROM subjects s "
    "JOIN subject_state t ON t.subject_id = s.id "
    "WHERE t.kind = 'person' OR t.status = 'deceased'"
)


class Directory:
    """Every subject's handle and names, read once a build needs them: when the first
    record that may mention someone comes (:meth:`start`), in a second process on a
    big SQLite ledger while the build goes on, and taken at the first mention query
    (:meth:`table`). A corpus that mentions no one never reads them.

    Handles and names are outside the chain, so no head pins them; a subject
    registered after the build's head is in no decision, and so is redacted.
    """

    def __init__(self, engine: Engine, aside: bool, former: pa.Table | None = None) -> None:
        self._engine, self._aside = engine, aside
        self._former = former  # directory.protected_former(): merged into what is read
        self._stack = ExitStack()
        self._pending: store.Pending | None = None

    def start(self) -> None:
        """Begin reading (once)."""
        if self._pending is None:
            query = [(_DIRECTORY_SQL, DIRECTORY_SCHEMA.remove(3))]
            self._pending = self._stack.enter_context(
                store.read_later(self._engine, query, aside=self._aside)
            )

    def table(self) -> pa.Table:
        """``subject, handle, names`` for every subject (waits for the read)."""
        self.start()
        assert self._pending is not None
        try:
            (rows,) = self._pending.result()
        finally:
            self.close()
        return with_former(rows, self._former, handles=True)

    def with_protected(self, names: pa.Table) -> pa.Table:
        """The whole directory in DIRECTORY_SCHEMA, protected subjects marked."""
        rows = self.table()
        flag = pc.cast(pc.is_in(rows.column("subject"), names.column("subject")), pa.int64())
        return rows.append_column(DIRECTORY_SCHEMA.field("protected"), flag)

    def close(self) -> None:
        """Stop a read still running (a build that failed, or did not need it)."""
        self._stack.close()


@dataclass
class Consent:
    """Everything a gate engine needs to know about the subjects, for one build."""

    purpose: Purpose
    as_of: int
    head: Head
    policy_hash: str
    decisions: pa.Table  # rules.decisions_schema(), one row per subject known at the head
    names: pa.Table  # DIRECTORY_SCHEMA: the protected subjects, whose names are looked for
    directory: Directory  # everyone's handles and names, read when needed
    forgotten: Forgotten | None = field(default=None)  # erased subjects' names, if any

    def release(self) -> None:
        """Let go of the decisions once an engine has loaded them, so that a build does
        not hold a second copy of them while it streams."""
        self.decisions = decisions_schema().empty_table()


def with_former(table: pa.Table, former: pa.Table | None, *, handles: bool) -> pa.Table:
    """``table`` (``subject, handle, names``, ...) with each subject's former names added
    to its names, and (``handles``) a row more for each former handle."""
    if former is None or former.num_rows == 0 or table.num_rows == 0:
        return table
    extra: dict[str, list[str]] = {}
    for subject, kind, value in zip(*(former.column(c).to_pylist() for c in former.column_names),
                                    strict=True):  # fmt: skip
        if kind == directory.NAME:
            extra.setdefault(subject, []).append(value)
    if extra:
        subjects = table.column("subject").combine_chunks()
        at = np.flatnonzero(
            pc.is_in(subjects, pa.array(list(extra), pa.string())).to_numpy(zero_copy_only=False)
        )
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[at] = True
        old = table.column("names").combine_chunks().take(pa.array(at, pa.int64())).to_pylist()
        new = [
            json.dumps([*json.loads(names or "[]"), *extra[str(subjects[k])]])
            for k, names in zip(at.tolist(), old, strict=True)
        ]
        column = pc.replace_with_mask(
            table.column("names").combine_chunks(), pa.array(mask), pa.array(new, pa.string())
        )
        table = table.set_column(table.schema.get_field_index("names"), "names", column)
    if handles:
        former_handles = former.filter(pc.equal(former.column("kind"), directory.HANDLE))
        if former_handles.num_rows:
            n = former_handles.num_rows
            rows = {
                "subject": former_handles.column("subject"),
                "handle": former_handles.column("value"),
                "names": pa.array(["[]"] * n, pa.string()),
            }
            more = pa.table(
                [rows.get(f.name, pa.nulls(n, f.type)) for f in table.schema], schema=table.schema
            )
            table = pa.concat_tables([table, more])
    return table


def gather(
    ledger: Ledger,
    purpose: str,
    as_of: datetime | None = None,
    *,
    key_dir: str | Path | None = None,
) -> Consent:
    """Pin the head and read the decisions and names a build of ``purpose`` needs (with
    forgotten names, the names key from ``key_dir``: see ``forgotten.key_folder``)."""
    p = ledger.policy.purpose(purpose)
    head = ledger.head()
    now = times.to_micros(times.now())
    at = times.to_micros(as_of) if as_of is not None else now
    if at > now:
        raise InputError(f"as-of {times.iso(at)} is in the future")
    with ledger.engine.connect() as conn:
        former = directory.protected_former(conn, now)
        erased = directory.forgotten_rows(conn)
    forgotten = Forgotten.load(erased, key_dir) if erased.num_rows else None
    # On a big ledger the protected names are read aside while the decisions are read.
    aside = store.has_rows(ledger.engine, "subjects", decisions.ASIDE_SUBJECTS)
    with store.read_later(ledger.engine, [(_NAMES_SQL, DIRECTORY_SCHEMA)], aside=aside) as read:
        table = decisions.decisions_for_use(ledger, p, head, at)
        (names,) = read.result()
    release_duckdb()  # what the reads cached is not needed while the build streams
    return Consent(
        p,
        at,
        head,
        ledger.policy.hash,
        table,
        with_former(names, former, handles=False),
        Directory(ledger.engine, aside, former),
        forgotten,
    )
