"""API shapes for workflows and presets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagen.kit.inputs import Line


class WorkflowOut(BaseModel):
    """A workflow version as clients see it (`Workflow.public_schema()`)."""

    name: str
    version: int
    title: str
    description: str
    pipeline: str
    families: list[str]
    parameters: list[dict[str, Any]]


class PresetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Line = Field(min_length=1, max_length=100)
    workflow: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict, description="some of the workflow's parameters")


class PresetOut(BaseModel):
    id: str
    name: str
    workflow: str
    params: dict[str, Any]
    created_at: datetime
