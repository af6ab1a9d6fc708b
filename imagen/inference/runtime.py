"""Executes a job spec with diffusers. The same code runs in-process, in a Celery worker and on RunPod."""

from __future__ import annotations

import io
import resource
import threading
import time
from pathlib import Path
from typing import Any

from imagen.inference.cache import PipelineCache
from imagen.inference.checkpoints import CheckpointRegistry
from imagen.inference.schedulers import make_scheduler
from imagen.inference.spec import (
    CancelFn,
    CheckpointMismatch,
    ImageResult,
    JobCanceled,
    JobResult,
    JobSpec,
    ProgressFn,
)


def quiet_libraries() -> None:
    """Progress goes to our own callbacks; the libraries' bars and notices would only be noise."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def pick_device(preferred: str | None = None) -> str:
    import torch

    if preferred:
        return preferred
    return "cuda" if torch.cuda.is_available() else "cpu"


class Runtime:
    def __init__(self, models_dir: Path, *, device: str | None = None, cache_bytes: int = 8 * 1024**3) -> None:
        quiet_libraries()
        self.checkpoints = CheckpointRegistry(models_dir)
        self.device = pick_device(device)
        self.cache = PipelineCache(cache_bytes)
        # One pipeline instance must not run two jobs at once (schedulers hold state).
        self._run_lock = threading.Lock()

    def _load(self, path: Path) -> Any:
        import torch
        from diffusers import StableDiffusionPipeline

        dtype = torch.float16 if self.device == "cuda" else torch.float32
        pipe = StableDiffusionPipeline.from_pretrained(
            path, local_files_only=True, use_safetensors=True, dtype=dtype,
            safety_checker=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.device)

    def pipeline(self, spec: JobSpec) -> tuple[Any, bool]:
        checkpoint = self.checkpoints.get(spec.checkpoint)
        if checkpoint.sha256 != spec.checkpoint_sha256:
            raise CheckpointMismatch(
                f"checkpoint {spec.checkpoint!r} changed on disk since the job was submitted"
            )
        return self.cache.get_or_load(checkpoint.sha256, lambda: self._load(checkpoint.path))

    def run(
        self,
        spec: JobSpec,
        on_progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> JobResult:
        import torch
        from PIL import Image

        t0 = time.perf_counter()
        base, loaded_now = self.pipeline(spec)
        t_loaded = time.perf_counter()
        p = spec.params
        batch = int(p.get("batch_size", 1))
        seeds = [int(p["seed"]) + i for i in range(batch)]
        generators = [torch.Generator(self.device).manual_seed(s) for s in seeds]

        kwargs: dict[str, Any] = {
            "prompt": [p["prompt"]] * batch,
            "negative_prompt": [p.get("negative_prompt") or ""] * batch,
            "num_inference_steps": int(p["steps"]),
            "guidance_scale": float(p["guidance"]),
            "generator": generators,
        }
        if spec.workflow == "img2img":
            from diffusers import StableDiffusionImg2ImgPipeline

            if spec.init_image is None:
                raise ValueError("img2img needs an init image")
            pipe = StableDiffusionImg2ImgPipeline.from_pipe(base)
            init = Image.open(io.BytesIO(spec.init_image)).convert("RGB")
            init = init.resize((int(p["width"]), int(p["height"])), Image.Resampling.LANCZOS)
            kwargs["image"] = init
            kwargs["strength"] = float(p["strength"])
            total_steps = max(1, int(int(p["steps"]) * float(p["strength"])))
        else:
            pipe = base
            kwargs["width"] = int(p["width"])
            kwargs["height"] = int(p["height"])
            total_steps = int(p["steps"])

        def step_end(_pipe: Any, step: int, _timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if should_cancel is not None and should_cancel():
                raise JobCanceled()
            if on_progress is not None:
                on_progress(min(step + 1, total_steps), total_steps)
            return callback_kwargs

        with self._run_lock:
            pipe.scheduler = make_scheduler(p.get("scheduler", "euler"), base.scheduler.config)
            if self.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t_start = time.perf_counter()
            with torch.inference_mode():
                images = pipe(**kwargs, callback_on_step_end=step_end).images
            t_done = time.perf_counter()
            peak = (
                torch.cuda.max_memory_allocated()
                if self.device == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            )

        results = []
        for image, seed in zip(images, seeds, strict=True):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            results.append(ImageResult(buf.getvalue(), image.width, image.height, seed))
        t_encoded = time.perf_counter()
        signals = {
            "device": self.device,
            "checkpoint_loaded_now": loaded_now,
            "load_seconds": round(t_loaded - t0, 6),
            "inference_seconds": round(t_done - t_start, 6),
            "encode_seconds": round(t_encoded - t_done, 6),
            "total_seconds": round(t_encoded - t0, 6),
            "peak_memory_bytes": int(peak),
            "peak_memory_kind": "cuda_allocated" if self.device == "cuda" else "process_max_rss",
            "steps": total_steps,
        }
        return JobResult(results, signals)
