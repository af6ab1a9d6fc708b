from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime

if TYPE_CHECKING:
    from imagen.accounts.models import User

KINDS = ("access", "deletion", "correction", "restriction", "objection", "opt_out")
CHANNELS = ("web_form", "email", "letter", "phone")
STATUSES = ("received", "identity_unverified", "pending", "in_progress", "completed", "denied", "extended",
            "canceled")
CLOSED_STATUSES = ("completed", "denied", "canceled")


class PrivacyRequest(IdMixin, CreatedMixin, Base):
    """One request from a person exercising a right; kept after closing as proof of compliance (data map)."""

    __tablename__ = "privacy_requests"

    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="received", index=True)
    email: Mapped[str] = mapped_column(String(320), nullable=False, index=True)  # the requester, lowercased
    details: Mapped[str] = mapped_column(Text, nullable=False, default="")
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    # The account the requester proved to hold (linked when the emailed code is verified).
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    received_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    # Identity verification: the code is stored only as an HMAC; attempts are counted per code.
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    code_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    code_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    codes_sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    extension_reason: Mapped[str | None] = mapped_column(Text)
    denial_reason: Mapped[str | None] = mapped_column(Text)
    resolution: Mapped[str | None] = mapped_column(Text)  # what was done, as told to the requester
    export_id: Mapped[str | None] = mapped_column(String(32))  # the export an access request started
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)

    received_by: Mapped[User | None] = relationship(foreign_keys=[received_by_id])
    events: Mapped[list[PrivacyRequestEvent]] = relationship(
        back_populates="request", order_by="PrivacyRequestEvent.seq",
        cascade="all, delete-orphan", passive_deletes=True,
    )


class PrivacyRequestEvent(IdMixin, CreatedMixin, Base):
    """The audit trail: every change of a request's state (and each code sent), who made it and why."""

    __tablename__ = "privacy_request_events"

    request_id: Mapped[str] = mapped_column(ForeignKey("privacy_requests.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)  # order within one request
    actor: Mapped[str] = mapped_column(String(16), nullable=False)  # admin | requester | system
    actor_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24), nullable=False)
    note: Mapped[str | None] = mapped_column(Text)

    request: Mapped[PrivacyRequest] = relationship(back_populates="events")
    actor_user: Mapped[User | None] = relationship(foreign_keys=[actor_id])
