"""Which product events exist, what they may carry, and the gate every one passes (policy §6).

An event is captured only when analytics is configured, the user consented to analytics and the request carries no
Global Privacy Control signal (`consent/cookies.py` `analytics_state`, which also records a GPC withdrawal), and it
is sent only after the request's transaction commits. Each event names the few properties it may carry: never the
email, a prompt, an address or a file name. Nothing here commits.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.analytics.client import Analytics, distinct_id
from imagen.analytics.models import AnalyticsDeletion
from imagen.consent.cookies import analytics_state
from imagen.kit.config import Settings
from imagen.kit.db import Database, run_after_commit, utcnow

log = logging.getLogger(__name__)

# event -> the only properties it may carry
EVENTS: dict[str, frozenset[str]] = {
    "signed_up": frozenset(),
    "generation_submitted": frozenset({"workflow", "size", "steps"}),
    "export_requested": frozenset(),
}
MAX_DELETION_ATTEMPTS = 20


class AnalyticsService:
    def track(self, session: Session, request: Request, *, analytics: Analytics, user: User, event: str,
              **properties: Any) -> bool:
        """Capture `event` for `user` after the commit if they allow it; whether it will be sent."""
        allowed = EVENTS[event]
        if unknown := set(properties) - allowed:
            raise ValueError(f"analytics event {event!r} may not carry {sorted(unknown)}")
        if not analytics.enabled or not analytics_state(session, request, user).allowed:
            return False
        run_after_commit(session, analytics.capture, user.id, event, properties)
        return True

    # ---- erasure: PostHog deletes the person and their events ----
    def request_deletion(self, session: Session, *, settings: Settings, user_id: str) -> str | None:
        """Record that PostHog must forget this account (once); the row's id, or None without PostHog."""
        if settings.analytics != "posthog":
            return None
        pseudonym = distinct_id(settings.resolved_secret_key(), user_id)
        existing = session.scalar(select(AnalyticsDeletion.id).where(AnalyticsDeletion.distinct_id == pseudonym))
        if existing:
            return existing
        row = AnalyticsDeletion(distinct_id=pseudonym)
        session.add(row)
        session.flush()
        return row.id

    def pending_ids(self, session: Session) -> list[str]:
        return list(session.scalars(select(AnalyticsDeletion.id)
                                    .where(AnalyticsDeletion.attempts < MAX_DELETION_ATTEMPTS)
                                    .order_by(AnalyticsDeletion.created_at)))

    def delete_person(self, db: Database, analytics: Analytics, deletion_id: str) -> bool:
        """Ask PostHog; the row goes once it agreed, else keeps the error for the next try. Safe to run twice."""
        with db.transaction() as session:
            row = session.get(AnalyticsDeletion, deletion_id)
            if row is None:
                return True
            pseudonym = row.distinct_id
        try:
            analytics.delete_person(pseudonym)
        except Exception as exc:
            log.warning("PostHog person deletion %s failed: %s", deletion_id, exc)
            with db.transaction() as session:
                session.execute(update(AnalyticsDeletion).where(AnalyticsDeletion.id == deletion_id).values(
                    attempts=AnalyticsDeletion.attempts + 1, last_attempt_at=utcnow(),
                    error=f"{type(exc).__name__}: {exc}"[:2000]))
            return False
        with db.transaction() as session:
            session.execute(delete(AnalyticsDeletion).where(AnalyticsDeletion.id == deletion_id))
        return True


analytics_service = AnalyticsService()
