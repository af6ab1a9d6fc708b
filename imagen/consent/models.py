from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime


class PolicyVersion(CreatedMixin, Base):
    """A published version of the privacy policy; the newest published one is current."""

    __tablename__ = "policy_versions"

    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # Material: users are notified in-app and must accept it before their next write.
    material: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    text_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    summary: Mapped[str | None] = mapped_column(Text)


class ConsentRecord(IdMixin, CreatedMixin, Base):
    """Append-only: the latest record per purpose is the user's current choice."""

    __tablename__ = "consent_records"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(32), nullable=False)
    granted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    policy_version: Mapped[str] = mapped_column(ForeignKey("policy_versions.version"), nullable=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)


class OutputMarketingConsent(IdMixin, CreatedMixin, Base):
    """A user's written consent to use one output in marketing (policy §3): the text shown, when, which version.

    Rows are never edited except to stamp the withdrawal or the admin's marking; a new consent is a new row.
    """

    __tablename__ = "output_marketing_consents"

    output_id: Mapped[str] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    text_shown: Mapped[str] = mapped_column(Text, nullable=False)
    policy_version: Mapped[str] = mapped_column(ForeignKey("policy_versions.version"), nullable=False)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    marked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    marked_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
