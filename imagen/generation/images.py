"""Checking images that users send: base64 decoding for img2img inputs; the checks live in imagen/assets/images.py."""

from __future__ import annotations

import base64
import binascii

from imagen.assets.images import ALLOWED_FORMATS, MAX_PIXELS, BadImage, clean_png

MAX_ENCODED_BYTES = 20 * 1024 * 1024

__all__ = ["ALLOWED_FORMATS", "MAX_ENCODED_BYTES", "MAX_PIXELS", "BadImage", "clean_png", "decode_base64"]


def decode_base64(value: str) -> bytes:
    """The bytes a base64 (or data: URL) value carries, exactly as sent (what the hash banks are checked against)."""
    if value.startswith("data:"):
        _, _, value = value.partition(",")
    if len(value) > MAX_ENCODED_BYTES * 4 // 3 + 4:
        raise BadImage(f"image is larger than {MAX_ENCODED_BYTES // (1024 * 1024)} MB")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("not valid base64") from None

