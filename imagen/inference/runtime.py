"""Executes a job spec with diffusers. The same code runs in-process, in a Celery worker and on RunPod.

A job names its models by content hash (`ModelRef`). Built-in and operator-installed checkpoints are diffusers folders
under <models>/checkpoints/ (`blob_key` None); uploaded checkpoints and LoRAs are single `.safetensors` files that
`blob_path(key)` makes available locally. Every file is hashed (cached by path, size and mtime) and compared with the
ref before it is loaded, so a changed file is refused (`CheckpointMismatch`) rather than silently used.

Loaded checkpoints stay in a `PipelineCache` keyed by sha256, with the pipelines derived from them (img2img, inpaint)
and their LoRA adapters; the per-kind work is in `pipelines.py`, adapters in `loras.py`, prompt weighting in
`prompts.py`.
"""

from __future__ import annotations

import io
import logging
import resource
import threading
import time
from pathlib import Path
from typing import Any

from imagen.inference.cache import PipelineCache
from imagen.inference.checkpoints import CheckpointNotFound, CheckpointRegistry, file_sha256
from imagen.inference.pipelines import Executor, LoadedModel, base_class, plan_for
from imagen.inference.preview import PreviewFn, due, latents_to_preview
from imagen.inference.spec import (
    BlobPathFn,
    CancelFn,
    CheckpointMismatch,
    ImageResult,
    JobCanceled,
    JobResult,
    JobSpec,
    ModelLoadError,
    ModelRef,
    ProgressFn,
)

log = logging.getLogger(__name__)


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
    def __init__(
        self,
        models_dir: Path,
        *,
        device: str | None = None,
        cache_bytes: int = 8 * 1024**3,
        blob_path: BlobPathFn | None = None,
        preview_every: int = 0,
    ) -> None:
        quiet_libraries()
        self.preview_every = preview_every  # steps between live previews (`on_preview`); 0: none
        self.checkpoints = CheckpointRegistry(models_dir)
        self.device = pick_device(device)
        self.cache = PipelineCache(cache_bytes)
        self.blob_path = blob_path
        # One pipeline instance must not run two jobs at once (schedulers and active adapters are shared state).
        self._run_lock = threading.Lock()

    @property
    def dtype(self) -> Any:
        import torch

        return torch.float16 if self.device.startswith("cuda") else torch.float32

    # -- model files --------------------------------------------------------------------------------------------------

    def model_file(self, ref: ModelRef) -> Path:
        """The local file of an uploaded model, its content hash checked against the ref."""
        if ref.blob_key is None:
            raise ModelLoadError(f"{ref.name} has no file")
        if self.blob_path is None:
            raise ModelLoadError("this runtime has no blob store to read uploaded models from")
        path = Path(self.blob_path(ref.blob_key))
        if file_sha256(path) != ref.sha256.lower():
            raise CheckpointMismatch(f"{ref.kind} {ref.name!r} changed on disk since the job was submitted")
        return path

    def _load_folder(self, ref: ModelRef) -> LoadedModel:
        try:
            checkpoint = self.checkpoints.get(ref.name)
        except CheckpointNotFound:
            raise ModelLoadError(f"checkpoint {ref.name!r} is not installed") from None
        if checkpoint.sha256 != ref.sha256.lower():
            raise CheckpointMismatch(f"checkpoint {ref.name!r} changed on disk since the job was submitted")
        kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True, "dtype": self.dtype}
        if checkpoint.family == "sd15":
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        else:
            kwargs.update(add_watermarker=False)
        pipe = base_class(checkpoint.family).from_pretrained(checkpoint.path, **kwargs)
        return LoadedModel.wrap(checkpoint.sha256, pipe.to(self.device), checkpoint.family)

    def _load_single_file(self, ref: ModelRef) -> LoadedModel:
        from imagen.inference.single_file import load_single_file_pipeline

        path = self.model_file(ref)
        try:
            pipe = load_single_file_pipeline(path, device=self.device, dtype=self.dtype)
        except (ModelLoadError, CheckpointMismatch):
            raise
        except Exception as exc:
            raise ModelLoadError(f"the checkpoint file could not be loaded ({type(exc).__name__})") from exc
        family = "sdxl" if "XL" in type(pipe).__name__ else "sd15"
        return LoadedModel.wrap(ref.sha256.lower(), pipe.to(self.device), family)

    def load(self, ref: ModelRef) -> tuple[LoadedModel, bool]:
        """The loaded checkpoint for `ref` (from the cache, or loaded now): (model, loaded_now)."""
        if ref.kind != "checkpoint":
            raise ModelLoadError(f"{ref.name} is a {ref.kind}, not a checkpoint")
        key = ref.sha256.lower()
        if ref.blob_key is None:
            # A folder's hash is checked on every job (cheap once cached): an edited folder must not be served from
            # memory under its old hash, and must not be loaded under the new one.
            checkpoint = self.checkpoints.get(ref.name) if self.cache.peek(key) is not None else None
            if checkpoint is not None and checkpoint.sha256 != key:
                raise CheckpointMismatch(f"checkpoint {ref.name!r} changed on disk since the job was submitted")
            model, loaded_now = self.cache.get_or_load(key, lambda: self._load_folder(ref))
        else:
            model, loaded_now = self.cache.get_or_load(key, lambda: self._load_single_file(ref))
        if model.family != ref.family:
            raise ModelLoadError(f"the checkpoint is {model.family}, not {ref.family}")
        return model, loaded_now

    def loaded_checkpoints(self) -> set[str]:
        """sha256 of the checkpoints loaded right now (the queue prefers jobs that need no load)."""
        return set(self.cache.keys())

    # -- jobs ---------------------------------------------------------------------------------------------------------

    def run(
        self,
        spec: JobSpec,
        on_progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
        on_preview: PreviewFn | None = None,
    ) -> JobResult:
        import torch

        plan = plan_for(spec)
        if spec.pipeline in ("img2img", "inpaint") and spec.init_image is None:
            raise ModelLoadError(f"{spec.pipeline} needs an input image")
        if spec.pipeline == "inpaint" and spec.mask_image is None:
            raise ModelLoadError("inpaint needs a mask image")
        for lora in spec.loras:  # refused before anything loads
            if lora.family != spec.checkpoint.family:
                raise ModelLoadError(
                    f"LoRA {lora.name} is for {lora.family} but the checkpoint is {spec.checkpoint.family}")

        def on_step(done: int) -> None:
            if should_cancel is not None and should_cancel():
                raise JobCanceled()
            if on_progress is not None:
                on_progress(min(done, plan.total_steps), plan.total_steps)

        def on_latents(done: int, latents: Any) -> None:
            if on_preview is not None and due(done, plan.total_steps, self.preview_every):
                try:
                    on_preview(latents_to_preview(latents, spec.checkpoint.family))
                except Exception:  # a preview is a nicety: it never fails the job
                    log.warning("preview failed", exc_info=True)

        with self._run_lock:
            t0 = time.perf_counter()
            model, loaded_now = self.load(spec.checkpoint)
            t_loaded = time.perf_counter()
            activation = model.adapters.activate(spec.loras, self.model_file)
            if activation.loaded_now:
                self.cache.remeasure(model.sha256)  # adapters add bytes to the entry
            t_loras = time.perf_counter()
            if self.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            images = Executor(model, spec, self.device, on_step,
                              on_latents if on_preview is not None and self.preview_every > 0 else None).run()
            t_done = time.perf_counter()
            peak = (
                torch.cuda.max_memory_allocated()
                if self.device.startswith("cuda")
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            )

        seeds = [int(spec.params["seed"]) + i for i in range(len(images))]
        results = []
        for image, seed in zip(images, seeds, strict=True):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            results.append(ImageResult(buf.getvalue(), image.width, image.height, seed))
        t_encoded = time.perf_counter()
        signals = {
            "device": self.device,
            "pipeline": spec.pipeline,
            "family": model.family,
            "checkpoint_loaded_now": loaded_now,
            "loras_loaded_now": activation.loaded_now,
            "loras_active": [sha for sha, _ in activation.active],
            "load_seconds": round(t_loaded - t0, 6),
            "lora_seconds": round(t_loras - t_loaded, 6),
            "inference_seconds": round(t_done - t_loras, 6),
            "encode_seconds": round(t_encoded - t_done, 6),
            "total_seconds": round(t_encoded - t0, 6),
            "peak_memory_bytes": int(peak),
            "peak_memory_kind": "cuda_allocated" if self.device.startswith("cuda") else "process_max_rss",
            "steps": plan.total_steps,
        }
        return JobResult(results, signals)
