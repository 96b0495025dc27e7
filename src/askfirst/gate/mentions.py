"""The per-batch step every gate engine shares: find mentions, redact or drop, hash.

Given a batch of records that passed the author and category rules, it finds who each
record mentions — by the mentions list, by ``@handle`` and by protected names, and the
names and handles of erased subjects, known only as keyed digests (``forgotten``) —
redacts (or drops) the mentions of anyone who did not say yes, writes what is left to a
sink, and counts lineage. It runs on a DuckDB connection holding the build's
``decisions`` and ``directory`` tables (see :func:`load_tables`): in the DuckDB engine's
own process, and on each Spark executor, so that both engines give the same records,
byte for byte.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from askfirst.gate.plan import MENTION_BYTES, MENTION_ROWS, OUTPUT_SCHEMA
from askfirst.gate.redaction import HANDLE_RE, NameFinder, redact
from askfirst.lineage import MAX_MENTION_KEYS, shard_key_sql

# The row as hashed for the snapshot's content digest.
ROW_TEXT = "concat_ws(chr(31), record_id, category, epoch_us(created_at), shard_key, text)"
# Four 32-bit words of the record's MD5 (read as DuckDB's md5_number does).
DIGEST = ", ".join(f"((md5_ >> {32 * k}) & 4294967295)::BIGINT AS h{k}" for k in range(4))


class Sink(Protocol):
    """Where a batch's output records go."""

    def write(self, table: pa.Table) -> None: ...


class Authors(Protocol):
    """Counts each author's records written (the mentions kept go to ``lin``)."""

    def authors(self, cur: duckdb.DuckDBPyConnection, written: pa.Table) -> None: ...


class AuthorsInLin:
    """Authors counted as rows of the ``lin`` table, a batch at a time (for an engine
    that hands each batch's lineage on, as Spark's executors do)."""

    def authors(self, cur: duckdb.DuckDBPyConnection, written: pa.Table) -> None:
        cur.register("authors_", written.select(["author_id"]))
        cur.execute(
            "INSERT INTO lin SELECT author_id, count(*), 0, NULL FROM authors_ GROUP BY ALL"
        )
        cur.unregister("authors_")


class AuthorCounters:
    """Authors counted in one array over the decisions' rows: memory in proportion to
    the subjects, however long the corpus (``written`` carries ``author_idx``)."""

    def __init__(self, subjects: int) -> None:
        self.counts = np.zeros(subjects, dtype=np.int64)
        # A count passes over every subject, so batches wait until they hold as many
        # records as there are subjects (memory: one more such array, at most).
        self._waiting: list[np.ndarray] = []
        self._records = 0

    def authors(self, cur: duckdb.DuckDBPyConnection, written: pa.Table) -> None:
        self._waiting.append(written.column("author_idx").to_numpy())
        self._records += written.num_rows
        if self._records >= self.counts.size:
            self._count()

    def _count(self) -> None:
        if self._waiting:
            idx = np.concatenate(self._waiting)
            self.counts += np.bincount(idx, minlength=self.counts.size)
            self._waiting, self._records = [], 0

    def table(self) -> pa.Table:
        """``idx, a`` for every author with a record written."""
        self._count()
        nz = np.flatnonzero(self.counts)
        return pa.table({"idx": pa.array(nz, pa.int64()), "a": pa.array(self.counts[nz])})


def load_tables(
    con: duckdb.DuckDBPyConnection, decisions: pa.Table, directory: pa.Table | None = None
) -> None:
    """Create the tables the step reads (decisions; directory, now or with
    :func:`load_directory` before the first mention query) and fills (lin)."""
    con.register("decisions_", decisions)
    con.execute(
        "CREATE TABLE decisions AS SELECT *, row_number() OVER () - 1 AS idx, "
        f"{shard_key_sql('duckdb', 'subject')} AS shard_key FROM decisions_"
    )
    con.unregister("decisions_")
    con.execute("CREATE TABLE lin (subject VARCHAR, a BIGINT, m BIGINT, k INTEGER[])")
    if directory is not None:
        load_directory(con, directory)


def load_directory(con: duckdb.DuckDBPyConnection, directory: pa.Table) -> None:
    """Create the ``directory`` table: every subject's handle and names."""
    con.register("directory_", directory)
    # Names stay JSON text: only those of records to redact are parsed (in Python).
    con.execute("CREATE TABLE directory AS SELECT subject, handle, names FROM directory_")
    con.unregister("directory_")


class DirectoryHook(Protocol):
    """For an engine that creates the ``directory`` table only when records that may
    mention someone come: :meth:`expect` at the first such record, :meth:`ready` before
    the first mention query."""

    def expect(self) -> None: ...

    def ready(self, cur: duckdb.DuckDBPyConnection) -> None: ...


# For the records that may mention someone: who, and whether each said yes (one row
# per record and subject).
_MENTIONS = f"""
WITH tok AS (
  SELECT i, unnest(regexp_extract_all(text, '{HANDLE_RE}', 1)) AS h
  FROM cand WHERE contains(text, '@')),
found AS (
  SELECT i, unnest(mentions) AS subject FROM cand
  UNION ALL SELECT tok.i, d.subject FROM tok JOIN directory d ON d.handle = lower(tok.h)
  UNION ALL SELECT i, subject FROM hits)
SELECT DISTINCT f.i, f.subject, coalesce(x.allowed, false) AS ok
FROM found f JOIN cand c ON c.i = f.i LEFT JOIN decisions x ON x.subject = f.subject
WHERE f.subject <> c.author_id"""

# Every @handle in the records, with when each record was written (for erased handles).
_HANDLES = f"""
SELECT i, lower(h) AS h, epoch_us(created_at) AS at FROM (
  SELECT i, created_at, unnest(regexp_extract_all(text, '{HANDLE_RE}', 1)) AS h
  FROM cand WHERE contains(text, '@'))"""

# Each mention of someone who did not say yes, by record, with their handle and names
# to redact (grouped by record in Python: DuckDB's list aggregates cost more).
_NOT_OK = """
SELECT m.i, m.subject, d.handle, d.names
FROM found_ m LEFT JOIN directory d ON d.subject = m.subject
WHERE NOT m.ok ORDER BY m.i, m.subject"""


Redactions = list[tuple[int, list[str], list[str], list[str]]]


def _by_record(not_ok: pa.Table) -> Redactions:
    """``_NOT_OK``'s rows as (record, subjects, handles, names), one per record (a
    subject with a former handle has a directory row for each handle)."""
    i = not_ok.column("i").to_numpy()
    if i.size == 0:
        return []
    starts = np.flatnonzero(np.concatenate([[True], i[1:] != i[:-1]])).tolist()
    subjects = not_ok.column("subject").to_pylist()
    handles = not_ok.column("handle").to_pylist()
    names = not_ok.column("names").to_pylist()
    out = []
    for a, b in zip(starts, [*starts[1:], i.size], strict=True):
        out.append(
            (
                int(i[a]),
                list(dict.fromkeys(subjects[a:b])),
                [h for h in handles[a:b] if h is not None],
                [n for ns in names[a:b] if ns is not None for n in json.loads(ns)],
            )
        )
    return out


# One row per subject; for a kept mention, the shard keys of the records that hold it.
LINEAGE_SQL = f"""
SELECT subject AS subject_id, author_records, mention_records,
  CASE WHEN mention_records > 0 AND len(keys) <= {MAX_MENTION_KEYS}
       THEN to_json(keys)::VARCHAR END AS mention_keys
FROM (
  SELECT subject, sum(a)::BIGINT AS author_records, sum(m)::BIGINT AS mention_records,
    list_sort(list_distinct(flatten(list(k) FILTER (WHERE k IS NOT NULL)))) AS keys
  FROM lin GROUP BY subject)
ORDER BY subject_id"""

_REHASH = f"""
SELECT {DIGEST} FROM (SELECT md5_number({ROW_TEXT}) AS md5_ FROM rows_)"""


def _sums(table: pa.Table) -> list[int]:
    return [int(pc.sum(table.column(f"h{k}")).as_py() or 0) for k in range(4)]


def _with_erased(
    bad: Redactions, names: list[tuple[int, str, str]], handles: list[tuple[int, str, str]]
) -> Redactions:
    """``bad`` with the erased subjects' names and handles found in the same records:
    (record, subject, the text found). An erased subject's answer is always no."""
    if not names and not handles:
        return bad
    merged = {k: (subjects, hs, ns) for k, subjects, hs, ns in bad}
    for found, at in ((names, 2), (handles, 1)):
        for k, subject, text in found:
            entry = merged.setdefault(k, ([], [], []))
            if subject not in entry[0]:
                entry[0].append(subject)
            entry[at].append(text)
    return [(k, *merged[k]) for k in sorted(merged)]


def _names_uncovered(
    finder: NameFinder, texts: dict[int, str], rewritten: dict[int, set[str]]
) -> int:
    """Redact protected (and erased subjects') names that a redaction left standing as
    whole words (as in "@handleØrsted" once the handle is gone); returns the mentions
    newly redacted."""
    added = 0
    todo = sorted(rewritten)
    for _ in range(3):
        if not todo:
            break
        found = finder.search(pa.array([texts[k] for k in todo], pa.string()))
        names: dict[int, list[str]] = {}
        for row, subject, text in zip(found.rows, found.subjects, found.texts, strict=True):
            if text is None and subject in finder.allowed:
                continue
            k = todo[row]
            names.setdefault(k, []).extend(
                [text] if text is not None else finder.names_of.get(subject, [])
            )
            if subject not in rewritten[k]:
                rewritten[k].add(subject)
                added += 1
        again = []
        for k, wanted in names.items():
            new = redact(texts[k], [], wanted)
            if new != texts[k]:
                texts[k] = new
                again.append(k)
        todo = sorted(again)
    return added


class MentionStep:
    """The step over a stream of batches. Records with no possible mention are written
    at once; the others wait in a buffer, and the mention query (which joins the
    subject-sized ``decisions`` and ``directory`` tables) runs once per ``flush_rows``
    of them rather than once per batch. :meth:`flush` at the end of the stream, and
    :meth:`close` on every path.

    With ``background``, the waiting records go through the mention step on a thread
    of its own while the next batches come in (one such lot at a time, so memory stays
    bounded); ``cur`` is then used on that thread only.
    """

    def __init__(
        self,
        cur: duckdb.DuckDBPyConnection,
        on_mention: str,
        finder: NameFinder,
        sink: Sink,
        counts: Counter[str],
        authors: Authors,
        flush_rows: int = MENTION_ROWS,
        flush_bytes: int = MENTION_BYTES,
        directory: DirectoryHook | None = None,  # None: the table is there already
        background: bool = False,
    ) -> None:
        self.cur, self.on_mention, self.finder = cur, on_mention, finder
        self.directory = directory
        # Writes and counts come from both threads with ``background``.
        self._lock = threading.Lock()
        self._pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="askfirst-mentions")
            if background
            else None
        )
        self._pending: deque[Future[None]] = deque()
        self.sink, self.counts, self.authors = sink, counts, authors
        self.flush_rows, self.flush_bytes = flush_rows, flush_bytes
        self.written = self.redacted = 0
        self.digest = [0, 0, 0, 0]
        self._waiting: list[pa.Table] = []
        self._hit_rows: list[int] = []
        self._hit_subjects: list[str] = []
        self._hit_texts: list[str | None] = []  # an erased subject's name, as found
        self._buffered = self._bytes = 0

    def add(self, table: pa.Table) -> None:
        """Count a batch's records by reason and take the usable ones. ``table`` has
        the columns of the engines' main query (a ``reason`` for every record left out)."""
        with self._lock:
            for item in pc.value_counts(table.column("reason")).to_pylist():
                if item["values"] is not None:
                    self.counts[item["values"]] += item["counts"]
        usable = pc.is_null(table.column("reason")).combine_chunks()
        # The engines leave the texts of records left out NULL, so the search for names
        # runs over the usable ones (in place: no copy of the batch to filter first).
        found = self.finder.search(table.column("text").combine_chunks())
        hit_rows, hit_subjects, hit_texts = found.rows, found.subjects, found.texts
        flagged = pc.and_(usable, pc.fill_null(table.column("scan"), False).combine_chunks())
        if hit_rows:
            hit = np.zeros(table.num_rows, dtype=bool)
            hit[hit_rows] = True
            flagged = pc.and_(usable, pc.or_(flagged, pa.array(hit)))
            keep = usable.to_numpy(zero_copy_only=False)[hit_rows]
            hit_rows = [r for r, k in zip(hit_rows, keep, strict=True) if k]
            hit_subjects = [s for s, k in zip(hit_subjects, keep, strict=True) if k]
            hit_texts = [t for t, k in zip(hit_texts, keep, strict=True) if k]
        plain = table.filter(pc.and_not(usable, flagged))
        if plain.num_rows:
            self._write(plain, _sums(plain))
        cand = table.filter(flagged)
        if cand.num_rows == 0:
            return
        if self.directory is not None:
            self.directory.expect()
        # Where each flagged record lands in ``cand``, to carry the name hits along.
        position = np.cumsum(flagged.to_numpy(zero_copy_only=False)) - 1
        self._hit_rows.extend((position[hit_rows] + self._buffered).tolist())
        self._hit_subjects.extend(hit_subjects)
        self._hit_texts.extend(hit_texts)
        self._waiting.append(cand)
        self._buffered += cand.num_rows
        self._bytes += cand.column("text").nbytes
        if self._buffered >= self.flush_rows or self._bytes >= self.flush_bytes:
            self._hand_over()

    def flush(self) -> None:
        """Put every waiting record through the mention step and wait until it is done."""
        self._hand_over()
        self._wait()

    def close(self) -> None:
        """Stop the step's thread, if any (after :meth:`flush`, or when a build failed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _wait(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def _hand_over(self) -> None:
        if not self._waiting:
            return
        cand = pa.concat_tables(self._waiting)
        hits = _Hits(
            np.array(self._hit_rows, dtype=np.int64),
            pa.array(self._hit_subjects, pa.string()),
            self._hit_texts,
        )
        self._waiting, self._hit_rows, self._hit_subjects, self._hit_texts = [], [], [], []
        self._buffered = self._bytes = 0
        if self._pool is None:
            self._process(cand, hits)
            return
        self._wait()  # one lot at a time
        self._pending.append(self._pool.submit(self._process, cand, hits))

    def _process(self, cand: pa.Table, found: _Hits) -> None:
        """The waiting records through the mention query, at most ``flush_rows`` records
        and ``flush_bytes`` of text at a time (its memory grows with both)."""
        if self.directory is not None:
            self.directory.ready(self.cur)
        ends = np.cumsum(pc.binary_length(cand.column("text")).to_numpy(zero_copy_only=False))
        start = 0
        while start < cand.num_rows:
            before = int(ends[start - 1]) if start else 0
            fits = int(np.searchsorted(ends, before + self.flush_bytes, side="right"))
            stop = max(start + 1, min(start + self.flush_rows, fits, cand.num_rows))
            part = cand.slice(start, stop - start)
            part = part.append_column("i", pa.array(np.arange(part.num_rows), pa.int64()))
            mine = np.flatnonzero((found.rows >= start) & (found.rows < stop))
            erased = [k for k in mine.tolist() if found.texts[k] is not None]
            protected = np.array([k for k in mine.tolist() if found.texts[k] is None], np.int64)
            hits = pa.table(
                {
                    "i": pa.array(found.rows[protected] - start, pa.int64()),
                    "subject": found.subjects.take(pa.array(protected, pa.int64())),
                }
            )
            names = [
                (int(found.rows[k]) - start, str(found.subjects[k]), str(found.texts[k]))
                for k in erased
            ]
            self._mentions(part, hits, names)
            start = stop

    def _mentions(self, cand: pa.Table, hits: pa.Table, erased: list[tuple[int, str, str]]) -> None:
        """Find who the records in ``cand`` mention, redact or drop, write them
        (``erased``: the erased subjects' names found in them, by record)."""
        cur, finder = self.cur, self.finder
        cur.register("cand", cand.select(["i", "text", "author_id", "mentions", "created_at"]))
        cur.register("hits", hits)
        found = cur.sql(_MENTIONS).to_arrow_table()
        erased_handles = self._erased_handles(cur)
        cur.unregister("cand")
        cur.unregister("hits")
        cur.register("found_", found)
        # Only records that mention someone who said no come to Python.
        bad = _by_record(cur.sql(_NOT_OK).to_arrow_table())
        bad = _with_erased(bad, erased, erased_handles)
        rows = [k for k, *_ in bad]
        texts: dict[int, str] = {}  # position -> the text as rewritten
        rewritten: dict[int, set[str]] = {}  # position -> the subjects redacted there
        redacting = bad if self.on_mention == "redact" else []
        old = cand.column("text").take(pa.array([k for k, *_ in redacting], pa.int64()))
        for (k, subjects, handles, names), text in zip(redacting, old.to_pylist(), strict=True):
            self.redacted += len(subjects)
            new = redact(text, handles, names)
            if new != text:
                texts[k] = new
                rewritten[k] = set(subjects)
        self.redacted += _names_uncovered(finder, texts, rewritten)
        out = cand
        if texts:
            at = sorted(texts)
            mask = np.zeros(cand.num_rows, dtype=bool)
            mask[at] = True
            column = pc.replace_with_mask(
                cand.column("text").combine_chunks(),
                pa.array(mask),
                pa.array([texts[k] for k in at], pa.string()),
            )
            out = out.set_column(out.schema.get_field_index("text"), "text", column)
        if self.on_mention == "drop" and rows:
            with self._lock:
                self.counts["mention-not-consented"] += len(rows)
            keep = np.ones(cand.num_rows, dtype=bool)
            keep[rows] = False
            out = out.filter(pa.array(keep))
        if out.num_rows:
            if texts:
                cur.register("rows_", out.select(OUTPUT_SCHEMA.names))
                sums = _sums(cur.sql(_REHASH).to_arrow_table())
            else:
                sums = _sums(out)
            self._write(out, sums)
            cur.register("rows_", out.select(["i", "shard_key"]))
            cur.execute(
                "INSERT INTO lin SELECT f.subject, 0, count(*), list(DISTINCT r.shard_key) "
                "FROM found_ f JOIN rows_ r ON r.i = f.i WHERE f.ok GROUP BY f.subject"
            )
            cur.unregister("rows_")
        cur.unregister("found_")

    def _erased_handles(self, cur: duckdb.DuckDBPyConnection) -> list[tuple[int, str, str]]:
        """(record, subject, handle) for each @handle in ``cand`` that an erased subject
        had — unless someone holds it now and the record was written after it was
        erased: then it is theirs."""
        forgotten = self.finder.forgotten
        if forgotten is None or not forgotten.handles:
            return []
        toks = cur.sql(_HANDLES).to_arrow_table()
        if toks.num_rows == 0:
            return []
        known = {h: forgotten.handle(h) for h in pc.unique(toks.column("h")).to_pylist()}
        theirs = {h: who for h, who in known.items() if who is not None}
        if not theirs:
            return []
        mine = toks.filter(pc.is_in(toks.column("h"), pa.array(list(theirs), pa.string())))
        cur.register("erased_", pa.table({"h": pa.array(list(theirs), pa.string())}))
        held = {
            h for (h,) in cur.sql(
                "SELECT DISTINCT d.handle FROM directory d JOIN erased_ e ON d.handle = e.h"
            ).fetchall()
        }  # fmt: skip
        cur.unregister("erased_")
        out = []
        for i, h, at in zip(*(mine.column(c).to_pylist() for c in ("i", "h", "at")), strict=True):
            subject, forgotten_at = theirs[h]
            if h in held and at > forgotten_at:
                continue
            out.append((int(i), subject, h))
        return out

    def _write(self, table: pa.Table, sums: list[int]) -> None:
        with self._lock:
            self.sink.write(table.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA))
            self.authors.authors(self.cur, table)
            self.written += table.num_rows
            self.digest = [a + b for a, b in zip(self.digest, sums, strict=True)]


@dataclass(frozen=True)
class _Hits:
    """Names found in the records waiting: by position, whose, and (for an erased
    subject) the text found."""

    rows: np.ndarray
    subjects: pa.Array
    texts: list[str | None]


def process_batch(
    cur: duckdb.DuckDBPyConnection,
    on_mention: str,
    table: pa.Table,
    finder: NameFinder,
    sink: Sink,
    counts: Counter[str],
    authors: Authors,
) -> tuple[int, int, list[int]]:
    """One batch through the whole step (see :class:`MentionStep`). Returns the records
    written, mentions redacted and digest sums."""
    step = MentionStep(cur, on_mention, finder, sink, counts, authors)
    try:
        step.add(table)
        step.flush()
    finally:
        step.close()
    return step.written, step.redacted, step.digest
