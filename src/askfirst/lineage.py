"""Lineage: which snapshots hold whose data, as author or as a mention that was kept.

Every build registers its snapshot and one lineage row per subject in it, in the same
transaction, in bulk (``executemany`` on SQLite; on PostgreSQL ``COPY`` into the
snapshot's own partition, keyed after the copy). Rows are keyed by (snapshot, subject),
so finding a subject's snapshots is one key probe per snapshot, never a scan of the
lineage.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, bindparam, delete, insert, select, text, update

from askfirst import times
from askfirst.errors import InputError, StorageError
from askfirst.ledger import store
from askfirst.ledger.events import Event
from askfirst.ledger.ledger import Ledger
from askfirst.ledger.tables import events, lineage, snapshots
from askfirst.outbox import queue_rebuilt

if TYPE_CHECKING:
    import pyarrow as pa

_COLUMNS = ("subject_id", "author_records", "mention_records", "mention_keys")

# ---- shard keys -------------------------------------------------------------------------------
# A record's shard key is a 16-bit bucket of its author: training sharded by
# ``shard_key % N`` keeps each author's records in one shard, so that unlearning one
# member retrains one shard (SISA), and a task can name it. One definition, read by
# Python (tasks), DuckDB and Spark (the gate's engines); a test holds them together.
SHARD_KEYS = 65_536
# The most shard keys lineage lists for one mentioned subject; beyond it, "every shard".
MAX_MENTION_KEYS = 256


def shard_key(author_id: str) -> int:
    """The author's shard key: the first two bytes of MD5(author id), little-endian."""
    return int.from_bytes(hashlib.md5(author_id.encode()).digest()[:2], "little")


def shard_key_sql(dialect: str, column: str) -> str:
    """:func:`shard_key` of ``column`` as an SQL expression, in DuckDB's or Spark's SQL."""
    if dialect == "duckdb":
        return f"(md5_number({column}) & 65535)::INTEGER"
    if dialect == "spark":
        return (
            f"CAST(conv(concat(substring(md5({column}), 3, 2), "
            f"substring(md5({column}), 1, 2)), 16, 10) AS INT)"
        )
    raise ValueError(f"no shard key for SQL dialect {dialect!r}")


def shards_of(keys: list[int], shards: int) -> list[int]:
    """The shards (of ``shards``) that records with these shard keys fall in."""
    return sorted({k % shards for k in keys})


class Manifest(Protocol):
    """What the registry records of a snapshot's manifest (``gate.SnapshotManifest``)."""

    @property
    def snapshot_id(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def as_of(self) -> str: ...
    @property
    def policy_hash(self) -> str: ...
    @property
    def engine(self) -> str: ...
    @property
    def on_mention(self) -> str: ...
    @property
    def corpus(self) -> str: ...
    @property
    def head_seq(self) -> int: ...
    @property
    def head_hash(self) -> str: ...
    def to_json(self) -> dict[str, Any]: ...


_ROWS_PER_STATEMENT = 500


def _bulk_sqlite(conn: Connection, snapshot: int, rows: pa.Table) -> None:
    # Many rows per INSERT: binding, not SQLite, is the cost of a row, and a statement
    # of 500 rows binds its values in one call. ``snapshot`` is our own integer.
    flat = list(
        itertools.chain.from_iterable(
            zip(*(rows.column(c).to_pylist() for c in _COLUMNS), strict=True)
        )
    )
    width = len(_COLUMNS)
    step = _ROWS_PER_STATEMENT * width
    full = len(flat) // step * step
    raw: Any = conn.connection.dbapi_connection
    cur = raw.cursor()

    def statement(n: int) -> str:
        return (
            "INSERT INTO lineage (snapshot, subject_id, author_records, mention_records, "
            "mention_keys) VALUES " + ", ".join([f"({int(snapshot)}, ?, ?, ?, ?)"] * n)
        )

    try:
        if full:
            cur.executemany(
                statement(_ROWS_PER_STATEMENT), (flat[i : i + step] for i in range(0, full, step))
            )
        if len(flat) > full:
            cur.execute(statement((len(flat) - full) // width), flat[full:])
    finally:
        cur.close()


_CSV_ROWS = 262_144  # rows encoded at a time, so the server parses while we encode


def _bulk_postgres(conn: Connection, snapshot: int, rows: pa.Table) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # The snapshot's rows go into a table of their own with no index; the key is then
    # built in one sorted pass and the table attached as the snapshot's partition. The
    # CHECK lets the attach trust the rows without reading them again. ``snapshot`` is
    # our own integer, so it can name the table.
    n = int(snapshot)
    part = f"lineage_{n}"
    table = pa.table(
        {
            "snapshot": pa.repeat(pa.scalar(n, pa.int32()), rows.num_rows),
            **{c: rows.column(c) for c in _COLUMNS},
        }
    )
    options = pacsv.WriteOptions(include_header=False)
    raw: Any = conn.connection.dbapi_connection
    with raw.cursor() as cur:
        cur.execute(f"CREATE TABLE {part} (LIKE lineage, CHECK (snapshot = {n}))")
        # FREEZE: the table is new in this transaction, so its rows can be written
        # frozen and visible to all: no later pass sets their hint bits or freezes them,
        # and a look-up can trust the index alone.
        with cur.copy(
            f"COPY {part} ({', '.join(table.column_names)}) FROM STDIN (FORMAT csv, FREEZE)"
        ) as copy:
            for batch in table.to_batches(max_chunksize=_CSV_ROWS):
                buf = io.BytesIO()
                pacsv.write_csv(batch, buf, options)
                copy.write(buf.getbuffer())
        cur.execute(
            f"ALTER TABLE {part} ADD PRIMARY KEY (snapshot, subject_id) "
            "INCLUDE (author_records, mention_records)"
        )
        cur.execute(f"ALTER TABLE lineage ATTACH PARTITION {part} FOR VALUES IN ({n})")
        # Statistics from a small sample (tens of ms), so that the planner knows a
        # subject is one row here before autovacuum gets round to the new table.
        cur.execute("SET LOCAL default_statistics_target = 10")
        cur.execute(f"ANALYZE {part}")


_HELD = ("live", "stale")  # snapshots whose data files still exist

# The snapshots whose data still exists; then, for one subject, one key probe of the
# lineage per snapshot (the key is (snapshot, subject)) — never a scan of the lineage.
HELD_SNAPSHOTS = select(
    snapshots.c.id, snapshots.c.snapshot_id, snapshots.c.purpose, snapshots.c.status
).where(snapshots.c.status.in_(_HELD))
_LINEAGE_OF = select(
    lineage.c.snapshot, lineage.c.author_records, lineage.c.mention_records, lineage.c.mention_keys
).where(
    lineage.c.snapshot.in_(bindparam("ids", expanding=True)),
    lineage.c.subject_id == bindparam("sid"),
)
# On PostgreSQL, where each snapshot is a partition, the numbers are joined rather than
# listed: each probe then reaches just its own partition (pruned as it runs), where an
# IN list is planned for, and checked inside, every partition it names (12 ms against
# 2.6 ms with 100 snapshots).
_LINEAGE_OF_PG = text(
    "SELECT l.snapshot, l.author_records, l.mention_records, l.mention_keys "
    "FROM unnest(CAST(:ids AS INTEGER[])) AS s(n) "
    "JOIN lineage l ON l.snapshot = s.n AND l.subject_id = :sid"
)


@dataclass(frozen=True)
class Held:
    """One snapshot holding a subject's data, and how."""

    id: int
    snapshot_id: str
    purpose: str
    status: str
    author_records: int
    mention_records: int
    mention_keys: str | None


def _lineage_of(conn: Connection, subject: str, numbers: Iterable[int]) -> Sequence[Any]:
    """``subject``'s lineage rows (snapshot, author_records, mention_records,
    mention_keys) in the snapshots ``numbers``: one key probe per snapshot."""
    ids = sorted(numbers)
    if not ids:
        return []
    query = _LINEAGE_OF_PG if conn.dialect.name == "postgresql" else _LINEAGE_OF
    return conn.execute(query, {"ids": ids, "sid": subject}).all()


def holding(conn: Connection, subject: str, snaps: dict[int, Any]) -> list[Held]:
    """Which of ``snaps`` (registry rows by number) hold ``subject``'s data, and how."""
    out = []
    for r in _lineage_of(conn, subject, snaps):
        snap = snaps[r.snapshot]
        out.append(
            Held(
                r.snapshot,
                snap.snapshot_id,
                snap.purpose,
                snap.status,
                r.author_records,
                r.mention_records,
                r.mention_keys,
            )
        )
    return out


def check_can_record(ledger: Ledger) -> None:
    """Fail at once, before a build does its work, if this database role could not
    record the snapshot's lineage: on PostgreSQL it creates a table in askfirst's schema
    and attaches it to ``lineage``, which takes owning ``lineage``."""
    if not store.is_postgres(ledger.engine):
        return
    with ledger.engine.connect() as conn:
        user, owns, creates = conn.exec_driver_sql(
            "SELECT current_user, pg_has_role(current_user, c.relowner, 'USAGE'), "
            "has_schema_privilege(n.nspname, 'CREATE') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = 'lineage'::regclass"
        ).one()
    if not (owns and creates):
        raise StorageError(
            f"database role {user!r} cannot record a snapshot's lineage: each snapshot's "
            "lineage is a table it creates and attaches to 'lineage', which takes owning "
            "'lineage' and creating tables in its schema; run builds as the role that ran "
            "'askfirst init', or grant this role those rights"
        )


# ---- a build in progress ----------------------------------------------------------------------
# A build registers its snapshot as ``building`` first, in a short transaction of its own,
# with the folder it will fill; the transaction that records the lineage turns the same
# entry ``live``. An entry still ``building`` whose build is gone is what a killed build
# left: ``askfirst.gate.build.reconcile`` removes its folders and then the entry. Nothing
# else reads a ``building`` entry: it has no lineage, is not held, listed or resolved.
BUILDING = "building"


@dataclass(frozen=True)
class Building:
    """A registry entry of a build in progress (or killed): where it works and for whom."""

    id: int
    path: str  # the folder the snapshot goes to
    work: str  # the hidden folder it is written in
    token: str  # written in the build's lock file, to know its folders again
    host: str
    pid: int


def begin_build(
    ledger: Ledger,
    *,
    purpose: str,
    as_of: int,
    head_seq: int,
    head_hash: str,
    policy_hash: str,
    engine: str,
    on_mention: str,
    corpus: str,
    path: str,
    work: str,
    token: str,
    host: str,
    pid: int,
) -> int:
    """Register a build in progress (``building``); returns its registry number."""
    about = {"building": {"work": work, "token": token, "host": host, "pid": pid}}
    with store.write(ledger.engine) as conn:
        number = conn.execute(
            insert(snapshots)
            .values(
                snapshot_id=f"{BUILDING}-{token}"[:64],
                purpose=purpose,
                as_of=as_of,
                head_seq=head_seq,
                head_hash=head_hash,
                policy_hash=policy_hash,
                engine=engine,
                on_mention=on_mention,
                corpus=corpus,
                path=path,
                status=BUILDING,
                created_at=times.to_micros(times.now()),
                manifest=json.dumps(about, sort_keys=True),
            )
            .returning(snapshots.c.id)
        ).scalar_one()
    return int(number)


def builds_in_progress(ledger: Ledger) -> list[Building]:
    """Every ``building`` entry (builds running, or killed), oldest first."""
    q = (
        select(snapshots.c.id, snapshots.c.path, snapshots.c.manifest)
        .where(snapshots.c.status == BUILDING)
        .order_by(snapshots.c.id)
    )
    with ledger.engine.connect() as conn:
        rows = conn.execute(q).all()
    out = []
    for r in rows:
        b = json.loads(r.manifest).get("building", {})
        out.append(
            Building(
                id=r.id,
                path=r.path,
                work=str(b.get("work", "")),
                token=str(b.get("token", "")),
                host=str(b.get("host", "")),
                pid=int(b.get("pid", 0)),
            )
        )
    return out


def status_of(ledger: Ledger, number: int) -> str | None:
    """A registry entry's status (``None`` if there is no such entry)."""
    with ledger.engine.connect() as conn:
        got = conn.execute(select(snapshots.c.status).where(snapshots.c.id == number)).scalar()
    return None if got is None else str(got)


def drop_build(ledger: Ledger, number: int) -> bool:
    """Remove a ``building`` entry (never a committed one); whether there was one."""
    with store.write(ledger.engine) as conn:
        done = conn.execute(
            delete(snapshots).where(snapshots.c.id == number, snapshots.c.status == BUILDING)
        ).rowcount
    return bool(done)


@dataclass(frozen=True)
class Folder:
    """A registered snapshot's folder, and (if retired) the id it was rebuilt into."""

    path: str
    status: str
    snapshot_id: str
    replaced_by: str | None
    shared: bool  # another entry, not retired, names the same folder


def registered_folders(ledger: Ledger) -> list[Folder]:
    """The folder of every registered snapshot (not of builds in progress)."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(
                snapshots.c.path,
                snapshots.c.status,
                snapshots.c.snapshot_id,
                snapshots.c.rebuilt_from,
                snapshots.c.replaced_by,
            )
        ).all()
        names = links(conn, rows)
    in_use = [r.path for r in rows if r.status != "retired"]
    return [
        Folder(
            r.path,
            r.status,
            r.snapshot_id,
            names.get(r.replaced_by) if r.replaced_by else None,
            in_use.count(r.path) > (r.status != "retired"),
        )
        for r in rows
        if r.status != BUILDING
    ]


def record(
    ledger: Ledger,
    manifest: Manifest,
    path: str,
    rows: pa.Table,
    before_commit: Callable[[], None] | None = None,
    replaces: int | None = None,
    building: int | None = None,
) -> int:
    """Register a snapshot and its lineage; returns its registry number.

    ``before_commit`` runs inside the transaction (the build moves its folder into
    place there), so that the registry and the files appear together or not at all.
    With ``replaces`` (a rebuild), that snapshot is retired in the same transaction.
    With ``building`` (the number :func:`begin_build` gave), that entry becomes the
    snapshot's, ``live``, rather than a new one.
    """
    now = times.to_micros(times.now())
    values = dict(
        snapshot_id=manifest.snapshot_id,
        purpose=manifest.purpose,
        as_of=times.to_micros(times.parse(manifest.as_of)),
        head_seq=manifest.head_seq,
        head_hash=manifest.head_hash,
        policy_hash=manifest.policy_hash,
        engine=manifest.engine,
        on_mention=manifest.on_mention,
        corpus=manifest.corpus,
        path=path,
        status="live",
        created_at=now,
        manifest=json.dumps(manifest.to_json(), sort_keys=True),
        rebuilt_from=replaces,
    )
    with store.write(ledger.engine) as conn:
        head = ledger.lock_head(conn)  # no withdrawal can land until this commits
        if building is None:
            number = conn.execute(
                insert(snapshots).values(**values).returning(snapshots.c.id)
            ).scalar_one()
        else:
            number = building
            moved = conn.execute(
                update(snapshots)
                .where(snapshots.c.id == building, snapshots.c.status == BUILDING)
                .values(**values)
            ).rowcount
            if moved != 1:
                raise StorageError(
                    "the snapshot's registry entry was removed while it was being built "
                    "(by 'askfirst snapshot reconcile'?); nothing was recorded"
                )
        if replaces is not None:
            conn.execute(
                update(snapshots)
                .where(snapshots.c.id == replaces)
                .values(status="retired", replaced_by=number, retired_at=now)
            )
            queue_rebuilt(conn, replaces, manifest.snapshot_id, now)
        if "mention_keys" not in rows.column_names:
            import pyarrow as pa

            rows = rows.append_column("mention_keys", pa.nulls(rows.num_rows, pa.string()))
        if rows.num_rows:
            driver_errors: tuple[type[Exception], ...] = (sqlite3.Error,)
            try:
                if store.is_postgres(ledger.engine):
                    import psycopg

                    driver_errors = (psycopg.Error,)
                    _bulk_postgres(conn, number, rows)
                else:
                    _bulk_sqlite(conn, number, rows)
            except driver_errors as e:  # the driver's own cursor: name it
                raise StorageError(
                    f"could not record the snapshot's lineage: {store.first_line(e)}"
                ) from None
        if head.seq > manifest.head_seq:
            # Events recorded while the build ran: a withdrawal among them reaches the
            # new snapshot at once, as it would any other.
            since = [
                Event(*row)
                for row in conn.execute(
                    select(*events.c).where(events.c.seq > manifest.head_seq).order_by(events.c.seq)
                )
            ]
            ledger.after_append(conn, ledger.policy, since)
        if before_commit is not None:
            before_commit()
        return int(number)


def _when(us: int | None) -> str | None:
    return times.iso(us) if us is not None else None


def links(conn: Connection, rows: Sequence[Any]) -> dict[int, str]:
    """The snapshot ids of the snapshots ``rows`` were rebuilt from or into."""
    wanted = {n for r in rows for n in (r.rebuilt_from, r.replaced_by) if n}
    if not wanted:
        return {}
    q = select(snapshots.c.id, snapshots.c.snapshot_id).where(snapshots.c.id.in_(wanted))
    return {n: sid for n, sid in conn.execute(q)}


def _snapshot_json(row: Any, numbers: dict[int, str] | None = None) -> dict[str, Any]:
    """A registry row as JSON; ``numbers`` maps registry numbers to snapshot ids."""
    numbers = numbers or {}
    return {
        "number": row.id,
        "snapshot_id": row.snapshot_id,
        "purpose": row.purpose,
        "as_of": times.iso(row.as_of),
        "status": row.status,
        "path": row.path,
        "engine": row.engine,
        "ledger_head": {"seq": row.head_seq, "hash": row.head_hash},
        "created_at": times.iso(row.created_at),
        "stale_since": _when(row.stale_since),
        "retired_at": _when(row.retired_at),
        "rebuilt_from": numbers.get(row.rebuilt_from) if row.rebuilt_from else None,
        "replaced_by": numbers.get(row.replaced_by) if row.replaced_by else None,
    }


def snapshots_of(ledger: Ledger, subject: str) -> list[dict[str, Any]]:
    """The snapshots that hold ``subject``'s data, newest first, with counts and role."""
    # For each registered snapshot (its registry entry, without the manifest), one probe
    # of the lineage's key; on PostgreSQL each probe reaches only that snapshot's
    # partition, pruned as the query runs.
    q = (
        select(
            *(c for c in snapshots.c if c.name not in ("manifest", "corpus")),
            lineage.c.author_records,
            lineage.c.mention_records,
        )
        .join(lineage, (lineage.c.snapshot == snapshots.c.id) & (lineage.c.subject_id == subject))
        .order_by(snapshots.c.id.desc())
    )
    with ledger.engine.connect() as conn:
        rows = conn.execute(q).all()
        names = links(conn, rows)
    out = []
    for row in rows:
        entry = _snapshot_json(row, names)
        roles = []
        if row.author_records:
            roles.append("author")
        if row.mention_records:
            roles.append("mention")
        entry.update(
            author_records=row.author_records,
            mention_records=row.mention_records,
            roles=roles,
        )
        out.append(entry)
    return out


def list_snapshots(ledger: Ledger, purpose: str | None = None) -> list[dict[str, Any]]:
    """Every registered snapshot (optionally of one purpose), newest first."""
    q = select(snapshots).where(snapshots.c.status != BUILDING).order_by(snapshots.c.id.desc())
    if purpose is not None:
        q = q.where(snapshots.c.purpose == purpose)
    with ledger.engine.connect() as conn:
        rows = conn.execute(q).all()
        numbers = links(conn, rows)
    out = []
    for row in rows:
        entry = _snapshot_json(row, numbers)
        m = json.loads(row.manifest)
        entry.update(input_records=m["input_records"], output_records=m["output_records"])
        out.append(entry)
    return out


def resolve(conn: Connection, snapshot_id: str) -> list[Any]:
    """The registry rows (copies) of one snapshot, oldest first.

    ``snapshot_id`` may be a unique prefix of the id (at least 8 characters).
    """
    key = snapshot_id.strip().lower()
    if len(key) < 8:
        raise InputError(f"snapshot id {snapshot_id!r}: give at least 8 characters")
    q = select(snapshots).where(
        snapshots.c.snapshot_id.startswith(key, autoescape=True), snapshots.c.status != BUILDING
    )
    rows = conn.execute(q.order_by(snapshots.c.id)).all()
    if not rows:
        raise InputError(f"no snapshot {snapshot_id!r}; 'askfirst snapshot list' shows them")
    if len({r.snapshot_id for r in rows}) > 1:
        raise InputError(f"snapshot id {snapshot_id!r} is ambiguous; give more characters")
    return list(rows)


def show(ledger: Ledger, snapshot_id: str) -> list[dict[str, Any]]:
    """Every copy of a snapshot: its registry entry and its manifest.

    ``snapshot_id`` may be a unique prefix of the id (at least 8 characters).
    """
    with ledger.engine.connect() as conn:
        rows = resolve(conn, snapshot_id)
        numbers = links(conn, rows)
    out = []
    for row in rows:
        entry = _snapshot_json(row, numbers)
        entry["manifest"] = json.loads(row.manifest)
        out.append(entry)
    return out
