"""Fair queueing: round-robin between users who have queued jobs, oldest job first within a user.

Among choices that are equally fair, a job for a checkpoint that is already loaded goes first, so the
worker doesn't swap multi-gigabyte models back and forth: between users tied for the least recent turn,
and between one user's own jobs (serving any of them is the same turn).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class QueuedJob:
    id: str
    user_id: str
    created_at: datetime
    checkpoint_sha256: str = ""


class FairQueue:
    """Remembers when each user was last served; the user served longest ago (or never) goes next."""

    def __init__(self) -> None:
        self._turn = 0
        self._last_served: dict[str, int] = {}

    def choose(self, queued: Sequence[QueuedJob], loaded: Collection[str] = ()) -> QueuedJob | None:
        if not queued:
            return None
        turn = min(self._last_served.get(j.user_id, -1) for j in queued)
        tied = [j for j in queued if self._last_served.get(j.user_id, -1) == turn]
        warm = [j for j in tied if j.checkpoint_sha256 in loaded]
        return min(warm or tied, key=lambda j: (j.created_at, j.id))

    def served(self, user_id: str) -> None:
        self._turn += 1
        self._last_served[user_id] = self._turn
