"""Wakes the progress streams of this process as soon as a generation changes.

Streams still re-read the database on a short timeout, so a worker in another process (which cannot reach this
object) is seen too; in-process, a finished job reaches the client without waiting for the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict


class GenerationSignals:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, generation_id: str) -> None:
        """Callable from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, generation_id)

    def _wake(self, generation_id: str) -> None:
        for event in self._waiters.get(generation_id, ()):
            event.set()

    def listen(self, generation_id: str) -> asyncio.Event:
        """Register before reading the state, so a change in between is not missed."""
        event = asyncio.Event()
        self._waiters[generation_id].add(event)
        return event

    def forget(self, generation_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(generation_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[generation_id]

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
