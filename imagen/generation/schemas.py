from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GenerationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = {}
    preset: str | None = Field(default=None, max_length=64, description="id of one of your presets to start from")


class OutputOut(BaseModel):
    id: str
    url: str
    width: int
    height: int
    seed: int


class GenerationOut(BaseModel):
    id: str
    status: str
    progress: float
    workflow: str
    workflow_version: int
    pipeline: str
    params: dict[str, Any]
    checkpoint: str
    checkpoint_sha256: str
    models: list[dict[str, Any]]  # every model file used: role, id, sha256, family (and weight for LoRAs)
    consent_model_improvement: bool
    outputs: list[OutputOut]
    error: str | None
    signals: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class GenerationPage(BaseModel):
    items: list[GenerationOut]
    next_cursor: str | None


class GalleryItem(BaseModel):
    id: str
    url: str
    thumb_url: str
    width: int
    height: int
    seed: int
    favorite: bool
    created_at: datetime
    generation_id: str
    index: int
    workflow: str
    checkpoint: str
    prompt: str


class GalleryPage(BaseModel):
    items: list[GalleryItem]
    next_cursor: str | None


class FavoriteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    favorite: bool


class OutputSelection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(min_length=1, max_length=100, description="ids of your images (at most 100)")


class Deleted(BaseModel):
    deleted: int


class QueueItem(BaseModel):
    id: str
    status: str
    progress: float
    workflow: str
    prompt: str
    ahead: int  # queued jobs (anyone's) older than this one; 0 while it runs
    created_at: datetime


class QueuePage(BaseModel):
    items: list[QueueItem]
