"""Corpus readers: Parquet, JSONL or CSV, one file or a folder, as one checked relation.

Whatever the format, :func:`open_corpus` gives SQL for DuckDB that yields the same
columns, one row per input record::

    record_id, author_id, category  VARCHAR
    created_at                      TIMESTAMPTZ
    text                            VARCHAR
    mentions                        VARCHAR[]   (empty when the record has none)
    malformed                       BOOLEAN

A record with a missing or malformed field is kept as a row with ``malformed`` set, so
that it is counted and never used. A corpus that lacks a required column altogether, or
holds one of the wrong type, is refused before anything is read (fail closed). A JSONL
file has no schema: its columns are its records' keys, so it lacks a column when no
record in it has that key.

Times given as text must be ISO 8601 with a zone (``2026-03-01T12:00:00Z``); a time
without a zone would be a guess, so such a record is malformed. Parquet timestamps
without a zone are taken as UTC, as Parquet writers mean them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import duckdb

from askfirst.errors import InputError

REQUIRED = ("record_id", "author_id", "category", "created_at", "text")
# The longest record the gate reads, in bytes of its JSON line (JSONL) or of its text
# (Parquet, CSV): a longer one is malformed, counted and left out, and the build goes on.
MAX_RECORD_BYTES = 1 << 20
SUFFIXES = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}
# ISO 8601 with a zone: hours 00-23, offsets up to 18 hours (what both DuckDB's and
# Spark's casts accept); the casts do the calendar checks.
ISO_WITH_ZONE = (
    r"^\d{4}-\d{2}-\d{2}[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,9})?)?"
    r"([Zz]|[+-]((0\d|1[0-7])(:?[0-5]\d)?|18(:?00)?))$"
)
_TEXT_TYPES = {"VARCHAR"}


def _is_time(type_name: str) -> bool:
    return type_name == "VARCHAR" or type_name.startswith("TIMESTAMP")


def _has_zone(type_name: str) -> bool:
    return "TIME ZONE" in type_name or type_name.startswith("TIMESTAMPTZ")


@dataclass(frozen=True)
class Corpus:
    """The files of one corpus, grouped by format."""

    path: Path
    files: dict[str, tuple[str, ...]]  # format -> files, sorted
    delta: bool = False  # a Delta table: only Spark (with delta-spark) reads it

    @property
    def all_files(self) -> list[str]:
        return sorted(f for fs in self.files.values() for f in fs)


def find(path: str | Path) -> Corpus:
    """The corpus at ``path``: a file, or every corpus file under a folder."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"corpus {p}: no such file or folder")
    if p.is_dir() and (p / "_delta_log").is_dir():
        return Corpus(p, {}, delta=True)
    if p.is_dir():
        candidates = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        files = [f for f in candidates if f.suffix.lower() in SUFFIXES]
        if not files:
            raise InputError(
                f"corpus {p}: the folder holds no .parquet, .jsonl, .ndjson, .json or .csv files"
            )
    else:
        if p.suffix.lower() not in SUFFIXES:
            raise InputError(
                f"corpus {p}: unknown format {p.suffix or '(no suffix)'!r}; "
                "use .parquet, .jsonl, .ndjson, .json or .csv"
            )
        files = [p]
    grouped: dict[str, list[str]] = {}
    for f in files:
        grouped.setdefault(SUFFIXES[f.suffix.lower()], []).append(str(f.resolve()))
    return Corpus(p, {fmt: tuple(sorted(fs)) for fmt, fs in sorted(grouped.items())})


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def _quote_list(files: tuple[str, ...]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def _describe(con: duckdb.DuckDBPyConnection, sql: str, what: str) -> dict[str, str]:
    try:
        rows = con.sql(f"DESCRIBE {sql}").fetchall()
    except duckdb.Error as e:
        raise InputError(f"corpus {what}: cannot read it: {_first_line(e)}") from None
    return {str(r[0]): str(r[1]) for r in rows}


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _missing(columns: Collection[str], what: str) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(
            f"corpus {what}: missing required column {', '.join(repr(m) for m in missing)}; "
            f"a corpus has {', '.join(REQUIRED)} and optionally mentions"
        )


def _time_from_text(expr: str) -> str:
    return (
        f"CASE WHEN regexp_full_match({expr}, '{ISO_WITH_ZONE}') "
        f"THEN TRY_CAST(upper({expr}) AS TIMESTAMPTZ) END"
    )


def _checked(select: str) -> str:
    """Wrap a SELECT of the six raw columns with the ``malformed`` flag."""
    return f"""
SELECT record_id, author_id, category, created_at, text, coalesce(mentions, []) AS mentions,
  (record_id IS NULL OR record_id = '' OR author_id IS NULL OR author_id = ''
   OR category IS NULL OR category = '' OR created_at IS NULL OR text IS NULL
   OR strlen(text) > {MAX_RECORD_BYTES} OR mentions_bad) AS malformed
FROM ({select})"""


def _parquet(con: duckdb.DuckDBPyConnection, files: tuple[str, ...]) -> list[str]:
    """One relation per group of files whose columns have the same types (a folder may
    mix, say, timestamp and text times: each is read as it is written)."""
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for f in files:
        columns = _describe(con, f"SELECT * FROM read_parquet({_quote_list((f,))})", f)
        _missing(columns, f)
        key = tuple(sorted((k, v) for k, v in columns.items() if k in (*REQUIRED, "mentions")))
        groups.setdefault(key, []).append(f)
    return [_parquet_group(dict(key), tuple(group)) for key, group in groups.items()]


def _parquet_group(columns: dict[str, str], files: tuple[str, ...]) -> str:
    src = f"read_parquet({_quote_list(files)}, union_by_name = true)"
    what = f"{files[0]}" if len(files) == 1 else f"({len(files)} parquet files)"
    for name in ("record_id", "author_id", "category", "text"):
        if columns[name] not in _TEXT_TYPES:
            raise InputError(
                f"corpus {what}: column {name!r} is {columns[name]}; it must be text (string)"
            )
    time_type = columns["created_at"]
    if not _is_time(time_type):
        raise InputError(
            f"corpus {what}: column 'created_at' is {time_type}; it must be a "
            "timestamp or ISO 8601 text with a time zone"
        )
    if time_type == "VARCHAR":
        created = _time_from_text("created_at")
    elif _has_zone(time_type):
        created = "CAST(created_at AS TIMESTAMPTZ)"
    else:  # a timestamp without a zone is UTC in Parquet
        created = "timezone('UTC', CAST(created_at AS TIMESTAMP))"
    mention_type = columns.get("mentions")
    if mention_type is None:
        mentions, bad = "CAST([] AS VARCHAR[])", "false"
    elif mention_type == "VARCHAR[]":
        mentions, bad = "mentions", "coalesce(list_count(mentions) < len(mentions), false)"
    else:
        raise InputError(
            f"corpus {what}: column 'mentions' is {mention_type}; it must be a list of "
            "subject ids (strings)"
        )
    return _checked(
        f"SELECT record_id, author_id, category, {created} AS created_at, text, "
        f"{mentions} AS mentions, {bad} AS mentions_bad FROM {src}"
    )


def jsonl_columns(file: str) -> set[str] | None:
    """The required columns that some record of a JSONL file has (its records' keys), or
    None when no line of it holds a JSON object (every record is malformed, if any).

    Reads only until each required column has been seen: for a corpus whose records
    are whole, the first line."""
    found: set[str] = set()
    objects = False
    keys = {c: f'"{c}"'.encode() for c in REQUIRED}
    try:
        with open(file, "rb") as fh:
            for line in fh:
                missing = [c for c in REQUIRED if c not in found]
                if objects and not missing:
                    break
                # A line that names none of the missing keys cannot add one (unless a key
                # is written with \u escapes): skip parsing it.
                if objects and b"\\u" not in line and not any(keys[c] in line for c in missing):
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):  # not JSON: the reader counts it
                    continue
                if isinstance(record, dict):
                    objects = True
                    found.update(c for c in missing if c in record)
    except OSError as e:
        raise InputError(f"corpus {file}: cannot read it: {e.strerror or e}") from None
    return found if objects else None


def _jsonl(files: tuple[str, ...]) -> str:
    for f in files:
        columns = jsonl_columns(f)
        if columns is not None:
            _missing(columns, f)
    # A record longer than MAX_RECORD_BYTES is malformed, and is not parsed at all: each
    # JSON function parses the whole line again, and a 10 MiB line read a dozen times
    # ran DuckDB out of its memory.
    src = (
        f"(SELECT CASE WHEN strlen(json) <= {MAX_RECORD_BYTES} THEN json END AS json "
        f"FROM read_ndjson_objects({_quote_list(files)}, ignore_errors = true))"
    )

    def text(field: str) -> str:
        return (
            f"CASE WHEN json_type(json, '$.{field}') = 'VARCHAR' "
            f"THEN json_extract_string(json, '$.{field}') END"
        )

    mtype = "json_type(json, '$.mentions')"
    strings = (
        "list_bool_and(list_transform(json_extract(json, '$.mentions[*]'), "
        "lambda x: json_type(x) = 'VARCHAR'))"
    )
    return _checked(f"""
SELECT {text("record_id")} AS record_id, {text("author_id")} AS author_id,
  {text("category")} AS category, {_time_from_text(text("created_at"))} AS created_at,
  {text("text")} AS text,
  CASE WHEN {mtype} = 'ARRAY' THEN json_extract_string(json, '$.mentions[*]') END AS mentions,
  CASE WHEN json IS NULL OR json_type(json) <> 'OBJECT' THEN true
       WHEN {mtype} IS NULL OR {mtype} = 'NULL' THEN false
       WHEN {mtype} = 'ARRAY' THEN NOT coalesce({strings}, true)
       ELSE true END AS mentions_bad
FROM {src}""")


def csv_header(file: str) -> list[str]:
    """The column names on a CSV file's first line (comma-separated, "-quoted)."""
    try:
        with open(file, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"corpus {file}: cannot read its header: {e}") from None
    names = [h.strip() for h in header]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"corpus {file}: column {twice[0]!r} appears twice in the header")
    return names


def _csv(con: duckdb.DuckDBPyConnection, file: str) -> str:
    """One CSV file (DuckDB keeps rejected lines only when files are read one by one).

    Comma-separated with "-quoting, as the header line says: the dialect is not guessed,
    so a stray quote cannot change how the whole file is read."""
    header = csv_header(file)
    what = file
    _missing(dict.fromkeys(header, "VARCHAR"), what)
    columns = "{" + ", ".join(f"'{_sql_text(h)}': 'VARCHAR'" for h in header) + "}"
    src = (
        f"read_csv({_quote_list((file,))}, header = true, auto_detect = false, delim = ',', "
        f"quote = '\"', escape = '\"', columns = {columns}, store_rejects = true)"
    )
    if "mentions" in header:
        # A JSON array of subject ids; an empty cell means none.
        parsed = "TRY_CAST(nullif(trim(mentions), '') AS JSON)"
        mentions = (
            f"CASE WHEN json_type({parsed}) = 'ARRAY' "
            f"THEN json_extract_string({parsed}, '$[*]') END"
        )
        strings = (
            f"list_bool_and(list_transform(json_extract({parsed}, '$[*]'), "
            "lambda x: json_type(x) = 'VARCHAR'))"
        )
        bad = (
            f"CASE WHEN nullif(trim(mentions), '') IS NULL THEN false "
            f"WHEN json_type({parsed}) = 'ARRAY' THEN NOT coalesce({strings}, true) "
            "ELSE true END"
        )
    else:
        mentions, bad = "CAST([] AS VARCHAR[])", "false"
    return _checked(
        f"SELECT record_id, author_id, category, {_time_from_text('created_at')} AS created_at, "
        f"text, {mentions} AS mentions, {bad} AS mentions_bad FROM {src}"
    )


def relation_sql(con: duckdb.DuckDBPyConnection, corpus: Corpus) -> str:
    """SQL for the corpus as one checked relation (see the module docstring)."""
    if corpus.delta:
        raise InputError(
            f"corpus {corpus.path} is a Delta table: build it with --engine spark "
            "(and delta-spark installed)"
        )
    con.execute("SET TimeZone = 'UTC'")
    parts = []
    for fmt, files in corpus.files.items():
        if fmt == "parquet":
            parts.extend(_parquet(con, files))
        elif fmt == "jsonl":
            parts.append(_jsonl(files))
        else:
            parts.extend(_csv(con, f) for f in files)
    return "\nUNION ALL\n".join(f"({p})" for p in parts)


def rejected_csv_lines(con: duckdb.DuckDBPyConnection, corpus: Corpus) -> int:
    """CSV lines the reader could not split into the header's columns (count as malformed)."""
    if "csv" not in corpus.files:
        return 0
    try:
        row = con.execute("SELECT count(DISTINCT (file_id, line)) FROM reject_errors").fetchone()
    except duckdb.Error:
        return 0
    return int(row[0]) if row else 0


def count_hint(path: str | Path) -> int | None:
    """How many records a corpus holds, when the files say so cheaply (Parquet only)."""
    try:
        corpus = find(path)
    except InputError:
        return None
    if set(corpus.files) != {"parquet"}:
        return None
    import pyarrow.parquet as pq

    try:
        return sum(int(pq.ParquetFile(f).metadata.num_rows) for f in corpus.files["parquet"])
    except (OSError, ValueError):
        return None
