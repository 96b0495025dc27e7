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
from askfirst.gate.plan import MAX_MENTION_KEYS, OUTPUT_SCHEMA, Outcome, Plan
from askfirst.gate.redaction import HANDLE_RE, NameFinder, redact

# The row as hashed for the snapshot's content digest; the Spark engine builds the same.
_ROW_TEXT = "concat_ws(chr(31), record_id, category, epoch_us(created_at), shard_key, text)"
# Four 32-bit words of the record's MD5 (read as DuckDB's md5_number does).
_DIGEST = ", ".join(f"((md5_ >> {32 * k}) & 4294967295)::BIGINT AS h{k}" for k in range(4))

# Excluded records leave their text and mentions behind here: only the reason travels on.
_MAIN = """
SELECT record_id, category, created_at, author_id, shard_key, reason,
  CASE WHEN reason IS NULL THEN text END AS text,
  CASE WHEN reason IS NULL THEN mentions END AS mentions,
  reason IS NULL AND (len(mentions) > 0 OR contains(text, '@')) AS scan,
  {digest}
FROM (
  SELECT *, CASE WHEN reason IS NULL THEN md5_number({row}) END AS md5_ FROM (
    SELECT c.record_id, c.category, c.created_at, c.text, c.author_id, c.mentions, d.shard_key,
      CASE WHEN c.malformed THEN 'malformed'
           WHEN list_contains($never, c.category) THEN 'category-never-used'
           WHEN NOT list_contains($categories, c.category) THEN 'category-not-allowed'
           WHEN epoch_us(c.created_at) > $as_of THEN 'created-after-as-of'
           WHEN d.subject IS NULL THEN 'unknown-subject'
           WHEN NOT d.allowed THEN d.reason
      END AS reason
    FROM ({corpus}) c LEFT JOIN decisions d ON d.subject = c.author_id))"""

# For the records that may mention someone: who, and whether each said yes.
_MENTIONS = f"""
WITH tok AS (
  SELECT i, unnest(regexp_extract_all(text, '{HANDLE_RE}', 1)) AS h
  FROM cand WHERE contains(text, '@')),
found AS (
  SELECT i, unnest(mentions) AS subject FROM cand
  UNION ALL SELECT tok.i, d.subject FROM tok JOIN directory d ON d.handle = lower(tok.h)
  UNION ALL SELECT i, subject FROM hits),
m AS (
  SELECT DISTINCT f.i, f.subject, coalesce(x.allowed, false) AS ok
  FROM found f JOIN cand c ON c.i = f.i LEFT JOIN decisions x ON x.subject = f.subject
  WHERE f.subject <> c.author_id)
SELECT m.i,
  count(*) FILTER (WHERE NOT m.ok) AS n_bad,
  coalesce(list(m.subject ORDER BY m.subject) FILTER (WHERE m.ok), []) AS kept,
  coalesce(list(d.handle) FILTER (WHERE NOT m.ok AND d.handle IS NOT NULL), []) AS bad_handles,
  coalesce(list(m.subject) FILTER (WHERE NOT m.ok), []) AS bad_subjects,
  coalesce(flatten(list(d.names) FILTER (WHERE NOT m.ok AND d.names IS NOT NULL)), [])
    AS bad_names
FROM m LEFT JOIN directory d ON d.subject = m.subject
GROUP BY m.i ORDER BY m.i"""

# One row per subject; for a kept mention, the shard keys of the records that hold it.
_LINEAGE = f"""
SELECT subject AS subject_id, author_records, mention_records,
  CASE WHEN mention_records > 0 AND len(keys) <= {MAX_MENTION_KEYS}
       THEN to_json(keys)::VARCHAR END AS mention_keys
FROM (
  SELECT subject, sum(a)::BIGINT AS author_records, sum(m)::BIGINT AS mention_records,
    list_sort(list_distinct(flatten(list(k) FILTER (WHERE k IS NOT NULL)))) AS keys
  FROM lin GROUP BY subject)
ORDER BY subject_id"""

_REHASH = f"""
SELECT {_DIGEST} FROM (SELECT md5_number({_ROW_TEXT}) AS md5_ FROM rows_)"""


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


def _sums(table: pa.Table) -> list[int]:
    return [int(pc.sum(table.column(f"h{k}")).as_py() or 0) for k in range(4)]


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
    finder = NameFinder.from_directory(plan.consent.directory)
    finder.allow(plan.consent.decisions)
    with tempfile.TemporaryDirectory(prefix="askfirst-spill-") as spill:
        con = _connect(Path(spill), plan.memory_limit)
        try:
            return _run(con, plan, data, finder, progress)
        finally:
            con.close()


def _run(
    con: duckdb.DuckDBPyConnection,
    plan: Plan,
    data: Path,
    finder: NameFinder,
    progress: Callable[[int], None] | None,
) -> Outcome:
    # Tables, not views: the mention queries run on a second cursor, which sees only
    # the database's tables.
    con.register("decisions_", plan.consent.decisions)
    con.register("directory_", plan.consent.directory)
    con.execute(
        "CREATE TABLE decisions AS SELECT *, "
        "(md5_number(subject) & 65535)::INTEGER AS shard_key FROM decisions_"
    )
    con.execute(
        "CREATE TABLE directory AS SELECT subject, handle, "
        "from_json(names, '[\"VARCHAR\"]') AS names FROM directory_"
    )
    con.execute("CREATE TABLE lin (subject VARCHAR, a BIGINT, m BIGINT, k INTEGER[])")
    sql = _MAIN.format(
        digest=_DIGEST, row=_ROW_TEXT, corpus=corpus_mod.relation_sql(con, plan.corpus)
    )
    params = {
        "never": list(plan.never_used),
        "categories": list(plan.consent.purpose.categories),
        "as_of": plan.consent.as_of,
    }
    cur = con.cursor()
    writer = _Writer(data, plan.rows_per_file)
    counts: Counter[str] = Counter()
    digest = [0, 0, 0, 0]
    seen = written = redacted = 0
    try:
        reader = con.sql(sql, params=params).to_arrow_reader(plan.batch_rows)
        for batch in reader:
            table = pa.Table.from_batches([batch])
            seen += table.num_rows
            for item in pc.value_counts(table.column("reason")).to_pylist():
                if item["values"] is not None:
                    counts[item["values"]] += item["counts"]
            kept = table.filter(pc.is_null(table.column("reason")))
            n_out, n_red, sums = _mentions(cur, plan, kept, finder, writer, counts)
            written += n_out
            redacted += n_red
            digest = [a + b for a, b in zip(digest, sums, strict=True)]
            if progress is not None:
                progress(seen)
    except duckdb.Error as e:
        raise InputError(f"corpus {plan.corpus.path}: {corpus_mod._first_line(e)}") from None
    finally:
        writer.close()
    malformed_lines = corpus_mod.rejected_csv_lines(con, plan.corpus)
    if malformed_lines:
        counts["malformed"] += malformed_lines
        seen += malformed_lines
    lineage = cur.sql(_LINEAGE).to_arrow_table()
    cur.close()
    return Outcome(
        input_records=seen,
        output_records=written,
        excluded=dict(counts),
        redacted_mentions=redacted,
        digest=digest,
        files=writer.files,
        lineage=lineage,
        by_category=dict(writer.categories),
    )


def _names_uncovered(finder: NameFinder, texts: list[str], rewritten: dict[int, set[str]]) -> int:
    """Redact protected names that a redaction left standing as whole words (as in
    "@handleØrsted" once the handle is gone); returns the mentions newly redacted."""
    added = 0
    todo = sorted(rewritten)
    for _ in range(3):
        if not todo:
            break
        rows, subjects = finder.find(pa.array([texts[k] for k in todo], pa.string()))
        names: dict[int, list[str]] = {}
        for row, subject in zip(rows, subjects, strict=True):
            if subject in finder.allowed:
                continue
            k = todo[row]
            names.setdefault(k, []).extend(finder.names_of.get(subject, []))
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


def _mentions(
    cur: duckdb.DuckDBPyConnection,
    plan: Plan,
    kept: pa.Table,
    finder: NameFinder,
    writer: _Writer,
    counts: Counter[str],
) -> tuple[int, int, list[int]]:
    """Look for mentions in this batch's usable records, redact or drop, write them.

    Returns the records written, the mentions redacted and the digest sums.
    """
    if kept.num_rows == 0:
        return 0, 0, [0, 0, 0, 0]
    kept = kept.append_column("i", pa.array(range(kept.num_rows), pa.int64()))
    hit_rows, hit_subjects = finder.find(kept.column("text").combine_chunks())
    may_mention = kept.column("scan")
    if hit_rows:
        flagged = pc.or_(may_mention, pc.is_in(kept.column("i"), pa.array(hit_rows, pa.int64())))
    else:
        flagged = may_mention
    flagged = pc.fill_null(flagged, False)
    if pc.any(flagged).as_py():
        plain = kept.filter(pc.invert(flagged))
        cand = kept.filter(flagged)
    else:
        plain, cand = kept, kept.slice(0, 0)
    written = plain.num_rows
    sums = _sums(plain) if plain.num_rows else [0, 0, 0, 0]
    if plain.num_rows:
        writer.write(plain.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA))
        cur.register("rows_", plain.select(["author_id"]))
        cur.execute("INSERT INTO lin SELECT author_id, count(*), 0, NULL FROM rows_ GROUP BY ALL")
    if cand.num_rows == 0:
        return written, 0, sums

    hits = pa.table(
        {"i": pa.array(hit_rows, pa.int64()), "subject": pa.array(hit_subjects, pa.string())}
    )
    cur.register("cand", cand.select(["i", "text", "author_id", "mentions"]))
    cur.register("hits", hits)
    found = cur.sql(_MENTIONS).to_arrow_table()
    texts = cand.column("text").to_pylist()
    position = {i: k for k, i in enumerate(cand.column("i").to_pylist())}
    keep_mask = [True] * cand.num_rows
    redacted = 0
    changed = False
    rewritten: dict[int, set[str]] = {}  # position -> the subjects redacted there
    for i, bad, handles, names, subjects in zip(
        found.column("i").to_pylist(),
        found.column("n_bad").to_pylist(),
        found.column("bad_handles").to_pylist(),
        found.column("bad_names").to_pylist(),
        found.column("bad_subjects").to_pylist(),
        strict=True,
    ):
        if not bad:
            continue
        k = position[i]
        if plan.on_mention == "drop":
            keep_mask[k] = False
            counts["mention-not-consented"] += 1
            continue
        redacted += bad
        new = redact(texts[k], handles, names)
        if new != texts[k]:
            texts[k] = new
            changed = True
            rewritten[k] = set(subjects)
    redacted += _names_uncovered(finder, texts, rewritten)
    out = cand
    if changed:
        out = out.set_column(
            out.schema.get_field_index("text"), "text", pa.array(texts, pa.string())
        )
    if not all(keep_mask):
        out = out.filter(pa.array(keep_mask))
    if changed:
        cur.register("rows_", out.select(OUTPUT_SCHEMA.names))
        rehashed = cur.sql(_REHASH).to_arrow_table()
        sums = [a + b for a, b in zip(sums, _sums(rehashed), strict=True)]
    else:
        sums = [a + b for a, b in zip(sums, _sums(out), strict=True)]
    if out.num_rows:
        writer.write(out.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA))
        cur.register("rows_", out.select(["author_id", "i", "shard_key"]))
        cur.register("found_", found.select(["i", "kept", "n_bad"]))
        cur.execute("INSERT INTO lin SELECT author_id, count(*), 0, NULL FROM rows_ GROUP BY ALL")
        cur.execute(
            "INSERT INTO lin SELECT subject, 0, count(*), list(DISTINCT shard_key) FROM ("
            "SELECT unnest(f.kept) AS subject, r.shard_key FROM found_ f JOIN rows_ r ON r.i = f.i"
            ") GROUP BY subject"
        )
    return written + out.num_rows, redacted, sums
