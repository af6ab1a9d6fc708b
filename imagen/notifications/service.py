"""Writing and reading in-app notifications. Callers pass the session; nothing here commits.

A caller that passes the app's outbox also emails the notice (kind `notice.<kind>`, declared in the data map as
`notice_emails`) when a real mail backend is configured (`Outbox.delivers`: SMTP or Postmark); the outbox backend
only logs mail, so then the notice stays in-app. The email goes after the commit, once, and never to a suppressed
address (the outbox row says so).
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.kit.db import utcnow
from imagen.kit.scoped import get_owned, owned
from imagen.mail.outbox import Outbox
from imagen.notifications.models import Notification

# The notices that are emailed as well as shown in-app (policy §4.4, §9, §11; export ready).
EMAILED_KINDS = ("export_ready", "policy_changed", "breach", "business_transfer")
NOTICE_MAIL_KINDS = tuple(f"notice.{kind}" for kind in EMAILED_KINDS)


def notice_text(outbox: Outbox, *, title: str, body: str, link: str | None) -> str:
    parts = [title, body] if body else [title]
    if link:
        parts.append(f"https://{outbox.domain}{link}")
    parts.append("You get this message because you have an account with us; it is also in your notifications.")
    return "\n\n".join(parts)


class NotificationService:
    def notify(self, session: Session, *, user_id: str, kind: str, title: str, body: str = "",
               link: str | None = None, outbox: Outbox | None = None) -> Notification:
        note = Notification(user_id=user_id, kind=kind, title=title, body=body, link=link)
        session.add(note)
        session.flush()
        if self._emails(outbox, kind):
            email = session.scalar(select(User.email).where(User.id == user_id))
            if email:
                self._email(session, outbox, user_id=user_id, email=email, kind=kind, title=title, body=body,
                            link=link)
        return note

    def notify_all(self, session: Session, *, kind: str, title: str, body: str = "", link: str | None = None,
                   outbox: Outbox | None = None) -> int:
        """One notice to every account (policy changes, business transfers), emailed too when `outbox` delivers."""
        from imagen.accounts.models import User

        users = list(session.execute(select(User.id, User.email).order_by(User.id)))
        emails = self._emails(outbox, kind)
        for user_id, email in users:
            session.add(Notification(user_id=user_id, kind=kind, title=title, body=body, link=link))
            if emails:
                self._email(session, outbox, user_id=user_id, email=email, kind=kind, title=title, body=body,
                            link=link)
        session.flush()
        return len(users)

    @staticmethod
    def _emails(outbox: Outbox | None, kind: str) -> bool:
        return outbox is not None and outbox.delivers and kind in EMAILED_KINDS

    @staticmethod
    def _email(session: Session, outbox: Outbox | None, *, user_id: str, email: str, kind: str, title: str,
               body: str, link: str | None) -> None:
        assert outbox is not None
        outbox.queue(session, to=email, subject=title[:300], text=notice_text(outbox, title=title, body=body,
                                                                                link=link),
                     kind=f"notice.{kind}", user_id=user_id)

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
