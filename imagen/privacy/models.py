"""Exports (GDPR Art. 15/20) and erasures (Art. 17) of one user's data; both are declared in the data map."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime

EXPORT_STATUSES = ("pending", "ready", "failed", "expired")
ERASURE_STATUSES = ("scheduled", "in_progress", "completed", "canceled")


class Export(IdMixin, CreatedMixin, Base):
    """A ZIP of everything held about one user, built in the background, downloadable until `expires_at`."""

    __tablename__ = "exports"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending", index=True)
    requested_via: Mapped[str] = mapped_column(String(64), nullable=False, default="self")
    blob_key: Mapped[str | None] = mapped_column(String(300))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Erasure(IdMixin, CreatedMixin, Base):
    """An erasure request, and once carried out the proof that it was: a legal hold with minimum fields.

    While scheduled or in progress the row names the account (`user_id`); once completed it keeps only salted
    hashes of the email and id (so an operator can show that a given person's erasure happened), the times, how
    it was requested and how many records went, until `hold_until`.
    """

    __tablename__ = "erasures"

    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="scheduled", index=True)
    via: Mapped[str] = mapped_column(String(64), nullable=False, default="self")
    subject_email_hash: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    subject_id_hash: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    hold_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # records erased per data-map entry
