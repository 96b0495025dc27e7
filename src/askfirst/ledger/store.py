"""Connecting to the ledger's database: SQLite (embedded default) or PostgreSQL.

SQLite runs in WAL mode (``synchronous=NORMAL`` by default: an acknowledged event
survives the process being killed; ``ASKFIRST_SQLITE_SYNCHRONOUS=FULL`` also survives a
power cut), and every write transaction starts with ``BEGIN IMMEDIATE`` so that
writers queue for the chain head instead of failing half-way. PostgreSQL serialises
appends with ``SELECT ... FOR UPDATE`` on the head row.
Bulk reads (decisions for every subject) come back as Arrow columns: from PostgreSQL
through ADBC; from SQLite through the sqlite3 module in this process, or with
:func:`read_later`, in a second process through ADBC's SQLite driver (see ``bulk``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from askfirst import config
from askfirst.errors import StorageError

if TYPE_CHECKING:  # pyarrow and Alembic load where they are used: not on every command
    import pyarrow as pa
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def normalize_url(url: str) -> str:
    """Accept ``sqlite:///file``, a bare path, or a PostgreSQL URL; use psycopg 3."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create(url: str, *, must_exist: bool = False) -> Engine:
    """An engine for ``url``, with askfirst's connection settings.

    With ``must_exist``, a SQLite file that is not there is an error rather than a new,
    empty file left behind.
    """
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"database URL {url!r} is not a valid URL") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            parent = Path(db).expanduser().resolve().parent
            if not parent.is_dir():
                raise StorageError(f"database folder {parent} does not exist")
            if must_exist and not Path(db).expanduser().exists():
                raise StorageError(
                    f"no ledger at {db}; create one with 'askfirst init' (or pass --db)"
                )
        engine = create_engine(url, connect_args={"timeout": 60})
        _sqlite_setup(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(url, pool_pre_ping=True)
        _postgres_setup(engine)
        return engine
    raise StorageError(
        f"database URL {url!r}: askfirst supports sqlite:/// and postgresql:// databases"
    )


def _sqlite_synchronous() -> str:
    value = os.environ.get(config.SQLITE_SYNCHRONOUS.env, config.SQLITE_SYNCHRONOUS.default or "")
    if value.upper() not in ("NORMAL", "FULL", "EXTRA"):
        raise StorageError(f"{config.SQLITE_SYNCHRONOUS.env}={value!r}: use NORMAL or FULL")
    return value.upper()


def _sqlite_setup(engine: Engine) -> None:
    synchronous = _sqlite_synchronous()

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("askfirst_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _postgres_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # askfirst's statements are key look-ups and short writes, which JIT compiling
        # only slows down; and a look-up across many lineage partitions is estimated
        # dear enough (each partition counted once per probe) to be compiled: 15 ms
        # for a query that runs in 3.
        dbapi_conn.execute("SET jit = off")
        dbapi_conn.commit()


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction that holds the chain: committed on success, else rolled back."""
    with engine.connect().execution_options(askfirst_write=True) as conn, conn.begin():
        yield conn


class Prepared:
    """A statement compiled once per database kind and run on the driver's own cursor,
    inside the caller's transaction: the append path runs a handful of statements per
    event, and SQLAlchemy's per-execution bookkeeping would cost more than the database.
    Parameters are passed by name (``:name`` on SQLite, ``%(name)s`` on psycopg)."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._sql: dict[str, tuple[str, dict[str, Any]]] = {}

    def _args(self, conn: Connection, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        sql, fixed = self.sql(conn)
        return sql, {**fixed, **(params or {})}

    def sql(self, conn: Connection) -> tuple[str, dict[str, Any]]:
        """The statement's text for this database, and the values it fixes itself."""
        name = conn.dialect.name
        if name not in self._sql:
            if name == "sqlite":
                from sqlalchemy.dialects.sqlite import pysqlite

                dialect: Any = pysqlite.dialect(paramstyle="named")
            else:
                from sqlalchemy.dialects.postgresql import psycopg

                dialect = psycopg.dialect(paramstyle="pyformat")  # type: ignore[no-untyped-call]
            compiled = self.statement.compile(dialect=dialect)
            fixed = {k: v for k, v in compiled.params.items() if v is not None}
            self._sql[name] = (str(compiled), fixed)
        return self._sql[name]

    def one(self, conn: Connection, params: dict[str, Any] | None = None) -> Any:
        cur = conn.connection.cursor()
        try:
            cur.execute(*self._args(conn, params))
            return cur.fetchone()
        finally:
            cur.close()

    def all(self, conn: Connection, params: dict[str, Any] | None = None) -> list[Any]:
        cur = conn.connection.cursor()
        try:
            cur.execute(*self._args(conn, params))
            return list(cur.fetchall())
        finally:
            cur.close()

    def run(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        cur = conn.connection.cursor()
        try:
            sql, fixed = self.sql(conn)
            if fixed:
                rows = [{**fixed, **row} for row in rows]
            if len(rows) == 1:
                cur.execute(sql, rows[0])
            else:
                cur.executemany(sql, rows)
        finally:
            cur.close()


def first_line(error: object) -> str:
    """An error's first line (or its type's name), for a one-line message."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _alembic_config(conn: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


_REVISION = re.compile(
    r"""^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:"([^"]*)"|'([^']*)'|None)""", re.M
)


def head_revision() -> str | None:
    """The newest migration's revision id.

    Read from the migrations' ``revision = "..."`` and ``down_revision = "..."`` lines
    rather than through Alembic, whose import would cost every command a tenth of a
    second (tests/test_startup.py checks that Alembic names the same head)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for file in (MIGRATIONS / "versions").glob("*.py"):
        for key, double, single in _REVISION.findall(file.read_text("utf-8")):
            if double or single:
                (revisions if key == "revision" else parents).add(double or single)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def current_revision(engine: Engine) -> str | None:
    """The revision the database's schema is at (Alembic's version table), or None."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return None if value is None else str(value)
    except OperationalError as e:
        raise StorageError(f"cannot open the database: {first_line(e.orig)}") from None


def upgrade(engine: Engine) -> None:
    """Create the schema, or bring it up to date (Alembic ``upgrade head``)."""
    from alembic import command

    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "head")
    except OperationalError as e:
        raise StorageError(f"cannot create the schema: {first_line(e.orig)}") from None


def check_current(engine: Engine, url: str) -> None:
    """Fail with a clear message when the database has no schema or an old one."""
    rev = current_revision(engine)
    if rev is None:
        raise StorageError(f"{url}: no askfirst ledger here; create one with 'askfirst init'")
    if rev != head_revision():
        raise StorageError(f"{url}: the schema is out of date; upgrade it with 'askfirst init'")


def _read_here(engine: Engine, queries: Sequence[tuple[str, pa.Schema | None]]) -> list[pa.Table]:
    """The queries' tables, read in this process in one read transaction (one state).

    SQLite is read through Python's own sqlite3: a second SQLite library in the process
    (as ADBC's SQLite driver brings) would not see this one's locks and can corrupt a
    WAL database. PostgreSQL answers through ADBC, which hands the rows over as Arrow
    columns.
    """
    from askfirst.ledger import bulk

    if engine.dialect.name != "sqlite":
        import adbc_driver_postgresql.dbapi as adbc_pg

        tables = []
        with adbc_pg.connect(_libpq_uri(engine), autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for sql, schema in queries:
                cur.execute(sql)
                tables.append(_shaped(cur.fetch_arrow_table(), schema))
            cur.execute("COMMIT")
        return tables
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        try:
            cur.execute("BEGIN")
            return [bulk.read_here(cur, sql, schema) for sql, schema in queries]
        except (ValueError, TypeError) as e:  # a value Arrow cannot take as the schema's type
            raise StorageError(f"reading the ledger: {first_line(e)}") from None
        finally:
            cur.close()
            raw.rollback()
    finally:
        raw.close()


def _shaped(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    if schema is None:
        return table
    return table.select(schema.names).cast(schema) if table.num_rows else schema.empty_table()


def read_arrow(engine: Engine, sql: str, schema: pa.Schema | None = None) -> pa.Table:
    """Run one read-only query here and return the rows as an Arrow table (cast to
    ``schema``): see :func:`read_later` for reading many rows of a SQLite file faster.

    ``sql`` must hold no caller text: only names and numbers askfirst itself checked.
    """
    (table,) = _read_here(engine, [(sql, schema)])
    return table


def _libpq_uri(engine: Engine) -> str:
    """The engine's database as a libpq URI. SQLAlchemy writes a space in a query value
    as ``+``, which libpq keeps as a plus (``options=-c a=1 -c b=2`` would reach the
    server as one broken option), so the query is written with ``%20``."""
    url = engine.url.set(drivername="postgresql")
    base = url.set(query={}).render_as_string(hide_password=False)
    query = urlencode(dict(url.query), doseq=True, quote_via=quote)
    return f"{base}?{query}" if query else base


class Pending:
    """Reads started by :func:`read_later`; :meth:`result` waits for their tables."""

    def __init__(
        self,
        engine: Engine,
        queries: Sequence[tuple[str, pa.Schema]],
        child: subprocess.Popen[bytes] | None = None,
        folder: Path | None = None,
    ) -> None:
        self._engine, self._queries = engine, list(queries)
        self._child, self._folder = child, folder
        self.why_not_aside: str | None = None  # why the reads ran here after all

    def result(self) -> list[pa.Table]:
        """The tables, in the order of the queries."""
        if self._child is None:
            return self._read_here()
        from askfirst.ledger import bulk

        assert self._folder is not None
        _, err = self._child.communicate()
        if self._child.returncode == 0:
            return bulk.read_answers(self._folder, len(self._queries))
        # The second process is only a way to go faster: whatever stopped it (a query it
        # cannot carry, memory, no ADBC driver, a path SQLite's URIs do not take), read
        # here instead.
        lines = err.decode("utf-8", "replace").strip().splitlines()
        self.why_not_aside = lines[-1] if lines else f"exit code {self._child.returncode}"
        return self._read_here()

    def _read_here(self) -> list[pa.Table]:
        return _read_here(self._engine, self._queries)

    def close(self) -> None:
        """Stop the second process if it still runs, and remove what it wrote."""
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.communicate()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


@contextmanager
def read_later(
    engine: Engine, queries: Sequence[tuple[str, pa.Schema]], *, aside: bool
) -> Iterator[Pending]:
    """Start read-only queries now and take their tables later (``result()``).

    With ``aside`` on a SQLite file, the queries run in a second process meanwhile, on
    another core, through ADBC's SQLite driver (a quarter of the CPU time of a read
    here on millions of rows, for about 0.2 s to start), all in one read transaction:
    their tables are one state of the database. Otherwise (or when that process cannot
    start or fails) they run here when the result is asked for, also in one read
    transaction.
    Leaving the block stops the second process.
    """
    from askfirst.ledger import bulk

    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not aside or not database or database == ":memory:" or not Path(database).is_file():
        pending = Pending(engine, queries)
    else:
        folder = Path(tempfile.mkdtemp(prefix="askfirst-read-"))
        try:
            bulk.write_job(folder, list(queries))
            child = subprocess.Popen(
                [sys.executable, "-P", bulk.__file__, database, str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as e:  # no interpreter to start: read here when asked
            shutil.rmtree(folder, ignore_errors=True)
            pending = Pending(engine, queries)
            pending.why_not_aside = first_line(e)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        else:
            pending = Pending(engine, queries, child, folder)
    try:
        yield pending
    finally:
        pending.close()


def has_rows(engine: Engine, table: str, count: int) -> bool:
    """Whether ``table`` (a name askfirst itself chose) has at least ``count`` rows."""
    with engine.connect() as conn:
        n = conn.exec_driver_sql(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {int(count)}) AS t"
        ).scalar()
    return int(n or 0) >= count
