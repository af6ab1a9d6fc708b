"""What crosses the boundary into the runtime and back: plain data, no database objects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Family = Literal["sd15", "sdxl"]
PipelineKind = Literal["txt2img", "img2img", "inpaint", "hires_fix"]


@dataclass(frozen=True)
class ModelRef:
    """One model file a job uses, named by content hash so the runtime can check what it loads.

    `blob_key` set: an uploaded single-file `.safetensors` (checkpoint or LoRA) in the blob store.
    `blob_key` None: a diffusers-format folder under <models>/checkpoints/<name> (the built-in ones).
    """

    name: str  # built-in folder name, or the asset id of an upload
    sha256: str
    family: Family
    kind: Literal["checkpoint", "lora"] = "checkpoint"
    blob_key: str | None = None
    weight: float = 1.0  # LoRA strength; ignored for checkpoints


@dataclass(frozen=True)
class JobSpec:
    pipeline: PipelineKind
    params: dict[str, Any]  # validated, defaults filled, seed resolved
    checkpoint: ModelRef
    loras: tuple[ModelRef, ...] = ()
    init_image: bytes | None = None  # clean PNG: img2img/inpaint input
    mask_image: bytes | None = None  # clean PNG: inpaint mask, white = repaint


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
    """A model file on disk is not the one the job was submitted for."""


class ModelLoadError(Exception):
    """A model file could not be turned into a pipeline (the message is safe to show the user)."""


ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
BlobPathFn = Callable[[str], Path]  # blob key -> a local file path holding those bytes
