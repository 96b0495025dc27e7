"""Benchmark of notices by e-mail (issue 16): ``notice send`` and sending, for N subjects.

Generates its own ledger (SQLite, cached under bench/out/notices-N/): a policy whose
purpose ``feed-ai`` is on by default in the US, published; N members in the US, each with
an e-mail address. Then, in the same run, against one local SMTP sink (aiosmtpd, in a
process of its own, accepting every message at once):

- baseline: a trivial ``smtplib`` client sending one ready-made message of the same size
  to N recipients, one message each, over one connection: no per-message work at all,
  only what any sender pays the sink and the protocol;
- askfirst: ``mail.queue_notices`` (``askfirst notice send``: one INSERT ... SELECT), then
  ``mail.run(until_empty=True)`` (``askfirst outbox run``): claims with leases, builds each
  message (plain text and HTML, a signed one-click link), sends it, and records
  ``notice-delivered`` in the hash-chained ledger, on a fresh copy of the cached ledger.

Each side runs in a child process of its own, which reports its peak RSS, so memory can
be compared between sizes (flat: the same at 20,000 and at 1,000,000). The sink counts
what it received, and the run checks it got every message once.

    python bench/notices.py --quick                 # 20,000 subjects
    python bench/notices.py                         # 1,000,000 subjects
    python bench/notices.py -n 200000 --json bench/out/notices.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "out"
POLICY = """
[purposes.feed-ai]
title = "Use my posts to train the feed's AI"
description = "Your posts help train the model that ranks your feed."
version = 1
categories = ["profile", "post"]
recipients = ["the platform"]
default = "on"
grace_days = 30

[jurisdictions]
opt_out = ["US"]
"""
BASE_URL = "https://askfirst.example.com"
MAIL_FROM = "askfirst <privacy@example.com>"
CHUNK = 50_000
TARGET = 0.5


def _peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM starts again at exec; ru_maxrss would
    carry the parent's peak (the ledger generation) into a child."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the sink ------------------------------------------------------------------------------


def sink(port: int, counts: Path) -> None:
    """An SMTP server that accepts every message at once; on SIGTERM it writes how many
    messages and distinct Message-IDs it received to ``counts``."""
    import signal
    import threading

    from aiosmtpd.controller import Controller

    class Accept:
        def __init__(self) -> None:
            self.count = 0
            self.ids: set[bytes] = set()

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.count += 1
            content: bytes = envelope.content
            start = content.find(b"Message-ID:")
            if start >= 0:
                self.ids.add(content[start : content.find(b"\n", start)].strip())
            return "250 2.0.0 OK"

    handler = Accept()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    done.wait()
    controller.stop()
    counts.write_text(json.dumps({"messages": handler.count, "ids": len(handler.ids)}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.counts = folder / f"sink-{self.port}.json"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--sink", str(self.port), "--counts", str(self.counts)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit("the SMTP sink did not start")

    def stop(self) -> dict[str, int]:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        got: dict[str, int] = json.loads(self.counts.read_text())
        return got


# ---- the ledger ----------------------------------------------------------------------------


def ledger_for(n: int) -> Path:
    """The cached ledger with ``n`` members (made once)."""
    folder = OUT / f"notices-{n}"
    db = folder / "ledger.db"
    if (folder / "ready").exists():
        return db
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    from askfirst import SubjectIn, notices, open_ledger, parse_policy

    t0 = time.perf_counter()
    policy = parse_policy(POLICY, "bench.toml")
    with open_ledger(f"sqlite:///{db}", policy, create=True) as ledger:
        notices.publish(
            ledger, ledger.policy, "feed-ai", changes="First version.", actor="system:bench"
        )
        for start in range(0, n, CHUNK):
            ledger.register(
                [
                    SubjectIn.model_construct(
                        id=f"m{i:07d}",
                        kind="member",
                        jurisdiction="US",
                        handle=None,
                        names=[],
                        birth_date=None,
                        minor=False,
                        status="active",
                        email=f"m{i:07d}@example.com",
                    )
                    for i in range(start, min(n, start + CHUNK))
                ],
                actor="system:bench",
            )
            print(f"  registered {min(n, start + CHUNK):,} of {n:,}", file=sys.stderr)
    (folder / "policy.toml").write_text(POLICY)
    (folder / "ready").write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return db


# ---- the two senders -----------------------------------------------------------------------


def baseline(port: int, n: int, size: int) -> dict[str, Any]:
    """A trivial smtplib client: one ready-made message of ``size`` bytes, sent to ``n``
    recipients one message each, over one connection (no per-message work at all)."""
    import email.policy
    import smtplib
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = MAIL_FROM
    msg["To"] = "someone@example.com"
    msg["Subject"] = "A notice"
    msg["Message-ID"] = "<baseline@example.com>"
    msg.set_content(("x" * 71 + "\n") * max(1, (size - 200) // 72))
    data = msg.as_bytes(policy=email.policy.SMTP)
    t0 = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as server:
        for i in range(n):
            server.sendmail("privacy@example.com", [f"m{i:07d}@example.com"], data)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "messages": n, "bytes": len(data), "peak_rss_mib": _peak_rss_mib()}


def askfirst(port: int, db: Path, secret: str) -> dict[str, Any]:
    """``notice send`` then ``outbox run --until-empty`` (the library calls they make)."""
    from askfirst import mail, open_ledger, parse_policy

    policy = parse_policy(POLICY, "bench.toml")
    smtp = mail.Smtp.from_url(f"smtp://127.0.0.1:{port}", mail_from=MAIL_FROM, base_url=BASE_URL)
    with open_ledger(f"sqlite:///{db}", policy) as ledger:
        t0 = time.perf_counter()
        queued = mail.queue_notices(ledger, "feed-ai")
        t1 = time.perf_counter()
        sent = mail.run(ledger, smtp, secret, until_empty=True, base_delay_s=1.0)
        t2 = time.perf_counter()
        head = ledger.head().seq
    return {
        "queue_seconds": t1 - t0,
        "send_seconds": t2 - t1,
        "queued": queued,
        "sent": sent.sent,
        "failed": sent.failed,
        "head_seq": head,
        "peak_rss_mib": _peak_rss_mib(),
    }


def _child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _message_size() -> int:
    """The size of the text part of one of askfirst's messages, give or take."""
    from askfirst import mail, notices, times

    terms = notices.Terms(
        purpose="feed-ai", version=1, title="Use my posts to train the feed's AI",
        description="Your posts help train the model that ranks your feed.",
        changes="First version.", categories=("profile", "post"), recipients=("the platform",),
        default="on", grace_days=30, places=("US",), earliest_default=None,
    )  # fmt: skip
    smtp = mail.Smtp.from_url("smtp://127.0.0.1:25", mail_from=MAIL_FROM, base_url=BASE_URL)
    token = mail.make_token("x" * 64, "m0000001", "feed-ai", 1)
    now = times.to_micros(times.now())
    msg = mail.build_message(smtp, "m0000001@example.com", terms, now, "k" * 64, token)
    return len(msg.as_bytes())


def _queue_only(base: Path, n: int) -> None:
    from askfirst import mail, open_ledger, parse_policy

    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        db = Path(tmp) / "ledger.db"
        shutil.copy(base, db)
        with open_ledger(f"sqlite:///{db}", parse_policy(POLICY, "bench.toml")) as ledger:
            t0 = time.perf_counter()
            queued = mail.queue_notices(ledger, "feed-ai")
            t1 = time.perf_counter()
            again = mail.queue_notices(ledger, "feed-ai")
            t2 = time.perf_counter()
    print(f"  notice send: {queued:,} queued in {t1 - t0:.2f} s; again: {again} in {t2 - t1:.2f} s")
    print(f"  peak RSS {_peak_rss_mib():.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="subjects (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="20,000 subjects: a smoke run")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--queue-only", action="store_true", help="time notice send (the queueing) alone"
    )
    ap.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--counts", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--baseline", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--askfirst", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sink is not None:
        sink(args.sink, args.counts)
        return
    if args.baseline is not None:
        print(json.dumps(baseline(*args.baseline, size=_message_size())))
        return
    if args.askfirst is not None:
        port, db, secret = args.askfirst
        print(json.dumps(askfirst(int(port), Path(db), secret)))
        return

    n = 20_000 if args.quick else args.n
    print(f"notices by e-mail, {n:,} subjects ({platform.python_version()}, {os.cpu_count()} cpu)")
    base = ledger_for(n)
    if args.queue_only:
        _queue_only(base, n)
        return
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        work = Path(tmp)
        db = work / "ledger.db"
        shutil.copy(base, db)
        size = _message_size()

        s = Sink(work)
        try:
            plain = _child(["--baseline", str(s.port), str(n)])
        finally:
            got_plain = s.stop()
        s = Sink(work)
        try:
            ours = _child(["--askfirst", str(s.port), str(db), "bench-secret-" + "x" * 40])
        finally:
            got_ours = s.stop()

    plain_rate = n / plain["seconds"]
    ours_rate = ours["sent"] / ours["send_seconds"] if ours["send_seconds"] else 0.0
    ratio = ours_rate / plain_rate
    figures = {
        "subjects": n,
        "message_bytes": size,
        "baseline": {**plain, "per_second": plain_rate, "sink": got_plain},
        "askfirst": {**ours, "per_second": ours_rate, "sink": got_ours},
        "ratio": ratio,
        "target": TARGET,
    }
    print(f"  message size                  {size:,} bytes")
    print(
        f"  smtplib baseline              {plain_rate:9,.0f} messages/s  "
        f"({plain['seconds']:.1f} s, peak RSS {plain['peak_rss_mib']:.0f} MiB)"
    )
    print(f"  askfirst notice send (queue)  {ours['queue_seconds']:9.2f} s for {ours['queued']:,}")
    print(
        f"  askfirst outbox run (send)    {ours_rate:9,.0f} messages/s  "
        f"({ours['send_seconds']:.1f} s, peak RSS {ours['peak_rss_mib']:.0f} MiB)"
    )
    print(f"  ratio                         {ratio:9.2f}  (target >= {TARGET})")
    print(
        f"  the sink got {got_ours['messages']:,} messages, {got_ours['ids']:,} distinct "
        f"Message-IDs; {ours['failed']} refused"
    )
    ok = got_ours["messages"] == got_ours["ids"] == ours["sent"] == ours["queued"] == n
    print("  every message once: " + ("yes" if ok else "NO"))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
