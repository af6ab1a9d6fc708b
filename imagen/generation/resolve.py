"""Turning a request's model and image references into what the job will use, checked before queueing.

Checkpoints are built-in names or asset ids, LoRAs are asset ids, images are base64 data or `asset:<id>`.
Another user's private asset answers 404, whatever the field that names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.assets.service import asset_service
from imagen.generation.images import BadImage, clean_png, decode_base64
from imagen.inference.checkpoints import CheckpointNotFound, CheckpointRegistry
from imagen.inference.spec import ModelRef
from imagen.kit.errors import field_error
from imagen.storage import BlobStore
from imagen.workflows.library import Workflow

ASSET_ID = re.compile(r"^[0-9a-f]{32}$")
ASSET_IMAGE_PREFIX = "asset:"
FAMILY_LABELS = {"sd15": "SD 1.x", "sdxl": "SDXL"}


@dataclass(frozen=True)
class ResolvedModels:
    checkpoint: ModelRef
    loras: tuple[ModelRef, ...]
    in_channels: int

    def record(self) -> list[dict[str, Any]]:
        """What the generation row keeps, so the job can be reproduced from content hashes."""
        rows = [_record("checkpoint", self.checkpoint)]
        rows += [_record("lora", ref) | {"weight": ref.weight} for ref in self.loras]
        return rows


def _record(role: str, ref: ModelRef) -> dict[str, Any]:
    return {"role": role, "id": ref.name, "sha256": ref.sha256, "family": ref.family, "blob_key": ref.blob_key}


def refs_from_record(models: list[dict[str, Any]]) -> tuple[ModelRef, tuple[ModelRef, ...]]:
    checkpoint = next(m for m in models if m["role"] == "checkpoint")
    loras = tuple(
        ModelRef(m["id"], m["sha256"], m["family"], kind="lora", blob_key=m["blob_key"], weight=float(m["weight"]))
        for m in models if m["role"] == "lora")
    return ModelRef(checkpoint["id"], checkpoint["sha256"], checkpoint["family"],
                    blob_key=checkpoint["blob_key"]), loras


def resolve_models(session: Session, *, user: User, workflow: Workflow, params: dict[str, Any],
                   checkpoints: CheckpointRegistry) -> ResolvedModels:
    name = params["checkpoint"]
    if ASSET_ID.match(name):
        asset = asset_service.get_usable(session, user=user, asset_id=name, kinds=("checkpoint",), what="Checkpoint")
        checkpoint = ModelRef(asset.id, asset.sha256, asset.family, blob_key=asset.blob_key)
        in_channels = int((asset.details or {}).get("in_channels") or 4)
    else:
        try:
            builtin = checkpoints.get(name)
        except CheckpointNotFound:
            available = ", ".join(c.name for c in checkpoints.list())
            raise field_error("params.checkpoint", f"unknown checkpoint {name!r}; built-in: {available}, "
                              "or the id of a checkpoint you uploaded") from None
        checkpoint = ModelRef(builtin.name, builtin.sha256, builtin.family)
        in_channels = builtin.in_channels
    if checkpoint.family not in workflow.families:
        raise field_error("params.checkpoint", f"workflow {workflow.name!r} does not accept "
                          f"{FAMILY_LABELS[checkpoint.family]} checkpoints")
    if in_channels == 9 and workflow.pipeline != "inpaint":
        raise field_error("params.checkpoint", "this is an inpainting checkpoint (9 input channels); "
                          "use it with the inpaint workflow")

    loras = []
    for index, item in enumerate(params.get("loras") or []):
        asset = asset_service.get_usable(session, user=user, asset_id=item["id"], kinds=("lora",), what="LoRA")
        if asset.family != checkpoint.family:
            raise field_error(
                f"params.loras.{index}.id",
                f"LoRA {asset.filename!r} is for {FAMILY_LABELS[asset.family]} but the checkpoint is "
                f"{FAMILY_LABELS[checkpoint.family]}")
        loras.append(ModelRef(asset.id, asset.sha256, asset.family, kind="lora", blob_key=asset.blob_key,
                              weight=float(item["weight"])))
    return ResolvedModels(checkpoint, tuple(loras), in_channels)


@dataclass(frozen=True)
class ResolvedImage:
    png: bytes  # the clean PNG the job uses
    received: bytes | None  # an inline value's bytes as sent (what the hash banks check); None for an asset


def resolve_image(session: Session, *, user: User, field: str, value: str, blobs: BlobStore) -> ResolvedImage:
    """An image parameter: decoded and re-encoded (keeping the bytes as sent), or read from a reference-image asset."""
    if value.startswith(ASSET_IMAGE_PREFIX):
        asset = asset_service.get_usable(session, user=user, asset_id=value.removeprefix(ASSET_IMAGE_PREFIX),
                                         kinds=("reference_image",), what="Reference image")
        # Stored already cleaned and screened when it was uploaded.
        return ResolvedImage(png=blobs.get(asset.blob_key), received=None)
    try:
        received = decode_base64(value)
        return ResolvedImage(png=clean_png(received), received=received)
    except BadImage as exc:
        raise field_error(f"params.{field}", str(exc)) from None
