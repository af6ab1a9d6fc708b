"""The breach register, the legal-request log and business-transfer notices.

Affected users are linked through their own tables (user id, cascade on erasure) so an erased user leaves the
record with its counts (`affected_count`) but without their identity.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime

SEVERITIES = ("low", "medium", "high", "critical")
DECISIONS = ("pending", "complied", "partially_complied", "refused")


class Breach(IdMixin, CreatedMixin, Base):
    """A personal-data breach (GDPR Art. 33(5) register; policy §9)."""

    __tablename__ = "breaches"

    detected_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    categories: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    severity: Mapped[str] = mapped_column(String(16), nullable=False)
    consequences: Mapped[str] = mapped_column(Text, nullable=False, default="")
    measures: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # How the affected users were found: {"user_ids": [...]} or the lookup's criteria.
    lookup: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    affected_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    regulator_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    regulator_reference: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    users_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)


class BreachAffectedUser(Base):
    __tablename__ = "breach_affected_users"

    breach_id: Mapped[str] = mapped_column(ForeignKey("breaches.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LegalRequest(IdMixin, CreatedMixin, Base):
    """A legal or law-enforcement request for user data and what we did about it (policy §4.2)."""

    __tablename__ = "legal_requests"

    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    authority: Mapped[str] = mapped_column(String(300), nullable=False)
    instrument: Mapped[str] = mapped_column(String(300), nullable=False)  # subpoena, court order, ...
    reference: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    affected_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    decision: Mapped[str] = mapped_column(String(24), nullable=False, default="pending")
    decision_reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    disclosed: Mapped[str] = mapped_column(Text, nullable=False, default="")  # what was handed over
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)


class LegalRequestUser(Base):
    __tablename__ = "legal_request_users"

    legal_request_id: Mapped[str] = mapped_column(ForeignKey("legal_requests.id", ondelete="CASCADE"),
                                                  primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class TransferNotice(IdMixin, CreatedMixin, Base):
    """A notice sent to every user before a merger, acquisition or sale of assets (policy §4.4)."""

    __tablename__ = "transfer_notices"

    acquirer: Mapped[str] = mapped_column(String(300), nullable=False)
    effective_on: Mapped[date] = mapped_column(Date, nullable=False)
    summary: Mapped[str] = mapped_column(Text, nullable=False, default="")
    recipients: Mapped[int] = mapped_column(Integer, nullable=False)
    notified_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    recorded_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
