"""Image statistics from output PNG bytes already in memory: sharpness and colourfulness. Pure; no storage access.

- sharpness: the variance of the 4-neighbour Laplacian of the grey image (Pech-Pacheco et al., 2000); blur lowers it.
- colourfulness: Hasler and Suesstrunk (2003), sigma_rgyb + 0.3 * mu_rgyb over the opponent channels
  rg = R - G and yb = (R + G) / 2 - B.
Images are reduced to at most STATS_SIDE pixels a side first, so the cost is small and bounded whatever the size.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

STATS_SIDE = 256


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        rgb.thumbnail((STATS_SIDE, STATS_SIDE))
        return np.asarray(rgb, dtype=np.float64)


def sharpness(rgb: np.ndarray) -> float:
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1])
    return float(lap.var())


def colourfulness(rgb: np.ndarray) -> float:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    sigma = np.sqrt(rg.std() ** 2 + yb.std() ** 2)
    mu = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(sigma + 0.3 * mu)


def image_stats(pngs: list[bytes]) -> dict[str, float]:
    """The mean sharpness and colourfulness over a job's images (rounded: a statistic, not a fingerprint)."""
    if not pngs:
        return {}
    pixels = [_pixels(png) for png in pngs]
    return {"sharpness": round(sum(sharpness(p) for p in pixels) / len(pixels), 2),
            "colourfulness": round(sum(colourfulness(p) for p in pixels) / len(pixels), 2)}
