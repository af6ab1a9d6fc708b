from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, UTCDateTime, utcnow


class A1111Options(Base):
    """A user's own A1111 options (`POST /sdapi/v1/options`): the default checkpoint of their /sdapi/v1 calls.

    Per user, never global: one user's choice changes nothing for another."""

    __tablename__ = "a1111_options"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # A built-in checkpoint's name or a checkpoint asset's id (what the native API's `checkpoint` takes).
    checkpoint: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)
