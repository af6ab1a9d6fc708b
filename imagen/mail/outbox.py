"""The transactional outbox: messages are rows first, deliveries after commit, each delivered once."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imagen.kit.db import Database, utcnow
from imagen.kit.tasks import TaskQueue, enqueue_after_commit
from imagen.mail.backends import Mailer
from imagen.mail.models import OutboundEmail
from imagen.mail.postmark import RecipientSuppressed
from imagen.mail.suppressions import suppression_service

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
# Notices sent to every user go on the provider's broadcast stream (Postmark keeps bulk mail apart).
BROADCAST_KINDS = frozenset({"notice.policy_changed", "notice.business_transfer"})


class Outbox:
    def __init__(self, db: Database, mailer: Mailer, tasks: TaskQueue | None = None, *,
                 domain: str = "localhost") -> None:
        self.db = db
        self.mailer = mailer
        self.tasks = tasks  # `mail.deliver` runs there after the commit; without one, `mail.retry` sends it
        self.domain = domain

    def queue(self, session: Session, *, to: str, subject: str, text: str, kind: str,
              user_id: str | None = None) -> OutboundEmail:
        """Record the message in the caller's transaction; it is delivered only if that transaction commits."""
        row = OutboundEmail(to_address=to, subject=subject, body=text, kind=kind, user_id=user_id)
        session.add(row)
        session.flush()
        enqueue_after_commit(session, self.tasks, "mail.deliver", row.id)
        return row

    @property
    def delivers(self) -> bool:
        """Mail really leaves the server (not the `outbox` backend, which only logs it)."""
        return self.mailer.name != "outbox"

    def message_id(self, message_id: str) -> str:
        return f"<{message_id}@{self.domain}>"

    def deliver(self, message_id: str) -> bool:
        """Send one queued message. Safe to run twice: only the call that claims the row sends it."""
        with self.db.transaction() as s:
            claimed = s.execute(
                update(OutboundEmail)
                .where(OutboundEmail.id == message_id, OutboundEmail.status.in_(("queued", "failed")),
                       OutboundEmail.attempts < MAX_ATTEMPTS, OutboundEmail.body.is_not(None))
                .values(status="sending", attempts=OutboundEmail.attempts + 1)
            ).rowcount
            if not claimed:
                return False
            row = s.get(OutboundEmail, message_id)
            assert row is not None
            to, subject, body, kind = row.to_address, row.subject, row.body or "", row.kind
            suppressed = suppression_service.find(s, to)
            if suppressed is not None:  # bounced or complained: never sent, and the row says why
                row.status, row.error = "suppressed", f"Not sent: the address is suppressed ({suppressed.reason})"
                return False
        # Passed only when set: a mailer written against the older interface (no `broadcast`) keeps working.
        extra = {"broadcast": True} if kind in BROADCAST_KINDS else {}
        try:
            self.mailer.send(to, subject, body, message_id=self.message_id(message_id), **extra)
        except RecipientSuppressed as exc:
            with self.db.transaction() as s:
                suppression_service.suppress(s, email=to, reason="inactive", detail=str(exc))
                s.execute(update(OutboundEmail).where(OutboundEmail.id == message_id)
                          .values(status="suppressed", error=f"Not sent: {exc}"[:2000]))
            return False
        except Exception as exc:
            log.exception("could not send mail %s to %s", message_id, to)
            with self.db.transaction() as s:
                s.execute(update(OutboundEmail).where(OutboundEmail.id == message_id)
                          .values(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000]))
            return False
        with self.db.transaction() as s:
            s.execute(update(OutboundEmail).where(OutboundEmail.id == message_id)
                      .values(status="sent", sent_at=utcnow(), backend=self.mailer.name, error=None))
        return True

    def deliver_pending(self, *, older_than: timedelta = timedelta(minutes=1)) -> int:
        """Retry what a failed SMTP server or a crash left behind (queued or failed, under the attempt limit)."""
        cutoff = utcnow() - older_than
        with self.db.transaction() as s:
            ids = list(s.scalars(
                select(OutboundEmail.id).where(
                    OutboundEmail.status.in_(("queued", "failed")), OutboundEmail.attempts < MAX_ATTEMPTS,
                    OutboundEmail.created_at < cutoff)
                .order_by(OutboundEmail.created_at)))
        return sum(self.deliver(message_id) for message_id in ids)
