"""What crosses the boundary into the runtime and back: plain data, no database objects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class JobSpec:
    workflow: str
    params: dict[str, Any]  # validated, defaults filled, seed resolved
    checkpoint: str
    checkpoint_sha256: str
    init_image: bytes | None = None  # img2img input, when the workflow takes one


@dataclass(frozen=True)
class ImageResult:
    png: bytes
    width: int
    height: int
    seed: int


@dataclass
class JobResult:
    images: list[ImageResult]
    signals: dict[str, Any] = field(default_factory=dict)


class JobCanceled(Exception):
    """Raised inside the denoising loop when the caller asks to stop."""


class CheckpointMismatch(Exception):
    """The checkpoint on disk is not the one the job was submitted for."""


ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
