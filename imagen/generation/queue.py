"""Fair queueing: round-robin between users who have queued jobs, oldest job first within a user."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class QueuedJob:
    id: str
    user_id: str
    created_at: datetime


class FairQueue:
    """Remembers when each user was last served; the user served longest ago (or never) goes next."""

    def __init__(self) -> None:
        self._turn = 0
        self._last_served: dict[str, int] = {}

    def choose(self, queued: Sequence[QueuedJob]) -> QueuedJob | None:
        if not queued:
            return None
        oldest_per_user: dict[str, QueuedJob] = {}
        for job in sorted(queued, key=lambda j: (j.created_at, j.id)):
            oldest_per_user.setdefault(job.user_id, job)
        return min(
            oldest_per_user.values(),
            key=lambda j: (self._last_served.get(j.user_id, -1), j.created_at, j.id),
        )

    def served(self, user_id: str) -> None:
        self._turn += 1
        self._last_served[user_id] = self._turn
