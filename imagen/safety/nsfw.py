"""NSFW classification (nudenet) and the operator's policy: allow, blur or block per category. No database.

`NsfwClassifier().classify(png)` runs nudenet's detector (its ONNX model ships in the wheel; CPU; loaded on first
use, once per process). `nsfw_policy().decide(detections)` turns detections into one action for the image, and
`apply(png, decision)` gives the bytes to deliver: the same image (allow), a blurred PNG (blur) or None (block).

The policy (`IMAGEN_NSFW_POLICY`, JSON) maps a group or a nudenet label to an action, or to
`{"action": ..., "threshold": ...}`; a label's entry wins over its group's. Anything not named is allowed: out of
the box IMAGEN allows adult nudity, as a general service may. Example that blurs exposed breasts and buttocks and
blocks exposed genitalia and anus:

    IMAGEN_NSFW_POLICY='{"genitalia_exposed": "block", "anus_exposed": "block",
                         "breasts_exposed": "blur", "FEMALE_BREAST_EXPOSED": {"action": "blur", "threshold": 0.6}}'
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from PIL import Image, ImageFilter
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

if TYPE_CHECKING:
    from imagen.kit.config import Settings

Action = Literal["allow", "blur", "block"]
SEVERITY: dict[str, int] = {"allow": 0, "blur": 1, "block": 2}

# nudenet 3.4 labels, grouped. The explicit groups are what an operator usually restricts.
GROUPS: dict[str, tuple[str, ...]] = {
    "genitalia_exposed": ("FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED"),
    "breasts_exposed": ("FEMALE_BREAST_EXPOSED",),
    "buttocks_exposed": ("BUTTOCKS_EXPOSED",),
    "anus_exposed": ("ANUS_EXPOSED",),
    "other_exposed": ("MALE_BREAST_EXPOSED", "BELLY_EXPOSED", "ARMPITS_EXPOSED", "FEET_EXPOSED"),
    "covered": ("FEMALE_GENITALIA_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED", "ANUS_COVERED",
                "BELLY_COVERED", "ARMPITS_COVERED", "FEET_COVERED"),
    "face": ("FACE_FEMALE", "FACE_MALE"),
}
LABELS: frozenset[str] = frozenset(label for labels in GROUPS.values() for label in labels)
GROUP_OF: dict[str, str] = {label: group for group, labels in GROUPS.items() for label in labels}
DEFAULT_THRESHOLD = 0.5


class NsfwPolicyError(ValueError):
    """IMAGEN_NSFW_POLICY can't be used; the message says which key and why."""


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[int, int, int, int]  # x, y, width, height in pixels


@dataclass(frozen=True)
class NsfwDecision:
    action: Action
    reasons: tuple[str, ...] = ()  # "FEMALE_BREAST_EXPOSED 0.83 ≥ 0.50: blur"
    boxes: tuple[tuple[int, int, int, int], ...] = field(default=(), compare=False)  # what blur covers


class NsfwClassifier:
    """nudenet's detector, loaded once per process on first use (thread-safe); `classify` may run concurrently."""

    _detector = None
    _lock = threading.Lock()

    @classmethod
    def detector(cls):  # nudenet.NudeDetector (untyped)
        if cls._detector is None:
            with cls._lock:
                if cls._detector is None:
                    from nudenet import NudeDetector  # onnxruntime + opencv: kept out of import time

                    cls._detector = NudeDetector()
        return cls._detector

    def classify(self, png_bytes: bytes) -> list[Detection]:
        import numpy as np

        with Image.open(io.BytesIO(png_bytes)) as image:
            rgb = image.convert("RGB")
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])  # what cv2.imread gives nudenet for a file
        found = self.detector().detect(bgr)
        return [Detection(d["class"], float(d["score"]), tuple(int(v) for v in d["box"])) for d in found]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Action
    threshold: float = Field(default=DEFAULT_THRESHOLD, ge=0.0, le=1.0)


_entry = TypeAdapter(_Entry)


class NsfwPolicy:
    """Per label: (action, threshold). Blur mode: "boxes" blurs the detected regions, "image" the whole image."""

    def __init__(self, rules: dict[str, tuple[str, float]] | None = None, *,
                 blur_mode: Literal["boxes", "image"] = "boxes") -> None:
        self.rules = {label: ("allow", DEFAULT_THRESHOLD) for label in LABELS} | (rules or {})
        self.blur_mode = blur_mode

    @classmethod
    def from_config(cls, policy: str | dict, *, threshold: float = DEFAULT_THRESHOLD,
                    blur_mode: Literal["boxes", "image"] = "boxes") -> NsfwPolicy:
        """Parse `IMAGEN_NSFW_POLICY` (JSON text or a dict); groups first, then labels, which override them."""
        if isinstance(policy, str):
            try:
                policy = json.loads(policy) if policy.strip() else {}
            except json.JSONDecodeError as exc:
                raise NsfwPolicyError(f"IMAGEN_NSFW_POLICY is not valid JSON: {exc}") from None
        if not isinstance(policy, dict):
            raise NsfwPolicyError("IMAGEN_NSFW_POLICY must be a JSON object of category or label → action")
        rules: dict[str, tuple[str, float]] = {}
        for key in sorted(policy, key=lambda k: k in LABELS):  # groups first
            value = policy[key]
            if key not in GROUPS and key not in LABELS:
                raise NsfwPolicyError(f"IMAGEN_NSFW_POLICY: unknown category {key!r}; use one of "
                                      f"{', '.join(GROUPS)} or a nudenet label ({', '.join(sorted(LABELS))})")
            try:
                entry = _entry.validate_python({"action": value, "threshold": threshold}
                                               if isinstance(value, str) else {"threshold": threshold} | value)
            except (ValidationError, TypeError) as exc:
                reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "expected an action or object"
                raise NsfwPolicyError(f"IMAGEN_NSFW_POLICY[{key!r}]: {reason} (actions: allow, blur, block; "
                                      "threshold 0..1)") from None
            for label in GROUPS.get(key, (key,)):
                rules[label] = (entry.action, entry.threshold)
        return cls(rules, blur_mode=blur_mode)

    @property
    def needs_detection(self) -> bool:
        """False when everything is allowed: the caller may skip the detector."""
        return any(action != "allow" for action, _ in self.rules.values())

    def decide(self, detections: list[Detection]) -> NsfwDecision:
        action: Action = "allow"
        reasons: list[str] = []
        boxes: list[tuple[int, int, int, int]] = []
        for det in detections:
            rule_action, threshold = self.rules.get(det.label, ("allow", DEFAULT_THRESHOLD))
            if rule_action == "allow" or det.score < threshold:
                continue
            reasons.append(f"{det.label} {det.score:.2f} ≥ {threshold:.2f}: {rule_action}")
            boxes.append(det.box)
            if SEVERITY[rule_action] > SEVERITY[action]:
                action = rule_action
        return NsfwDecision(action, tuple(reasons), tuple(boxes))

    def apply(self, png_bytes: bytes, decision: NsfwDecision) -> bytes | None:
        """The bytes to deliver: unchanged (allow), None (block), or a re-encoded PNG with the regions blurred."""
        if decision.action == "block":
            return None
        if decision.action == "allow":
            return png_bytes
        with Image.open(io.BytesIO(png_bytes)) as opened:
            image = opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
        if self.blur_mode == "image" or not decision.boxes:
            image = image.filter(ImageFilter.GaussianBlur(max(image.size) / 16))
        else:
            for box in decision.boxes:
                region = _padded(box, image.size)
                if region[2] <= region[0] or region[3] <= region[1]:
                    continue
                patch = image.crop(region)
                radius = max(4.0, max(patch.size) / 6)
                image.paste(patch.filter(ImageFilter.GaussianBlur(radius)), region[:2])
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()


def _padded(box: tuple[int, int, int, int], size: tuple[int, int], pad: float = 0.15) -> tuple[int, int, int, int]:
    x, y, w, h = box
    dx, dy = int(w * pad) + 2, int(h * pad) + 2
    return max(0, x - dx), max(0, y - dy), min(size[0], x + w + dx), min(size[1], y + h + dy)


_cache: dict[tuple[str, float, str], NsfwPolicy] = {}
_cache_lock = threading.Lock()


def nsfw_policy(settings: Settings) -> NsfwPolicy:
    """The operator's policy from the app's settings (parsed once per distinct setting)."""
    key = (settings.nsfw_policy, settings.nsfw_threshold, settings.nsfw_blur_mode)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = NsfwPolicy.from_config(key[0], threshold=key[1], blur_mode=key[2])
        return _cache[key]
