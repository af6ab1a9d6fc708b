"""The insights store: one anonymous row per ended generation whose consent stamp allowed it.

No column names a user, a prompt, an image, an address or a file: no foreign key, no generation id, the day
instead of the time. Erasure has nothing to find here (the data map declares the table anonymous)."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, IdMixin


class InsightRecord(IdMixin, Base):
    __tablename__ = "insight_records"

    day: Mapped[date] = mapped_column(Date, nullable=False, index=True)  # coarsened: never the time of day
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # succeeded, failed, canceled
    failure_reason: Mapped[str | None] = mapped_column(String(32))  # a fixed category, never the error text
    workflow: Mapped[str] = mapped_column(String(64), nullable=False)
    workflow_version: Mapped[int] = mapped_column(Integer, nullable=False)
    pipeline: Mapped[str] = mapped_column(String(16), nullable=False)
    model_family: Mapped[str] = mapped_column(String(16), nullable=False)
    checkpoint_source: Mapped[str] = mapped_column(String(16), nullable=False)  # builtin, public, private
    lora_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    sampler: Mapped[str | None] = mapped_column(String(32))
    steps: Mapped[int | None] = mapped_column(Integer)
    guidance: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    queue_wait_seconds: Mapped[float | None] = mapped_column(Float)
    load_seconds: Mapped[float | None] = mapped_column(Float)
    inference_seconds: Mapped[float | None] = mapped_column(Float)
    cache_hit: Mapped[bool | None] = mapped_column(Boolean)  # the checkpoint was already loaded
    sharpness: Mapped[float | None] = mapped_column(Float)
    colourfulness: Mapped[float | None] = mapped_column(Float)
    nsfw_score: Mapped[float | None] = mapped_column(Float)
    # Hashed feature embedding of the prompt (imagen/insights/embedding.py): never the text itself.
    embedding: Mapped[list[Any] | None] = mapped_column(JSON)
