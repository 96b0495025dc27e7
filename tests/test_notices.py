"""Notices to research partners (GDPR Art. 19) over real HTTP, on SQLite and PostgreSQL.

A partner here is a real HTTP server on 127.0.0.1 that records every request it gets
(path, headers, body) and answers as the test tells it: 2xx, 5xx, holding the answer past
the client's timeout, or not listening at all. The tests register partners, hand them
``third-party-research`` snapshots, let subjects withdraw, and look at what a partner and
an operator would see: the notices owed (``list_outbox``), the requests that arrived, their
signatures and idempotency keys, and the command line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from askfirst import InputError, Ledger, NewEvent, SubjectIn, build_snapshot, rebuild_snapshot
from askfirst.lineage import list_snapshots
from askfirst.recipients import (
    Sent,
    add_recipient,
    deliver_due,
    list_outbox,
    list_recipients,
    record_delivery,
    run_outbox,
    verify_signature,
)
from test_gate import GENAI, RESEARCH, micros, one_line_error, rec, run, write_jsonl
from test_gate import ok as cli_ok

SINCE = datetime(2025, 1, 1, tzinfo=UTC)
GRANTED = datetime(2025, 2, 1, tzinfo=UTC)
KIND = "snapshot.data-withdrawn"
BASE = 0.05  # first retry after ~50 ms, doubling

# Members whose ids, handles and names are distinctive enough to look for in a notice.
SUBJECTS = [
    SubjectIn(id="subj-alice-4821", jurisdiction="DE", handle="alice.q", names=["Alice Quist"]),
    SubjectIn(id="subj-bruno-7713", jurisdiction="DE", handle="bruno.v", names=["Bruno Vale"]),
    SubjectIn(id="subj-carla-0932", jurisdiction="DE", handle="carla.z", names=["Carla Zorn"]),
    SubjectIn(id="subj-dario-5560", jurisdiction="DE", handle="dario.w", names=["Dario Wulf"]),
    SubjectIn(id="subj-erika-2274", jurisdiction="DE", handle="erika.y", names=["Erika Yates"]),
    # said yes, but none of the corpora hold anything of hers
    SubjectIn(id="subj-frida-3391", jurisdiction="DE", handle="frida.x", names=["Frida Xu"]),
]
ALICE, BRUNO, CARLA, DARIO, ERIKA, FRIDA = (s.id for s in SUBJECTS)
# a person without an account who never said yes: named in a post, redacted, not kept
GINA = SubjectIn(id="subj-gina-6604", kind="person", names=["Gina Holt"])

# Three corpora: S1 has alice and bruno, and a kept mention of carla; S2 has carla and
# dario; S3 has erika.
CORPUS_1 = [
    rec("a1", ALICE, "Alice's field notes", category="post"),
    rec("b1", BRUNO, "Lunch with Carla Zorn", category="article", mentions=[CARLA]),
]
CORPUS_2 = [
    rec("c1", CARLA, "Carla's post"),
    rec("d1", DARIO, "Dario's comment", category="comment"),
]
CORPUS_3 = [rec("e1", ERIKA, "Erika's profile", category="profile")]


# ---- a partner's webhook: a real HTTP server --------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    answered: int  # the status the partner answered (or was about to, when held)


class _Server(ThreadingHTTPServer):
    partner: Partner

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a held answer: nothing to report


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        partner = self.server.partner
        status, hold = partner.answer()
        headers = {k.lower(): v for k, v in self.headers.items()}
        partner.record(Received(self.path, headers, body, status))
        if hold is not None:
            hold.wait(10)
        if partner.hold_s:
            partner.stopped.wait(partner.hold_s)  # a slow partner: answers late
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Partner:
    """A partner's webhook. ``status`` answers every request unless ``script`` still
    holds answers for the next ones; ``hold_next`` makes the next request wait for
    ``release`` before it is answered."""

    name: str
    path: str = "/hooks/askfirst"
    status: int = 200
    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    hold_next: bool = False
    hold_s: float = 0.0  # wait this long before every answer
    stopped: threading.Event = field(default_factory=threading.Event)
    _holds: list[threading.Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: _Server | None = None
    _reserved: socket.socket | None = None
    secret: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def answer(self) -> tuple[int, threading.Event | None]:
        with self._lock:
            status = self.script.pop(0) if self.script else self.status
            hold = None
            if self.hold_next:
                self.hold_next = False
                hold = threading.Event()
                self._holds.append(hold)
            return status, hold

    def record(self, r: Received) -> None:
        with self._lock:
            self.received.append(r)

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def release(self) -> None:
        for hold in self._holds:
            hold.set()

    def reserve(self) -> None:
        """Take a port and listen on nothing: connecting is refused (the partner is down)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        self.port = s.getsockname()[1]
        self._reserved = s

    def start(self) -> None:
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.partner = self
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()

    def stop(self) -> None:
        self.release()
        self.stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None


class Partners:
    """Partners started by one test, all stopped at its end."""

    def __init__(self) -> None:
        self.all: list[Partner] = []

    def up(self, name: str, **kw: Any) -> Partner:
        p = Partner(name, **kw)
        p.start()
        self.all.append(p)
        return p

    def down(self, name: str, **kw: Any) -> Partner:
        p = Partner(name, **kw)
        p.reserve()
        self.all.append(p)
        return p


@pytest.fixture
def partners(monkeypatch: pytest.MonkeyPatch) -> Iterator[Partners]:
    # the partners listen on 127.0.0.1, which webhooks may use only when the operator allows
    monkeypatch.setenv("ASKFIRST_WEBHOOK_ALLOW_PRIVATE", "1")
    ps = Partners()
    yield ps
    for p in ps.all:
        p.stop()


# ---- the platform, its snapshots and its partners ---------------------------------------


def grant(subject: str, purpose: str, at: datetime | None = GRANTED) -> NewEvent:
    """A yes, recorded at ``at`` (None: now)."""
    return NewEvent(
        type="choice",
        subject=subject,
        purpose=purpose,
        value="grant",
        notice_version=1,
        actor=subject,
        source="test",
        recorded_at=None if at is None else micros(at),
    )


def ends(subject: str, how: str, purpose: str = RESEARCH) -> NewEvent:
    """An event recorded now that ends ``subject``'s use: "withdraw" or "object" (for
    ``purpose``), "closed" or "deceased"."""
    if how in ("withdraw", "object"):
        return NewEvent(
            type="choice",
            subject=subject,
            purpose=purpose,
            value=how,
            notice_version=1,
            actor=subject,
            source="test",
        )
    return NewEvent(type="status", subject=subject, value=how, actor="system", source="test")


@pytest.fixture
def led(ledger: Ledger) -> Ledger:
    ledger.register([*SUBJECTS, GINA], since=SINCE)
    ledger.append_many([grant(s.id, p) for s in SUBJECTS for p in (GENAI, RESEARCH)])
    return ledger


def snapshot(ledger: Ledger, tmp_path: Path, name: str, rows: Sequence[dict[str, Any]]) -> str:
    corpus = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    (tmp_path / "snapshots").mkdir(exist_ok=True)
    manifest = build_snapshot(ledger, RESEARCH, corpus, tmp_path / "snapshots" / name)
    assert manifest.output_records == len(rows)  # everyone in it said yes
    return manifest.snapshot_id


def status_of(ledger: Ledger, snapshot_id: str) -> str:
    (row,) = [s for s in list_snapshots(ledger) if s["snapshot_id"] == snapshot_id]
    status: str = row["status"]
    return status


def register(ledger: Ledger, partner: Partner) -> Partner:
    _, partner.secret = add_recipient(ledger, partner.name, partner.url)
    return partner


def drain(
    ledger: Ledger,
    *,
    client: httpx.Client | None = None,
    limit: int = 100,
    seconds: float = 30.0,
) -> Sent:
    """Call ``deliver_due`` until nothing is owed; the totals."""
    total = Sent()
    deadline = time.monotonic() + seconds
    while True:
        sent = deliver_due(ledger, client=client, limit=limit, base_delay_s=BASE)
        total.delivered += sent.delivered
        total.failed += sent.failed
        total.pending = sent.pending
        if sent.pending == 0:
            return total
        assert time.monotonic() < deadline, list_outbox(ledger, pending_only=True)
        time.sleep(min(max(sent.next_due_in_s or 0.0, 0.01), 0.5))


def wait_for(what: str, check: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def notices(ledger: Ledger, recipient: str | None = None) -> list[dict[str, Any]]:
    return [n for n in list_outbox(ledger) if recipient is None or n["recipient"] == recipient]


def standard_webhooks_signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    """The signature as any Standard Webhooks partner computes it, independently of
    askfirst: HMAC-SHA256 keyed by the base64 after ``whsec_``, over id.timestamp.body."""
    assert secret.startswith("whsec_")
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    mac = hmac.new(base64.b64decode(secret.removeprefix("whsec_")), signed, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def check_received(partner: Partner, owed: list[dict[str, Any]]) -> Counter[str]:
    """What holds for every request a partner got: a signed POST of one notice it is owed,
    each copy of a notice the same bytes under the same key. Returns copies per key."""
    by_key = {n["idempotency_key"]: n for n in owed}
    bodies: dict[str, bytes] = {}
    copies: Counter[str] = Counter()
    for r in partner.requests():
        assert r.path == partner.path
        assert r.headers["content-type"] == "application/json"
        key = r.headers["idempotency-key"]
        assert r.headers["webhook-id"] == key
        assert verify_signature(partner.secret, r.headers, r.body), r.headers
        assert standard_webhooks_signature(partner.secret, r.headers, r.body) in (
            r.headers["webhook-signature"].split()
        )
        assert key in by_key, f"{partner.name} got a notice it is not owed: {key}"
        assert json.loads(r.body) == by_key[key]["payload"]
        assert bodies.setdefault(key, r.body) == r.body  # a duplicate is the same notice
        copies[key] += 1
    assert set(copies) == set(by_key)  # every notice owed arrived
    return copies


def subject_traces(subject: str) -> list[str]:
    (s,) = [s for s in SUBJECTS if s.id == subject]
    return [s.id, *(s.names), *([s.handle] if s.handle else [])]


# ---- 1. one withdrawal, one notice, signed ----------------------------------------------


def test_a_withdrawal_sends_the_partner_one_signed_notice_naming_only_the_snapshot(
    led: Ledger, tmp_path: Path, partners: Partners
) -> None:
    lab = register(led, partners.up("lab-a", path="/hooks/askfirst?tenant=7"))
    s1 = snapshot(led, tmp_path, "s1", CORPUS_1)
    delivered = record_delivery(led, s1[:16], "lab-a")
    assert delivered["snapshot_id"] == s1 and delivered["recipient"] == "lab-a"
    assert notices(led) == []

    led.append(ends(ALICE, "withdraw"))
    assert status_of(led, s1) == "stale"
    (notice,) = list_outbox(led, pending_only=True)
    assert notice["recipient"] == "lab-a" and notice["kind"] == KIND
    assert notice["payload"]["snapshot_id"] == s1
    assert notice["payload"]["purpose"] == RESEARCH
    assert notice["payload"]["id"] == notice["idempotency_key"]
    assert notice["attempts"] == 0 and notice["delivered_at"] is None
    assert lab.requests() == []  # queued, not sent, until the outbox runs

    sent = deliver_due(led, base_delay_s=BASE)
    assert (sent.delivered, sent.failed, sent.pending) == (1, 0, 0)
    (got,) = lab.requests()
    assert check_received(lab, [notice]) == {notice["idempotency_key"]: 1}
    assert got.headers["idempotency-key"] == got.headers["webhook-id"] == notice["idempotency_key"]
    body = json.loads(got.body)
    assert body["snapshot_id"] == s1 and body["type"] == KIND
    text = got.body.decode() + json.dumps(got.headers)
    for trace in subject_traces(ALICE):
        assert trace.lower() not in text.lower(), trace

    # only the partner's secret, over exactly these bytes, verifies
    assert verify_signature(lab.secret, got.headers, got.body)
    other = register(led, partners.up("lab-other"))
    assert other.secret != lab.secret
    assert not verify_signature(other.secret, got.headers, got.body)
    tampered = got.body.replace(s1.encode(), s1[::-1].encode())
    assert tampered != got.body
    assert not verify_signature(lab.secret, got.headers, tampered)
    assert not verify_signature(lab.secret, got.headers, got.body + b" ")
    swapped = {**got.headers, "webhook-id": "x" + got.headers["webhook-id"][1:]}
    assert not verify_signature(lab.secret, swapped, got.body)

    (done,) = list_outbox(led)
    assert done["delivered_at"] is not None and done["attempts"] == 1
    assert done["last_error"] is None
    assert list_outbox(led, pending_only=True) == []
    again = deliver_due(led, base_delay_s=BASE)
    assert (again.delivered, again.failed, again.pending) == (0, 0, 0)
    assert len(lab.requests()) == 1


# ---- 2. partners down, then up: nothing lost --------------------------------------------


def test_notices_wait_for_partners_that_are_down_and_all_arrive_when_they_come_up(
    led: Ledger, tmp_path: Path, partners: Partners
) -> None:
    refused = register(led, partners.down("lab-refused"))  # nothing listens on its port
    busy = register(led, partners.up("lab-busy", status=503))  # up, but answers 503
    s1 = snapshot(led, tmp_path, "s1", CORPUS_1)
    s2 = snapshot(led, tmp_path, "s2", CORPUS_2)
    s3 = snapshot(led, tmp_path, "s3", CORPUS_3)
    for snap, to in ((s1, refused), (s2, refused), (s2, busy), (s3, busy)):
        record_delivery(led, snap, to.name)

    led.append(ends(ALICE, "withdraw"))  # in s1
    led.append(ends(CARLA, "object"))  # in s2, and a kept mention in s1
    led.append_many([ends(DARIO, "closed"), ends(ERIKA, "deceased")])  # in s2; in s3
    owed = notices(led)
    assert all(n["kind"] == KIND and n["delivered_at"] is None for n in owed)
    assert Counter((n["recipient"], n["payload"]["snapshot_id"]) for n in owed) == {
        ("lab-refused", s1): 2,  # alice, carla
        ("lab-refused", s2): 2,  # carla, dario
        ("lab-busy", s2): 2,  # carla, dario
        ("lab-busy", s3): 1,  # erika
    }
    assert len({n["idempotency_key"] for n in owed}) == len(owed) == 7
    assert {s: status_of(led, s) for s in (s1, s2, s3)} == dict.fromkeys((s1, s2, s3), "stale")

    result: list[Sent] = []
    worker = threading.Thread(
        target=lambda: result.append(
            run_outbox(led, until_empty=True, max_seconds=60, base_delay_s=BASE)
        )
    )
    worker.start()
    try:
        # both partners fail every notice at least twice: retried, with the error kept
        wait_for(
            "two failed tries of every notice",
            lambda: all(n["attempts"] >= 2 for n in notices(led)),
        )
        for n in notices(led):
            assert n["delivered_at"] is None and n["last_error"], n
            if n["recipient"] == "lab-busy":
                assert "503" in n["last_error"]
            else:
                assert "connect" in n["last_error"].lower(), n["last_error"]
        assert {r.answered for r in busy.requests()} == {503}
        assert len(busy.requests()) >= 2 * 3
        summary = {r["name"]: r["notices_pending"] for r in list_recipients(led)}
        assert summary == {"lab-busy": 3, "lab-refused": 4}

        refused.start()  # comes up on the same port
        busy.status = 200
    finally:
        worker.join(90)
    assert not worker.is_alive()
    (total,) = result
    assert total.pending == 0 and total.delivered == 7 and total.failed >= 14

    after = notices(led)
    assert all(n["delivered_at"] is not None and n["last_error"] is None for n in after)
    assert {n["idempotency_key"] for n in after} == {n["idempotency_key"] for n in owed}
    for partner in (refused, busy):
        mine = [n for n in after if n["recipient"] == partner.name]
        copies = check_received(partner, mine)
        took = Counter(
            r.headers["idempotency-key"] for r in partner.requests() if r.answered == 200
        )
        assert took == dict.fromkeys(copies, 1)  # acknowledged once each, never sent again
    busy_copies = check_received(busy, [n for n in after if n["recipient"] == "lab-busy"])
    assert all(c >= 3 for c in busy_copies.values())  # twice refused with 503, then taken
    sent_again = deliver_due(led, base_delay_s=BASE)
    assert (sent_again.delivered, sent_again.failed) == (0, 0)
    assert all(r["notices_pending"] == 0 for r in list_recipients(led))


# ---- 3. 5xx, timeouts, 2xx --------------------------------------------------------------


def test_a_notice_answered_500_is_sent_again_until_a_2xx_and_then_never(
    led: Ledger, tmp_path: Path, partners: Partners
) -> None:
    lab = register(led, partners.up("lab-a", status=204, script=[500, 500]))
    s1 = snapshot(led, tmp_path, "s1", CORPUS_1)
    record_delivery(led, s1, "lab-a")
    led.append(ends(BRUNO, "withdraw"))

    first = deliver_due(led, base_delay_s=BASE)
    assert (first.delivered, first.failed, first.pending) == (0, 1, 1)
    (n,) = list_outbox(led)
    assert n["attempts"] == 1 and n["last_error"] == "HTTP 500" and n["delivered_at"] is None
    assert n["next_attempt_at"] is not None

    total = drain(led)
    assert (total.delivered, total.failed) == (1, 1)
    (n,) = list_outbox(led)
    assert n["attempts"] == 3 and n["delivered_at"] is not None and n["last_error"] is None
    assert [r.answered for r in lab.requests()] == [500, 500, 204]
    assert check_received(lab, [n]) == {n["idempotency_key"]: 3}

    later = deliver_due(led, base_delay_s=BASE)
    assert (later.delivered, later.failed, later.pending) == (0, 0, 0)
    assert len(lab.requests()) == 3


def test_a_partner_that_times_out_gets_the_same_notice_again(
    led: Ledger, tmp_path: Path, partners: Partners
) -> None:
    lab = register(led, partners.up("lab-slow", status=202, hold_next=True))
    s3 = snapshot(led, tmp_path, "s3", CORPUS_3)
    record_delivery(led, s3, "lab-slow")
    led.append(ends(ERIKA, "withdraw"))

    with httpx.Client(timeout=0.5) as client:
        first = deliver_due(led, client=client, base_delay_s=BASE)
        assert (first.delivered, first.failed, first.pending) == (0, 1, 1)
        (n,) = list_outbox(led)
        assert n["attempts"] == 1 and n["delivered_at"] is None
        assert "timeout" in n["last_error"].lower(), n["last_error"]
        lab.release()
        total = drain(led, client=client)
    assert total.delivered == 1
    (n,) = list_outbox(led)
    assert n["attempts"] == 2 and n["delivered_at"] is not None and n["last_error"] is None
    # the partner saw it twice (the first answer came too late): one key, one body
    assert check_received(lab, [n]) == {n["idempotency_key"]: 2}
    assert deliver_due(led, base_delay_s=BASE).delivered == 0
    assert len(lab.requests()) == 2


def test_concurrent_withdrawals_and_outbox_workers_deliver_every_notice_once(
    led: Ledger, tmp_path: Path, partners: Partners
) -> None:
    a = register(led, partners.up("lab-a"))
    b = register(led, partners.up("lab-b"))
    s1 = snapshot(led, tmp_path, "s1", CORPUS_1)
    s2 = snapshot(led, tmp_path, "s2", CORPUS_2)
    s3 = snapshot(led, tmp_path, "s3", CORPUS_3)
    for snap, to in ((s1, "lab-a"), (s2, "lab-a"), (s2, "lab-b"), (s3, "lab-b")):
        record_delivery(led, snap, to)

    def withdraw(subject: str) -> None:
        led.append(ends(subject, "withdraw"))

    who = [ALICE, BRUNO, CARLA, DARIO, ERIKA]
    threads = [threading.Thread(target=withdraw, args=(s,)) for s in who]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    owed = notices(led)
    assert Counter((n["recipient"], n["payload"]["snapshot_id"]) for n in owed) == {
        ("lab-a", s1): 3,  # alice, bruno, carla (a kept mention)
        ("lab-a", s2): 2,  # carla, dario
        ("lab-b", s2): 2,
        ("lab-b", s3): 1,  # erika
    }

    totals: list[Sent] = []
    workers = [
        threading.Thread(target=lambda: totals.append(drain(led, limit=2))) for _ in range(3)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert len(totals) == 3 and sum(t.delivered for t in totals) == len(owed) == 8
    done = notices(led)
    assert all(n["delivered_at"] is not None and n["attempts"] == 1 for n in done)
    for partner in (a, b):
        copies = check_received(partner, [n for n in done if n["recipient"] == partner.name])
        assert set(copies.values()) == {1}  # a partner that is up gets each notice once


# ---- 4. who is owed a notice, and who is not --------------------------------------------


def test_only_partners_that_received_a_snapshot_the_withdrawal_reaches_are_notified(
    led: Ledger, tmp_path: Path, partners: Partners
) -> None:
    a = register(led, partners.up("lab-a"))
    b = register(led, partners.up("lab-b"))
    register(led, partners.up("lab-none"))  # received nothing
    named = rec("b2", BRUNO, "Met Gina Holt today", mentions=[GINA.id])  # redacted
    s1 = snapshot(led, tmp_path, "s1", [*CORPUS_1, named])
    s2 = snapshot(led, tmp_path, "s2", CORPUS_2)
    record_delivery(led, s1, "lab-a")
    record_delivery(led, s1, "lab-a")  # recorded twice: still one delivery
    record_delivery(led, s2, "lab-b")

    # ends that do not reach a research snapshot: another purpose; a subject in none
    led.append(ends(ALICE, "withdraw", purpose=GENAI))
    led.append(ends(FRIDA, "withdraw"))
    led.append(ends(GINA.id, "object"))  # named in s1, but redacted there
    led.append(grant(ALICE, GENAI, at=None))
    assert notices(led) == []
    assert status_of(led, s1) == status_of(led, s2) == "live"

    led.append(ends(ALICE, "withdraw"))  # in s1 only
    (n,) = notices(led)
    assert n["recipient"] == "lab-a" and n["payload"]["snapshot_id"] == s1
    # the same subject ending use again (closing the account) is not a new notice
    led.append(ends(ALICE, "closed"))
    assert len(notices(led)) == 1
    assert status_of(led, s2) == "live"

    assert drain(led).delivered == 1
    assert len(a.requests()) == 1 and b.requests() == []
    counts = {
        r["name"]: (r["snapshots_received"], r["notices_pending"]) for r in list_recipients(led)
    }
    assert counts == {"lab-a": (1, 0), "lab-b": (1, 0), "lab-none": (0, 0)}


def test_a_stale_snapshot_cannot_be_given_to_a_partner(
    led: Ledger, tmp_path: Path, partners: Partners
) -> None:
    register(led, partners.up("lab-a"))
    register(led, partners.up("lab-b"))
    s1 = snapshot(led, tmp_path, "s1", CORPUS_1)
    record_delivery(led, s1, "lab-a")
    led.append(ends(BRUNO, "withdraw"))
    assert status_of(led, s1) == "stale"

    with pytest.raises(InputError, match=r"(?s)stale.*rebuild"):
        record_delivery(led, s1, "lab-b")
    with pytest.raises(InputError, match="no partner 'lab-zzz'"):
        record_delivery(led, s1, "lab-zzz")
    with pytest.raises(InputError, match="no snapshot"):
        record_delivery(led, "0123456789abcdef", "lab-a")
    counts = {r["name"]: r["snapshots_received"] for r in list_recipients(led)}
    assert counts == {"lab-a": 1, "lab-b": 0}
    # a later withdrawal from s1 is owed to lab-a only
    led.append(ends(ALICE, "withdraw"))
    assert {n["recipient"] for n in notices(led)} == {"lab-a"}
    assert len(notices(led)) == 2


def test_only_research_snapshots_can_be_given_to_a_research_partner(
    led: Ledger, tmp_path: Path, partners: Partners
) -> None:
    register(led, partners.up("lab-a"))
    corpus = write_jsonl(tmp_path / "g.jsonl", CORPUS_1)
    genai = build_snapshot(led, GENAI, corpus, tmp_path / "genai").snapshot_id
    with pytest.raises(InputError, match=RESEARCH):
        record_delivery(led, genai, "lab-a")


def test_a_partner_name_and_url_are_checked(led: Ledger) -> None:
    for bad in ("ftp://example.org/hook", "example.org/hook", "http://", "not a url", ""):
        with pytest.raises(InputError, match="URL"):
            add_recipient(led, "lab-a", bad)
    with pytest.raises(InputError, match="name"):
        add_recipient(led, "  ", "https://example.org/hook")
    _, secret = add_recipient(led, "lab-a", "https://example.org/hook")
    with pytest.raises(InputError, match="already registered"):
        add_recipient(led, "lab-a", "https://example.org/other")
    assert [r["url"] for r in list_recipients(led)] == ["https://example.org/hook"]
    assert secret.startswith("whsec_")


# Addresses a webhook may not point at (the cloud metadata service, the platform's own
# network, ...), by what the refusal calls them.
PRIVATE_HOSTS = [
    ("127.0.0.1", "loopback"),
    ("[::1]", "loopback"),
    ("169.254.169.254", "link-local"),
    ("[fe80::1]", "link-local"),
    ("10.0.0.7", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("[fd00::1]", "private"),
    ("100.64.0.1", "CGNAT"),
    ("0.0.0.0", "unspecified"),
    ("[::]", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("[ff02::1]", "multicast"),
    ("[::ffff:169.254.169.254]", "link-local"),
]
ALLOW_PRIVATE = "ASKFIRST_WEBHOOK_ALLOW_PRIVATE"


@pytest.mark.parametrize(("host", "kind"), PRIVATE_HOSTS)
def test_a_webhook_on_a_private_address_is_refused_when_the_partner_is_added(
    led: Ledger, db_url: str, host: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALLOW_PRIVATE, raising=False)
    url = f"http://{host}:8080/latest/meta-data"
    with pytest.raises(InputError) as e:
        add_recipient(led, "lab-a", url)
    message = str(e.value)
    assert "\n" not in message
    assert host.strip("[]") in message and kind.lower() in message.lower(), message
    assert ALLOW_PRIVATE in message
    one_line_error(run("recipient", "add", "lab-b", "--url", url, "--db", db_url), kind)
    assert list_recipients(led) == []
    # the operator may allow it (a partner inside the same network)
    monkeypatch.setenv(ALLOW_PRIVATE, "1")
    add_recipient(led, "lab-a", url)
    assert [r["url"] for r in list_recipients(led)] == [url]


def test_a_webhook_host_resolving_to_loopback_is_refused_when_added_and_when_sent(
    led: Ledger, tmp_path: Path, partners: Partners, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = partners.up("lab-local")
    url = lab.url.replace("127.0.0.1", "localhost")
    monkeypatch.delenv(ALLOW_PRIVATE)
    with pytest.raises(InputError, match=r"'localhost' resolves to .*loopback"):
        add_recipient(led, "lab-local", url)
    one_line_error(
        run("recipient", "add", "lab-local", "--url", url, "--db", db_url), "localhost", "loopback"
    )
    assert list_recipients(led) == []

    # added while allowed (or while the name pointed elsewhere); then the name points
    # at loopback, or the operator withdraws the permission: the send is refused
    monkeypatch.setenv(ALLOW_PRIVATE, "1")
    _, lab.secret = add_recipient(led, "lab-local", url)
    s3 = snapshot(led, tmp_path, "s3", CORPUS_3)
    record_delivery(led, s3, "lab-local")
    led.append(ends(ERIKA, "withdraw"))
    monkeypatch.delenv(ALLOW_PRIVATE)
    sent = deliver_due(led, base_delay_s=BASE)
    assert (sent.delivered, sent.failed, sent.pending) == (0, 1, 1)
    (n,) = list_outbox(led)
    assert n["delivered_at"] is None and n["attempts"] == 1
    assert "'localhost'" in n["last_error"] and "loopback" in n["last_error"], n["last_error"]
    assert lab.requests() == []  # nothing left the machine towards it

    monkeypatch.setenv(ALLOW_PRIVATE, "1")
    assert drain(led).delivered == 1
    assert check_received(lab, notices(led)) == {n["idempotency_key"]: 1}


class _Resolver:
    """A name server that answers ``answers`` in turn for one name (the last one again
    once they run out), and the real one for every other name: a name re-pointed
    between two look-ups, as DNS rebinding does. No name server runs here to do it."""

    def __init__(self, name: str, *answers: str | None) -> None:
        self.name, self.answers, self.asked = name, list(answers), 0
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != self.name:
            return self.real(host, port, *args, **kwargs)
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.real(answer, port, *args, **kwargs)


def test_a_name_re_pointed_between_the_check_and_the_connection_does_not_reach_inside(
    led: Ledger, tmp_path: Path, partners: Partners, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers a public address to the send's check and loopback
    to the connection. The request goes to the address that was checked, never inside
    (before, the connection looked the name up again and reached the local service)."""
    lab = partners.up("lab-inside")
    name = "rebind.askfirst.test"
    monkeypatch.setenv(ALLOW_PRIVATE, "1")
    _, lab.secret = add_recipient(led, "lab-inside", f"http://{name}:{lab.port}/hooks/askfirst")
    s1 = snapshot(led, tmp_path, "s1", CORPUS_1)
    record_delivery(led, s1, "lab-inside")
    led.append(ends(ALICE, "withdraw"))
    monkeypatch.delenv(ALLOW_PRIVATE)
    # a public address to the check (nothing here answers it), then loopback
    monkeypatch.setattr(socket, "getaddrinfo", _Resolver(name, "93.184.215.14", "127.0.0.1"))
    with httpx.Client(timeout=1.0) as client:
        sent = deliver_due(led, client=client, base_delay_s=BASE)
    assert (sent.delivered, sent.failed) == (0, 1)
    assert lab.requests() == []  # nothing reached the service inside


def test_a_notice_goes_to_the_address_looked_up_once_and_keeps_the_partners_name(
    led: Ledger, tmp_path: Path, partners: Partners, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address is looked up once per send: a name that stops resolving after that
    look-up is still delivered to, with the partner's name as the Host header."""
    lab = partners.up("lab-pinned")
    name = "pinned.askfirst.test"
    monkeypatch.setenv(ALLOW_PRIVATE, "1")
    monkeypatch.setattr(socket, "getaddrinfo", _Resolver(name, "127.0.0.1"))
    _, lab.secret = add_recipient(led, "lab-pinned", f"http://{name}:{lab.port}/hooks/askfirst")
    s1 = snapshot(led, tmp_path, "s1", CORPUS_1)
    record_delivery(led, s1, "lab-pinned")
    led.append(ends(ALICE, "withdraw"))
    monkeypatch.setattr(socket, "getaddrinfo", _Resolver(name, "127.0.0.1", None))
    assert drain(led).delivered == 1
    (got,) = lab.requests()
    assert got.headers["host"] == f"{name}:{lab.port}"
    assert check_received(lab, notices(led)) == {notices(led)[0]["idempotency_key"]: 1}


def test_a_slow_partner_does_not_keep_outbox_run_past_its_time(
    led: Ledger, tmp_path: Path, partners: Partners, db_url: str
) -> None:
    # the partner holds every answer for 10 s (the client's own timeout): a run given
    # 1 s gives up on it when its time is up, and starts nothing after that
    lab = register(led, partners.up("lab-slow", status=202, hold_s=10.0))
    s1 = snapshot(led, tmp_path, "s1", CORPUS_1)
    record_delivery(led, s1, "lab-slow")
    led.append(ends(ALICE, "withdraw"))
    led.append(ends(BRUNO, "withdraw"))
    assert len(notices(led)) == 2

    sent = run_outbox(led, max_seconds=1, base_delay_s=BASE)
    assert (sent.delivered, sent.failed, sent.pending) == (0, 1, 2)
    tried = [n for n in notices(led) if n["attempts"]]
    assert len(tried) == 1  # the other one was not started once time was up
    assert len(lab.requests()) == 1
    assert "timed out" in tried[0]["last_error"], tried[0]["last_error"]
    # the untried one is due at once for the next run, not held for a minute's lease
    untried = [n for n in notices(led) if not n["attempts"]]
    assert datetime.fromisoformat(untried[0]["next_attempt_at"]) <= datetime.now(UTC)

    res = run(
        "outbox", "run", "--until-empty", "--max-seconds", "1", "--base-delay", "0.05",
        "--db", db_url,
    )  # fmt: skip
    assert res.exit_code == 3, res.output
    assert "2 notice(s) still owed" in res.stderr
    assert all(n["delivered_at"] is None for n in notices(led))
    assert any("timed out" in (n["last_error"] or "") for n in notices(led))


# ---- 5. the command line ----------------------------------------------------------------

SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


def test_partners_deliveries_and_the_outbox_from_the_command_line(
    led: Ledger, db_url: str, tmp_path: Path, partners: Partners
) -> None:
    lab = partners.down("lab-cli")  # registered before it listens; up before the run
    s2 = snapshot(led, tmp_path, "s2", CORPUS_2)

    text = cli_ok(run("recipient", "add", "lab-cli", "--url", lab.url, "--db", db_url))
    secrets_shown = SECRET.findall(text)
    assert len(secrets_shown) == 1, text
    lab.secret = secrets_shown[0]
    assert lab.url in text

    for bad in ("ftp://example.org/hook", "not a url", "http://"):
        res = run("recipient", "add", "lab-bad", "--url", bad, "--db", db_url)
        one_line_error(res, "url")
    one_line_error(run("recipient", "add", "lab-cli", "--url", lab.url, "--db", db_url), "already")

    listing = cli_ok(run("recipient", "list", "--json", "--db", db_url))
    assert "whsec_" not in listing
    (row,) = json.loads(listing)
    assert (row["name"], row["url"], row["snapshots_received"]) == ("lab-cli", lab.url, 0)
    table = cli_ok(run("recipient", "list", "--db", db_url))
    assert "lab-cli" in table and "whsec_" not in table

    one_line_error(
        run("snapshot", "deliver", s2[:16], "--to", "lab-zzz", "--db", db_url), "lab-zzz"
    )
    text = cli_ok(run("snapshot", "deliver", s2[:16], "--to", "lab-cli", "--db", db_url))
    assert "lab-cli" in text and s2[:16] in text
    assert (
        json.loads(cli_ok(run("recipient", "list", "--json", "--db", db_url)))[0][
            "snapshots_received"
        ]
        == 1
    )

    led.append(ends(DARIO, "withdraw"))
    assert status_of(led, s2) == "stale"
    one_line_error(run("snapshot", "deliver", s2[:16], "--to", "lab-cli", "--db", db_url), "stale")
    (owed,) = json.loads(cli_ok(run("outbox", "list", "--pending", "--db", db_url)))
    assert owed["recipient"] == "lab-cli" and owed["kind"] == KIND
    assert owed["payload"]["snapshot_id"] == s2 and owed["delivered_at"] is None

    one_line_error(run("outbox", "run", "--base-delay", "0", "--db", db_url), "base-delay")
    lab.start()
    until_empty = ["--until-empty", "--max-seconds", "10", "--base-delay", "0.05"]
    text = cli_ok(run("outbox", "run", *until_empty, "--db", db_url))
    assert "delivered 1" in text and "still owed 0" in text
    (done,) = json.loads(cli_ok(run("outbox", "list", "--db", db_url)))
    assert done["idempotency_key"] == owed["idempotency_key"]
    assert done["delivered_at"] is not None and done["attempts"] == 1
    assert json.loads(cli_ok(run("outbox", "list", "--pending", "--db", db_url))) == []
    assert check_received(lab, [done]) == {done["idempotency_key"]: 1}  # the secret shown verifies

    again = cli_ok(
        run("outbox", "run", "--until-empty", "--max-seconds", "10", "--json", "--db", db_url)
    )
    assert json.loads(again)["delivered"] == 0
    assert len(lab.requests()) == 1


def test_a_rebuild_tells_the_partners_of_the_old_snapshot_which_one_replaces_it(
    led: Ledger, tmp_path: Path, partners: Partners
) -> None:
    a = register(led, partners.up("lab-a"))
    register(led, partners.up("lab-none"))  # received nothing
    s1 = snapshot(led, tmp_path, "s1", CORPUS_1)
    record_delivery(led, s1, "lab-a")
    led.append(ends(ALICE, "withdraw"))
    (rebuilt,) = rebuild_snapshot(led, s1)
    kinds = sorted((n["recipient"], n["kind"]) for n in notices(led))
    assert kinds == [("lab-a", KIND), ("lab-a", "snapshot.rebuilt")]
    (told,) = [n for n in notices(led) if n["kind"] == "snapshot.rebuilt"]
    assert told["payload"]["snapshot_id"] == s1
    assert told["payload"]["replaced_by"] == rebuilt.new.snapshot_id
    assert ALICE not in json.dumps(told["payload"])
    assert drain(led).delivered == 2
    assert check_received(a, notices(led)) == {n["idempotency_key"]: 1 for n in notices(led)}


def test_outbox_run_until_empty_says_when_time_ran_out_with_notices_owed(
    led: Ledger, tmp_path: Path, partners: Partners, db_url: str
) -> None:
    register(led, partners.down("lab-down"))
    s1 = snapshot(led, tmp_path, "s1", CORPUS_1)
    record_delivery(led, s1, "lab-down")
    led.append(ends(ALICE, "withdraw"))
    res = run(
        "outbox", "run", "--until-empty", "--max-seconds", "1", "--base-delay", "0.05",
        "--db", db_url,
    )  # fmt: skip
    assert res.exit_code == 3
    assert "1 notice(s) still owed" in res.stderr
    assert "Traceback" not in res.output
    assert len(notices(led)) == 1 and notices(led)[0]["delivered_at"] is None
