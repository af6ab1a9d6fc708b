"""The pure runtime: built-in model, determinism, progress, model cache, safetensors only."""

from __future__ import annotations

import shutil

import pytest

from imagen.inference.cache import PipelineCache
from imagen.inference.checkpoints import folder_sha256
from imagen.inference.runtime import Runtime
from imagen.inference.spec import CheckpointMismatch, JobCanceled, JobSpec
from imagen.inference.tiny import build_tiny_pipeline

PARAMS = {"prompt": "a boat", "negative_prompt": "", "steps": 3, "guidance": 7.0, "width": 64, "height": 64,
          "seed": 11, "batch_size": 1, "scheduler": "euler"}


def spec_for(runtime: Runtime, name: str = "imagen-tiny", **params) -> JobSpec:
    ckpt = runtime.checkpoints.get(name)
    return JobSpec("txt2img", {**PARAMS, **params}, ckpt.name, ckpt.sha256)


def test_tiny_checkpoint_is_built_identically_every_time(tmp_path, runtime):
    rebuilt = build_tiny_pipeline(tmp_path / "imagen-tiny")
    assert folder_sha256(rebuilt) == runtime.checkpoints.get("imagen-tiny").sha256
    files = {p.name for p in rebuilt.rglob("*") if p.is_file()}
    assert "diffusion_pytorch_model.safetensors" in files and "model.safetensors" in files
    assert not any(f.endswith((".bin", ".ckpt", ".pt", ".pth")) for f in files)


def test_progress_is_reported_per_step_and_images_are_deterministic(runtime):
    steps = []
    a = runtime.run(spec_for(runtime, steps=5), on_progress=lambda s, t: steps.append((s, t)))
    b = runtime.run(spec_for(runtime, steps=5))
    assert steps == [(i, 5) for i in range(1, 6)]
    assert a.images[0].png == b.images[0].png and a.images[0].seed == 11
    assert a.signals["inference_seconds"] > 0 and a.signals["peak_memory_bytes"] > 0


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras", "unipc"])
def test_every_listed_scheduler_runs(runtime, scheduler):
    assert runtime.run(spec_for(runtime, scheduler=scheduler, steps=2)).images[0].png.startswith(b"\x89PNG")


def test_cancel_stops_the_denoising_loop(runtime):
    calls = []

    def should_cancel() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(JobCanceled):
        runtime.run(spec_for(runtime, steps=50), should_cancel=should_cancel)
    assert len(calls) == 2


def test_pipeline_stays_loaded_between_jobs(runtime):
    runtime.run(spec_for(runtime))
    loads = runtime.cache.loads
    result = runtime.run(spec_for(runtime, seed=99))
    assert runtime.cache.loads == loads and result.signals["checkpoint_loaded_now"] is False


def test_changed_checkpoint_is_refused(runtime, models_dir):
    folder = models_dir / "checkpoints" / "imagen-tiny"
    ckpt = runtime.checkpoints.get("imagen-tiny")
    with pytest.raises(CheckpointMismatch):
        runtime.run(JobSpec("txt2img", PARAMS, ckpt.name, "0" * 64))
    assert folder_sha256(folder) == ckpt.sha256


def test_pickle_weights_are_never_loaded(tmp_path, runtime):
    folder = tmp_path / "checkpoints" / "pickled"
    shutil.copytree(runtime.checkpoints.get("imagen-tiny").path, folder)
    for f in folder.rglob("*.safetensors"):
        f.rename(f.with_name(f.name.replace(".safetensors", ".bin").replace("model", "pytorch_model")))
    other = Runtime(tmp_path, device="cpu")
    with pytest.raises(Exception) as exc:
        other.run(spec_for(other, "pickled"))
    assert "safetensors" in str(exc.value).lower() or "no file named" in str(exc.value).lower()


class FakePipe:
    def __init__(self, nbytes: int) -> None:
        import torch

        self.components = {"unet": torch.nn.Linear(nbytes // 4, 1, bias=False)}


def test_model_cache_evicts_least_recently_used_past_its_budget():
    cache = PipelineCache(budget_bytes=1000)
    cache.get_or_load("a", lambda: FakePipe(400))
    cache.get_or_load("b", lambda: FakePipe(400))
    cache.get_or_load("a", lambda: FakePipe(400))  # a is now most recent
    cache.get_or_load("c", lambda: FakePipe(400))  # over budget: b goes
    assert cache.keys() == ["a", "c"] and cache.loads == 3
    _, loaded = cache.get_or_load("b", lambda: FakePipe(400))
    assert loaded and cache.keys() == ["c", "b"]
