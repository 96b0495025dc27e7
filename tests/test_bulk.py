"""The ledger's bulk reads as Arrow (``store.read_arrow``, ``store.read_later``): in this
process, and on SQLite in a second process through ADBC's SQLite driver. Both must give
every value exactly, and a second process that cannot do the job leaves it to this one.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from askfirst.errors import StorageError
from askfirst.ledger import bulk, store

TEXTS = ['plain', 'a "quoted" word', "comma, and more", "two\nlines\r\n", "", None,
         "Zoë Ørsted 李明 🙂", '"', '""', ",", "\\", "'single'", "NULL", "it''s",
         "%s %Q %%", "'", "x\x00y"]  # fmt: skip
NUMBERS = [0, -1, 2**62, None, 7, 1 << 40, -(2**63), 2**63 - 1, 3, 4, 5, 6, None, 8, 9, 10, 11]
SCHEMA = pa.schema([("k", pa.int64()), ("s", pa.string()), ("n", pa.int64())])
NULLS = 70_000  # rows of NULLs before the values: more than one batch of the second process


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A table ``t`` (k, s, n): NULLS rows holding only NULLs, then a row for each of
    TEXTS and NUMBERS (on PostgreSQL, which takes no NUL in text, without that one)."""
    engine = store.create(db_url)
    postgres = store.is_postgres(engine)
    rows = [(k, s, n) for k, (s, n) in enumerate(zip(TEXTS, NUMBERS, strict=True))]
    rows = [r for r in rows if not (postgres and r[1] and "\x00" in r[1])]
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, k BIGINT, s TEXT, n BIGINT)")
        conn.exec_driver_sql(
            "INSERT INTO t (id, k, s, n) VALUES (%(id)s, %(k)s, %(s)s, %(n)s)"
            if postgres
            else "INSERT INTO t (id, k, s, n) VALUES (:id, :k, :s, :n)",
            [{"id": i, "k": None, "s": None, "n": None} for i in range(NULLS)]
            + [{"id": NULLS + k, "k": k, "s": s, "n": n} for k, s, n in rows],
        )
    yield engine
    engine.dispose()


def read(engine: sa.Engine, queries: list[tuple[str, pa.Schema]], how: str) -> list[pa.Table]:
    """The tables of ``queries``, read here or (on SQLite) in a second process."""
    if how == "here":
        return [store.read_arrow(engine, sql, schema) for sql, schema in queries]
    with store.read_later(engine, queries, aside=True) as pending:
        tables = pending.result()
        if engine.dialect.name == "sqlite":  # the second process did the reading
            assert pending._child is not None and pending.why_not_aside is None
    return tables


@pytest.mark.parametrize("how", ["here", "aside"])
def test_every_value_comes_back_exactly(engine: sa.Engine, how: str) -> None:
    """Quotes, commas, line breaks, NUL characters, empty strings against NULLs, the
    biggest integers, rows whose only values are NULL (more of them than a batch holds,
    so that no column's type is guessed from NULLs), and columns in another order than
    the schema's."""
    queries = [
        ("SELECT s, n, k FROM t ORDER BY id", SCHEMA),
        ("SELECT k FROM t WHERE s IS NULL AND k IS NOT NULL", pa.schema([("k", pa.int64())])),
        ("SELECT s FROM t ORDER BY id", pa.schema([("s", pa.string())])),
        ("SELECT k, s, n FROM t WHERE k < 0", SCHEMA),
    ]
    got, nulls, texts, empty = read(engine, queries, how)
    assert got.schema == SCHEMA
    assert got.slice(0, NULLS).to_pylist() == [{"k": None, "s": None, "n": None}] * NULLS
    rows = got.slice(NULLS).to_pylist()
    expected = [
        {"k": k, "s": s, "n": n}
        for k, (s, n) in enumerate(zip(TEXTS, NUMBERS, strict=True))
        if not (store.is_postgres(engine) and s and "\x00" in s)
    ]
    assert rows == expected
    assert nulls.column("k").to_pylist() == [TEXTS.index(None)]
    assert texts.column("s").to_pylist() == [None] * NULLS + [r["s"] for r in expected]
    assert empty.num_rows == 0 and empty.schema == SCHEMA


def test_a_read_the_second_process_cannot_carry_is_read_here(tmp_path: Path) -> None:
    """Reading in a second process only makes a read faster: a column type it does not
    carry, or a query it cannot run, still gives the table a read here gives (or its
    error)."""
    engine = store.create(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER, at INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 1767225600000000), (NULL, NULL)")
    queries = [("SELECT k, at FROM t", pa.schema([("k", pa.int64()), ("at", pa.timestamp("us"))]))]
    with store.read_later(engine, queries, aside=True) as pending:
        (got,) = pending.result()
    assert pending.why_not_aside and "timestamp" in pending.why_not_aside
    assert got.to_pylist() == [
        {"k": 1, "at": pa.scalar(1767225600000000, pa.timestamp("us")).as_py()},
        {"k": None, "at": None},
    ]
    with (
        store.read_later(engine, [("SELECT nope FROM t", SCHEMA)], aside=True) as pending,
        pytest.raises(sqlite3.OperationalError, match="no such column: nope"),
    ):
        pending.result()
    assert pending.why_not_aside and "nope" in pending.why_not_aside
    engine.dispose()


def test_a_second_process_that_cannot_run_leaves_the_reads_to_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the second process cannot start, or stops with an error, the same tables
    come from a read here."""
    engine = store.create(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER, s TEXT)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 'a'), (NULL, NULL), (3, 'c')")
    queries = [("SELECT k, s FROM t", pa.schema([("k", pa.int64()), ("s", pa.string())]))]
    expected = [{"k": 1, "s": "a"}, {"k": None, "s": None}, {"k": 3, "s": "c"}]
    for executable in (str(tmp_path / "no-such-python"), "/bin/false"):
        monkeypatch.setattr(sys, "executable", executable)
        with store.read_later(engine, queries, aside=True) as pending:
            (got,) = pending.result()
        assert got.to_pylist() == expected
        assert pending.why_not_aside, executable
    engine.dispose()


def test_what_the_second_process_wrote_is_removed(tmp_path: Path) -> None:
    engine = store.create(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1), (2)")
    queries = [("SELECT k FROM t", pa.schema([("k", pa.int64())]))]
    with store.read_later(engine, queries, aside=True) as p:
        (got,) = p.result()
        folder = p._folder
    assert folder is not None and not folder.exists()
    assert got.column("k").to_pylist() == [1, 2]  # still readable: mapped before removal
    engine.dispose()


def test_the_reads_of_one_job_see_one_state_even_read_here(tmp_path: Path) -> None:
    """A write that lands between two reads of one job is in neither: their tables are
    one state of the database (in the second process by its one read transaction, and
    here, where this test can make a write land in between, by one too)."""
    path = tmp_path / "x.db"
    engine = store.create(f"sqlite:///{path}")
    writer = sqlite3.connect(path, isolation_level=None)

    def land_a_write() -> int:
        writer.execute("INSERT INTO t VALUES (2)")
        return 1

    @sa.event.listens_for(engine, "connect")
    def _functions(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.create_function("land_a_write", 0, land_a_write)

    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    count = ("SELECT count(*) AS n FROM t", pa.schema([("n", pa.int64())]))
    queries = [("SELECT k FROM t WHERE land_a_write() = 1", pa.schema([("k", pa.int64())])), count]
    with store.read_later(engine, queries, aside=False) as pending:
        first, then = pending.result()
    assert first.column("k").to_pylist() == [1]
    assert then.column("n").to_pylist() == [1]  # the row written meanwhile is not there
    assert store.read_arrow(engine, *count).column("n").to_pylist() == [2]
    writer.close()
    engine.dispose()


def test_adbc_sqlite_never_runs_beside_pythons_sqlite(tmp_path: Path) -> None:
    """Two SQLite libraries in one process do not see each other's locks and can
    corrupt a WAL database: the reader of the second process refuses to run in a
    process that has Python's sqlite3 loaded, as askfirst's own has."""
    assert "sqlite3" in sys.modules
    with pytest.raises(RuntimeError, match="only where Python's sqlite3 does not"):
        bulk.run_job(str(tmp_path / "x.db"), tmp_path)


def test_types_can_be_left_to_arrow_even_when_a_column_starts_with_nulls(
    tmp_path: Path,
) -> None:
    """Without a schema, a column NULL throughout the first rows fetched (more than one
    fetch) takes the type of the values that come later."""
    engine = store.create(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER, s TEXT)")
        conn.exec_driver_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150000) "
            "INSERT INTO t SELECT i, CASE WHEN i > 120000 THEN 'v' || i END FROM n"
        )
    got = store.read_arrow(engine, "SELECT k, s FROM t")
    assert got.schema == pa.schema([("k", pa.int64()), ("s", pa.string())])
    assert got.column("s").null_count == 120_000
    assert got.column("s")[-1].as_py() == "v150000"
    with pytest.raises(StorageError, match="reading the ledger"):
        store.read_arrow(engine, "SELECT s FROM t", pa.schema([("s", pa.int64())]))
    engine.dispose()
