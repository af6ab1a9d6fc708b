"""How the server stays answerable under load: a gate for database work, and a cap on each user's open streams.

The freeze this prevents: every sync dependency and endpoint runs in a slot of the worker-thread pool, and a request
keeps its database connection from the first query to the commit, across those slots. With more requests than
connections, requests holding a connection waited for a thread while every thread waited for a connection.

`RequestGate` admits at most `IMAGEN_WORKER_THREADS` requests into database work at once (the request session
takes a slot before it is created, `kit/http.py`); the rest wait on the event loop, holding neither a thread nor a
connection. The pool has a connection for every admitted request plus a reserve for background work, so an admitted
request never waits for a connection, and since it uses one thread at a time it never waits long for a thread.
A request that waits longer than `IMAGEN_REQUEST_QUEUE_SECONDS`, or arrives when `IMAGEN_REQUEST_QUEUE_LIMIT`
requests are already waiting, is answered 503 with Retry-After at once instead of joining a freeze.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

RETRY_AFTER_SECONDS = 2


class Busy(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status_code=503, detail=detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class RequestGate:
    """At most `size` holders at once; waiters wait on the event loop, bounded in number and time."""

    def __init__(self, size: int, *, max_wait: float, max_waiting: int) -> None:
        self.size, self.max_wait, self.max_waiting = size, max_wait, max_waiting
        self._free = asyncio.Semaphore(size)
        self.waiting = self.holding = 0

    async def acquire(self, *, bounded: bool = True) -> None:
        """`bounded=False` (a stream or upload that is already under way) waits as long as it takes."""
        if bounded and self._free.locked() and self.waiting >= self.max_waiting:
            raise Busy(f"The server is busy ({self.waiting} requests waiting); try again in a moment")
        self.waiting += 1
        try:
            if bounded:
                async with asyncio.timeout(self.max_wait):
                    await self._free.acquire()
            else:
                await self._free.acquire()
        except TimeoutError:
            raise Busy(f"The server is busy (no capacity within {self.max_wait:g} s); try again in a moment"
                       ) from None
        finally:
            self.waiting -= 1
        self.holding += 1

    def release(self) -> None:
        self.holding -= 1
        self._free.release()

    @asynccontextmanager
    async def slot(self, *, bounded: bool = True) -> AsyncIterator[Slot]:
        """A slot for the block, which the block may step out of while it waits on its client (`Slot`)."""
        await self.acquire(bounded=bounded)
        held = Slot(self)
        try:
            yield held
        finally:
            if held.held:
                self.release()


class Slot:
    """A request's slot. An endpoint that waits on its client for long (an upload's body) steps out first, with
    nothing open in the database, so slow clients cannot hold every slot."""

    def __init__(self, gate: RequestGate) -> None:
        self.gate, self.held = gate, True

    def step_out(self) -> None:
        if self.held:
            self.held = False
            self.gate.release()

    async def step_in(self) -> None:
        if not self.held:
            await self.gate.acquire(bounded=False)  # the client has done its part: it is served, however late
            self.held = True


class OpenStreams:
    """Open long-lived streams per user, in this process. Touched only on the event loop, so no lock."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: dict[str, int] = {}

    def open(self, user_id: str) -> bool:
        count = self._open.get(user_id, 0)
        if count >= self.per_user:
            return False
        self._open[user_id] = count + 1
        return True

    def close(self, user_id: str) -> None:
        count = self._open.get(user_id, 0) - 1
        if count > 0:
            self._open[user_id] = count
        else:
            self._open.pop(user_id, None)

    def count(self, user_id: str) -> int:
        return self._open.get(user_id, 0)


class CappedStreamingResponse(StreamingResponse):
    """A stream counted against its user's cap for exactly as long as it is being sent.

    Counted when the response starts rather than in the endpoint, so a stream that never starts (the commit failed,
    the client left first) is never counted, and one that ends in any way (done, disconnect, error) is released.
    """

    def __init__(self, content: Any, *, streams: OpenStreams, user_id: str, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._streams, self._user_id = streams, user_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._streams.open(self._user_id):
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
            refusal = JSONResponse(
                {"detail": f"Too many open event streams: at most {self._streams.per_user} per user "
                           "(IMAGEN_SSE_STREAMS_PER_USER); close one first"},
                status_code=429, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
            await refusal(scope, receive, send)
            return
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._streams.close(self._user_id)
