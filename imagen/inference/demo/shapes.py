"""The demo model's world: captions and the 64x64 pictures they describe, drawn with PIL, and a judge that reads a
picture back (background colour, shape colour, shape kind, position).

Everything is a pure function of a `random.Random`, so a seed gives the same data set on every machine.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

SIZE = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 220, 40),
    "purple": (140, 60, 180), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
POSITIONS: dict[str, tuple[float, float]] = {  # centre of the shape, as a fraction of the side
    "top left": (0.25, 0.25), "top right": (0.75, 0.25), "center": (0.5, 0.5),
    "bottom left": (0.25, 0.75), "bottom right": (0.75, 0.75),
}
SIZES: dict[str, float] = {"small": 0.25, "large": 0.42}  # shape diameter, as a fraction of the side
STYLES = ("plain", "striped")


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    position: str
    size: str
    style: str = "plain"

    def caption(self, rng: random.Random | None = None) -> str:
        """The full caption; with `rng`, sometimes with the size, position or background left out (what is left out
        is still drawn at random, so short prompts work too)."""
        words = [self.size] if rng is None or rng.random() < 0.5 else []
        text = " ".join(["a", *words, self.colour, self.shape])
        if rng is None or rng.random() < 0.85:
            text += " in the center" if self.position == "center" else f" in the {self.position}"
        if rng is None or rng.random() < 0.85:
            text += f" on a {self.background} background"
        return text


def random_scene(rng: random.Random, style: str = "plain") -> Scene:
    background = rng.choice(list(COLOURS))
    colour = rng.choice([c for c in COLOURS if c != background])
    return Scene(rng.choice(SHAPES), colour, background, rng.choice(list(POSITIONS)), rng.choice(list(SIZES)), style)


def shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The outline of a polygon shape centred on (cx, cy) with circumradius-ish `r` (circles are drawn as ellipses)."""
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.42
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    raise ValueError(shape)


def draw_mask(shape: str, cx: float, cy: float, r: float, size: int = SIZE) -> Any:
    """An L-mode mask (255 inside) of one shape."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(shape_points(shape, cx, cy, r), fill=255)
    return mask


def render(scene: Scene, rng: random.Random, size: int = SIZE) -> Any:
    """The picture of a scene, with a little jitter in place and size so the model learns regions, not pixels."""
    return render_with_mask(scene, rng, size)[0]


def render_with_mask(scene: Scene, rng: random.Random, size: int = SIZE) -> tuple[Any, Any]:
    """(picture, the shape's L-mode mask): training weighs the shape's pixels above the background's."""
    from PIL import Image, ImageDraw

    fx, fy = POSITIONS[scene.position]
    r = SIZES[scene.size] * size / 2 * rng.uniform(0.9, 1.1)
    cx = fx * size + rng.uniform(-2, 2)
    cy = fy * size + rng.uniform(-2, 2)
    image = Image.new("RGB", (size, size), COLOURS[scene.background])
    fill = Image.new("RGB", (size, size), COLOURS[scene.colour])
    if scene.style == "striped":  # white and black diagonal stripes over the shape's colour
        stripes = ImageDraw.Draw(fill)
        stripe = (20, 20, 20) if scene.colour in ("white", "yellow") else (245, 245, 245)
        for k in range(-size, 2 * size, 8):
            stripes.line([(k, 0), (k + size, size)], fill=stripe, width=3)
    mask = draw_mask(scene.shape, cx, cy, r, size)
    image.paste(fill, (0, 0), mask)
    return image, mask


# -- the judge -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    background: str
    colour: str | None
    shape: str | None
    position: str | None

    def score(self, scene: Scene) -> dict[str, bool]:
        return {"background": self.background == scene.background, "colour": self.colour == scene.colour,
                "shape": self.shape == scene.shape, "position": self.position == scene.position}


def nearest_colour(rgb: Any) -> str:
    return min(COLOURS, key=lambda name: sum((float(a) - b) ** 2 for a, b in zip(rgb, COLOURS[name], strict=True)))


def judge(image: Any) -> Verdict:
    """Read a picture: the background is the commonest colour of the border; the shape is every pixel far from it
    (its largest connected part); its kind is the template (drawn in the shape's own bounding box) it overlaps
    most; its position the nearest named anchor to its centroid."""
    import numpy as np

    pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    names = list(COLOURS)
    labels = ((pixels[:, :, None, :] - palette[None, None]) ** 2).sum(-1).argmin(-1)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    bg = int(np.bincount(border, minlength=len(names)).argmax())
    distance = np.sqrt(((pixels - palette[bg]) ** 2).sum(-1))
    mask = _largest_component(distance > 60)
    if mask.sum() < 6:
        return Verdict(names[bg], None, None, None)
    colour = names[int(np.bincount(labels[mask], minlength=len(names)).argmax())]
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean() / SIZE, ys.mean() / SIZE
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    return Verdict(names[bg], colour, _shape_kind(mask), position)


def _largest_component(mask: Any) -> Any:
    import numpy as np

    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    height, width = mask.shape
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, part = [(int(y0), int(x0))], []
        while stack:
            y, x = stack.pop()
            part.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(part) > len(best):
            best = part
    out = np.zeros_like(mask, dtype=bool)
    for y, x in best:
        out[y, x] = True
    return out


def _shape_kind(mask: Any) -> str:
    """The shape whose template, fitted to the mask's bounding box, has the highest IoU with it."""
    import numpy as np

    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    best, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        template = _template(shape)
        box = template.resize((int(x1 - x0), int(y1 - y0)))
        t = np.zeros_like(mask, dtype=bool)
        t[y0:y1, x0:x1] = np.asarray(box) > 127
        iou = float((t & mask).sum()) / float((t | mask).sum())
        if iou > best_iou:
            best, best_iou = shape, iou
    return best


def _template(shape: str) -> Any:
    """A shape drawn large and cropped to its own bounding box."""
    big = draw_mask(shape, 128, 128, 100, 256)
    return big.crop(big.getbbox())
