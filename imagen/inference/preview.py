"""Live previews while a job denoises: a cheap latent-to-RGB approximation, no VAE decode.

Each family's 4 latent channels map to RGB through a fixed linear map (the factors ComfyUI and A1111's "approx
cheap" preview use), so a preview costs one small matrix product and a JPEG of at most 128 px: a few KB. Previews are
transient: handed to the caller's callback, never stored (imagen/generation/signals.py keeps the latest one per
running job in memory only).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from imagen.inference.spec import Family

PREVIEW_MAX_SIDE = 128
PREVIEW_QUALITY = 70

# latent channel -> (r, g, b); one row per channel, plus a bias per colour
_FACTORS: dict[Family, tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float]]] = {
    "sd15": (((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
              (-0.2120, -0.2616, -0.7177)), (0.0, 0.0, 0.0)),
    "sdxl": (((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
              (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011)),
}

PreviewFn = Callable[[bytes], None]  # JPEG bytes of the newest preview


def latents_to_preview(latents: Any, family: Family, max_side: int = PREVIEW_MAX_SIDE) -> bytes:
    """JPEG of the first image of a (batch, 4, h, w) latent tensor, longest side at most `max_side`."""
    import torch
    from PIL import Image

    factors, bias = _FACTORS[family]
    with torch.no_grad():
        latent = latents[0, :4].detach().to(device="cpu", dtype=torch.float32)  # (4, h, w)
        weights = torch.tensor(factors, dtype=torch.float32)  # (4, 3)
        rgb = torch.einsum("chw,cr->hwr", latent, weights) + torch.tensor(bias, dtype=torch.float32)
        pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels, "RGB")
    # latents are 1/8 of the image: scale up small ones a little (readable), never past max_side
    scale = min(max_side / max(image.size), 4.0)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=PREVIEW_QUALITY)
    return buf.getvalue()


def due(done: int, total: int, every: int) -> bool:
    """A preview after every `every`-th step, none after the last (the real image comes then); 0: never."""
    return every > 0 and done % every == 0 and done < total
