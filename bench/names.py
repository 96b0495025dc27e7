"""Benchmark of finding erased subjects' names (issue 17): what forgotten names cost a build.

Generates its own data: a ledger of AUTHORS subjects (70% say yes to genai-training; 1%
are people without an account, whose names every build looks for already), and a
corpus of RECORDS Parquet records of ~30 words each, drawn from a vocabulary of common
English words, common first names and made-up words, so that the first bytes of a
forgotten name often start a word ("chri" in "christmas", "mari" in "market"); 1% of the
records hold a forgotten name in full.

In the same run, on the same corpus, it builds the snapshot with the DuckDB engine on
copies of one ledger that differ only in how many subjects were erased (whose names are
then kept as keyed digests and looked for in every record): none, and each of
--forgotten (default 1,000 and 10,000). Builds take turns, --repeat times, best kept;
it prints each build's wall and CPU time and its ratio to the build with none.

    python bench/names.py                     # 2M records, 200k authors
    python bench/names.py --quick             # smoke run

The ledgers are cached in bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

import askfirst
from askfirst import NewEvent, SubjectIn, directory, load_policy, open_ledger, times
from askfirst.ledger import store

OUT = Path(__file__).with_name("out")
PURPOSE = "genai-training"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FIRST = [
    "james",
    "mary",
    "john",
    "patricia",
    "robert",
    "jennifer",
    "michael",
    "linda",
    "william",
    "elizabeth",
    "david",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "christopher",
    "nancy",
    "daniel",
    "lisa",
    "matthew",
    "betty",
    "anthony",
    "margaret",
    "mark",
    "sandra",
    "donald",
    "ashley",
    "steven",
    "kimberly",
    "paul",
    "emily",
    "andrew",
    "donna",
    "joshua",
    "michelle",
    "kenneth",
    "carol",
    "kevin",
    "amanda",
    "brian",
    "melissa",
    "george",
    "deborah",
    "anna",
    "maria",
    "sofia",
    "lukas",
    "leon",
    "noah",
    "emma",
    "mia",
    "hannah",
    "lena",
    "marie",
    "lea",
    "ali",
    "fatima",
    "mohamed",
    "chen",
    "wei",
    "li",
    "jun",
    "hiroshi",
    "yuki",
    "ana",
    "jose",
    "carlos",
    "lucia",
    "juan",
    "pedro",
    "olga",
    "ivan",
    "dmitri",
]
COMMON = [
    "the",
    "be",
    "to",
    "of",
    "and",
    "a",
    "in",
    "that",
    "have",
    "it",
    "for",
    "not",
    "on",
    "with",
    "he",
    "as",
    "you",
    "do",
    "at",
    "this",
    "but",
    "his",
    "by",
    "from",
    "they",
    "we",
    "say",
    "her",
    "she",
    "or",
    "an",
    "will",
    "my",
    "one",
    "all",
    "would",
    "there",
    "their",
    "what",
    "so",
    "up",
    "out",
    "if",
    "about",
    "who",
    "get",
    "which",
    "go",
    "me",
    "when",
    "make",
    "can",
    "like",
    "time",
    "no",
    "just",
    "him",
    "know",
    "take",
    "people",
    "into",
    "year",
    "your",
    "good",
    "some",
    "could",
    "them",
    "see",
    "other",
    "than",
    "then",
    "now",
    "look",
    "only",
    "come",
    "its",
    "over",
    "think",
    "also",
    "back",
    "after",
    "use",
    "two",
    "how",
    "our",
    "work",
    "first",
    "well",
    "way",
    "even",
    "new",
    "want",
    "because",
    "any",
    "these",
    "give",
    "day",
    "most",
    "us",
    "market",
    "christmas",
    "marine",
    "primarily",
    "summary",
    "james's",
    "annual",
    "announce",
    "christian",
    "johnson",
    "davidson",
    "marketing",
    "paulo",
    "anniversary",
    "chemistry",
    "leonardo",
    "emmanuel",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sid(i: int) -> str:
    return f"m{i:08d}"


def cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def surname(i: int) -> str:
    rng = random.Random(i)
    return rng.choice("bcdfghklmnprstvwz").upper() + "".join(
        rng.choice("aeiou") + rng.choice("bcdfghklmnprstvwz") for _ in range(3)
    )


def person(i: int) -> str:
    return f"{FIRST[i % len(FIRST)].title()} {surname(i)}"


def make_ledger(authors: int, erased: int) -> str:
    """A ledger of ``authors`` members; the first ``erased`` of the extra people forgotten."""
    OUT.mkdir(exist_ok=True)
    base = OUT / f"names-ledger-{authors}-v2.db"
    if not base.exists():
        tmp = OUT / f"names-ledger-{authors}-v2.building.db"
        for p in OUT.glob(f"{tmp.name}*"):
            p.unlink()
        log(f"registering {authors:,} members (cached in {base})")
        with open_ledger(f"sqlite:///{tmp}", load_policy(), create=True) as led:
            chunk = 50_000
            for lo in range(0, authors, chunk):
                led.register(
                    [
                        SubjectIn(
                            id=sid(i),
                            kind="person" if i % 100 == 99 else "member",
                            jurisdiction="DE",
                            handle=f"h{i}",
                            names=[person(i)],
                        )
                        for i in range(lo, min(lo + chunk, authors))
                    ],
                    since=T0,
                )
            for lo in range(0, authors, chunk):
                led.append_many(
                    [
                        NewEvent(
                            type="choice", subject=sid(i), purpose=PURPOSE, value="grant",
                            notice_version=1, actor=sid(i), source="bench",
                            recorded_at=times.to_micros(T0 + timedelta(days=1)),
                        )
                        for i in range(lo, min(lo + chunk, authors))
                        if i % 10 < 7 and i % 100 != 99
                    ]
                )  # fmt: skip
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{tmp}{suffix}")
            if src.exists():
                src.rename(f"{base}{suffix}")
    if erased == 0:
        return f"sqlite:///{base}"
    path = OUT / f"names-ledger-{authors}-v2-erased-{erased}.db"
    if not path.exists():
        log(f"forgetting the names of {erased:,} members (cached in {path})")
        work = OUT / f"{path.name}.building"
        shutil.copy(base, work)
        with open_ledger(f"sqlite:///{work}") as led, store.write(led.engine) as conn:
            key = directory.names_key(OUT / "names-keys")
            for i in range(erased):
                directory.forget(conn, sid(i), key)
        work.rename(path)
    return f"sqlite:///{path}"


def make_corpus(records: int, authors: int) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"names-corpus-{records}-{authors}.parquet"
    if path.exists():
        return path
    log(f"writing corpus {path.name}")
    rng = random.Random(7)
    made = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
            for _ in range(20_000)]  # fmt: skip
    # Common words and first names often, made-up words rarely (a long tail).
    vocab = COMMON * 40 + FIRST * 4 + made
    named = [person(i) for i in range(200)]  # forgotten in every run with any erased
    con = duckdb.connect()
    con.execute("CREATE TABLE v AS SELECT unnest(?::VARCHAR[]) AS w", [vocab])
    con.execute("CREATE TABLE w AS SELECT list(w) AS words FROM v")
    con.execute("CREATE TABLE n AS SELECT ?::VARCHAR[] AS named", [named])
    con.execute(f"""
COPY (
  SELECT 'r' || i AS record_id, 'm' || lpad((hash(i) % {authors})::VARCHAR, 8, '0') AS author_id,
    'post' AS category,
    TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_microseconds((hash(i * 7) % 31536000000000)::BIGINT)
      AS created_at,
    array_to_string(list_transform(range(30),
      lambda x: words[1 + (hash(i * 37 + x) % len(words))::INT]), ' ')
      || CASE WHEN i % 100 = 0 THEN ' with ' || named[1 + (i // 100) % 200] || '.' ELSE '' END
      AS text,
    CAST([] AS VARCHAR[]) AS mentions
  FROM range({records}) t(i), w, n
) TO '{path}' (FORMAT parquet)""")
    con.close()
    return path


def build(url: str, corpus: Path, out: Path) -> tuple[float, float, dict[str, Any]]:
    with open_ledger(url) as led:
        t, c = time.perf_counter(), cpu_s()
        manifest = askfirst.build_snapshot(led, PURPOSE, corpus, out, key_dir=OUT / "names-keys")
        wall, cpu = time.perf_counter() - t, cpu_s() - c
    shutil.rmtree(out)
    return wall, cpu, manifest.to_json()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--authors", type=int, default=200_000)
    ap.add_argument("--forgotten", default="1000,10000", help="erased subjects, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="builds of each kind, best kept")
    ap.add_argument("--quick", action="store_true", help="100k records, 20k authors")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.records, args.authors, args.forgotten, args.repeat = 100_000, 20_000, "1000", 1
    counts = [0, *(int(n) for n in args.forgotten.split(","))]
    urls = {n: make_ledger(args.authors, n) for n in counts}
    corpus = make_corpus(args.records, args.authors)
    scratch = OUT / "names-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    runs: dict[int, list[tuple[float, float]]] = {n: [] for n in counts}
    manifests: dict[int, dict[str, Any]] = {}
    for k in range(args.repeat):
        for n in counts:  # the kinds take turns: a neighbour's load lands on one run or another
            wall, cpu, manifests[n] = build(urls[n], corpus, scratch / f"snap-{n}")
            runs[n].append((wall, cpu))
            log(f"run {k + 1}/{args.repeat}, {n:,} erased: {wall:.2f} s wall, {cpu:.2f} s CPU, "
                f"{manifests[n]['redacted_mentions']:,} mentions redacted")  # fmt: skip
    base_wall = min(w for w, _ in runs[0])
    base_cpu = min(c for _, c in runs[0])
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "records": args.records,
        "authors": args.authors,
        "builds": {
            str(n): {
                "wall_s": min(w for w, _ in runs[n]),
                "cpu_s": min(c for _, c in runs[n]),
                "wall_vs_none": min(w for w, _ in runs[n]) / base_wall,
                "cpu_vs_none": min(c for _, c in runs[n]) / base_cpu,
                "redacted_mentions": manifests[n]["redacted_mentions"],
                "output_records": manifests[n]["output_records"],
                "runs": runs[n],
            }
            for n in counts
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
