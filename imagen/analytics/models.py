from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime


class AnalyticsDeletion(IdMixin, CreatedMixin, Base):
    """A person PostHog must delete (with their events) because their account was erased; retried until PostHog
    confirms, then the row goes. It holds only the keyed hash the person was known by there, not the account id."""

    __tablename__ = "analytics_deletions"

    distinct_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
