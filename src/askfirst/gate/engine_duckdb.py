"""The gate on DuckDB: one streaming pass over the corpus, out of core.

DuckDB reads the corpus, checks each record and joins its author's decision, and hands
the rows over in Arrow batches; each batch is then searched for mentions (see
``redaction``), written to Parquet and counted. Memory holds one batch, the decisions
and the lineage counts (one row per subject), never the corpus.
"""

from __future__ import annotations

import tempfile
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from askfirst.errors import InputError
from askfirst.gate import corpus as corpus_mod
from askfirst.gate.consent import Directory
from askfirst.gate.mentions import (
    DIGEST,
    LINEAGE_SQL,
    ROW_TEXT,
    AuthorCounters,
    MentionStep,
    load_directory,
    load_tables,
)
from askfirst.gate.plan import OUTPUT_SCHEMA, Outcome, Plan
from askfirst.gate.redaction import NameFinder
from askfirst.rules import record_reason_sql

# Excluded records leave their text and mentions behind here: only the reason travels on.
_MAIN = """
SELECT record_id, category, created_at, author_id, author_idx, shard_key, reason,
  CASE WHEN reason IS NULL THEN text END AS text,
  CASE WHEN reason IS NULL THEN mentions END AS mentions,
  reason IS NULL AND (len(mentions) > 0 OR contains(text, '@')) AS scan,
  {digest}
FROM (
  SELECT *, CASE WHEN reason IS NULL THEN md5_number({row}) END AS md5_ FROM (
    SELECT c.record_id, c.category, c.created_at, c.text, c.author_id, c.mentions, d.shard_key,
      d.idx AS author_idx, {reason} AS reason
    FROM ({corpus}) c LEFT JOIN decisions d ON d.subject = c.author_id))"""


class _Writer:
    """Parquet files of at most ``rows_per_file`` records: part-00000.parquet, ...

    Encoding runs on a thread of its own (Arrow releases the GIL), so that DuckDB reads
    the next batch meanwhile; at most two batches wait, so memory stays flat.
    """

    def __init__(self, folder: Path, rows_per_file: int) -> None:
        self.folder = folder
        self.rows_per_file = rows_per_file
        self.files: list[str] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="askfirst-writer")
        self._pending: deque[Future[None]] = deque()
        self.categories: Counter[str] = Counter()

    def write(self, table: pa.Table) -> None:
        for item in pc.value_counts(table.column("category")).to_pylist():
            self.categories[item["values"]] += item["counts"]
        while len(self._pending) >= 2:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, table))

    def _write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self._writer is None or self._rows >= self.rows_per_file:
                self._close_file()
                name = f"part-{len(self.files):05d}.parquet"
                self._writer = pq.ParquetWriter(
                    self.folder / name, OUTPUT_SCHEMA, use_dictionary=["category"]
                )
                self.files.append(name)
                self._rows = 0
            take = min(table.num_rows, self.rows_per_file - self._rows)
            self._writer.write_table(table.slice(0, take))
            self._rows += take
            table = table.slice(take)

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        """Wait for every write; raise the first error a write met."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)
            self._close_file()


class _LateDirectory:
    """The directory, read and loaded into DuckDB only if a record may mention someone."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.loaded = False

    def expect(self) -> None:
        self.directory.start()

    def ready(self, cur: duckdb.DuckDBPyConnection) -> None:
        if not self.loaded:
            load_directory(cur, self.directory.table())
            self.loaded = True


def _connect(spill: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(spill)})
    con.execute("SET TimeZone = 'UTC'")
    # Records may come out in any order: the snapshot id does not depend on it.
    con.execute("SET preserve_insertion_order = false")
    return con


def run(plan: Plan, out: Path, progress: Callable[[int], None] | None = None) -> Outcome:
    """Build the snapshot's data files under ``out/data`` and count everything."""
    data = out / "data"
    data.mkdir(parents=True)
    finder = NameFinder.from_directory(plan.consent.names, plan.consent.forgotten)
    finder.allow(plan.consent.decisions)
    # DuckDB spills into the build's hidden folder, so that it goes with it if the
    # build is killed.
    with tempfile.TemporaryDirectory(prefix="askfirst-spill-", dir=out) as spill:
        con = _connect(Path(spill), plan.memory_limit)
        try:
            return _run(con, plan, data, finder, progress)
        finally:
            con.close()
            plan.consent.directory.close()


def _run(
    con: duckdb.DuckDBPyConnection,
    plan: Plan,
    data: Path,
    finder: NameFinder,
    progress: Callable[[int], None] | None,
) -> Outcome:
    # Tables, not views: the mention queries run on a second cursor, which sees only
    # the database's tables.
    load_tables(con, plan.consent.decisions)
    authors = AuthorCounters(plan.consent.decisions.num_rows)
    plan.consent.release()  # DuckDB holds them now: no second copy for the whole build
    consent = plan.consent
    sql = _MAIN.format(
        digest=DIGEST,
        row=ROW_TEXT,
        corpus=corpus_mod.relation_sql(con, plan.corpus),
        reason=record_reason_sql("duckdb", consent.purpose, consent.as_of, plan.never_used),
    )
    cur = con.cursor()
    writer = _Writer(data, plan.rows_per_file)
    counts: Counter[str] = Counter()
    step = MentionStep(
        cur,
        plan.on_mention,
        finder,
        writer,
        counts,
        authors,
        plan.mention_rows,
        plan.mention_bytes,
        _LateDirectory(plan.consent.directory),
        background=True,
    )
    seen = 0
    try:
        reader = con.sql(sql).to_arrow_reader(plan.batch_rows)
        for batch in reader:
            seen += batch.num_rows
            step.add(pa.Table.from_batches([batch]))
            if progress is not None:
                progress(seen)
        step.flush()
    except duckdb.Error as e:
        raise InputError(f"corpus {plan.corpus.path}: {corpus_mod._first_line(e)}") from None
    finally:
        step.close()
        writer.close()
    malformed_lines = corpus_mod.rejected_csv_lines(con, plan.corpus)
    if malformed_lines:
        counts["malformed"] += malformed_lines
        seen += malformed_lines
    cur.register("authors_", authors.table())
    cur.execute(
        "INSERT INTO lin SELECT d.subject, c.a, 0, NULL "
        "FROM authors_ c JOIN decisions d USING (idx)"
    )
    lineage = cur.sql(LINEAGE_SQL).to_arrow_table()
    cur.close()
    return Outcome(
        input_records=seen,
        output_records=step.written,
        excluded=dict(counts),
        redacted_mentions=step.redacted,
        digest=step.digest,
        files=writer.files,
        lineage=lineage,
        by_category=dict(writer.categories),
    )
