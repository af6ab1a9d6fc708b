"""Per-kind execution: txt2img, img2img, inpaint and hires fix, for SD 1.x and SDXL, on one loaded base pipeline.

Every kind runs on the cached base pipeline's own modules: img2img and inpaint pipelines are made with `from_pipe`
(same UNet, VAE, text encoders, so the same LoRA adapters) and kept next to it. Inpainting checkpoints (a 9-channel
UNet: latents + mask + masked-image latents) run every kind through the inpaint pipeline, as A1111 does: txt2img with
an all-white mask at strength 1 (the masked image is then all zeros, the latents pure noise), img2img with an
all-white mask over the init image.

Prompts are encoded by `prompts.encode_prompts` (A1111 weighting) for every kind; the pipelines get embeddings.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imagen.inference.loras import AdapterManager
from imagen.inference.prompts import encode_prompts
from imagen.inference.schedulers import make_scheduler
from imagen.inference.spec import Family, JobSpec, ModelLoadError

_CLASSES: dict[Family, dict[str, str]] = {
    "sd15": {"txt2img": "StableDiffusionPipeline", "img2img": "StableDiffusionImg2ImgPipeline",
             "inpaint": "StableDiffusionInpaintPipeline"},
    "sdxl": {"txt2img": "StableDiffusionXLPipeline", "img2img": "StableDiffusionXLImg2ImgPipeline",
             "inpaint": "StableDiffusionXLInpaintPipeline"},
}

# Checkpoints trained on a zero-terminal-SNR schedule (imagen-demo) over-guide at SD's usual guidance: guided at every
# step, imagen-demo's shapes get holes and colour fringes at 7 (shape kind 65% of 200 held-out prompts, 76.5% unguided).
# The damage comes from the low-noise steps, so those run unguided, as A1111's "Negative Guidance minimum sigma"
# (`s_min_uncond`) does: below this sigma the negative prompt is skipped. Guided above it, kind rises to 85% at 7.
ZERO_SNR_GUIDANCE_MIN_SIGMA = 2.0
_UNGUIDED = 1.0001  # above 1 so the pipeline keeps its negative-prompt batch; the same picture as no guidance

StepFn = Callable[[int], None]  # called with the number of denoising steps done in this stage
LatentsFn = Callable[[int, Any], None]  # (steps done, the latents after that step): live previews


def base_class(family: Family) -> Any:
    import diffusers

    return getattr(diffusers, _CLASSES[family]["txt2img"])


@dataclass
class LoadedModel:
    """A cache entry: the base pipeline, what was derived from it, and its LoRA adapters. Evicted as one."""

    sha256: str
    base: Any
    family: Family
    adapters: AdapterManager
    derived: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def wrap(cls, sha256: str, base: Any, family: Family) -> LoadedModel:
        base.set_progress_bar_config(disable=True)
        return cls(sha256, base, family, AdapterManager(base, family))

    @property
    def components(self) -> dict[str, Any]:  # what PipelineCache measures
        return self.base.components

    @property
    def inpainting_unet(self) -> bool:
        return int(self.base.unet.config.in_channels) == 9

    def pipeline(self, kind: str) -> Any:
        import diffusers

        class_name = _CLASSES[self.family][kind]
        if type(self.base).__name__ == class_name:
            return self.base
        if class_name not in self.derived:
            pipe = getattr(diffusers, class_name).from_pipe(self.base)
            pipe.set_progress_bar_config(disable=True)
            self.derived[class_name] = pipe
        return self.derived[class_name]

    def close(self) -> None:
        self.derived.clear()


def strength_steps(steps: int, strength: float) -> tuple[int, int]:
    """(num_inference_steps to ask for, denoising steps that will run) for an image-to-image pass.

    diffusers runs min(int(steps * strength), steps) of the schedule; when that is 0 (few steps, low strength) it
    refuses, so the schedule is stretched until exactly one step runs (A1111 always runs at least one)."""
    strength = min(max(float(strength), 0.0), 1.0)
    ran = min(int(steps * strength), steps)
    if ran >= 1:
        return steps, ran
    n = max(steps, math.ceil(1 / max(strength, 1e-3)))
    while int(n * strength) < 1:
        n += 1
    return n, 1


def decode_image(data: bytes | None, size: tuple[int, int], mode: str, what: str) -> Any:
    from PIL import Image

    if data is None:
        raise ModelLoadError(f"this workflow needs {what}")
    image = Image.open(io.BytesIO(data)).convert(mode)
    return image.resize(size, Image.Resampling.LANCZOS) if image.size != size else image


@dataclass
class Plan:
    """One job's denoising passes, known before any runs (progress needs the total up front)."""

    kind: str
    total_steps: int
    stages: list[int]  # denoising steps per pass


def plan_for(spec: JobSpec) -> Plan:
    p = spec.params
    steps = int(p["steps"])
    if spec.pipeline in ("img2img", "inpaint"):
        ran = strength_steps(steps, float(p.get("strength", 0.75 if spec.pipeline == "img2img" else 1.0)))[1]
        return Plan(spec.pipeline, ran, [ran])
    if spec.pipeline == "hires_fix":
        hires = strength_steps(int(p.get("hires_steps") or steps), float(p.get("hires_strength", 0.5)))[1]
        return Plan(spec.pipeline, steps + hires, [steps, hires])
    if spec.pipeline != "txt2img":
        raise ModelLoadError(f"unknown pipeline {spec.pipeline!r}")
    return Plan(spec.pipeline, steps, [steps])


class Executor:
    """Runs one job on a LoadedModel. `on_step(done)` is called after every denoising step, across all passes."""

    def __init__(self, model: LoadedModel, spec: JobSpec, device: str, on_step: StepFn,
                 on_latents: LatentsFn | None = None) -> None:
        self.model, self.spec, self.device, self.on_step = model, spec, device, on_step
        self.on_latents = on_latents
        p = spec.params
        self.p = p
        self.batch = int(p.get("batch_size", 1))
        self.seeds = [int(p["seed"]) + i for i in range(self.batch)]
        self.size = (int(p["width"]), int(p["height"]))
        self._done = 0
        self.embeds: Any = None

    def generators(self) -> list[Any]:
        import torch

        return [torch.Generator(self.device).manual_seed(s) for s in self.seeds]

    def run(self) -> list[Any]:
        self.embeds = encode_prompts(self.model.base, str(self.p.get("prompt") or ""),
                                     str(self.p.get("negative_prompt") or ""), sdxl=self.model.family == "sdxl")
        kind = self.spec.pipeline
        steps = int(self.p["steps"])
        if kind == "txt2img":
            return self.txt2img(steps)
        if kind == "hires_fix":
            return self.hires_fix(steps)
        init = decode_image(self.spec.init_image, self.size, "RGB", "an input image")
        if kind == "img2img":
            return self.img2img([init] * self.batch, steps, float(self.p.get("strength", 0.75)))
        if kind == "inpaint":
            mask = decode_image(self.spec.mask_image, self.size, "L", "a mask image")
            images = self.inpaint([init] * self.batch, mask, steps, float(self.p.get("strength", 1.0)))
            overlay = self.model.pipeline("inpaint").image_processor.apply_overlay
            # Unmasked pixels stay exactly the input's (greys blend), as A1111 overlays the original.
            return [overlay(mask, init, image) for image in images]
        raise ModelLoadError(f"unknown pipeline {kind!r}")

    # -- passes: each takes/returns one PIL image per seed -----------------------------------------------------------

    def txt2img(self, steps: int) -> list[Any]:
        from PIL import Image

        if self.model.inpainting_unet:  # whole image masked: the masked image is zeros, whatever the init image
            gray = Image.new("RGB", self.size, (127, 127, 127))
            return self.inpaint([gray] * self.batch, Image.new("L", self.size, 255), steps, 1.0)
        return self._call(self.model.pipeline("txt2img"), steps, width=self.size[0], height=self.size[1])

    def img2img(self, images: list[Any], steps: int, strength: float) -> list[Any]:
        from PIL import Image

        if self.model.inpainting_unet:
            return self.inpaint(images, Image.new("L", images[0].size, 255), steps, strength)
        n, _ = strength_steps(steps, strength)
        return self._call(self.model.pipeline("img2img"), n, image=images, strength=strength)

    def inpaint(self, images: list[Any], mask: Any, steps: int, strength: float) -> list[Any]:
        n, _ = strength_steps(steps, strength)
        width, height = images[0].size
        return self._call(self.model.pipeline("inpaint"), n, image=images, mask_image=[mask] * len(images),
                          strength=strength, width=width, height=height)

    def hires_fix(self, steps: int) -> list[Any]:
        """txt2img at the base size, Lanczos upscale of the decoded images, then img2img at the new size with fresh
        generators from the same seeds (A1111's hires. fix)."""
        from PIL import Image

        first = self.txt2img(steps)
        scale = float(self.p.get("hires_scale", 2.0))
        size = (_multiple_of_8(self.size[0] * scale), _multiple_of_8(self.size[1] * scale))
        upscaled = [image.resize(size, Image.Resampling.LANCZOS) for image in first]
        return self.img2img(upscaled, int(self.p.get("hires_steps") or steps), float(self.p.get("hires_strength", 0.5)))

    def _call(self, pipe: Any, num_inference_steps: int, **kwargs: Any) -> list[Any]:
        import torch

        scheduler = str(self.p.get("scheduler") or "euler")
        pipe.scheduler = make_scheduler(scheduler, self.model.base.scheduler.config, num_inference_steps)
        start = self._done
        guidance = float(self.p.get("guidance", 7.0))
        limited = guidance > 1 and bool(self.model.base.scheduler.config.get("rescale_betas_zero_snr"))

        def guidance_at(index: int) -> float:
            return guidance if _sigma(pipe.scheduler, index) > ZERO_SNR_GUIDANCE_MIN_SIGMA else _UNGUIDED

        first_guidance, offset = guidance, 0
        if limited:  # img2img and inpaint start (1 - strength) into the schedule, as diffusers' get_timesteps does
            pipe.scheduler.set_timesteps(num_inference_steps)
            ran = strength_steps(num_inference_steps, float(kwargs.get("strength", 1.0)))[1]
            offset = (num_inference_steps - ran) * pipe.scheduler.order
            first_guidance = guidance_at(offset)

        def step_end(_pipe: Any, step: int, _timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if limited and offset + step + 1 < len(_pipe.scheduler.timesteps):  # the next step's guidance
                _pipe._guidance_scale = guidance_at(offset + step + 1)
            self._done = start + step + 1
            self.on_step(self._done)
            if self.on_latents is not None and "latents" in callback_kwargs:
                self.on_latents(self._done, callback_kwargs["latents"])
            return callback_kwargs

        with torch.inference_mode():
            images = pipe(
                **self.embeds.kwargs(self.batch),
                num_inference_steps=num_inference_steps,
                guidance_scale=first_guidance,
                generator=self.generators(),
                callback_on_step_end=step_end,
                **kwargs,
            ).images
        return list(images)


def _sigma(scheduler: Any, index: int) -> float:
    """The noise level (sigma, the noise-to-signal ratio) of the scheduler's step `index`."""
    alpha = float(scheduler.alphas_cumprod[int(scheduler.timesteps[index])])
    return math.inf if alpha <= 0 else math.sqrt((1 - alpha) / alpha)


def _multiple_of_8(value: float) -> int:
    return max(8, round(value / 8) * 8)
