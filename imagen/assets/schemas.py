from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AssetOut(BaseModel):
    id: str
    kind: str
    family: str | None
    description: str
    filename: str
    sha256: str
    short_hash: str
    size_bytes: int
    public: bool
    width: int | None
    height: int | None
    details: dict[str, Any]
    created_at: datetime
    owned: bool


# The upload is parsed from the stream (imagen/assets/uploads.py), so FastAPI cannot describe it by itself.
UPLOAD_OPENAPI: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["kind", "file"],
    "properties": {
        "kind": {"type": "string", "enum": ["checkpoint", "lora", "reference_image"]},
        "file": {"type": "string", "format": "binary",
                 "description": "a .safetensors checkpoint or LoRA, or a PNG/JPEG/WebP reference image"},
        "public": {"type": "boolean", "default": False, "description": "administrators only"},
    }}}}}}
