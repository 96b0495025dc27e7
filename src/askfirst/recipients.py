"""Research partners: who received which snapshot, and the notices askfirst owes them.

A partner is registered with the URL of its webhook and gets a signing secret once. When
a snapshot is handed to a partner, the delivery is recorded; from then on, a withdrawal
that reaches that snapshot queues a notice for the partner in the ``outbox`` table, in
the withdrawal's own transaction (``askfirst.propagation``). GDPR Art. 19.

Notices are sent by ``deliver_due`` / ``run_outbox`` (``askfirst outbox run``, and a
thread of ``askfirst serve``): a signed POST (Standard Webhooks: ``webhook-id``,
``webhook-timestamp``, ``webhook-signature``), with an ``Idempotency-Key`` that is the
same every time the same notice is sent. A notice the partner does not acknowledge with a
2xx is tried again with exponential backoff, for as long as it takes: nothing is lost
while a partner is down, and a partner may see a notice twice, always with the same key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import random
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from askfirst import config, lineage, times
from askfirst.errors import InputError
from askfirst.ledger import store
from askfirst.ledger.ledger import Ledger
from askfirst.ledger.tables import deliveries, outbox, recipients

SECRET_PREFIX = "whsec_"
LEASE_US = 60 * times.MICROS  # a claimed notice is not tried by another worker meanwhile
MAX_DELAY_S = 3600.0


# ---- partners and what they received ---------------------------------------------------


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_ULA = ipaddress.ip_network("fc00::/7")


def private_allowed() -> bool:
    """Whether the operator lets webhooks point at private addresses
    (``ASKFIRST_WEBHOOK_ALLOW_PRIVATE=1``)."""
    value = os.environ.get(config.WEBHOOK_ALLOW_PRIVATE.env, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def _forbidden_kind(addr: IPAddress) -> str | None:
    """What kind of address a webhook may not point at, or None when it may."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_unspecified:
        return "an unspecified"
    if addr.is_loopback:
        return "a loopback"
    if addr.is_link_local:
        return "a link-local"
    if addr.is_multicast:
        return "a multicast"
    if isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT:
        return "a shared (CGNAT, 100.64.0.0/10)"
    if isinstance(addr, ipaddress.IPv6Address) and addr in _ULA:
        return "a private (fc00::/7)"
    if addr.is_private or addr.is_reserved:
        return "a private"
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` stands for (itself, if it is an address)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _refusal(host: str, addrs: list[IPAddress]) -> str | None:
    """Why a webhook at ``host`` (resolving to ``addrs``) is refused, or None."""
    if private_allowed():
        return None
    for addr in addrs:
        kind = _forbidden_kind(addr)
        if kind is not None:
            via = "" if str(addr) == host.strip("[]") else f" resolves to {addr}, which"
            return (
                f"webhook host {host!r}{via} is {kind} address; partners' webhooks must be "
                f"public (set {config.WEBHOOK_ALLOW_PRIVATE.env}=1 to allow it)"
            )
    return None


def _check_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise InputError(f"webhook URL {url!r} is not a URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InputError(f"webhook URL {url!r}: give an http:// or https:// URL")
    try:
        addrs = _resolve(parsed.host, parsed.port or 443)
    except (OSError, UnicodeError):
        addrs = []  # not resolvable now: checked again on every send
    problem = _refusal(parsed.host, addrs)
    if problem is not None:
        raise InputError(problem)
    return str(parsed)


def add_recipient(ledger: Ledger, name: str, url: str) -> tuple[dict[str, Any], str]:
    """Register a partner; returns it and its signing secret (shown this once)."""
    name = name.strip()
    if not name or len(name) > 255:
        raise InputError("give the partner a name (at most 255 characters)")
    url = _check_url(url)
    secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        with store.write(ledger.engine) as conn:
            conn.execute(
                insert(recipients).values(
                    name=name, url=url, secret=secret, created_at=times.to_micros(times.now())
                )
            )
    except IntegrityError:
        raise InputError(f"a partner named {name!r} is already registered") from None
    return {"name": name, "url": url}, secret


def list_recipients(ledger: Ledger) -> list[dict[str, Any]]:
    """Every partner, with the snapshots it received and the notices owed or sent."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(select(recipients).order_by(recipients.c.name)).all()
        out = []
        for r in rows:
            received = conn.execute(
                select(func.count()).select_from(deliveries).where(deliveries.c.recipient == r.id)
            ).scalar()
            pending = conn.execute(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.recipient == r.id, outbox.c.delivered_at.is_(None))
            ).scalar()
            out.append(
                {
                    "name": r.name,
                    "url": r.url,
                    "registered_at": times.iso(r.created_at),
                    "snapshots_received": received,
                    "notices_pending": pending,
                }
            )
    return out


def record_delivery(
    ledger: Ledger, snapshot_id: str, recipient: str, *, actor: str = "system"
) -> dict[str, Any]:
    """Record that ``recipient`` was given snapshot ``snapshot_id`` (every live copy)."""
    with store.write(ledger.engine) as conn:
        ledger.lock_head(conn)  # so that a withdrawal either sees this delivery or came first
        rid = conn.execute(select(recipients.c.id).where(recipients.c.name == recipient)).scalar()
        if rid is None:
            raise InputError(f"no partner {recipient!r}; add it with 'askfirst recipient add'")
        rows = lineage.resolve(conn, snapshot_id)
        purpose = ledger.policy.purposes.get(rows[0].purpose)
        if purpose is None or not purpose.shares_outside:
            shared = [p.name for p in ledger.policy.purposes.values() if p.shares_outside]
            raise InputError(
                f"snapshot {rows[0].snapshot_id[:16]} is for {rows[0].purpose!r}, which the "
                "policy does not share outside the platform; partners receive snapshots of "
                f"{', '.join(shared) or 'no purpose (none has shares_outside = true)'}"
            )
        live = [r for r in rows if r.status == "live"]
        if not live:
            raise InputError(
                f"snapshot {rows[0].snapshot_id[:16]} is {rows[-1].status}: it holds data that "
                "may no longer be used, so it cannot be given to anyone; rebuild it first"
            )
        now = times.to_micros(times.now())
        for r in live:
            exists = conn.execute(
                select(deliveries.c.snapshot).where(
                    deliveries.c.snapshot == r.id, deliveries.c.recipient == rid
                )
            ).first()
            if exists is None:
                conn.execute(
                    insert(deliveries).values(
                        snapshot=r.id, recipient=rid, delivered_at=now, recorded_by=actor
                    )
                )
    return {"snapshot_id": live[0].snapshot_id, "recipient": recipient, "delivered_at": now}


# ---- signing ------------------------------------------------------------------------------


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header (Standard Webhooks, ``v1``: HMAC-SHA256)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_signature(
    secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: int = 300
) -> bool:
    """What a partner runs on a notice: is it from askfirst, and recent?"""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = int(lower["webhook-timestamp"])
        given = lower["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    want = sign(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(want, g) for g in given)


# ---- sending ------------------------------------------------------------------------------


@dataclass
class Sent:
    """What one pass over the outbox did."""

    delivered: int = 0
    failed: int = 0
    pending: int = 0  # still owed after this pass
    next_due_in_s: float | None = None  # when the next one is due, if any

    def to_json(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "pending": self.pending,
            "next_due_in_s": self.next_due_in_s,
        }


def backoff_s(attempts: int, base_s: float) -> float:
    """The wait before the next try after ``attempts`` failures: doubling, capped at an
    hour, with +-20% jitter so that partners coming back up are not hit all at once."""
    delay: float = min(base_s * 2 ** max(attempts - 1, 0), MAX_DELAY_S)
    return delay * random.uniform(0.8, 1.2)


def _claim(ledger: Ledger, limit: int) -> list[Any]:
    now = times.to_micros(times.now())
    claimed = []
    with store.write(ledger.engine) as conn:
        due = conn.execute(
            select(outbox, recipients.c.url, recipients.c.secret)
            .join(recipients, recipients.c.id == outbox.c.recipient)
            .where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(limit)
        ).all()
        for row in due:
            got = conn.execute(
                update(outbox)
                .where(
                    outbox.c.id == row.id,
                    outbox.c.next_attempt_at == row.next_attempt_at,
                    outbox.c.delivered_at.is_(None),
                )
                .values(next_attempt_at=now + LEASE_US)
            )
            if got.rowcount == 1:
                claimed.append(row)
    return claimed


def _pinned(url: str) -> tuple[httpx.URL, dict[str, str], dict[str, Any]] | str:
    """Where to send a notice for ``url``: the URL with its host resolved now and checked
    (a name may have been re-pointed since the partner was added), plus the Host header
    and TLS server name that keep the partner's name; or why it may not be sent.

    The connection goes to the very address that was checked: a name that answers one
    address to the check and another to the connection (DNS rebinding) cannot steer the
    request inside the network."""
    parsed = httpx.URL(url)
    try:
        addrs = _resolve(parsed.host, parsed.port or 443)
    except (OSError, UnicodeError) as e:
        return f"cannot resolve webhook host {parsed.host!r}: {e}"[:500]
    refused = _refusal(parsed.host, addrs)
    if refused is not None:
        return refused
    if not addrs:
        return f"cannot resolve webhook host {parsed.host!r}: no address"
    if str(addrs[0]) == parsed.host.strip("[]"):
        return parsed, {}, {}
    extensions: dict[str, Any] = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
    return parsed.copy_with(host=str(addrs[0])), {"host": parsed.netloc.decode()}, extensions


def _send(client: httpx.Client, row: Any, left_s: float | None = None) -> str | None:
    """POST one notice; None when the partner took it, else what went wrong. With
    ``left_s``, every part of the request's timeout is cut to that many seconds."""
    target = _pinned(row.url)
    if isinstance(target, str):
        return target
    url, host_header, extensions = target
    body = row.payload.encode()
    ts = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": row.idempotency_key,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(row.secret, row.idempotency_key, ts, body),
        "idempotency-key": row.idempotency_key,
        "user-agent": "askfirst-notices/1",
        **host_header,
    }
    timeout = client.timeout
    if left_s is not None:
        timeout = httpx.Timeout(
            connect=_cap(timeout.connect, left_s),
            read=_cap(timeout.read, left_s),
            write=_cap(timeout.write, left_s),
            pool=_cap(timeout.pool, left_s),
        )
    try:
        response = client.post(
            url, content=body, headers=headers, timeout=timeout, extensions=extensions
        )
    except httpx.TimeoutException as e:
        return f"timed out ({type(e).__name__})"
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"[:500]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def _cap(seconds: float | None, left_s: float) -> float:
    return left_s if seconds is None else min(seconds, left_s)


def _release(ledger: Ledger, rows: list[Any]) -> None:
    """Give back claimed notices that were not tried: due again as they were."""
    if not rows:
        return
    with store.write(ledger.engine) as conn:
        for row in rows:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == row.id, outbox.c.delivered_at.is_(None))
                .values(next_attempt_at=row.next_attempt_at)
            )


def deliver_due(
    ledger: Ledger,
    *,
    client: httpx.Client | None = None,
    limit: int = 100,
    base_delay_s: float = 1.0,
    deadline: float | None = None,
) -> Sent:
    """Send the notices that are due, once each; schedule a retry for each failure.

    With ``deadline`` (a ``time.monotonic()`` reading), no send starts after it and
    each send's timeout is cut to the time left."""
    own = client is None
    http = client or httpx.Client(timeout=10.0)
    done = Sent()
    try:
        claimed = _claim(ledger, limit)
        for i, row in enumerate(claimed):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                _release(ledger, claimed[i:])
                break
            problem = _send(http, row, left)
            now = times.to_micros(times.now())
            with store.write(ledger.engine) as conn:
                if problem is None:
                    conn.execute(
                        update(outbox)
                        .where(outbox.c.id == row.id)
                        .values(delivered_at=now, attempts=row.attempts + 1, last_error=None)
                    )
                    done.delivered += 1
                else:
                    wait = backoff_s(row.attempts + 1, base_delay_s)
                    conn.execute(
                        update(outbox)
                        .where(outbox.c.id == row.id)
                        .values(
                            attempts=row.attempts + 1,
                            next_attempt_at=now + int(wait * times.MICROS),
                            last_error=problem,
                        )
                    )
                    done.failed += 1
    finally:
        if own:
            http.close()
    with ledger.engine.connect() as conn:
        done.pending, first = conn.execute(
            select(func.count(), func.min(outbox.c.next_attempt_at)).where(
                outbox.c.delivered_at.is_(None)
            )
        ).one()
    if first is not None:
        done.next_due_in_s = max(0.0, (first - times.to_micros(times.now())) / times.MICROS)
    return done


def run_outbox(
    ledger: Ledger,
    *,
    until_empty: bool = False,
    max_seconds: float | None = None,
    base_delay_s: float = 1.0,
    poll_s: float = 5.0,
) -> Sent:
    """Keep sending: until nothing is owed (``until_empty``), or ``max_seconds`` pass,
    or for ever. Returns the totals."""
    total = Sent()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    with httpx.Client(timeout=10.0) as client:
        while True:
            sent = deliver_due(ledger, client=client, base_delay_s=base_delay_s, deadline=deadline)
            total.delivered += sent.delivered
            total.failed += sent.failed
            total.pending, total.next_due_in_s = sent.pending, sent.next_due_in_s
            if until_empty and sent.pending == 0:
                return total
            wait = poll_s if sent.next_due_in_s is None else min(poll_s, sent.next_due_in_s)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return total
                wait = min(wait, left)
            if (sent.delivered or sent.failed) and wait <= 0:
                continue  # more are due at once
            time.sleep(max(wait, 0.01))


def list_outbox(ledger: Ledger, *, pending_only: bool = False) -> list[dict[str, Any]]:
    """The notices, newest first: to whom, what, tries, and whether delivered."""
    q = (
        select(outbox, recipients.c.name)
        .join(recipients, recipients.c.id == outbox.c.recipient)
        .order_by(outbox.c.id.desc())
    )
    if pending_only:
        q = q.where(outbox.c.delivered_at.is_(None))
    with ledger.engine.connect() as conn:
        rows = conn.execute(q).all()
    return [
        {
            "id": r.id,
            "recipient": r.name,
            "idempotency_key": r.idempotency_key,
            "kind": r.kind,
            "payload": json.loads(r.payload),
            "created_at": times.iso(r.created_at),
            "attempts": r.attempts,
            "next_attempt_at": times.iso(r.next_attempt_at) if r.delivered_at is None else None,
            "delivered_at": times.iso(r.delivered_at) if r.delivered_at is not None else None,
            "last_error": r.last_error,
        }
        for r in rows
    ]
