"""The pure runtime: built-in models, every pipeline kind on both families, determinism, progress, prompt weighting,
model cache, content hashes, safetensors only."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image

from imagen.inference.cache import PipelineCache
from imagen.inference.checkpoints import folder_sha256
from imagen.inference.pipelines import strength_steps
from imagen.inference.prompts import parse_a1111
from imagen.inference.runtime import Runtime
from imagen.inference.schedulers import SCHEDULERS
from imagen.inference.spec import CheckpointMismatch, JobCanceled, JobSpec, ModelLoadError, ModelRef
from imagen.inference.tiny import TINY_NAME, TINY_XL_NAME, build_tiny_pipeline, build_tiny_xl_pipeline

PARAMS = {"prompt": "a boat", "negative_prompt": "", "steps": 3, "guidance": 7.0, "width": 64, "height": 64,
          "seed": 11, "batch_size": 1, "scheduler": "euler", "strength": 0.7,
          "hires_scale": 1.5, "hires_steps": 3, "hires_strength": 0.7}
KINDS = ["txt2img", "img2img", "inpaint", "hires_fix"]
BUILTINS = [TINY_NAME, TINY_XL_NAME]


def ref_for(runtime: Runtime, name: str = TINY_NAME) -> ModelRef:
    ckpt = runtime.checkpoints.get(name)
    return ModelRef(ckpt.name, ckpt.sha256, ckpt.family)


def spec_for(runtime: Runtime, name: str = TINY_NAME, pipeline: str = "txt2img", **params) -> JobSpec:
    return JobSpec(pipeline, {**PARAMS, **params}, ref_for(runtime, name), init_image=png(INIT), mask_image=png(MASK))


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def pixels(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


INIT = Image.new("RGB", (80, 48), (200, 30, 30))  # another size and aspect: resized to width x height
INIT.paste((20, 40, 220), (40, 0, 80, 48))
MASK = Image.new("L", (80, 48), 0)
MASK.paste(255, (20, 12, 60, 36))  # white = repaint; resized with the image to 64x64


@pytest.mark.parametrize(("name", "build", "family"), [(TINY_NAME, build_tiny_pipeline, "sd15"),
                                                       (TINY_XL_NAME, build_tiny_xl_pipeline, "sdxl")])
def test_builtin_checkpoints_are_built_identically_every_time(tmp_path, runtime, name, build, family):
    rebuilt = build(tmp_path / name)
    ckpt = runtime.checkpoints.get(name)
    assert folder_sha256(rebuilt) == ckpt.sha256 and ckpt.family == family and ckpt.builtin
    files = {p.name for p in rebuilt.rglob("*") if p.is_file()}
    assert "diffusion_pytorch_model.safetensors" in files and "model.safetensors" in files
    assert not any(f.endswith((".bin", ".ckpt", ".pt", ".pth")) for f in files)
    assert {c.name for c in runtime.checkpoints.list()} >= set(BUILTINS)


def test_progress_is_reported_per_step_and_images_are_deterministic(runtime):
    steps = []
    a = runtime.run(spec_for(runtime, steps=5), on_progress=lambda s, t: steps.append((s, t)))
    b = runtime.run(spec_for(runtime, steps=5))
    assert steps == [(i, 5) for i in range(1, 6)]
    assert a.images[0].png == b.images[0].png and a.images[0].seed == 11
    assert a.signals["inference_seconds"] > 0 and a.signals["peak_memory_bytes"] > 0
    assert a.signals["pipeline"] == "txt2img" and a.signals["family"] == "sd15"
    assert a.signals["loras_loaded_now"] == [] and a.signals["lora_seconds"] >= 0


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_pipeline_kind_runs_on_both_families(runtime, name, kind):
    progress = []
    spec = spec_for(runtime, name, kind, batch_size=2)
    result = runtime.run(spec, on_progress=lambda s, t: progress.append((s, t)))
    again = runtime.run(spec)
    size = 96 if kind == "hires_fix" else 64  # 64 x 1.5, a multiple of 8
    assert [(i.width, i.height, i.seed) for i in result.images] == [(size, size, 11), (size, size, 12)]
    assert [i.png for i in result.images] == [i.png for i in again.images]
    assert result.images[0].png != result.images[1].png
    total = {"txt2img": 3, "img2img": 2, "inpaint": 2, "hires_fix": 3 + 2}[kind]  # int(3 x 0.7) = 2
    assert progress == [(i, total) for i in range(1, total + 1)] and result.signals["steps"] == total
    assert result.signals["pipeline"] == kind and result.signals["family"] == ref_for(runtime, name).family


@pytest.mark.parametrize("name", BUILTINS)
def test_inpaint_keeps_the_unmasked_pixels_and_repaints_the_masked_ones(runtime, name):
    out = pixels(runtime.run(spec_for(runtime, name, "inpaint", strength=1.0)).images[0].png)
    init = INIT.resize((64, 64), Image.Resampling.LANCZOS)
    assert out.getpixel((2, 2)) == init.getpixel((2, 2))  # black in the mask: kept exactly
    assert out.getpixel((32, 32)) != init.getpixel((32, 32))  # white: repainted


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_listed_scheduler_runs(runtime, scheduler):
    assert "lcm" in SCHEDULERS
    assert runtime.run(spec_for(runtime, scheduler=scheduler, steps=2)).images[0].png.startswith(b"\x89PNG")


@pytest.mark.parametrize("kind", ["txt2img", "img2img"])
def test_lcm_runs_on_sdxl(runtime, kind):
    result = runtime.run(spec_for(runtime, TINY_XL_NAME, kind, scheduler="lcm", steps=4, guidance=1.5))
    assert result.images[0].png.startswith(b"\x89PNG")


def test_image_to_image_always_runs_at_least_one_step(runtime):
    assert strength_steps(20, 0.5) == (20, 10) and strength_steps(2, 0.3) == (4, 1)
    assert strength_steps(1, 0.01) == (100, 1)
    result = runtime.run(spec_for(runtime, pipeline="img2img", steps=1, strength=0.05))
    assert result.signals["steps"] == 1


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
    assert ref_for(runtime).sha256 in runtime.loaded_checkpoints()
    runtime.run(spec_for(runtime, pipeline="img2img"))  # derived with from_pipe: no load
    assert runtime.cache.loads == loads


def test_missing_inputs_and_wrong_family_are_refused(runtime):
    with pytest.raises(ModelLoadError):
        runtime.run(JobSpec("img2img", PARAMS, ref_for(runtime)))
    with pytest.raises(ModelLoadError):
        runtime.run(JobSpec("inpaint", PARAMS, ref_for(runtime), init_image=png(INIT)))
    ref = ref_for(runtime)
    with pytest.raises(ModelLoadError):
        runtime.run(JobSpec("txt2img", PARAMS, ModelRef(ref.name, ref.sha256, "sdxl")))


def test_changed_checkpoint_is_refused(runtime, models_dir):
    folder = models_dir / "checkpoints" / TINY_NAME
    ref = ref_for(runtime)
    with pytest.raises(CheckpointMismatch):
        runtime.run(JobSpec("txt2img", PARAMS, ModelRef(ref.name, "0" * 64, "sd15")))
    assert folder_sha256(folder) == ref.sha256


def test_a_folder_changed_after_it_was_loaded_is_refused(tmp_path, runtime):
    other = Runtime(tmp_path, device="cpu")
    shutil.copytree(runtime.checkpoints.get(TINY_NAME).path, tmp_path / "checkpoints" / "mine")
    ref = ref_for(other, "mine")
    other.run(JobSpec("txt2img", PARAMS, ref))
    with (tmp_path / "checkpoints" / "mine" / "scheduler" / "scheduler_config.json").open("a") as f:
        f.write("\n")
    with pytest.raises(CheckpointMismatch):
        other.run(JobSpec("txt2img", PARAMS, ref))


def test_pickle_weights_are_never_loaded(tmp_path, runtime):
    folder = tmp_path / "checkpoints" / "pickled"
    shutil.copytree(runtime.checkpoints.get(TINY_NAME).path, folder)
    for f in folder.rglob("*.safetensors"):
        f.rename(f.with_name(f.name.replace(".safetensors", ".bin").replace("model", "pytorch_model")))
    other = Runtime(tmp_path, device="cpu")
    with pytest.raises(Exception) as exc:
        other.run(spec_for(other, "pickled"))
    assert "safetensors" in str(exc.value).lower() or "no file named" in str(exc.value).lower()


# -- prompt weighting -----------------------------------------------------------------------------------------------


def test_a1111_weights_are_parsed():
    assert parse_a1111("a cat") == [("a cat", 1.0)]
    assert parse_a1111("a (cat:1.0)") == [("a cat", 1.0)]
    assert parse_a1111("a (cat:1.3)") == [("a ", 1.0), ("cat", 1.3)]
    assert parse_a1111("(cat)") == [("cat", 1.1)]
    assert parse_a1111("[cat]") == [("cat", pytest.approx(1 / 1.1))]
    assert parse_a1111("((cat))") == [("cat", pytest.approx(1.21))]
    assert parse_a1111("((cat:1.5) dog)") == [("cat", pytest.approx(1.65)), (" dog", pytest.approx(1.1))]
    assert parse_a1111(r"a \(cat\) [dog\]") == [("a (cat) [dog]", 1.0)]
    assert parse_a1111("a (cat") == [("a (cat", 1.0)] and parse_a1111("cat) ]") == [("cat) ]", 1.0)]
    assert parse_a1111("(x:1.2.3)") == [("x:1.2.3", 1.1)]
    assert parse_a1111("") == [("", 1.0)]


@pytest.mark.parametrize("name", BUILTINS)
def test_prompt_weighting_changes_the_image_only_when_weights_do(runtime, name):
    def image(prompt: str, negative: str = "") -> bytes:
        return runtime.run(spec_for(runtime, name, prompt=prompt, negative_prompt=negative, steps=2)).images[0].png

    plain = image("a cat")
    assert image("a (cat:1.0)") == plain
    assert image("a (cat:1.5)") != plain
    assert image("a [cat]") != plain
    assert image("a (cat") != plain and image("a cat))") != plain  # literal brackets; no crash
    assert image("a cat", "(blurry:1.4)") != image("a cat", "blurry")
    assert image("a cat, " + "very " * 100) != plain  # past 75 tokens: chunked, padded against the negative


# -- model cache ----------------------------------------------------------------------------------------------------


class FakePipe:
    def __init__(self, nbytes: int) -> None:
        import torch

        self.components = {"unet": torch.nn.Linear(nbytes // 4, 1, bias=False)}
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_model_cache_evicts_least_recently_used_past_its_budget():
    cache = PipelineCache(budget_bytes=1000)
    a, _ = cache.get_or_load("a", lambda: FakePipe(400))
    b, _ = cache.get_or_load("b", lambda: FakePipe(400))
    cache.get_or_load("a", lambda: FakePipe(400))  # a is now most recent
    cache.get_or_load("c", lambda: FakePipe(400))  # over budget: b goes
    assert cache.keys() == ["a", "c"] and cache.loads == 3 and b.closed and not a.closed
    _, loaded = cache.get_or_load("b", lambda: FakePipe(400))
    assert loaded and cache.keys() == ["c", "b"]


def test_an_entry_that_grows_in_place_evicts_others():
    import torch

    cache = PipelineCache(budget_bytes=1000)
    cache.get_or_load("a", lambda: FakePipe(400))
    b, _ = cache.get_or_load("b", lambda: FakePipe(400))
    b.components["lora"] = torch.nn.Linear(100, 1, bias=False)  # +400 bytes, as adapters add
    cache.remeasure("b")
    assert cache.keys() == ["b"] and cache.used_bytes == 800 and cache.loads == 2
