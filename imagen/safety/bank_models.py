"""Hash banks: lists of known-bad hashes (PDQ, MD5, SHA-256) that operators import. Not personal data."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime, utcnow

HASH_TYPES = ("pdq", "md5", "sha256")
HEX_LENGTHS = {"pdq": 64, "md5": 32, "sha256": 64}


class HashBank(IdMixin, CreatedMixin, Base):
    """One imported list. `updated_at` moves on every import and enable/disable, so matchers notice."""

    __tablename__ = "hash_banks"

    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    hash_type: Mapped[str] = mapped_column(String(16), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    source: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    description: Mapped[str] = mapped_column(String(1000), nullable=False, default="")
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class BankHash(Base):
    """One hash in a bank: lowercase hex (PDQ: 64 digits, MSB of the hash's first bit first, as HMA writes it)."""

    __tablename__ = "bank_hashes"
    __table_args__ = (UniqueConstraint("bank_id", "value"), Index("ix_bank_hashes_value", "value"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bank_id: Mapped[str] = mapped_column(ForeignKey("hash_banks.id", ondelete="CASCADE"), nullable=False)
    value: Mapped[str] = mapped_column(String(64), nullable=False)
