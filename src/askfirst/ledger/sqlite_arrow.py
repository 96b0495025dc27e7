"""SQLite rows as Arrow columns, in this process or in a second one.

Reading millions of rows through the sqlite3 module costs one Python object per value;
here SQLite writes each row as one line of CSV (``printf``) and Arrow parses the lines
in chunks, which costs one Python object per row. Text goes out as an SQL literal
(``%Q``: in single quotes, quotes doubled, NULL bare) and numbers bare (NULL empty), so
Arrow reads it back exactly with ``'`` as the quote character.

A second process can run such reads beside the first, on another core (threads in one
process would queue on the GIL, which the sqlite3 module takes back after every row).
That process loads this file by its path, not the ``askfirst`` package, so it starts
in the time it takes to import pyarrow: this module imports nothing else of askfirst.

    python -P .../askfirst/ledger/sqlite_arrow.py DATABASE JOB_FOLDER
"""

from __future__ import annotations

import io
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

CHUNK_ROWS = 200_000  # rows per CSV chunk: bounded memory, few Python objects
MMAP_BYTES = 1 << 30  # a big table is read through the page cache mapped, not copied


def plain_types(schema: pa.Schema) -> bool:
    """Whether every column is text or an integer (what the CSV lines carry exactly)."""
    return all(pa.types.is_string(t) or pa.types.is_integer(t) for t in schema.types)


def read(cur: Any, sql: str, schema: pa.Schema) -> pa.Table | None:
    """The rows of ``sql`` as a table of ``schema`` (a sqlite3 cursor runs it), or None
    when this way cannot carry them exactly: the query gives a column ``schema`` does
    not name, or a text holds a NUL character (``printf`` would cut it there)."""
    cur.execute(f"SELECT * FROM ({sql}) LIMIT 0")
    names = [d[0] for d in cur.description]
    if set(names) - set(schema.names):
        return None
    fields = [schema.field(n) for n in names]
    quoted = ['"' + n.replace('"', '""') + '"' for n in names]
    texts = [q for q, f in zip(quoted, fields, strict=True) if pa.types.is_string(f.type)]
    # The last field counts the texts holding a NUL, found as bytes.
    nul = " + ".join(f"coalesce(instr(CAST({q} AS BLOB), x'00'), 0) > 0" for q in texts) or "0"
    pattern = ",".join("%Q" if pa.types.is_string(f.type) else "%s" for f in fields) + ",%d"
    cur.execute(f"SELECT printf('{pattern}', {', '.join(quoted)}, {nul}) FROM ({sql})")
    options = (
        pacsv.ReadOptions(column_names=[*names, "nul_"]),
        # An empty line is a row whose only field is NULL, not a line to skip.
        pacsv.ParseOptions(
            quote_char="'", double_quote=True, newlines_in_values=True, ignore_empty_lines=False
        ),
        pacsv.ConvertOptions(
            column_types={**{f.name: f.type for f in fields}, "nul_": pa.int64()},
            null_values=["", "NULL"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    chunks = []
    while rows := cur.fetchmany(CHUNK_ROWS):
        count = len(rows)
        text = ("\n".join([r[0] for r in rows]) + "\n").encode()
        del rows
        chunk = pacsv.read_csv(io.BytesIO(text), *options)
        if chunk.num_rows != count:
            raise ValueError(f"read {chunk.num_rows} rows of {count} from SQLite")
        if pc.max(chunk.column("nul_")).as_py():
            return None
        chunks.append(chunk.drop_columns(["nul_"]))
    if not chunks:
        return schema.empty_table()
    return pa.concat_tables(chunks).cast(schema)


# ---- the second process -------------------------------------------------------------------
# A job folder holds job.json (the queries) and schema-K.arrow; the answers are written
# to table-K.arrow (Arrow IPC files).


def write_job(folder: Path, queries: list[tuple[str, pa.Schema]]) -> None:
    """Put the queries where the second process finds them."""
    for k, (_, schema) in enumerate(queries):
        (folder / f"schema-{k}.arrow").write_bytes(schema.serialize().to_pybytes())
    (folder / "job.json").write_text(json.dumps([sql for sql, _ in queries]))


def read_answers(folder: Path, count: int) -> list[pa.Table]:
    """The tables the second process wrote, in the order of the queries."""
    out = []
    for k in range(count):
        with pa.OSFile(str(folder / f"table-{k}.arrow")) as f:
            out.append(pa.ipc.open_file(f).read_all())
    return out


def run_job(database: str, folder: Path) -> None:
    """Answer the queries in ``folder`` from the SQLite file ``database``, read-only."""
    queries = json.loads((folder / "job.json").read_text())
    con = sqlite3.connect(f"{Path(database).resolve().as_uri()}?mode=ro", uri=True)
    try:
        con.execute("PRAGMA busy_timeout = 60000")
        con.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        cur = con.cursor()
        for k, sql in enumerate(queries):
            schema = pa.ipc.read_schema(pa.py_buffer((folder / f"schema-{k}.arrow").read_bytes()))
            table = read(cur, sql, schema)
            if table is None:  # the parent reads this one itself, the exact way
                raise SystemExit(f"query {k} cannot be read as CSV lines")
            part = folder / f"table-{k}.arrow.part"
            with pa.OSFile(str(part), "wb") as f, pa.ipc.new_file(f, schema) as w:
                w.write_table(table)
            part.rename(folder / f"table-{k}.arrow")
    finally:
        con.close()


if __name__ == "__main__":
    try:
        run_job(sys.argv[1], Path(sys.argv[2]))
    except sqlite3.Error as e:
        raise SystemExit(f"{type(e).__name__}: {e}") from None
