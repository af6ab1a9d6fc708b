"""Which GPU workers are alive, idle, and have which checkpoints loaded: a few Redis keys each worker refreshes.

    imagen:fleet:workers              set of worker names ever seen (pruned when found dead)
    imagen:fleet:worker:<name>        {"queue": ..., "loaded": [sha256...]}, expires after `ttl` unless refreshed
    imagen:fleet:idle:<name>          present while the worker waits for work (same expiry)
    imagen:fleet:routed:<name>        ids of the tickets sent to its own queue and not yet taken

A worker is alive while its `worker:` key exists. Routing a ticket to an idle worker deletes its `idle:` key first
(DEL answers 1 to one caller only), so two submits never pick the same idle worker; the ticket is remembered under
`routed:` until the worker takes it, so a worker that dies first does not take the ticket with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass

log = logging.getLogger(__name__)

PREFIX = "imagen:fleet:"


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    queue: str
    loaded: frozenset[str]
    idle: bool


class WorkerRegistry:
    def __init__(self, redis_url: str, *, ttl_seconds: float) -> None:
        import redis  # the `fleet` extra

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.ttl_ms = max(1000, int(ttl_seconds * 1000))

    # ---- a worker about itself ----
    def publish(self, name: str, *, queue: str, loaded: Collection[str], idle: bool) -> None:
        """Alive for another `ttl`; idle only when no ticket routed to it is still waiting."""
        waiting = self.redis.llen(f"{PREFIX}routed:{name}")
        pipe = self.redis.pipeline()
        pipe.sadd(f"{PREFIX}workers", name)
        pipe.set(f"{PREFIX}worker:{name}", json.dumps({"queue": queue, "loaded": sorted(loaded)}), px=self.ttl_ms)
        if idle and not waiting:
            pipe.set(f"{PREFIX}idle:{name}", "1", px=self.ttl_ms)
        else:
            pipe.delete(f"{PREFIX}idle:{name}")
        pipe.execute()

    def busy(self, name: str, took: str | None = None) -> None:
        pipe = self.redis.pipeline()
        pipe.delete(f"{PREFIX}idle:{name}")
        if took is not None:
            pipe.lrem(f"{PREFIX}routed:{name}", 1, took)
        pipe.execute()

    def forget(self, name: str) -> list[str]:
        """Remove a worker (stopped, or found dead); returns the tickets routed to it and not taken."""
        pipe = self.redis.pipeline()
        pipe.lrange(f"{PREFIX}routed:{name}", 0, -1)
        pipe.delete(f"{PREFIX}routed:{name}", f"{PREFIX}worker:{name}", f"{PREFIX}idle:{name}")
        pipe.srem(f"{PREFIX}workers", name)
        routed = pipe.execute()[0]
        return [r.decode() if isinstance(r, bytes) else r for r in routed]

    # ---- about the fleet ----
    def workers(self) -> list[WorkerInfo]:
        names = sorted(_text(n) for n in self.redis.smembers(f"{PREFIX}workers"))
        if not names:
            return []
        pipe = self.redis.pipeline()
        for name in names:
            pipe.get(f"{PREFIX}worker:{name}")
            pipe.exists(f"{PREFIX}idle:{name}")
        answers = pipe.execute()
        found = []
        for name, info, idle in zip(names, answers[::2], answers[1::2], strict=True):
            if info is not None:
                data = json.loads(info)
                found.append(WorkerInfo(name, data["queue"], frozenset(data["loaded"]), bool(idle)))
        return found

    def dead(self) -> list[str]:
        """Workers seen before whose presence expired."""
        names = [_text(n) for n in self.redis.smembers(f"{PREFIX}workers")]
        if not names:
            return []
        alive = self.redis.mget([f"{PREFIX}worker:{name}" for name in names])
        return [name for name, info in zip(names, alive, strict=True) if info is None]

    def reserve(self, checkpoint_sha256: str, ticket: str) -> WorkerInfo | None:
        """An idle worker with the checkpoint loaded, taken for this ticket (no longer idle), or None."""
        for worker in self.workers():
            # DEL answers 1 to one caller only: two submits never take the same idle worker.
            if (worker.idle and checkpoint_sha256 in worker.loaded
                    and self.redis.delete(f"{PREFIX}idle:{worker.name}") == 1):
                self.redis.rpush(f"{PREFIX}routed:{worker.name}", ticket)
                return worker
        return None

    def reserve_self(self, name: str) -> bool:
        """Take this idle worker for a ticket it sends itself (False: someone routed one here meanwhile)."""
        if self.redis.delete(f"{PREFIX}idle:{name}") == 1:
            self.redis.rpush(f"{PREFIX}routed:{name}", "")
            return True
        return False

    def close(self) -> None:
        self.redis.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
