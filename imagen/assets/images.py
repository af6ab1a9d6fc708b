"""Checking images that users send: format and pixel limits, decompression bombs; re-encoded without metadata.

Used for reference-image uploads (assets) and for img2img inputs (generation).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps

ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP"}
MAX_PIXELS = 4096 * 4096


class BadImage(ValueError):
    pass


@dataclass(frozen=True)
class CleanImage:
    png: bytes
    width: int
    height: int


def _to_srgb(img: Image.Image) -> Image.Image:
    """Apply an embedded ICC profile (so colours survive) before the profile itself is dropped."""
    icc = img.info.get("icc_profile")
    if not icc:
        return img
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(img.convert("RGB"), source, ImageCms.createProfile("sRGB"),
                                              outputMode="RGB")
        return converted if converted is not None else img
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img  # an unusable profile: keep the pixels as they are


def clean_image(raw: bytes) -> CleanImage:
    """Decode a PNG/JPEG/WebP under the pixel limit and re-encode it as a PNG with no metadata at all.

    EXIF (camera, GPS), XMP, PNG text chunks and ICC profiles are dropped; EXIF orientation is applied first.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                if img.format not in ALLOWED_FORMATS:
                    raise BadImage(f"format {img.format} is not accepted; send PNG, JPEG or WebP")
                if img.width * img.height > MAX_PIXELS:
                    raise BadImage(f"image is {img.width}x{img.height}, more than {MAX_PIXELS} pixels")
                img.load()
                upright = ImageOps.exif_transpose(img)
                rgb = _to_srgb(upright).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"image has more than {MAX_PIXELS} pixels (a decompression bomb?)") from None
    except BadImage:
        raise
    except Exception:
        raise BadImage("not a readable PNG, JPEG or WebP image") from None
    # A fresh image holds pixels only: nothing from the original's info (EXIF, text, ICC) can reach the PNG.
    bare = Image.new("RGB", rgb.size)
    bare.paste(rgb)
    out = io.BytesIO()
    bare.save(out, format="PNG")
    return CleanImage(png=out.getvalue(), width=bare.width, height=bare.height)


def clean_png(raw: bytes) -> bytes:
    return clean_image(raw).png
