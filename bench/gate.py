"""Benchmark of the gate (issue 4): snapshot builds against the I/O floor, memory, lineage.

Generates its own data: a ledger of AUTHORS members (70% granted genai-training, 1% of
them deceased with protected names, and 1% people without accounts who objected), and
corpora of RECORDS Parquet records of ~200-byte texts, one with no mentions at all and
one where 5% of records mention someone (by id and @handle, or by a protected name).

In the same run, on the same files, it measures:

1. the I/O floor: DuckDB reading the corpus and writing it back as Parquet, no filter;
2. the gate (``askfirst.build_snapshot``) on the corpus without mentions and with them,
   end to end (decisions read from the ledger, lineage recorded) and the corpus pass alone;
3. a plain Python loop over Arrow batches doing the author look-up in a dict and
   writing the kept records (what the gate replaces);
4. peak RSS of a build at RECORDS/2 and RECORDS (each in a fresh process);
5. lineage: recording a 2M-subject snapshot (subjects/s), and looking up one subject with
   100 snapshots of 2M subjects each registered (ms).

    python bench/gate.py                      # full run: 20M records, 2M authors
    python bench/gate.py --records 2000000    # smaller
    python bench/gate.py --quick              # smoke run

The ledger is cached in bench/out/ (it takes minutes to register millions of members).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

import askfirst
from askfirst import NewEvent, SubjectIn, load_policy, open_ledger, times
from askfirst.gate import consent as consent_mod
from askfirst.gate.manifest import LedgerHeadRef, SnapshotManifest
from askfirst.lineage import record, snapshots_of

OUT = Path(__file__).with_name("out")
PURPOSE = "genai-training"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sid(i: int) -> str:
    return f"m{i:08d}"


# ---- the ledger ------------------------------------------------------------------------


def make_ledger(authors: int) -> str:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"gate-ledger-{authors}.db"
    url = f"sqlite:///{path}"
    if path.exists():
        open_ledger(url, load_policy(), create=True).close()  # a cached one: bring its schema up
        return url
    tmp = OUT / f"gate-ledger-{authors}.building.db"
    for p in OUT.glob(f"gate-ledger-{authors}.building.db*"):
        p.unlink()
    log(f"registering {authors:,} subjects (cached afterwards in {path})")
    with open_ledger(f"sqlite:///{tmp}", load_policy(), create=True) as led:
        chunk = 50_000
        for lo in range(0, authors, chunk):
            batch = []
            for i in range(lo, min(lo + chunk, authors)):
                kind = "person" if i % 100 == 99 else "member"
                status = "deceased" if i % 100 == 98 else "active"
                batch.append(
                    SubjectIn(
                        id=sid(i),
                        kind=kind,
                        jurisdiction="DE" if i % 3 else "US-CA",
                        handle=f"h{i}",
                        names=[f"Name{i} Surname{i % 997}"],
                        status=status,
                    )
                )
            led.register(batch, since=T0)
        for lo in range(0, authors, chunk):
            events = [
                NewEvent(
                    type="choice",
                    subject=sid(i),
                    purpose=PURPOSE,
                    value="grant",
                    notice_version=1,
                    actor=sid(i),
                    source="bench",
                    recorded_at=times.to_micros(T0 + timedelta(days=1)),
                )
                for i in range(lo, min(lo + chunk, authors))
                if i % 10 < 7 and i % 100 < 98
            ]
            led.append_many(events)
        log(f"ledger head {led.head().seq:,} events")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{tmp}{suffix}")
        if src.exists():
            src.rename(f"{path}{suffix}")
    return url


# ---- the corpora -----------------------------------------------------------------------


def make_corpus(records: int, authors: int, mention_share: float) -> Path:
    OUT.mkdir(exist_ok=True)
    tag = f"{records}-{authors}-{int(mention_share * 100)}"
    path = OUT / f"gate-corpus-{tag}.parquet"
    if path.exists():
        return path
    log(f"writing corpus {path.name}")
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE w AS SELECT list(md5(i::VARCHAR)[1:3 + (i % 7)]) AS words "
        "FROM range(4096) t(i)"
    )
    every = int(1 / mention_share) if mention_share else 0
    mention = (
        f"CASE WHEN i % {every} = 0 THEN "
        f"CASE WHEN i % {every * 2} = 0 THEN ' with Name' || (m // 100 * 100 + 99) "
        f"|| ' Surname' || ((m // 100 * 100 + 99) % 997) "
        f"ELSE ' thanks @h' || m END ELSE '' END"
        if every
        else "''"
    )
    mentions = (
        f"CASE WHEN i % {every} = 0 AND i % {every * 2} <> 0 "
        f"THEN ['m' || lpad(m::VARCHAR, 8, '0')] ELSE [] END"
        if every
        else "CAST([] AS VARCHAR[])"
    )
    con.execute(f"""
COPY (
  SELECT 'r' || i AS record_id, 'm' || lpad((hash(i) % {authors})::VARCHAR, 8, '0') AS author_id,
    ['post', 'comment', 'profile', 'article', 'video', 'post', 'comment', 'post', 'post',
     'message'][1 + (i % 10)::INT] AS category,
    TIMESTAMPTZ '2025-01-01 00:00:00+00'
      + to_microseconds((hash(i * 7) % 31536000000000)::BIGINT) AS created_at,
    array_to_string(list_transform(range(30), lambda x: words[1 + (hash(i * 37 + x) % 4096)::INT]),
      ' ') || {mention} AS text,
    {mentions} AS mentions
  FROM (SELECT i, (hash(i * 3) % {authors})::BIGINT AS m FROM range({records}) t(i)), w
) TO '{path}' (FORMAT parquet)""")
    con.close()
    return path


# ---- the measurements --------------------------------------------------------------------


def cpu_s() -> float:
    """CPU seconds (user and system) of this process and the children it waited for."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


CPU: dict[str, list[float]] = {}  # CPU seconds of each run, by kind


def floor(corpus: Path, out: Path) -> float:
    con = duckdb.connect()
    t, c = time.perf_counter(), cpu_s()
    con.execute(
        f"COPY (SELECT * FROM read_parquet('{corpus}')) TO '{out}' (FORMAT parquet)"
    ).fetchall()
    elapsed = time.perf_counter() - t
    CPU.setdefault(f"floor {corpus.name}", []).append(cpu_s() - c)
    con.close()
    out.unlink()
    return elapsed


def python_loop(url: str, corpus: Path, out: Path) -> float:
    """The plain way: a dict of allowed authors, a Python loop over each batch's rows."""
    with open_ledger(url) as led:
        t = time.perf_counter()
        dec = askfirst.decide_many(led, PURPOSE)
        allowed = dict(
            zip(dec.column("subject").to_pylist(), dec.column("allowed").to_pylist(), strict=True)
        )
    categories = set(load_policy().purpose(PURPOSE).categories)
    schema = pa.schema(
        [
            ("record_id", pa.string()),
            ("category", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("text", pa.string()),
        ]
    )
    writer = pq.ParquetWriter(out, schema)
    for batch in pq.ParquetFile(corpus).iter_batches(batch_size=262_144):
        cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        keep: dict[str, list[Any]] = {name: [] for name in schema.names}
        for k in range(batch.num_rows):
            if allowed.get(cols["author_id"][k]) and cols["category"][k] in categories:
                for name in schema.names:
                    keep[name].append(cols[name][k])
        writer.write_table(pa.table(keep, schema=schema))
    writer.close()
    elapsed = time.perf_counter() - t
    out.unlink()
    return elapsed


def gate(url: str, corpus: Path, out: Path) -> tuple[float, float, dict[str, Any]]:
    """Wall time of a whole build, and of reading the decisions alone."""
    import shutil

    with open_ledger(url) as led:
        t = time.perf_counter()
        consent_mod.gather(led, PURPOSE)
        decisions_s = time.perf_counter() - t
        t, c = time.perf_counter(), cpu_s()
        manifest = askfirst.build_snapshot(led, PURPOSE, corpus, out)
        elapsed = time.perf_counter() - t
        CPU.setdefault(f"gate {corpus.name}", []).append(cpu_s() - c)
    shutil.rmtree(out)
    return elapsed, decisions_s, manifest.to_json()


def rss_child(url: str, corpus: Path, out: Path) -> float:
    """Peak RSS (GiB) of a build in a fresh process."""
    code = (
        "import sys, shutil, askfirst\n"
        "from askfirst import open_ledger\n"
        f"with open_ledger({url!r}) as led:\n"
        f"    askfirst.build_snapshot(led, {PURPOSE!r}, {str(corpus)!r}, {str(out)!r})\n"
        f"shutil.rmtree({str(out)!r})\n"
        # VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts from its parent's peak.
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024 / 1024  # kB -> GiB


PG_SERVER = os.environ.get("ASKFIRST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def lineage_figures(kind: str, snapshots: int, subjects: int) -> dict[str, float]:
    """Record ``snapshots`` snapshots of ``subjects`` subjects, then look subjects up."""
    import uuid

    import sqlalchemy as sa

    path = OUT / "gate-lineage.db"
    for p in OUT.glob("gate-lineage.db*"):
        p.unlink()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_SERVER.replace("postgresql://", "postgresql+psycopg://"))
    if kind == "postgres":
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url = f"{PG_SERVER}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{path}"
    rows = pa.table(
        {
            "subject_id": pa.array([sid(i) for i in range(subjects)]),
            "author_records": pa.array([10] * subjects, pa.int64()),
            "mention_records": pa.array([0] * subjects, pa.int64()),
        }
    )
    rates = []
    with open_ledger(url, load_policy(), create=True) as led:
        for k in range(snapshots):
            m = SnapshotManifest(
                snapshot_id=f"{k:064x}",
                purpose=PURPOSE,
                purpose_version=1,
                as_of=times.iso(T0),
                policy_hash="0" * 64,
                ledger_head=LedgerHeadRef(seq=0, hash="0" * 64),
                engine="duckdb",
                on_mention="redact",
                corpus="bench",
                input_records=0,
                output_records=0,
                excluded={},
                redacted_mentions=0,
                subjects_as_author=subjects,
                subjects_as_mention=0,
                files=[],
                started_at=times.iso(T0),
                finished_at=times.iso(T0),
            )
            t = time.perf_counter()
            record(led, m, f"/bench/{k}", rows)
            rates.append(subjects / (time.perf_counter() - t))
            if k % 10 == 9:
                log(f"lineage ({kind}): {k + 1} snapshots, last {rates[-1]:,.0f} subjects/s")
        probes = []
        for i in range(0, subjects, max(1, subjects // 200)):
            t = time.perf_counter()
            found = snapshots_of(led, sid(i))
            probes.append((time.perf_counter() - t) * 1000)
            assert len(found) == snapshots
    for p in OUT.glob("gate-lineage.db*"):
        p.unlink()
    if kind == "postgres":
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()
    return {
        "snapshots": snapshots,
        "subjects": subjects,
        "record_first_subjects_per_s": rates[0],
        "record_median_subjects_per_s": statistics.median(rates),
        "record_last_subjects_per_s": rates[-1],
        "lookup_median_ms": statistics.median(probes),
        "lookup_max_ms": max(probes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000_000)
    ap.add_argument("--authors", type=int, default=2_000_000)
    ap.add_argument("--snapshots", type=int, default=100, help="for the lineage look-up")
    ap.add_argument("--pg-snapshots", type=int, default=10, help="the same on PostgreSQL")
    ap.add_argument("--only-lineage", action="store_true")
    ap.add_argument("--skip-loop", action="store_true", help="skip the Python loop baseline")
    ap.add_argument("--skip-lineage", action="store_true")
    ap.add_argument("--skip-rss", action="store_true", help="skip the peak-memory runs")
    ap.add_argument("--quick", action="store_true", help="200k records, 20k authors")
    ap.add_argument("--repeat", type=int, default=2, help="runs of floor and gate, best kept")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.records, args.authors, args.snapshots, args.pg_snapshots = 200_000, 20_000, 10, 3
    OUT.mkdir(exist_ok=True)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "records": args.records,
        "authors": args.authors,
    }
    if args.only_lineage:
        result["lineage_sqlite"] = lineage_figures("sqlite", args.snapshots, args.authors)
        result["lineage_postgres"] = lineage_figures("postgres", args.pg_snapshots, args.authors)
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return
    url = make_ledger(args.authors)
    plain = make_corpus(args.records, args.authors, 0.0)
    mentioned = make_corpus(args.records, args.authors, 0.05)
    scratch = OUT / "scratch"
    scratch.mkdir(exist_ok=True)

    for kind, corpus in (("plain", plain), ("mentions", mentioned)):
        # Floor and gate take turns, and each keeps its best run: this machine is
        # shared, and a neighbour's load lands on one run or another, not on both kinds.
        floors, gates, reads = [], [], []
        for k in range(args.repeat):
            log(f"I/O floor, corpus {kind} ({k + 1}/{args.repeat})")
            floors.append(floor(corpus, scratch / "floor.parquet"))
            log(f"  {floors[-1]:.1f} s")
            log(f"gate, corpus {kind} ({k + 1}/{args.repeat})")
            g, d, man = gate(url, corpus, scratch / f"snap-{kind}")
            gates.append(g)
            reads.append(d)
            log(f"  {g:.1f} s (decisions and directory alone {d:.1f} s)")
        suffix = "" if kind == "plain" else "_mentions"
        result[f"floor{suffix}_runs_s"], result[f"gate_{kind}_runs_s"] = floors, gates
        result[f"floor{suffix}_s"], result[f"gate_{kind}_s"] = min(floors), min(gates)
        result[f"manifest_{kind}"] = man
        if kind == "plain":
            result["decisions_s"] = min(reads)
        log(f"  best: {min(gates) / min(floors):.2f}x floor")
        cpu_floor, cpu_gate = CPU[f"floor {corpus.name}"], CPU[f"gate {corpus.name}"]
        result[f"cpu_floor_{kind}_s"], result[f"cpu_gate_{kind}_s"] = cpu_floor, cpu_gate
        log(f"  CPU seconds: floor {min(cpu_floor):.1f}, gate {min(cpu_gate):.1f}")
    if not args.skip_loop:
        log("Python loop")
        result["python_loop_s"] = python_loop(url, plain, scratch / "loop.parquet")
        log(f"  {result['python_loop_s']:.1f} s")
    if not args.skip_rss:
        log("peak RSS")
        half = make_corpus(args.records // 2, args.authors, 0.05)
        result["rss_half_gib"] = rss_child(url, half, scratch / "snap-rss")
        result["rss_full_gib"] = rss_child(url, mentioned, scratch / "snap-rss")
        log(f"  {result['rss_half_gib']:.2f} GiB at half, {result['rss_full_gib']:.2f} GiB at full")
    if not args.skip_lineage:
        log("lineage")
        result["lineage_sqlite"] = lineage_figures("sqlite", args.snapshots, args.authors)
        result["lineage_postgres"] = lineage_figures("postgres", args.pg_snapshots, args.authors)
    result["ratios"] = {
        "gate_plain_vs_floor": result["gate_plain_s"] / result["floor_s"],
        "gate_plain_corpus_pass_vs_floor": (result["gate_plain_s"] - result["decisions_s"])
        / result["floor_s"],
        "gate_mentions_vs_floor": result["gate_mentions_s"] / result["floor_mentions_s"],
        "python_loop_vs_gate": (result.get("python_loop_s") or 0) / result["gate_plain_s"],
        "cpu_gate_plain_vs_floor": min(result["cpu_gate_plain_s"])
        / min(result["cpu_floor_plain_s"]),
        "cpu_gate_mentions_vs_floor": min(result["cpu_gate_mentions_s"])
        / min(result["cpu_floor_mentions_s"]),
    }
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("manifest")}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
