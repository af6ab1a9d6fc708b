from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin


class PublishedWorkflow(IdMixin, CreatedMixin, Base):
    """A workflow version an admin published. Versions are never edited or deleted, so every
    generation that names (name, version) can be reproduced."""

    __tablename__ = "published_workflows"
    __table_args__ = (UniqueConstraint("name", "version"),)

    name: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    published_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class Preset(IdMixin, CreatedMixin, Base):
    """A user's own defaults for one workflow."""

    __tablename__ = "presets"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    workflow: Mapped[str] = mapped_column(String(64), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
