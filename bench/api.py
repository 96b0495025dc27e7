"""Benchmark of the HTTP API (issue 3): one decision against a trivial endpoint, and batch.

Generates its own data (a SQLite ledger in a temp folder: registered subjects, choices,
GPC signals and delivered notices, and an API token with ``decisions:read``), serves
``create_app`` with uvicorn in a subprocess on a free 127.0.0.1 port, the way
``askfirst serve`` does (uvicorn's defaults, log level warning, no server header), and
measures, in the same run with the same load generator:

1. ``GET /v1/health`` (the trivial JSON endpoint) and
   ``GET /v1/decisions/{subject}?purpose=genai-training`` for random subjects with a
   bearer token: requests/s and p50/p99 latency, and the ratio decision/trivial
   (issue 3's target: >= 0.8). The two loads alternate in rounds, so that a change in
   the background load of this shared machine hits both alike;
2. ``POST /v1/decisions/batch`` with 10,000 random subjects a request, repeated:
   decisions/s (target: >= 200,000/s) and the p50 latency of a request.

Both are run with 1 uvicorn worker and with 2. The load generator is ``wrk`` (Debian's
package) with a Lua script when it is installed, else an asyncio httpx client. Beside
each rate, the CPU time the server processes used per request (from /proc) is shown:
on a shared machine it moves far less than requests/s, so the ratio is given both ways.

    python bench/api.py                      # full run (100k subjects, 15 s a measurement)
    python bench/api.py --quick              # smoke run, ~1 s per load, ~15 s in all
    python bench/api.py --duration 30 --workers 1
    python bench/api.py --data /tmp/api-data # keep the ledger and reuse it on the next run
    python bench/api.py --json bench/out/api.json --profile bench/out/api-profile

``--profile DIR`` then samples the server (first worker count only) with py-spy
(``pip install py-spy``) under each load, prints the functions that hold most of its
time and keeps the raw stacks in DIR. The uvicorn child imports askfirst as this process
does, so ``PYTHONPATH=/some/copy python bench/api.py`` measures a patched copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

import askfirst
from askfirst import NewEvent, SubjectIn, decide, decide_many, open_ledger, times

PURPOSE = "genai-training"
BATCH_SIZE = 10_000
TARGET_RATIO = 0.8
TARGET_BATCH = 200_000.0
JURISDICTIONS = ["DE", "FR", "US", "US-CA", "US-TX", "IN", "GB", "BR", "CA", "CH", None]
BENCH_DIR = Path(__file__).resolve().parent

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


@dataclass(frozen=True)
class Sizes:
    subjects: int
    register_chunk: int
    duration: int  # seconds of load per measurement (split in rounds)
    rounds: int
    warmup: int
    workers: tuple[int, ...]


FULL = Sizes(100_000, 10_000, 15, 3, 2, (1, 2))
QUICK = Sizes(5_000, 5_000, 1, 1, 1, (1,))  # a smoke run: figures too short to quote


# ---- the app, as the uvicorn child imports it ------------------------------------------


def app_factory() -> Any:
    """The app under test, built in each uvicorn worker (``--factory``)."""
    from askfirst.web.app import WebSettings, create_app

    settings = WebSettings(
        os.environ["ASKFIRST_BENCH_DB"],
        Path(os.environ["ASKFIRST_BENCH_KEYS"]),
        secure_cookies=False,
    )
    return create_app(settings)


# ---- the machine --------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    versions = {}
    for mod in ("uvicorn", "fastapi", "starlette", "pydantic"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # only for the report
            versions[mod] = "?"
    extras = [m for m in ("uvloop", "httptools") if _importable(m)]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "server": (
            f"uvicorn {versions['uvicorn']} ({', '.join(extras) or 'asyncio + h11'}), "
            f"fastapi {versions['fastapi']}, starlette {versions['starlette']}, "
            f"pydantic {versions['pydantic']}"
        ),
        "askfirst": f"{Path(askfirst.__file__).parent} ({_commit()})",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _commit() -> str:
    """The git commit of the askfirst being measured, and whether its files differ from it."""
    src = Path(askfirst.__file__).parent
    git = ["git", "-C", str(src)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "not a git checkout"
    dirty = subprocess.run([*git, "status", "--porcelain", "."], capture_output=True, text=True)
    return head.stdout.strip() + (" + local changes" if dirty.stdout.strip() else "")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


# ---- data ---------------------------------------------------------------------------------


def sid(i: int) -> str:
    return f"s{i:06d}"


def subject(i: int) -> SubjectIn:
    """Subject ``i``: a mix of jurisdictions, ages (10% give a birth date) and statuses."""
    birth = date(1996 + i % 18, 1 + i % 12, 1 + i % 28) if i % 10 == 0 else None
    status = {97: "deceased", 98: "closed"}.get(i % 100, "active")
    return SubjectIn(
        id=sid(i),
        kind="organization" if i % 50 == 1 else "member",
        jurisdiction=JURISDICTIONS[i % len(JURISDICTIONS)],
        handle=f"h{i}",
        names=[f"Member {i}"],
        birth_date=birth,
        status=status,
    )


@dataclass
class Data:
    folder: Path
    url: str
    key_dir: Path
    token: str
    subjects: list[str]
    subjects_file: Path
    events: int = 0
    build_seconds: float = 0.0


def build_data(folder: Path, sizes: Sizes) -> Data:
    """A ledger with ``sizes.subjects`` subjects, about 40% of them with a choice.

    A folder that already holds one for the same size (``--data``) is reused as it is.
    """
    t0 = time.perf_counter()
    url = f"sqlite:///{folder / 'ledger.db'}"
    saved = folder / "data.json"
    if saved.exists():
        kept = json.loads(saved.read_text())
        if kept["subjects"] == sizes.subjects:
            subjects = [sid(i) for i in range(sizes.subjects)]
            return Data(
                folder, url, folder / "keys", kept["token"], subjects,
                folder / "subjects.txt", kept["events"],
            )  # fmt: skip
        raise SystemExit(f"{folder} holds a ledger of {kept['subjects']:,} subjects; use another")
    rng = random.Random(3)
    n = sizes.subjects
    with open_ledger(url, create=True) as ledger:
        since = times.now() - timedelta(days=400)
        from askfirst import notices

        notices.publish(
            ledger, ledger.policy, PURPOSE, changes="First version.", actor="system",
            at=times.to_micros(since),
        )  # fmt: skip
        for k in range(0, n, sizes.register_chunk):
            chunk = [subject(i) for i in range(k, min(n, k + sizes.register_chunk))]
            ledger.register(chunk, since=since)
        extra: list[NewEvent] = []
        for i in range(n):
            r = rng.random()
            s = sid(i)
            if r < 0.10:
                extra.append(NewEvent("notice-delivered", s, "system", "bench", PURPOSE, None, 1))
            if i % 100 in (97, 98):
                continue  # closed or deceased: no grant can be recorded
            if r < 0.40:
                action = "grant" if r < 0.25 else "withdraw" if r < 0.35 else "object"
                extra.append(NewEvent("choice", s, s, "bench", PURPOSE, action, 1))
            if rng.random() < 0.02:
                extra.append(NewEvent("gpc", s, "system", "bench", None, "1"))
        for k in range(0, len(extra), 20_000):
            ledger.append_many(extra[k : k + 20_000])
        from askfirst.accounts import create_token

        _, secret = create_token(ledger, "bench", ["decisions:read"])
        events = ledger.head().seq
    subjects = [sid(i) for i in range(n)]
    subjects_file = folder / "subjects.txt"
    subjects_file.write_text("\n".join(subjects) + "\n")
    data = Data(folder, url, folder / "keys", secret, subjects, subjects_file, events)
    data.build_seconds = time.perf_counter() - t0
    saved.write_text(json.dumps({"subjects": n, "token": secret, "events": events}))
    return data


# ---- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """uvicorn serving the app in a subprocess (its own process group), on loopback."""

    def __init__(self, data: Data, workers: int) -> None:
        self.data, self.workers = data, workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        env = dict(
            os.environ,
            ASKFIRST_BENCH_DB=self.data.url,
            ASKFIRST_BENCH_KEYS=str(self.data.key_dir),
        )
        cmd = [
            sys.executable, "-m", "uvicorn", "api:app_factory", "--factory",
            "--app-dir", str(BENCH_DIR), "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), "--log-level", "warning", "--no-server-header",
        ]  # fmt: skip
        self.log = (self.data.folder / f"uvicorn-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.tail()}")
            try:
                if httpx.get(self.base + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"uvicorn did not answer within 60 s: {self.tail()}")
        if self.workers > 1:
            time.sleep(2)  # let every worker finish starting
        return self

    def tail(self) -> str:
        self.log.flush()
        return (self.data.folder / f"uvicorn-{self.port}.log").read_text()[-2000:]

    def pids(self) -> list[int]:
        """The processes that answer requests (the workers, or the one process)."""
        assert self.proc is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        children = [int(p) for p in out]
        return children if self.workers > 1 and children else [self.proc.pid]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far."""
        assert self.proc is not None
        total = 0
        for pid in {self.proc.pid, *self.pids()}:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this class started
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# ---- load: wrk with a Lua script, or httpx ----------------------------------------------

WRK_SCRIPT = r"""
-- One request function for both endpoints, so both loads cost the client the same.
local kind = os.getenv("BENCH_KIND")
local ids = {}
for line in io.lines(os.getenv("BENCH_SUBJECTS")) do ids[#ids + 1] = line end
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

init = function(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

request = function()
  local subject = ids[math.random(#ids)]
  if kind == "health" then
    return wrk.format("GET", "/v1/health")
  end
  return wrk.format("GET", "/v1/decisions/" .. subject .. "?purpose=genai-training")
end

done = function(summary, latency, requests)
  local out = io.open(os.getenv("BENCH_OUT"), "w")
  local e = summary.errors
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "histogram": [',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  for i = 1, #latency do
    local value, count = latency(i)
    if i > 1 then out:write(", ") end
    out:write(string.format("[%d, %d]", value, count))
  end
  out:write("]}\n")
  out:close()
end
"""


@dataclass
class Load:
    """The outcome of one load (or several rounds of it, merged)."""

    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    latencies_us: Counter[int] = field(default_factory=Counter)
    server_cpu_s: float = 0.0

    def merge(self, other: Load) -> None:
        self.requests += other.requests
        self.seconds += other.seconds
        self.errors += other.errors
        self.latencies_us.update(other.latencies_us)
        self.server_cpu_s += other.server_cpu_s

    @property
    def cpu_ms(self) -> float:
        """Server CPU time per request, in milliseconds."""
        return self.server_cpu_s / self.requests * 1000 if self.requests else float("nan")

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency at percentile ``p`` (0-100), in milliseconds."""
        total = sum(self.latencies_us.values())
        if not total:
            return float("nan")
        rank, seen = p / 100 * total, 0
        for value in sorted(self.latencies_us):
            seen += self.latencies_us[value]
            if seen >= rank:
                return value / 1000
        return max(self.latencies_us) / 1000


class Generator:
    name: str

    def run(self, server: Server, kind: str, seconds: int) -> Load:
        raise NotImplementedError


class Wrk(Generator):
    def __init__(self, data: Data, connections: int, threads: int) -> None:
        self.data, self.connections, self.threads = data, connections, threads
        self.script = data.folder / "bench.lua"
        self.script.write_text(WRK_SCRIPT)
        self.name = f"wrk, {threads} thread(s), {connections} connections, Lua script"

    def run(self, server: Server, kind: str, seconds: int) -> Load:
        out = self.data.folder / f"wrk-{kind}.json"
        env = dict(
            os.environ,
            BENCH_KIND=kind,
            BENCH_SUBJECTS=str(self.data.subjects_file),
            BENCH_TOKEN=self.data.token,
            BENCH_OUT=str(out),
        )
        cmd = [
            "wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{max(1, seconds)}s",
            "--timeout", "10s", "-s", str(self.script), server.base,
        ]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
        r = json.loads(out.read_text())
        out.unlink()
        errors = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
        return Load(r["requests"], r["duration_us"] / 1e6, errors, Counter(dict(r["histogram"])))


class HttpxLoad(Generator):
    """Fallback when wrk is not installed: ``connections`` asyncio tasks in one process."""

    def __init__(self, data: Data, connections: int) -> None:
        self.data, self.connections = data, connections
        self.name = f"httpx (asyncio), {connections} connections"

    def run(self, server: Server, kind: str, seconds: int) -> Load:
        return asyncio.run(self._run(server, kind, seconds))

    async def _run(self, server: Server, kind: str, seconds: int) -> Load:
        load = Load()
        ids = self.data.subjects
        headers = {"Authorization": f"Bearer {self.data.token}"}
        limits = httpx.Limits(max_connections=self.connections)
        async with httpx.AsyncClient(
            base_url=server.base, headers=headers, limits=limits, timeout=10
        ) as client:
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                while time.perf_counter() < deadline:
                    path = (
                        "/v1/health"
                        if kind == "health"
                        else f"/v1/decisions/{random.choice(ids)}?purpose={PURPOSE}"
                    )
                    t = time.perf_counter()
                    try:
                        r = await client.get(path)
                        ok = r.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    load.latencies_us[int((time.perf_counter() - t) * 1e6)] += 1
                    load.requests += 1
                    load.errors += not ok

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(self.connections)))
            load.seconds = time.perf_counter() - t0
        return load


def pair(gen: Generator, server: Server, sizes: Sizes) -> dict[str, Load]:
    """Trivial and decision loads, alternating in rounds after a warm-up of each."""
    for kind in ("health", "decision"):
        gen.run(server, kind, sizes.warmup)
    loads = {"health": Load(), "decision": Load()}
    per_round = max(1, round(sizes.duration / sizes.rounds))
    for k in range(sizes.rounds):
        order = ("health", "decision") if k % 2 == 0 else ("decision", "health")
        for kind in order:
            cpu = server.cpu_seconds()
            one = gen.run(server, kind, per_round)
            one.server_cpu_s = server.cpu_seconds() - cpu
            console.log(
                f"  round {k + 1} {kind}: {one.rate:,.0f} req/s, "
                f"p50 {one.percentile(50):.1f} ms, server CPU {one.cpu_ms:.2f} ms/request, "
                f"errors {one.errors}"
            )
            loads[kind].merge(one)
    return loads


# ---- batch ------------------------------------------------------------------------------------


@dataclass
class BatchLoad:
    requests: int
    decisions: int
    seconds: float
    latencies_s: list[float]
    errors: int
    server_cpu_s: float = 0.0

    @property
    def cpu_ms(self) -> float:
        """Server CPU time per request, in milliseconds."""
        return self.server_cpu_s / self.requests * 1000 if self.requests else float("nan")

    @property
    def rate(self) -> float:
        return self.decisions / self.seconds if self.seconds else 0.0

    def p50_ms(self) -> float:
        return statistics.median(self.latencies_s) * 1000 if self.latencies_s else float("nan")


def batch_bodies(data: Data, count: int) -> list[bytes]:
    rng = random.Random(5)
    size = min(BATCH_SIZE, len(data.subjects))
    return [
        json.dumps({"purpose": PURPOSE, "subjects": rng.sample(data.subjects, size)}).encode()
        for _ in range(count)
    ]


def batch_load(
    server: Server, data: Data, bodies: list[bytes], seconds: float, concurrency: int
) -> BatchLoad:
    """POST the bodies round-robin from ``concurrency`` threads for ``seconds``."""
    headers = {"Authorization": f"Bearer {data.token}", "Content-Type": "application/json"}
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"requests": 0, "decisions": 0, "errors": 0}
    deadline = time.perf_counter() + seconds

    def worker(w: int) -> None:
        with httpx.Client(base_url=server.base, headers=headers, timeout=120) as client:
            k = w
            while time.perf_counter() < deadline:
                body = bodies[k % len(bodies)]
                k += concurrency
                t = time.perf_counter()
                r = client.post("/v1/decisions/batch", content=body)
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    counts["requests"] += 1
                    if r.status_code == 200:
                        # Counting the body's rows (not parsing it) keeps the client light.
                        counts["decisions"] += r.content.count(b'"subject":')
                    else:
                        counts["errors"] += 1

    t0, cpu = time.perf_counter(), server.cpu_seconds()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return BatchLoad(
        counts["requests"],
        counts["decisions"],
        time.perf_counter() - t0,
        latencies,
        counts["errors"],
        server.cpu_seconds() - cpu,
    )


# ---- checks: the server gives the library's answers ------------------------------------


def check_answers(server: Server, data: Data, body: bytes) -> None:
    """A few single decisions and one batch, compared with the library in this process."""
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {data.token}"}
    with open_ledger(data.url) as ledger, httpx.Client(base_url=server.base, timeout=120) as c:
        for s in rng.sample(data.subjects, min(20, len(data.subjects))):
            r = c.get(f"/v1/decisions/{s}", params={"purpose": PURPOSE}, headers=headers)
            r.raise_for_status()
            got, want = r.json(), decide(ledger, s, PURPOSE)
            assert (got["allowed"], got["reason"], got["event_seq"]) == (
                want.allowed,
                str(want.reason),
                want.event_seq,
            ), (s, got, want)
        r = c.post(
            "/v1/decisions/batch",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        r.raise_for_status()
        got_rows = r.json()["decisions"]
        subjects = json.loads(body)["subjects"]
        want_rows = decide_many(ledger, PURPOSE, subjects).to_pylist()
        assert got_rows == want_rows, "batch answers differ from decide_many"
        reasons = Counter(row["reason"] for row in got_rows)
    console.log(f"answers check out; reasons in a batch: {dict(reasons.most_common())}")


# ---- profiling (optional) -----------------------------------------------------------------


def profile(
    server: Server, run_load: Any, out: Path, name: str, seconds: int, *, gil: bool
) -> list[Any]:
    """Sample the server with py-spy while ``run_load()`` runs; the top frames by share.

    With ``gil``, only the thread holding the GIL is sampled: where the Python CPU time
    goes. Without, every busy thread is, including time inside C calls that release the
    GIL (SQLite's own work) and the wait to take the GIL back afterwards.
    """
    if shutil.which("py-spy") is None:
        console.log("py-spy is not installed (pip install py-spy); no profile")
        return []
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"{name}.txt"
    spies = []
    for k, pid in enumerate(server.pids()):
        cmd = [
            "py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
            "--duration", str(seconds + 1), "--nonblocking", "-o", f"{raw}.{k}",
            *(["--gil"] if gil else []),
        ]  # fmt: skip
        spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    time.sleep(1)
    run_load()
    for spy in spies:
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0:
            console.log(f"py-spy failed: {err.decode()[-500:]}")
    lines = []
    for part in sorted(out.glob(f"{name}.txt.*")):
        lines.extend(part.read_text().splitlines())
        part.unlink()
    raw.write_text("\n".join(lines) + "\n")
    return top_frames(lines)


IDLE = ("Condition.wait", "EpollSelector.select", "Queue.get", "select (", "poll (")
GENERIC = re.compile(
    r"runpy|click/|uvicorn/(main|server|_compat|__main__)|asyncio/(runners|base_events|events)"
    r"|threading.py|WorkerThread.run|TaskHandle._run_coro"
)


def top_frames(lines: list[str], limit: int = 25) -> list[tuple[str, float, float]]:
    """(frame, inclusive share, self share) of the busy samples, largest inclusive first.

    Samples of idle threads (waiting for work or for the network) are left out, and so
    are the frames every busy sample shares (the interpreter, uvicorn's loop, the pool).
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [re.sub(r"\(/.*?/(site-packages|python3\.\d+)/", "(", f) for f in frames]
        if frames[-1].startswith(IDLE):
            continue
        n = int(count)
        total += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    if not total:
        return []
    ranked = [(f, c) for f, c in inclusive.most_common() if not GENERIC.search(f)]
    return [(f, c / total, own[f] / total) for f, c in ranked[:limit]]


def show_profile(title: str, frames: list[tuple[str, float, float]]) -> None:
    if not frames:
        return
    table = Table(title=title, title_justify="left")
    table.add_column("frame (function (file))", overflow="fold")
    table.add_column("inclusive", justify="right")
    table.add_column("self", justify="right")
    for f, inc, own in frames:
        table.add_row(f, f"{inc:.0%}", f"{own:.0%}")
    console.print(table)


# ---- the run ------------------------------------------------------------------------------


@dataclass
class Row:
    workers: int
    name: str
    value: float
    unit: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    target: float | None = None
    note: str = ""
    cpu_ms: float | None = None  # server CPU time per request

    @property
    def vs_target(self) -> float | None:
        return self.value / self.target if self.target else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="small data, a few seconds of load")
    ap.add_argument("--duration", type=int, help="seconds of load per measurement")
    ap.add_argument("--subjects", type=int, help="registered subjects (default 100,000)")
    ap.add_argument("--workers", help="uvicorn worker counts to try, e.g. '1,2'")
    ap.add_argument("--connections", type=int, default=16, help="concurrent connections")
    ap.add_argument("--httpx", action="store_true", help="use the httpx client even with wrk")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--data", type=Path, help="keep the generated ledger in this folder and reuse it later"
    )
    ap.add_argument("--profile", type=Path, help="py-spy the server under load; stacks here")
    args = ap.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    if args.duration:
        sizes = replace(sizes, duration=args.duration)
    if args.subjects:
        sizes = replace(sizes, subjects=args.subjects)
    if args.workers:
        sizes = replace(sizes, workers=tuple(int(w) for w in args.workers.split(",")))
    info = machine()
    console.rule("askfirst API benchmark")
    for k, v in info.items():
        console.print(f"{k:>22}: {v}")

    rows: list[Row] = []
    profiles: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory(prefix="askfirst-bench-api-") as tmp:
        folder = Path(tmp)
        if args.data:
            folder = args.data
            folder.mkdir(parents=True, exist_ok=True)
        data = build_data(folder, sizes)
        console.log(
            f"ledger: {len(data.subjects):,} subjects, {data.events:,} events, "
            f"built in {data.build_seconds:.1f} s"
        )
        gen: Generator
        if shutil.which("wrk") and not args.httpx:
            gen = Wrk(data, args.connections, 1)
        else:
            gen = HttpxLoad(data, args.connections)
        info["load generator"] = gen.name
        console.log(f"load generator: {gen.name}")
        bodies = batch_bodies(data, 8)
        batch_seconds = sizes.duration
        for workers in sizes.workers:
            console.rule(f"{workers} uvicorn worker(s)")
            with Server(data, workers) as server:
                check_answers(server, data, bodies[0])
                loads = pair(gen, server, sizes)
                h, d = loads["health"], loads["decision"]
                for name, load in (("GET /v1/health (trivial)", h), ("GET /v1/decisions/{id}", d)):
                    rows.append(
                        Row(
                            workers,
                            name,
                            load.rate,
                            "req/s",
                            load.percentile(50),
                            load.percentile(99),
                            note=f"{load.requests:,} requests, {load.errors} errors",
                            cpu_ms=load.cpu_ms,
                        )
                    )
                rows.append(
                    Row(workers, "decision / trivial", d.rate / h.rate, "x", target=TARGET_RATIO)
                )
                rows.append(
                    Row(
                        workers,
                        "decision / trivial, by server CPU/request",
                        h.cpu_ms / d.cpu_ms,
                        "x",
                        target=TARGET_RATIO,
                        note="less sensitive to other load on the machine",
                    )
                )
                batch_load(server, data, bodies[:1], 0.5, 1)  # warm-up
                b = batch_load(server, data, bodies, batch_seconds, workers)
                rows.append(
                    Row(
                        workers,
                        f"POST /v1/decisions/batch ({len(json.loads(bodies[0])['subjects']):,}"
                        f"/request, {workers} client(s))",
                        b.rate,
                        "decisions/s",
                        b.p50_ms(),
                        target=TARGET_BATCH,
                        note=f"{b.requests} requests, {b.errors} errors",
                        cpu_ms=b.cpu_ms,
                    )
                )
                console.log(
                    f"  batch: {b.rate:,.0f} decisions/s, p50 {b.p50_ms():.0f} ms, "
                    f"server CPU {b.cpu_ms:.0f} ms/request "
                    f"({BATCH_SIZE / b.cpu_ms * 1000:,.0f} decisions per CPU-second)"
                )
                if args.profile and workers == sizes.workers[0]:
                    secs = max(3, sizes.duration // 2)
                    profiles[f"decision-{workers}w"] = profile(
                        server,
                        lambda: gen.run(server, "decision", secs),  # noqa: B023
                        args.profile,
                        f"decision-{workers}w",
                        secs,
                        gil=True,
                    )
                    profiles[f"batch-{workers}w"] = profile(
                        server,
                        lambda: batch_load(server, data, bodies, secs, workers),  # noqa: B023
                        args.profile,
                        f"batch-{workers}w",
                        secs,
                        gil=False,
                    )
    info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    table = Table(
        title=f"askfirst API: {info['date']}, {info['nproc']} CPUs ({info['cpu']}), "
        f"{info['memory']}; {len(data.subjects):,} subjects on SQLite; {gen.name}",
        title_justify="left",
    )
    cols = ("workers", "measurement", "value", "p50", "p99", "server CPU/req", "target")
    for col in (*cols, "vs target", "note"):
        table.add_column(col, justify="left" if col in ("measurement", "note") else "right")
    for r in rows:
        value = f"{r.value:.2f} {r.unit}" if r.unit == "x" else f"{r.value:,.0f} {r.unit}"
        target = ""
        if r.target is not None:
            target = f"{r.target:g} x" if r.unit == "x" else f"{r.target:,.0f} {r.unit}"
        vs = f"{r.vs_target:.2f}" if r.vs_target is not None else ""
        if r.vs_target is not None:
            vs = f"[green]{vs}[/]" if r.vs_target >= 1 else f"[red]{vs}[/]"
        table.add_row(
            str(r.workers),
            r.name,
            value,
            f"{r.p50_ms:.1f} ms" if r.p50_ms is not None else "",
            f"{r.p99_ms:.1f} ms" if r.p99_ms is not None else "",
            f"{r.cpu_ms:.2f} ms" if r.cpu_ms is not None else "",
            target,
            vs,
            r.note,
        )
    console.print(table)
    for name, frames in profiles.items():
        how = "Python CPU (--gil)" if name.startswith("decision") else "busy threads"
        show_profile(f"py-spy, {name}, {how}: where the server's time goes", frames)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": info,
            "sizes": asdict(sizes),
            "figures": [{**asdict(r), "vs_target": r.vs_target} for r in rows],
            "profiles": profiles,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
