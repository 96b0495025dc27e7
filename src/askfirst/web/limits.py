"""How much one client may ask: rate limits in bounded memory, and request-body caps.

:class:`RateLimiter` counts events per key (a normalised username, a client address) in
a sliding window. Its table holds at most ``max_keys`` keys: when a spray of distinct
names or addresses fills it, the key used least recently is forgotten, so memory stays
bounded whatever is sent.

:class:`BodyLimit` is an ASGI middleware that caps request bodies per route before
anything parses them: a ``Content-Length`` over the cap is answered 413 at once, and a
chunked body is counted as it arrives and refused the moment it passes the cap.

:class:`AnonymousLimit` limits, per client address, the API routes anyone may call
without signing in (verifying a receipt): 429 with ``Retry-After``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Hashable, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from askfirst import jsontext
from askfirst.errors import InputError

MIB = 1 << 20
# The batch decisions endpoint takes up to 10,000 ids of up to 255 characters each.
BATCH_BODY_BYTES = 4 * MIB
# A consent receipt is a few hundred bytes of JSON.
RECEIPT_BODY_BYTES = 64 * 1024
# Keys a limiter remembers at most (a few hundred bytes each).
MAX_KEYS = 10_000


class RateLimiter:
    """At most ``limit`` events per key within ``window_s`` seconds, in bounded memory."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window_s, self.max_keys, self._clock = limit, window_s, max_keys, clock
        self._events: OrderedDict[Hashable, deque[float]] = OrderedDict()
        self._lock = threading.Lock()  # sync routes run on a thread pool

    def __len__(self) -> int:
        return len(self._events)

    def retry_after(self, key: Hashable) -> int:
        """Seconds until ``key`` may act again; 0 when it may now."""
        with self._lock:
            return self._wait(key, self._clock())

    def hit(self, key: Hashable) -> None:
        """Count one event for ``key``."""
        with self._lock:
            self._record(key, self._clock())

    def take(self, key: Hashable) -> int:
        """Count one event for ``key`` if it is allowed now and return 0; otherwise count
        nothing and return the seconds to wait."""
        with self._lock:
            now = self._clock()
            wait = self._wait(key, now)
            if not wait:
                self._record(key, now)
            return wait

    def _wait(self, key: Hashable, now: float) -> int:
        events = self._events.get(key)
        if events is None:
            return 0
        while events and now - events[0] >= self.window_s:
            events.popleft()
        if len(events) < self.limit:
            return 0
        return max(1, math.ceil(events[0] + self.window_s - now))

    def _record(self, key: Hashable, now: float) -> None:
        events = self._events.get(key)
        if events is None:
            while len(self._events) >= self.max_keys:
                self._events.popitem(last=False)  # the key used least recently
            events = self._events[key] = deque(maxlen=max(self.limit, 1))
        else:
            self._events.move_to_end(key)
        events.append(now)


def client_address(scope: Scope) -> str:
    """The client's address as the server saw it (behind a proxy, run uvicorn with
    ``--proxy-headers`` so that it is the visitor's, not the proxy's)."""
    client = scope.get("client")
    return str(client[0]) if client else "?"


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: Mapping[str, str]
) -> None:
    payload = json.dumps(body).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _size(limit: int) -> str:
    if limit % MIB == 0:
        return f"{limit // MIB} MiB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


class BodyTooLarge(HTTPException):
    """A request body past its route's cap, found while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than this route's limit of {_size(limit)} ({limit} bytes)",
        )


class BodyLimit:
    """Cap request bodies, per route, before anything parses them.

    ``routes`` maps ``(method, path)`` to a cap in bytes; every other request may send
    ``default`` bytes. A declared ``Content-Length`` over the cap is answered 413 without
    calling the app; a body without one (chunked) is counted as it arrives, and the read
    that passes the cap raises :class:`BodyTooLarge`, which the app answers 413 (JSON for
    the API, a page for pages).
    """

    def __init__(self, app: ASGIApp, default: int, routes: Mapping[tuple[str, str], int]) -> None:
        self.app, self.default, self.routes = app, default, dict(routes)

    def limit_for(self, scope: Scope) -> int:
        return self.routes.get((scope["method"], scope["path"]), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = [v for k, v in scope["headers"] if k == b"content-length"]
        if declared:
            text = declared[0].decode("latin-1").strip()
            if not text.isdigit():
                await _send_json(
                    send, 400, {"error": f"Content-Length {text!r} is not a number of bytes"}, {}
                )
                return
            if int(text) > limit:
                await _send_json(
                    send, 413, {"error": BodyTooLarge(limit).detail, "limit": limit}, {}
                )
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as e:  # read outside a route (the app's handlers answer inside)
            if started:
                raise
            await _send_json(send, 413, {"error": e.detail, "limit": limit}, {})


class AnonymousLimit:
    """Limit, per client address, the routes anyone may call without signing in."""

    def __init__(
        self, app: ASGIApp, limiter: RateLimiter, routes: frozenset[tuple[str, str]]
    ) -> None:
        self.app, self.limiter, self.routes = app, limiter, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self.routes:
            wait = self.limiter.take(client_address(scope))
            if wait:
                error = (
                    f"too many requests from your address: at most {self.limiter.limit} "
                    f"per {_seconds(self.limiter.window_s)}; try again in {wait} s"
                )
                await _send_json(send, 429, {"error": error}, {"Retry-After": str(wait)})
                return
        await self.app(scope, receive, send)


def _seconds(window_s: float) -> str:
    return "minute" if window_s == 60 else f"{window_s:g} seconds"


class SigninLimits:
    """Failed sign-ins, counted per account and per client address.

    Per account (the username as :func:`askfirst.accounts.normal_username` reads it, so
    ``" Anna "`` and ``"anna"`` are one account) a few failures from anywhere stop
    guessing at that account's password; per address a few more stop one client
    spraying guesses over many usernames.
    """

    def __init__(self, per_account: int, per_address: int, window_s: float) -> None:
        self.accounts = RateLimiter(per_account, window_s)
        self.addresses = RateLimiter(per_address, window_s)

    def wait(self, address: str, account: str) -> int:
        """Seconds until this address may try to sign in as this account; 0 for now."""
        return max(self.accounts.retry_after(account), self.addresses.retry_after(address))

    def failed(self, address: str, account: str) -> None:
        self.accounts.hit(account)
        self.addresses.hit(address)


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = jsontext.loads(await self.body())
            except InputError as e:
                raise HTTPException(400, f"the request body: {e}") from None
        return self._json


class StrictJsonRoute(APIRoute):
    """An API route that reads its JSON body as :func:`askfirst.jsontext.loads` does: a key
    given twice in one object, or nesting past ``MAX_DEPTH``, is 400 naming it (plain JSON
    readers keep the last key and run out of stack)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict
