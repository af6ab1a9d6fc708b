"""Bounded requests: a body limit on every endpoint, and per-sender limits for public forms.

Body limit: `IMAGEN_MAX_BODY_BYTES` (1 MiB) unless the endpoint says otherwise with `@body_limit(n)`;
`@body_limit(None)` marks an endpoint that reads and limits its body itself (the streaming asset upload). A
Content-Length over the limit is refused before the application sees the request; a body without one (chunked)
is counted as it is read and cut off at the limit. Either way: 413 naming the limit, nothing read past it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__imagen_body_limit__"
_UNSET = object()


def body_limit(max_bytes: int | None) -> Callable[[F], F]:
    """This endpoint's body limit in bytes instead of the default; None: the endpoint limits its body itself."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _ATTR, max_bytes)
        return endpoint

    return mark


def reads_own_body(scope: Scope) -> bool:
    """The routed endpoint streams and limits its own body (nothing else may read it whole)."""
    return getattr(scope.get("endpoint"), _ATTR, _UNSET) is None


def too_large_detail(limit: int) -> str:
    return f"Request body too large: this endpoint accepts at most {limit} bytes ({_size(limit)})"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes its limit; FastAPI re-raises it as it reads the body."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=too_large_detail(limit))


class BodyLimitMiddleware:
    """Pure ASGI. Routing is consulted only for a body over the default, to find an endpoint's own limit."""

    def __init__(self, app: ASGIApp, *, default: int, routes: Callable[[], list[Any]]) -> None:
        self.app = app
        self.default = default
        self._routes = routes  # the app's routes, read once on first need (routers are included after this)
        self._overrides: list[tuple[Any, int | None]] | None = None
        self._floor = default

    def _load_overrides(self) -> list[tuple[Any, int | None]]:
        if self._overrides is None:
            self._overrides = [(ctx, getattr(ctx.endpoint, _ATTR)) for ctx in iter_route_contexts(self._routes())
                               if hasattr(ctx.endpoint, _ATTR)]
            # Below this size no endpoint's limit can be passed, so routing needn't be consulted.
            self._floor = min([self.default, *(limit for _, limit in self._overrides if limit is not None)])
        return self._overrides

    def _limit_for(self, scope: Scope) -> int | None:
        endpoint = scope.get("endpoint")
        if endpoint is not None:  # routed already
            return getattr(endpoint, _ATTR, self.default)
        for ctx, limit in self._load_overrides():
            if ctx.matches(scope)[0] is Match.FULL:
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self._load_overrides()
        declared = _content_length(scope)
        if declared is not None and declared > self._floor:
            limit = self._limit_for(scope)
            if limit is None:
                await self.app(scope, receive, send)
                return
            if declared > limit:
                response = JSONResponse({"detail": too_large_detail(limit)}, status_code=413,
                                        headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._floor:
                    limit = self._limit_for(scope)
                    if limit is not None and received > limit:
                        raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class SenderLimiter:
    """At most `limit` hits per key within `window` seconds, in this process's memory (keys: addresses, emails).

    Nothing is stored beyond the window; the number of keys kept is bounded (the least recently used go first).
    """

    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_keys, self.clock = limit, window, max_keys, clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, *keys: str) -> int | None:
        """Count a hit on every key; None if allowed, else the seconds until it would be (nothing counted then)."""
        now = self.clock()
        with self._lock:
            queues = [self._queue(key, now) for key in keys]
            full = [q[0] + self.window - now for q in queues if len(q) >= self.limit]
            if full:
                return max(1, math.ceil(max(full)))
            for q in queues:
                q.append(now)
            return None

    def _queue(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits
