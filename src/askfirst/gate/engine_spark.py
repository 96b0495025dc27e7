"""The gate on Apache Spark: the same snapshots as the DuckDB engine, at cluster scale.

Spark reads the corpus (``corpus_spark``), checks each record and joins its author's
decision — from a decisions file in the export format every engine shares, broadcast
when it is small and joined by a shuffle otherwise. The records that pass go, a batch
at a time, through the mention step every engine shares (``mentions``) on the
executors, as Arrow batches (``mapInArrow``): no Python function runs per record. Spark
writes the records as Parquet; the lineage counts are aggregated by Spark too.

PySpark is optional (``pip install 'askfirst[spark]'``). On a cluster, the executors
need askfirst installed, and the corpus, the output folder and the build's scratch
folder must be on storage every node sees (a shared file system).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from askfirst.errors import InputError
from askfirst.gate.plan import OUTPUT_SCHEMA, Outcome, Plan
from askfirst.lineage import MAX_MENTION_KEYS, shard_key_sql
from askfirst.rules import record_reason_sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

INSTALL_HINT = "the spark engine needs PySpark: pip install 'askfirst[spark]'"
# Decisions for at most this many subjects are broadcast to every executor.
BROADCAST_ROWS = 5_000_000

_PASS_SCHEMA = (
    "record_id string, category string, created_at timestamp, author_id string, "
    "shard_key int, reason string, text string, mentions array<string>, scan boolean"
)
# What each batch gives back: its records ('r'), its lineage counts ('l') and its
# counters ('s'), in one stream.
_OUT_SCHEMA = (
    "kind string, record_id string, category string, created_at timestamp, text string, "
    "shard_key int, subject string, a bigint, m bigint, k array<int>, stats string"
)
_OUT_ARROW = pa.schema(
    [
        ("kind", pa.string()),
        ("record_id", pa.string()),
        ("category", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("text", pa.string()),
        ("shard_key", pa.int32()),
        ("subject", pa.string()),
        ("a", pa.int64()),
        ("m", pa.int64()),
        ("k", pa.list_(pa.int32())),
        ("stats", pa.string()),
    ]
)
_LINEAGE_SCHEMA = pa.schema(
    [
        ("subject_id", pa.string()),
        ("author_records", pa.int64()),
        ("mention_records", pa.int64()),
        ("mention_keys", pa.string()),
    ]
)


def require_pyspark() -> None:
    """Fail at once, with the install hint, when PySpark is not installed."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise InputError(INSTALL_HINT) from None


def session(master: str | None = None) -> SparkSession:
    """A Spark session for the gate (local[2] unless ``master`` names a cluster).

    Its Python workers run this Python (``sys.executable``, where askfirst is installed,
    say a virtualenv) unless ``PYSPARK_PYTHON`` names another; PySpark's own default is
    whatever ``python3`` is on the PATH, which may not have askfirst."""
    require_pyspark()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("askfirst-gate").master(master or "local[2]")
    for key, value in _CONF.items():
        builder = builder.config(key, value)
    own_python = "PYSPARK_PYTHON" not in os.environ
    if own_python:  # read once, when the SparkContext starts
        os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        spark = builder.getOrCreate()
    except Exception as e:
        raise InputError(f"cannot start Spark: {str(e).strip().splitlines()[0]}") from None
    finally:
        if own_python:
            os.environ.pop("PYSPARK_PYTHON", None)
    spark.sparkContext.setLogLevel("ERROR")
    return spark


_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
}


def run(
    plan: Plan,
    out: Path,
    progress: Callable[[int], None] | None = None,
    *,
    spark: SparkSession | None = None,
    master: str | None = None,
) -> Outcome:
    """Build the snapshot's data files under ``out/data`` and count everything.

    On ``spark`` (or the session already active), which is left running with its settings
    as they were; else on a session of its own for ``master``, stopped at the end."""
    require_pyspark()
    from pyspark.sql import SparkSession

    from askfirst.gate import corpus_spark

    spark = spark or SparkSession.getActiveSession()
    own = spark is None
    spark = spark or session(master)
    settings = {k: v for k, v in _CONF.items() if k != "spark.ui.enabled"}
    if corpus_spark.needs_nanos_as_long(plan.corpus):
        settings["spark.sql.legacy.parquet.nanosAsLong"] = "true"
    before: dict[str, str | None] = {k: spark.conf.get(k, None) for k in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.spark-", dir=out.parent))
    try:
        return _run(spark, plan, out, scratch, corpus_spark.read(spark, plan.corpus), progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if own:
            spark.stop()
        else:
            for key, old in before.items():
                if old is None:
                    spark.conf.unset(key)
                else:
                    spark.conf.set(key, old)


def _decisions(spark: SparkSession, plan: Plan, scratch: Path) -> DataFrame:
    from pyspark.sql import functions as F

    path = scratch / "decisions.parquet"
    pq.write_table(plan.consent.decisions, path)
    df = spark.read.parquet(str(path))
    key = F.expr(shard_key_sql("spark", "subject"))
    df = df.select("subject", "allowed", "reason", key.alias("shard_key"))
    if plan.consent.decisions.num_rows <= BROADCAST_ROWS:
        df = F.broadcast(df)
    return df


def _checked(spark: SparkSession, plan: Plan, corpus: DataFrame, decisions: DataFrame) -> DataFrame:
    """Every record with the reason it is left out for (NULL: it may be used)."""
    from pyspark.sql import functions as F

    c, d = corpus.alias("c"), decisions.alias("d")
    consent = plan.consent
    reason = F.expr(record_reason_sql("spark", consent.purpose, consent.as_of, plan.never_used))
    joined = c.join(d, F.col("d.subject") == F.col("c.author_id"), "left").select(
        "c.record_id",
        "c.category",
        "c.created_at",
        "c.author_id",
        "d.shard_key",
        reason.alias("reason"),
        "c.text",
        "c.mentions",
    )
    usable = F.col("reason").isNull()
    return joined.select(
        "record_id",
        "category",
        "created_at",
        "author_id",
        "shard_key",
        "reason",
        F.when(usable, F.col("text")).alias("text"),
        F.when(usable, F.col("mentions")).alias("mentions"),
        (usable & ((F.size("mentions") > 0) | F.col("text").contains("@"))).alias("scan"),
    )


def _run(
    spark: SparkSession,
    plan: Plan,
    out: Path,
    scratch: Path,
    corpus: DataFrame,
    progress: Callable[[int], None] | None,
) -> Outcome:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    directory = plan.consent.directory.with_protected(plan.consent.names)
    pq.write_table(directory, scratch / "directory.parquet")
    del directory
    forgotten = plan.consent.forgotten
    if forgotten is not None:  # digests only; the key goes with the task (see _BatchStep)
        pq.write_table(forgotten.rows, scratch / "forgotten.parquet")
    decisions = _decisions(spark, plan, scratch)
    plan.consent.release()  # the executors read them from the scratch files
    checked = _checked(spark, plan, corpus, decisions)
    step = _BatchStep(str(scratch), plan.on_mention, forgotten.key if forgotten else None)
    passed = checked.mapInArrow(step, _OUT_SCHEMA).persist(StorageLevel.DISK_ONLY)
    data = out / "data"
    try:
        records = passed.filter(F.col("kind") == "r").select(*OUTPUT_SCHEMA.names)
        records.write.parquet(str(data))
        stats = [json.loads(r.stats) for r in passed.filter(F.col("kind") == "s").collect()]
        lineage = _lineage(passed.filter(F.col("kind") == "l"))
    except Exception as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"corpus {plan.corpus.path}: {_first_line(e)}") from None
    finally:
        passed.unpersist()
    files = _tidy(data)
    counts: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    digest = [0, 0, 0, 0]
    seen = written = redacted = 0
    for s in stats:
        seen += s["seen"]
        written += s["written"]
        redacted += s["redacted"]
        counts.update(s["counts"])
        categories.update(s["categories"])
        digest = [a + b for a, b in zip(digest, s["sums"], strict=True)]
    if progress is not None:
        progress(seen)
    return Outcome(
        input_records=seen,
        output_records=written,
        excluded=dict(counts),
        redacted_mentions=redacted,
        digest=digest,
        files=files,
        lineage=lineage,
        by_category=dict(categories),
    )


def _lineage(parts: DataFrame) -> pa.Table:
    from pyspark.sql import functions as F

    agg = parts.groupBy("subject").agg(
        F.sum("a").cast("bigint").alias("author_records"),
        F.sum("m").cast("bigint").alias("mention_records"),
        F.array_sort(F.array_distinct(F.flatten(F.collect_list("k")))).alias("keys"),
    )
    keys = F.when(
        (F.col("mention_records") > 0) & (F.size("keys") <= MAX_MENTION_KEYS), F.to_json("keys")
    )
    table = agg.select(
        F.col("subject").alias("subject_id"),
        "author_records",
        "mention_records",
        keys.alias("mention_keys"),
    ).toArrow()
    return table.cast(_LINEAGE_SCHEMA).sort_by("subject_id")


def _tidy(data: Path) -> list[str]:
    """Keep only the Parquet files Spark wrote (not its _SUCCESS and checksum files)."""
    if not data.is_dir():  # nothing was written: an empty snapshot has no files
        data.mkdir(parents=True)
    files = []
    for p in sorted(data.iterdir()):
        if p.suffix == ".parquet" and not p.name.startswith((".", "_")):
            files.append(p.name)
        elif p.is_file():
            p.unlink()
    return files


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    for line in text.splitlines():
        if "InputError" in line or "Error:" in line:
            return line.strip()[:500]
    return (text.splitlines()[0] if text else type(e).__name__)[:500]


# ---- on the executors --------------------------------------------------------------------

_STATE: dict[str, Any] = {}


class _BatchStep:
    """The function ``mapInArrow`` runs on each partition: the shared mention step.

    With forgotten names, it carries the names key to the executors (they hash the words
    where a forgotten name may start); the digests they read from the scratch folder."""

    def __init__(self, scratch: str, on_mention: str, names_key: bytes | None = None) -> None:
        self.scratch = scratch
        self.on_mention = on_mention
        self.names_key = names_key

    def _state(self) -> tuple[duckdb.DuckDBPyConnection, Any]:
        # Loaded once per Python worker and build: the decisions, directory and names.
        if _STATE.get("key") != self.scratch:
            from askfirst.gate.forgotten import Forgotten
            from askfirst.gate.mentions import load_tables
            from askfirst.gate.redaction import NameFinder

            decisions = pq.read_table(Path(self.scratch) / "decisions.parquet")
            directory = pq.read_table(Path(self.scratch) / "directory.parquet")
            forgotten = None
            if self.names_key is not None:
                rows = pq.read_table(Path(self.scratch) / "forgotten.parquet")
                forgotten = Forgotten.from_rows(self.names_key, rows)
            con = duckdb.connect(config={"memory_limit": "512MB"})
            con.execute("SET TimeZone = 'UTC'")
            load_tables(con, decisions, directory)
            finder = NameFinder.from_directory(directory, forgotten)
            finder.allow(decisions)
            if "con" in _STATE:
                _STATE["con"].close()
            _STATE.clear()
            _STATE.update(key=self.scratch, con=con, finder=finder)
        return _STATE["con"], _STATE["finder"]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from askfirst.gate.mentions import DIGEST, ROW_TEXT, AuthorsInLin, process_batch

        con, finder = self._state()
        cur = con.cursor()
        digest_sql = (
            f"SELECT * EXCLUDE (md5_), {DIGEST} FROM (SELECT *, CASE WHEN reason IS NULL "
            f"THEN md5_number({ROW_TEXT}) END AS md5_ FROM batch_)"
        )
        try:
            for batch in batches:
                cur.register("batch_", pa.Table.from_batches([batch]))
                table = cur.sql(digest_sql).to_arrow_table()
                cur.unregister("batch_")
                counts: Counter[str] = Counter()
                sink = _Collect()
                written, redacted, sums = process_batch(
                    cur, self.on_mention, table, finder, sink, counts, AuthorsInLin()
                )
                for t in sink.tables:
                    yield from _records(t).to_batches()
                yield from _lineage_rows(cur).to_batches()
                stats = {
                    "seen": table.num_rows,
                    "written": written,
                    "redacted": redacted,
                    "sums": sums,
                    "counts": dict(counts),
                    "categories": dict(sink.categories),
                }
                yield from _stats_row(stats).to_batches()
        finally:
            cur.close()


class _Collect:
    """A sink that keeps a batch's output records in memory."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.categories: Counter[str] = Counter()

    def write(self, table: pa.Table) -> None:
        import pyarrow.compute as pc

        for item in pc.value_counts(table.column("category")).to_pylist():
            self.categories[item["values"]] += item["counts"]
        self.tables.append(table)


def _padded(columns: dict[str, pa.Array], n: int) -> pa.Table:
    return pa.table(
        [columns.get(f.name, pa.nulls(n, f.type)) for f in _OUT_ARROW], schema=_OUT_ARROW
    )


def _records(t: pa.Table) -> pa.Table:
    n = t.num_rows
    cols = {name: t.column(name).combine_chunks() for name in OUTPUT_SCHEMA.names}
    cols["kind"] = pa.array(["r"] * n, pa.string())
    return _padded(cols, n)


def _lineage_rows(cur: duckdb.DuckDBPyConnection) -> pa.Table:
    lin = cur.sql("SELECT subject, a, m, k FROM lin").to_arrow_table()
    cur.execute("DELETE FROM lin")
    n = lin.num_rows
    cols = {
        "kind": pa.array(["l"] * n, pa.string()),
        "subject": lin.column("subject").combine_chunks(),
        "a": lin.column("a").combine_chunks().cast(pa.int64()),
        "m": lin.column("m").combine_chunks().cast(pa.int64()),
        "k": lin.column("k").combine_chunks().cast(pa.list_(pa.int32())),
    }
    return _padded(cols, n)


def _stats_row(stats: dict[str, Any]) -> pa.Table:
    return _padded(
        {"kind": pa.array(["s"], pa.string()), "stats": pa.array([json.dumps(stats)])}, 1
    )
