"""Benchmark of the command's start-up (issue 14): how long ``askfirst`` takes to answer.

Generates its own data (a small SQLite ledger in a temp folder: a few members and their
choices, made with ``askfirst init``, ``subjects import`` and ``events import``) and
measures, in the same run, each command as a fresh process, the way a user runs it:

- baseline: ``python -c "import typer, rich, sqlalchemy"`` (what any command line built
  on these three pays before it does anything);
- ``askfirst --help``;
- ``askfirst decide --subject S --purpose genai-training`` on the small ledger;
- ``python -c "import askfirst"``, for the library alone;
- where a decision's time goes: the baseline's imports plus, one step more each time,
  Typer's parameter coercion (Typer 0.29 loads pydantic to run any command), the command
  line (``askfirst.cli``), the ledger package, and decisions with reaching back.

The runs take turns (baseline, then each command, round after round), so that a change
in the background load of a shared machine hits them alike; the best of the rounds is
kept and shown as a ratio to the baseline (issue 14's target: 1.5 at most for --help and
decide), in wall time and in CPU time (user + system of the process, which the load of
other processes moves far less). Beside each, the heavy modules the process loaded.

    python bench/startup.py             # 15 rounds
    python bench/startup.py --quick     # 3 rounds, a smoke run
    python bench/startup.py --rounds 40 --json bench/out/startup.json

The commands run with this interpreter (``python -m askfirst.cli`` is not used: the
``askfirst`` script installed beside it is), so ``PYTHONPATH=/some/copy`` measures a
patched copy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("pyarrow", "duckdb", "numpy", "alembic", "pandas", "pyspark", "fastapi", "uvicorn")
BASELINE = "import typer, rich, sqlalchemy"
STEPS = {
    "  + typer's coercion (pydantic)": "typer._adapters",
    "  + askfirst.cli": "askfirst.cli",
    "  + askfirst.ledger": "askfirst.ledger",
    "  + askfirst.decisions, propagation": "askfirst.decisions, askfirst.propagation",
}
TARGET = 1.5


def _askfirst() -> list[str]:
    """The installed ``askfirst`` script, run by this interpreter."""
    script = Path(sys.executable).with_name("askfirst")
    if not script.exists():
        found = shutil.which("askfirst")
        if found is None:
            sys.exit("askfirst is not installed: pip install -e .")
        script = Path(found)
    return [sys.executable, str(script)]


def _make_ledger(folder: Path) -> str:
    db = f"sqlite:///{folder / 'ledger.db'}"
    subjects = folder / "subjects.jsonl"
    subjects.write_text(
        "".join(
            json.dumps({"id": f"m{i}", "kind": "member", "jurisdiction": j}) + "\n"
            for i, j in enumerate(["DE", "US-CA", "US", "FR", "GB"] * 4)
        )
    )
    events = folder / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {
                    "type": "choice",
                    "subject": f"m{i}",
                    "purpose": "genai-training",
                    "action": "grant" if i % 3 else "withdraw",
                    "recorded_at": "2026-03-01T12:00:00Z",
                    "actor": f"m{i}",
                }
            )
            + "\n"
            for i in range(0, 20, 2)
        )
    )
    cli = _askfirst()
    for args in (
        ["init", "--db", db],
        ["subjects", "import", str(subjects), "--since", "2026-01-01T00:00:00Z", "--db", db],
        ["events", "import", str(events), "--db", db],
    ):
        done = subprocess.run([*cli, *args], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"askfirst {' '.join(args)} failed: {done.stderr.strip()}")
    return db


def _heavy_loaded(code: str) -> list[str]:
    """The heavy modules a process running ``code`` has loaded when it ends."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    loaded = set(done.stdout.split()) if done.returncode == 0 else set()
    return [m for m in HEAVY if m in loaded]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``cmd``."""
    cpu, start = _children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True)
    elapsed, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {done.stderr.decode(errors='replace').strip()}")
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15, help="runs of each command")
    ap.add_argument("--quick", action="store_true", help="3 rounds: a smoke run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    rounds = 3 if args.quick else args.rounds

    with tempfile.TemporaryDirectory(prefix="askfirst-startup-") as tmp:
        db = _make_ledger(Path(tmp))
        cli = _askfirst()
        decide = ["decide", "--subject", "m2", "--purpose", "genai-training", "--db", db]
        commands = {
            "baseline: " + BASELINE: [sys.executable, "-c", BASELINE],
            "askfirst --help": [*cli, "--help"],
            "askfirst decide (SQLite)": [*cli, *decide],
            "import askfirst": [sys.executable, "-c", "import askfirst"],
        }
        step = BASELINE
        for name, modules in STEPS.items():
            step += f", {modules}"
            commands[name] = [sys.executable, "-c", step]
        in_process = {
            "askfirst --help": "import askfirst.cli",
            "askfirst decide (SQLite)": (
                "import sys\nfrom askfirst.cli import app\nsys.argv = ['askfirst', "
                + ", ".join(repr(a) for a in decide)
                + "]\ntry:\n    app()\nexcept SystemExit:\n    pass"
            ),
            "import askfirst": "import askfirst",
        }
        for cmd in commands.values():  # warm the file cache and the bytecode
            _time(cmd)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):
            for name, cmd in commands.items():
                wall, cpu = _time(cmd)
                walls[name].append(wall)
                cpus[name].append(cpu)
        heavy = {name: _heavy_loaded(code) for name, code in in_process.items()}

    baseline = next(iter(commands))
    base_wall, base_cpu = min(walls[baseline]), min(cpus[baseline])
    print(
        f"start-up, best of {rounds} (Python {platform.python_version()}, {os.cpu_count()} cores)"
    )
    print(f"{'':<42} {'wall s':>7} {'ratio':>6} {'CPU s':>7} {'ratio':>6}  heavy modules loaded")
    results = []
    for name in commands:
        wall, cpu = min(walls[name]), min(cpus[name])
        ratios = (wall / base_wall, cpu / base_cpu)
        mark = ""
        if name in ("askfirst --help", "askfirst decide (SQLite)"):
            mark = "  ok" if max(ratios) <= TARGET else f"  over {TARGET}"
        loaded = ", ".join(heavy.get(name, [])) or "-"
        print(
            f"{name:<42} {wall:>7.3f} {ratios[0]:>6.2f} {cpu:>7.3f} {ratios[1]:>6.2f}  "
            f"{loaded}{mark}"
        )
        results.append(
            {"command": name, "wall_s": wall, "wall_ratio": ratios[0], "cpu_s": cpu,
             "cpu_ratio": ratios[1], "heavy": heavy.get(name, [])}
        )  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rounds": rounds, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
