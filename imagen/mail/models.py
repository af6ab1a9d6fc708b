from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime

MAIL_STATUSES = ("queued", "sending", "sent", "failed", "suppressed")


class OutboundEmail(IdMixin, CreatedMixin, Base):
    """Every message IMAGEN sends: queued in the sender's transaction, delivered once after its commit.

    With the `outbox` backend this row (and the log line) is the only copy, so an operator without SMTP can read
    verification codes. Kept as proof of notice for the period the data map declares, then deleted by retention.
    """

    __tablename__ = "outbound_emails"

    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    to_address: Mapped[str] = mapped_column(String(320), nullable=False, index=True)
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    body: Mapped[str | None] = mapped_column(Text)  # None once purged
    kind: Mapped[str] = mapped_column(String(48), nullable=False)  # e.g. privacy_request.code
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued", index=True)
    backend: Mapped[str | None] = mapped_column(String(16))  # the backend that delivered it
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


SUPPRESSION_REASONS = ("hard_bounce", "spam_complaint", "unsubscribed", "inactive")


class MailSuppression(IdMixin, CreatedMixin, Base):
    """An address mail must not go to: it bounced for good or its owner marked our mail as spam (Postmark's
    webhook), or Postmark itself refused it as inactive. Messages queued for it end `suppressed`, unsent."""

    __tablename__ = "mail_suppressions"

    email: Mapped[str] = mapped_column(String(320), nullable=False, unique=True)  # normalize_email
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    detail: Mapped[str | None] = mapped_column(String(500))  # the provider's description, e.g. "Hard bounce"
