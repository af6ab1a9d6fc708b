"""Fair queueing: round-robin between users who have queued jobs, oldest job first within a user.

Among choices that are equally fair, a job for a checkpoint that is already loaded goes first, so the
worker doesn't swap multi-gigabyte models back and forth: between users tied for the least recent turn,
and between one user's own jobs (serving any of them is the same turn).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from imagen.generation.models import Generation


@dataclass(frozen=True)
class QueuedJob:
    id: str
    user_id: str
    created_at: datetime
    checkpoint_sha256: str = ""


class FairQueue:
    """Remembers when each user was last served; the user served longest ago (or never) goes next."""

    shared = False  # this process's memory (the embedded lane); SharedFairQueue: the database (a fleet)

    def __init__(self) -> None:
        self._turn = 0
        self._last_served: dict[str, int] = {}

    def lock(self, session: Session) -> None:
        """Hold off other claimers until the transaction ends (one process: its one lane needs none)."""

    def load(self, session: Session, user_ids: Collection[str]) -> None:
        """Read the state `choose` needs (kept here in memory: nothing to read)."""

    def next_turn(self, session: Session) -> int | None:
        """The claim's turn to record in the database (None: only this process's memory keeps turns)."""
        return None

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


class SharedFairQueue(FairQueue):
    """The same choice, with "last served" kept in the database, so every worker of a fleet shares it.

    A claim's turn is one more than the largest turn of any claim (`generations.served_turn`); a user's last turn is
    the largest among their generations. Claims are serialized (a transaction-scoped lock), so two workers never
    both serve the same "least recently served" user at once, and turns never repeat.
    """

    shared = True

    def lock(self, session: Session) -> None:
        _lock_claims(session)

    def load(self, session: Session, user_ids: Collection[str]) -> None:
        if not user_ids:
            return
        rows = session.execute(
            select(Generation.user_id, func.max(Generation.served_turn))
            .where(Generation.user_id.in_(list(user_ids)), Generation.served_turn.is_not(None))
            .group_by(Generation.user_id)).all()
        self._last_served = {user_id: turn for user_id, turn in rows}

    def next_turn(self, session: Session) -> int:
        return (session.scalar(select(func.max(Generation.served_turn))) or 0) + 1


CLAIM_LOCK = 0x1_6E6A_C1A1  # an arbitrary key of PostgreSQL's advisory locks: "imagen claims"


def _lock_claims(session: Session) -> None:
    """Until the transaction ends: PostgreSQL's advisory lock; SQLite's write lock (an update of nothing)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
    else:
        session.execute(update(Generation).where(Generation.id == "").values(status=Generation.status)
                        .execution_options(synchronize_session=False))
