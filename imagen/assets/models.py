from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin

ASSET_KINDS = ("checkpoint", "lora", "reference_image")
MODEL_KINDS = ("checkpoint", "lora")


class Asset(IdMixin, CreatedMixin, Base):
    """A file a user uploaded: a model (checkpoint, LoRA) or a reference image. Private unless published."""

    __tablename__ = "assets"
    # One user uploading the same bytes twice gets the one stored copy back.
    __table_args__ = (UniqueConstraint("user_id", "sha256"),)

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    family: Mapped[str | None] = mapped_column(String(16))  # sd15 | sdxl for models, None for images
    description: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    blob_key: Mapped[str] = mapped_column(String(300), nullable=False)
    content_type: Mapped[str] = mapped_column(String(100), nullable=False)
    # Published by an admin: every user may use it (read-only); only the owner may delete it.
    public: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)

    @property
    def short_hash(self) -> str:
        """The A1111 short hash: the first 10 hex digits of the file's SHA-256."""
        return self.sha256[:10]
