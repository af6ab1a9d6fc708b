from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime


class PolicyVersion(CreatedMixin, Base):
    __tablename__ = "policy_versions"

    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    material: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    text_sha256: Mapped[str] = mapped_column(String(64), nullable=False)


class ConsentRecord(IdMixin, CreatedMixin, Base):
    """Append-only: the latest record per purpose is the user's current choice."""

    __tablename__ = "consent_records"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(32), nullable=False)
    granted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    policy_version: Mapped[str] = mapped_column(ForeignKey("policy_versions.version"), nullable=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
