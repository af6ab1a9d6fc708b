from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime

ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("succeeded", "failed", "canceled")


class Generation(IdMixin, CreatedMixin, Base):
    __tablename__ = "generations"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    workflow: Mapped[str] = mapped_column(String(64), nullable=False)
    workflow_version: Mapped[int] = mapped_column(Integer, nullable=False)
    pipeline: Mapped[str] = mapped_column(String(16), nullable=False, default="txt2img")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    checkpoint: Mapped[str] = mapped_column(String(200), nullable=False)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    # Every model file the job used, by content hash: [{"role", "id", "sha256", "family", "weight"?}].
    models: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    # The user's model-improvement consent as it stood at submission; later pipelines read only this.
    consent_model_improvement: Mapped[bool] = mapped_column(Boolean, nullable=False)
    status: Mapped[str] = mapped_column(String(16), default="queued", nullable=False, index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0, nullable=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    signals: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Transient inputs (img2img/inpaint image, inpaint mask): kept only until the job ends.
    input_blob_key: Mapped[str | None] = mapped_column(String(300))
    mask_blob_key: Mapped[str | None] = mapped_column(String(300))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the worker running it last reported (progress or its heartbeat); the watchdog ends jobs gone silent.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The fleet (migration 0012): each claim's token, the worker holding it, and the claim's turn across all workers
    # (a user's largest turn is when they were last served: fairness shared by every worker).
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    served_turn: Mapped[int | None] = mapped_column(BigInteger, index=True)
    # Insights (migration 0019): this ended generation has been looked at by imagen/insights (derived or not, once).
    insights_derived: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)

    __table_args__ = (Index("ix_generations_user_id_served_turn", "user_id", "served_turn"),)

    outputs: Mapped[list[Output]] = relationship(
        back_populates="generation", order_by="Output.index", cascade="all, delete-orphan"
    )


class Output(IdMixin, CreatedMixin, Base):
    __tablename__ = "outputs"

    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer, nullable=False)
    blob_key: Mapped[str] = mapped_column(String(300), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    seed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    # The gallery (migration 0013): the user's favourites, and the index its keyset pages walk.
    favorite: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)

    __table_args__ = (Index("ix_outputs_user_id_created_at_id", "user_id", "created_at", "id"),)

    generation: Mapped[Generation] = relationship(back_populates="outputs")
