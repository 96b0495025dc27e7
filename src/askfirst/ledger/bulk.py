"""The ledger's bulk reads as Arrow tables: in this process through the sqlite3 module,
or in a second process through ADBC's SQLite driver.

ADBC's SQLite driver turns rows into Arrow columns in C, without a Python object per
value: on 2M subjects it reads ``subject_state``, the choices, the notices and the
directory in about a quarter of the CPU time the sqlite3 module takes (bench/RESULTS.md).
But it brings a SQLite library of its own, and two SQLite libraries in one process do
not see each other's POSIX locks, which can corrupt a WAL database. So it runs only in
a second process, which never loads Python's sqlite3: that process loads this file by
its path, not the ``askfirst`` package (this module imports nothing else of askfirst),
reads every query of a job in one read transaction (so one state of the database) and
writes each answer as an Arrow IPC file, which the first process maps without copying.

    python -P .../askfirst/ledger/bulk.py DATABASE JOB_FOLDER
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

FETCH_ROWS = 100_000  # rows per fetch in this process: bounded memory
BATCH_ROWS = 65_536  # rows per Arrow batch in the second process (few chunks to join)


def read_here(cur: Any, sql: str, schema: pa.Schema | None) -> pa.Table:
    """The rows of ``sql`` (run by ``cur``, a DB-API cursor) as a table of ``schema``,
    or of the types Arrow infers when there is none."""
    cur.execute(sql)
    names = [d[0] for d in cur.description]
    types = [schema.field(n).type if schema is not None else None for n in names]
    parts = []
    while rows := cur.fetchmany(FETCH_ROWS):
        columns = zip(*rows, strict=True)
        parts.append(pa.table([pa.array(c, t) for c, t in zip(columns, types, strict=True)], names))
    if schema is not None and not parts:
        return schema.empty_table()
    if schema is not None:
        return pa.concat_tables(parts).select(schema.names).cast(schema)
    if not parts:
        return pa.table({n: pa.array([], pa.null()) for n in names})
    # Each fetch infers its own types: a column NULL throughout one takes the others' type.
    return pa.concat_tables(parts, promote_options="permissive")


# ---- the second process -------------------------------------------------------------------
# A job folder holds job.json (the queries) and schema-K.arrow; the answers are written
# to table-K.arrow (Arrow IPC files).


def write_job(folder: Path, queries: list[tuple[str, pa.Schema]]) -> None:
    """Put the queries where the second process finds them."""
    for k, (_, schema) in enumerate(queries):
        (folder / f"schema-{k}.arrow").write_bytes(schema.serialize().to_pybytes())
    (folder / "job.json").write_text(json.dumps([sql for sql, _ in queries]))


def read_answers(folder: Path, count: int) -> list[pa.Table]:
    """The tables the second process wrote, in the order of the queries (mapped, not
    copied: they stay readable after the files are removed)."""
    return [
        pa.ipc.open_file(pa.memory_map(str(folder / f"table-{k}.arrow"))).read_all()
        for k in range(count)
    ]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(name: str, schema: pa.Schema) -> str:
    """A value of the column's type, for the row that tells ADBC the column types."""
    t = schema.field(name).type  # KeyError: a column the schema does not name
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "''"
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "0"
    if pa.types.is_floating(t):
        return "0.0"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "x''"
    raise TypeError(f"column {name!r} is of type {t}, which is not read in a second process")


@contextmanager
def _query(conn: Any, sql: str) -> Iterator[pa.RecordBatchReader]:
    import adbc_driver_manager as adbc

    with adbc.AdbcStatement(conn) as stmt:
        stmt.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
        stmt.set_sql_query(sql)
        stream, _ = stmt.execute_query()
        with pa.RecordBatchReader.from_stream(stream) as reader:
            yield reader


def _answer(conn: Any, sql: str, schema: pa.Schema, path: Path) -> None:
    """Write the rows of ``sql`` to ``path`` as an Arrow IPC file of ``schema``."""
    with _query(conn, f"SELECT * FROM ({sql}) LIMIT 0") as reader:
        names = reader.schema.names
    # The driver takes each column's type from the values of its first batch, and fails
    # on a later value of another type: a column NULL throughout the first batch would
    # pass for integers. So the first row holds a value of each column's type, and is
    # dropped.
    typed = ", ".join(f"{_literal(n, schema)} AS {_quoted(n)}" for n in names)
    part = path.with_name(path.name + ".part")
    with (
        _query(conn, f"SELECT {typed} UNION ALL SELECT * FROM ({sql})") as reader,
        pa.OSFile(str(part), "wb") as f,
        pa.ipc.new_file(f, schema) as out,
    ):
        first = True
        for batch in reader:
            rows = pa.Table.from_batches([batch.slice(1) if first else batch])
            first = False
            out.write_table(rows.select(schema.names).cast(schema))
        if first:
            raise ValueError("the query gave no typed first row")
    part.rename(path)


def run_job(database: str, folder: Path) -> None:
    """Answer the queries in ``folder`` from the SQLite file ``database``, read-only, in
    one read transaction."""
    if "sqlite3" in sys.modules:  # never two SQLite libraries in one process
        raise RuntimeError("ADBC's SQLite driver runs only where Python's sqlite3 does not")
    import adbc_driver_manager as adbc
    import adbc_driver_sqlite

    queries = json.loads((folder / "job.json").read_text())
    schemas = [
        pa.ipc.read_schema(pa.py_buffer((folder / f"schema-{k}.arrow").read_bytes()))
        for k in range(len(queries))
    ]
    uri = f"{Path(database).resolve().as_uri()}?mode=ro"
    with adbc_driver_sqlite.connect(uri) as db, adbc.AdbcConnection(db) as conn:

        def run(sql: str) -> None:
            with adbc.AdbcStatement(conn) as stmt:
                stmt.set_sql_query(sql)
                stmt.execute_update()

        run("PRAGMA busy_timeout = 60000")
        run("BEGIN")  # every query below reads the same state of the database
        for k, (sql, schema) in enumerate(zip(queries, schemas, strict=True)):
            _answer(conn, sql, schema, folder / f"table-{k}.arrow")
        run("COMMIT")


if __name__ == "__main__":
    try:
        run_job(sys.argv[1], Path(sys.argv[2]))
    except Exception as e:  # the first process reads here instead, and says why
        lines = str(e).strip().splitlines()
        raise SystemExit(f"{type(e).__name__}: {lines[0] if lines else ''}") from None
