"""Checking images that users send: format, size and pixel limits; re-encoded without metadata."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image

ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP"}
MAX_ENCODED_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 4096 * 4096


class BadImage(ValueError):
    pass


def decode_base64_image(value: str) -> bytes:
    """Decode a base64 (or data: URL) PNG/JPEG/WebP and return it re-encoded as a clean PNG."""
    if value.startswith("data:"):
        _, _, value = value.partition(",")
    if len(value) > MAX_ENCODED_BYTES * 4 // 3 + 4:
        raise BadImage(f"image is larger than {MAX_ENCODED_BYTES // (1024 * 1024)} MB")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("not valid base64") from None
    return clean_png(raw)


def clean_png(raw: bytes) -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                if img.format not in ALLOWED_FORMATS:
                    raise BadImage(f"format {img.format} is not accepted; send PNG, JPEG or WebP")
                if img.width * img.height > MAX_PIXELS:
                    raise BadImage(f"image has more than {MAX_PIXELS} pixels")
                img.load()
                rgb = img.convert("RGB")  # drops EXIF, text chunks and ICC profiles
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"image has more than {MAX_PIXELS} pixels") from None
    except BadImage:
        raise
    except Exception:
        raise BadImage("not a readable PNG, JPEG or WebP image") from None
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    return out.getvalue()
