"""Wakes the progress streams of this process as soon as a generation changes.

Streams still re-read the database on a short timeout (the fallback); in-process, a finished job reaches the client
without waiting for the next poll. In a fleet, `RedisGenerationSignals` carries the same wake (and cancels) between
processes through Redis pub/sub.

They also carry a running job's newest live preview (imagen/inference/preview.py), which is transient: kept in
memory (in a fleet, a Redis key that expires within a minute), replaced by the next one and dropped when the job
ends; never written to the database or the blob store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Callable

log = logging.getLogger(__name__)


class GenerationSignals:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._previews: dict[str, str] = {}  # generation id -> data URL of its newest preview (memory only)

    # -- live previews (transient) ---------------------------------------------------------------------------------

    def set_preview(self, generation_id: str, jpeg: bytes) -> None:
        """Callable from any thread; the caller then `notify`s, so the streams send it."""
        self._previews.pop(generation_id, None)
        self._previews[generation_id] = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
        while len(self._previews) > MAX_PREVIEWS:  # bounded whatever happens to ends
            self._previews.pop(next(iter(self._previews)), None)

    def preview(self, generation_id: str) -> str | None:
        """The newest preview of a running job as a data URL, or None. May block (Redis): call it off the loop."""
        return self._previews.get(generation_id)

    def drop_preview(self, generation_id: str) -> None:
        self._previews.pop(generation_id, None)

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


MAX_PREVIEWS = 64  # previews held at once (one per running job; more only if ends were missed)
PREVIEW_KEY = "imagen:generation:preview:"  # + id: a fleet worker's newest preview, read by the web's streams
PREVIEW_TTL_SECONDS = 60
CHANGED_CHANNEL = "imagen:generation:changed"  # a job's row changed: streams re-read it
CANCEL_CHANNEL = "imagen:generation:cancel"  # a cancel or delete committed: the worker running it stops


class RedisGenerationSignals(GenerationSignals):
    """The fleet's signals: the same waits, woken across processes through Redis pub/sub.

    `notify` wakes this process's streams and publishes the id; a process that subscribes to CHANGED_CHANNEL (the
    web) wakes its streams for what a worker published, so the SSE stream of a job run on another machine moves at
    once. Cancels go out on CANCEL_CHANNEL to `on_cancel` (the workers). Redis away: a warning, and the database poll
    of the streams (and the progress write's `cancel_requested`) carry on alone.
    """

    def __init__(self, redis_url: str, *, channels: tuple[str, ...] = ()) -> None:
        super().__init__()
        import redis  # the `fleet` extra

        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.channels = channels
        self.on_cancel: Callable[[str], None] = lambda _id: None
        self.received = 0  # messages taken from Redis (the tests check that the wake came this way)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def notify(self, generation_id: str) -> None:
        super().notify(generation_id)
        self._publish(CHANGED_CHANNEL, generation_id)

    def set_preview(self, generation_id: str, jpeg: bytes) -> None:
        super().set_preview(generation_id, jpeg)
        try:
            self.redis.set(PREVIEW_KEY + generation_id, self._previews[generation_id], ex=PREVIEW_TTL_SECONDS)
        except (KeyError, *self._redis_errors):  # no preview is no harm: the progress goes on
            pass

    def preview(self, generation_id: str) -> str | None:
        local = super().preview(generation_id)
        if local is not None:
            return local
        try:
            value = self.redis.get(PREVIEW_KEY + generation_id)
        except self._redis_errors:
            return None
        return _text(value) if value is not None else None

    def drop_preview(self, generation_id: str) -> None:
        super().drop_preview(generation_id)
        with contextlib.suppress(*self._redis_errors):
            self.redis.delete(PREVIEW_KEY + generation_id)

    def publish_cancel(self, generation_id: str) -> None:
        self._publish(CANCEL_CHANNEL, generation_id)

    def _publish(self, channel: str, generation_id: str) -> None:
        try:
            self.redis.publish(channel, generation_id)
            self._warned = False
        except self._redis_errors as exc:
            if not self._warned:  # once per outage: progress writes come several times a second
                log.warning("Redis unavailable, streams fall back to polling: %s", exc)
            self._warned = True

    def start(self) -> None:
        if self.channels and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._subscribe, name="imagen-signals", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.redis.close()

    def _subscribe(self) -> None:
        while not self._stop.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(*self.channels)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    self.received += 1
                    channel, generation_id = _text(message["channel"]), _text(message["data"])
                    if channel == CANCEL_CHANNEL:
                        self.on_cancel(generation_id)
                    else:
                        super().notify(generation_id)
            except self._redis_errors as exc:
                log.warning("Redis subscription lost (%s); retrying", exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("signal subscriber error")
                self._stop.wait(1.0)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
