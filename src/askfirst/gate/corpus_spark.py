"""Corpus readers on Spark: the same checked relation as ``corpus`` gives DuckDB.

Whatever the format, :func:`read` gives a DataFrame with one row per input record::

    record_id, author_id, category  string
    created_at                      timestamp (UTC)
    text                            string
    mentions                        array<string>  (empty when the record has none)
    malformed                       boolean

by the same rules as the DuckDB readers (see ``askfirst.gate.corpus``): a missing or
malformed field marks the record malformed; text times need a zone; Parquet timestamps
without one are UTC; a JSONL line that is not an object, and a CSV line with too many or
too few fields, is one malformed record; blank JSONL lines are not records. A Delta
table (a folder with ``_delta_log``) is read through delta-spark when it is installed.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from askfirst.errors import InputError
from askfirst.gate.corpus import (
    ISO_WITH_ZONE,
    MAX_RECORD_BYTES,
    REQUIRED,
    Corpus,
    csv_header,
    jsonl_columns,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

# Java's "$" also matches before a final line break; "\z" is the very end, as in DuckDB.
_ISO = ISO_WITH_ZONE.removesuffix("$") + r"\z"


def _time_from_text(c: Column) -> Column:
    """An ISO 8601 text time with a zone, as a timestamp; NULL when it is not one."""
    from pyspark.sql import functions as F

    up = F.upper(c)
    # Spark's cast wants seconds: "2026-03-01T12:00Z" -> "2026-03-01T12:00:00Z".
    canon = F.regexp_replace(up, r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})([Z+-])", "$1T$2:00$3")
    return F.when(c.rlike(_ISO), F.try_to_timestamp(canon))


def _checked(df: DataFrame, mentions_bad: Column) -> DataFrame:
    from pyspark.sql import functions as F

    def blank(name: str) -> Column:
        return F.col(name).isNull() | (F.col(name) == "")

    malformed = (
        blank("record_id")
        | blank("author_id")
        | blank("category")
        | F.col("created_at").isNull()
        | F.col("text").isNull()
        | (F.octet_length("text") > MAX_RECORD_BYTES)
        | mentions_bad
    )
    return df.select(
        "record_id",
        "author_id",
        "category",
        "created_at",
        "text",
        F.coalesce(F.col("mentions"), F.array().cast("array<string>")).alias("mentions"),
        malformed.alias("malformed"),
    )


def _missing(columns: Collection[str], what: str) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(
            f"corpus {what}: missing required column {', '.join(repr(m) for m in missing)}; "
            f"a corpus has {', '.join(REQUIRED)} and optionally mentions"
        )


def _typed(df: DataFrame, what: str, nanos: bool = False) -> DataFrame:
    """A typed source (Parquet, Delta): check the column types and normalise them.

    ``nanos``: the files hold nanosecond times, which Spark reads as numbers."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import (
        ArrayType,
        LongType,
        StringType,
        TimestampNTZType,
        TimestampType,
    )

    fields = {f.name: f.dataType for f in df.schema.fields}
    _missing(list(fields), what)
    for name in ("record_id", "author_id", "category", "text"):
        if not isinstance(fields[name], StringType):
            raise InputError(
                f"corpus {what}: column {name!r} is {fields[name].simpleString()}; it must be "
                "text (string)"
            )
    t = fields["created_at"]
    if isinstance(t, StringType):
        created = _time_from_text(F.col("created_at"))
    elif isinstance(t, TimestampType | TimestampNTZType):  # no zone: UTC, as Parquet means
        created = F.col("created_at").cast("timestamp")
    elif isinstance(t, LongType) and nanos:  # rounded to the microsecond, as DuckDB does
        # To the nearest microsecond, halves away from zero, as DuckDB converts.
        created = F.expr(
            "timestamp_micros(CASE WHEN created_at >= 0 THEN div(created_at + 500, 1000) "
            "ELSE -div(500 - created_at, 1000) END)"
        )
    else:
        raise InputError(
            f"corpus {what}: column 'created_at' is {t.simpleString()}; it must be a "
            "timestamp or ISO 8601 text with a time zone"
        )
    m = fields.get("mentions")
    if m is None:
        mentions, bad = F.array().cast("array<string>"), F.lit(False)
    elif isinstance(m, ArrayType) and isinstance(m.elementType, StringType):
        mentions = F.col("mentions")
        bad = F.coalesce(F.exists("mentions", lambda x: x.isNull()), F.lit(False))
    else:
        raise InputError(
            f"corpus {what}: column 'mentions' is {m.simpleString()}; it must be a list of "
            "subject ids (strings)"
        )
    out = df.select(
        "record_id",
        "author_id",
        "category",
        created.alias("created_at"),
        "text",
        mentions.alias("mentions"),
    )
    return _checked(out, bad)


def _parquet(spark: SparkSession, files: tuple[str, ...]) -> list[DataFrame]:
    """One DataFrame per group of files whose columns have the same types."""
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for f in files:
        try:
            schema = pq.read_schema(f)
        except (OSError, pa.ArrowInvalid) as e:
            raise InputError(f"corpus {f}: cannot read it: {e}") from None
        _missing(schema.names, f)
        key = tuple(
            sorted(
                (n, str(schema.field(n).type)) for n in schema.names if n in (*REQUIRED, "mentions")
            )
        )
        groups.setdefault(key, []).append(f)
    out = []
    for key, group in groups.items():
        what = group[0] if len(group) == 1 else f"({len(group)} parquet files)"
        nanos = dict(key)["created_at"].startswith("timestamp[ns")
        out.append(_typed(spark.read.parquet(*group), what, nanos))
    return out


def _jsonl(spark: SparkSession, files: tuple[str, ...]) -> DataFrame:
    from pyspark.sql import functions as F

    for f in files:  # a file no record of which has a required key lacks that column
        columns = jsonl_columns(f)
        if columns is not None:
            _missing(columns, f)
    lines = spark.read.text(list(files)).filter(F.trim("value") != "")
    # One JSON value per line: wrapped in [ ], a line with anything after its object
    # is not JSON at all. Bytes that are not UTF-8 come back as U+FFFD: malformed.
    wrapped = F.expr("try_parse_json(concat('[', value, ']'))")
    one = F.expr("array_size(try_variant_get(w, '$', 'array<variant>')) = 1")
    v = lines.select(
        wrapped.alias("w"),
        (~F.expr("is_valid_utf8(value)") | F.col("value").contains("\ufffd")).alias("bad_utf8"),
    ).select(
        F.when(
            F.col("w").isNotNull() & one & ~F.col("bad_utf8"), F.expr("variant_get(w, '$[0]')")
        ).alias("v")
    )

    def kind(path: str) -> Column:
        return F.expr(f"schema_of_variant(variant_get(v, '{path}'))")

    def text(field: str) -> Column:
        return F.when(
            kind(f"$.{field}") == "STRING", F.expr(f"variant_get(v, '$.{field}', 'string')")
        )

    mtype = kind("$.mentions")
    listed = F.expr("try_variant_get(v, '$.mentions', 'array<string>')")
    strings = mtype.isin("ARRAY<STRING>", "ARRAY<VOID>") & ~F.coalesce(
        F.exists(listed, lambda x: x.isNull()), F.lit(True)
    )
    is_object = F.coalesce(F.expr("schema_of_variant(v)").startswith("OBJECT"), F.lit(False))
    bad = (
        F.when(~is_object, True)
        .when(mtype.isNull() | (mtype == "VOID"), False)
        .when(mtype.startswith("ARRAY"), ~strings)
        .otherwise(True)
    )
    df = v.select(
        text("record_id").alias("record_id"),
        text("author_id").alias("author_id"),
        text("category").alias("category"),
        _time_from_text(text("created_at")).alias("created_at"),
        text("text").alias("text"),
        F.when(mtype.startswith("ARRAY") & strings, listed).alias("mentions"),
        bad.alias("mentions_bad"),
    )
    return _checked(df, F.col("mentions_bad"))


def _csv(spark: SparkSession, file: str) -> DataFrame:
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    options = {"header": "true", "multiLine": "true", "escape": '"'}
    header = csv_header(file)
    _missing(header, file)
    schema = StructType(
        [StructField(c, StringType()) for c in header] + [StructField("_corrupt", StringType())]
    )
    raw = (
        spark.read.options(**options, mode="PERMISSIVE", columnNameOfCorruptRecord="_corrupt")
        .schema(schema)
        .csv(file)
    )
    # A line that does not split into the header's fields, or that is not UTF-8 (read
    # back as U+FFFD), is one malformed record.
    corrupt = F.col("_corrupt").isNotNull() | F.concat_ws("", *[F.col(c) for c in header]).contains(
        "\ufffd"
    )
    if "mentions" in header:
        cell = F.nullif(F.trim("mentions"), F.lit(""))
        mtype = F.expr("schema_of_variant(try_parse_json(nullif(trim(mentions), '')))")
        listed = F.expr(
            "try_variant_get(try_parse_json(nullif(trim(mentions), '')), '$', 'array<string>')"
        )
        strings = mtype.isin("ARRAY<STRING>", "ARRAY<VOID>") & ~F.coalesce(
            F.exists(listed, lambda x: x.isNull()), F.lit(True)
        )
        mentions = F.when(mtype.startswith("ARRAY") & strings, listed)
        bad = F.when(cell.isNull(), False).when(mtype.startswith("ARRAY"), ~strings).otherwise(True)
    else:
        mentions, bad = F.array().cast("array<string>"), F.lit(False)
    df = raw.select(
        "record_id",
        "author_id",
        "category",
        _time_from_text(F.col("created_at")).alias("created_at"),
        "text",
        mentions.alias("mentions"),
        (bad | corrupt).alias("mentions_bad"),
    )
    return _checked(df, F.col("mentions_bad"))


def is_delta(path: Path) -> bool:
    return path.is_dir() and (path / "_delta_log").is_dir()


def read(spark: SparkSession, corpus: Corpus) -> DataFrame:
    """The corpus as one checked DataFrame (see the module docstring)."""
    if is_delta(corpus.path):
        try:
            df = spark.read.format("delta").load(str(corpus.path.resolve()))
        except Exception as e:
            raise InputError(
                f"corpus {corpus.path} is a Delta table, which needs delta-spark in the Spark "
                f"session (pip install delta-spark): {str(e).splitlines()[0]}"
            ) from None
        return _typed(df, str(corpus.path))
    parts: list[DataFrame] = []
    for fmt, files in corpus.files.items():
        if fmt == "parquet":
            parts.extend(_parquet(spark, files))
        elif fmt == "jsonl":
            parts.append(_jsonl(spark, files))
        else:
            parts.extend(_csv(spark, f) for f in files)
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def needs_nanos_as_long(corpus: Corpus) -> bool:
    """Whether some Parquet file has nanosecond times (Spark reads them only as numbers)."""
    for f in corpus.files.get("parquet", ()):
        schema = pq.read_schema(f)
        if "created_at" in schema.names:
            t = schema.field("created_at").type
            if pa.types.is_timestamp(t) and t.unit == "ns":
                return True
    return False
