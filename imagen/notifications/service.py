"""Writing and reading in-app notifications. Callers pass the session; nothing here commits."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imagen.kit.db import utcnow
from imagen.kit.scoped import get_owned, owned
from imagen.notifications.models import Notification


class NotificationService:
    def notify(self, session: Session, *, user_id: str, kind: str, title: str, body: str = "",
               link: str | None = None) -> Notification:
        note = Notification(user_id=user_id, kind=kind, title=title, body=body, link=link)
        session.add(note)
        session.flush()
        return note

    def notify_all(self, session: Session, *, kind: str, title: str, body: str = "", link: str | None = None) -> int:
        """One notice to every account (policy changes, business transfers)."""
        from imagen.accounts.models import User

        user_ids = list(session.scalars(select(User.id)))
        for user_id in user_ids:
            session.add(Notification(user_id=user_id, kind=kind, title=title, body=body, link=link))
        session.flush()
        return len(user_ids)

    def list(self, session: Session, *, user_id: str, unread_only: bool = False,
             limit: int = 100) -> list[Notification]:
        query = owned(Notification, user_id).order_by(Notification.created_at.desc(), Notification.id.desc())
        if unread_only:
            query = query.where(Notification.read_at.is_(None))
        return list(session.scalars(query.limit(limit)))

    def mark_read(self, session: Session, *, user_id: str, notification_id: str) -> Notification:
        note = get_owned(session, Notification, notification_id, user_id, what="Notification")
        note.read_at = note.read_at or utcnow()
        return note

    def mark_all_read(self, session: Session, *, user_id: str) -> int:
        return session.execute(
            update(Notification).where(Notification.user_id == user_id, Notification.read_at.is_(None))
            .values(read_at=utcnow())
        ).rowcount


notification_service = NotificationService()
