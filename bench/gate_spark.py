"""Benchmark of the gate on PySpark (issue 6): the same build on local[2] and on DuckDB.

Uses bench/gate.py's generated ledger and corpus (cached in bench/out/): RECORDS Parquet
records of ~200-byte texts from AUTHORS members, 5% with mentions. In the same run, each
build in a fresh process so that its memory is its own:

1. the DuckDB engine (``askfirst.build_snapshot``), wall time and peak RSS;
2. the Spark engine on local[2], wall time (with and without starting the session) and
   peak memory of the whole process tree: the driver's Python, the JVM and its Python
   workers, sampled every 0.2 s;

and checks that both give the same snapshot id. The figure of interest is the ratio of
the two wall times, with both peaks beside it.

    python bench/gate_spark.py                     # 20M records, 2M authors
    python bench/gate_spark.py --records 2000000   # smaller
    python bench/gate_spark.py --quick             # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import gate as gate_bench  # bench/gate.py: the cached ledger and corpora

OUT = gate_bench.OUT
PURPOSE = gate_bench.PURPOSE
AS_OF = "2026-06-01T00:00:00Z"

CHILD = """
import json, shutil, sys, time
from askfirst import open_ledger
from askfirst import Ledger, times
import askfirst
url, corpus, out, engine, purpose, as_of = sys.argv[1:7]
t0 = time.perf_counter()
kw = {}
if engine == "spark":
    from askfirst.gate.engine_spark import session
    kw["spark"] = session("local[2]")
started = time.perf_counter() - t0
with open_ledger(url) as led:
    t = time.perf_counter()
    m = askfirst.build_snapshot(led, purpose, corpus, out, engine=engine,
                                as_of=times.parse(as_of), **kw)
    build = time.perf_counter() - t
shutil.rmtree(out)
print(json.dumps({"build_s": build, "session_s": started, "snapshot_id": m.snapshot_id,
                  "output_records": m.output_records, "input_records": m.input_records}))
"""


def _tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run(engine: str, url: str, corpus: Path) -> dict[str, Any]:
    out = OUT / f"gate-spark-bench-{engine}"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(corpus), str(out), engine, PURPOSE, AS_OF],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    t = time.perf_counter()
    sampler.start()
    stdout, _ = proc.communicate()
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{engine} build failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result.update(engine=engine, wall_s=wall, peak_rss_gib=peak / 2**30)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000_000)
    ap.add_argument("--authors", type=int, default=2_000_000)
    ap.add_argument("--quick", action="store_true", help="200k records, 20k authors")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.records, args.authors = 200_000, 20_000
    url = gate_bench.make_ledger(args.authors)
    corpus = gate_bench.make_corpus(args.records, args.authors, 0.05)
    gate_bench.log(f"corpus {corpus.name}: {args.records:,} records, {args.authors:,} authors")
    duck = run("duckdb", url, corpus)
    gate_bench.log(f"duckdb: build {duck['build_s']:.1f} s, peak {duck['peak_rss_gib']:.2f} GiB")
    spark = run("spark", url, corpus)
    gate_bench.log(
        f"spark local[2]: build {spark['build_s']:.1f} s (+{spark['session_s']:.1f} s to start), "
        f"peak {spark['peak_rss_gib']:.2f} GiB"
    )
    same = duck["snapshot_id"] == spark["snapshot_id"]
    figures = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB",
        "records": args.records,
        "authors": args.authors,
        "duckdb": duck,
        "spark": spark,
        "spark_over_duckdb_build": spark["build_s"] / duck["build_s"],
        "spark_over_duckdb_with_start": (spark["build_s"] + spark["session_s"]) / duck["build_s"],
        "same_snapshot_id": same,
    }
    print(json.dumps(figures, indent=2))
    if not same:
        raise SystemExit("the two engines gave different snapshots")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
