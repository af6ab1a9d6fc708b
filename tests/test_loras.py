"""Uploaded models through the runtime: single-file checkpoints (SD 1.x, SDXL, 9-channel inpainting) and stacked LoRAs
(Kohya and diffusers layouts) from `blob_path`, with adapters kept loaded across jobs."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from imagen.inference.checkpoints import file_sha256
from imagen.inference.runtime import Runtime
from imagen.inference.spec import CheckpointMismatch, JobSpec, ModelLoadError, ModelRef
from imagen.inference.synthetic import build_tiny_lora, build_tiny_pipeline, save_single_file

PARAMS = {"prompt": "a (lighthouse:1.2) at dusk", "negative_prompt": "blurry", "steps": 2, "guidance": 7.0,
          "width": 64, "height": 64, "seed": 7, "batch_size": 1, "scheduler": "euler", "strength": 0.75,
          "hires_scale": 1.5, "hires_steps": 2, "hires_strength": 0.75}
FAMILIES = ["sd15", "sdxl"]


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


INIT = png(Image.new("RGB", (64, 64), (180, 60, 20)))
_mask = Image.new("L", (64, 64), 0)
_mask.paste(255, (16, 16, 48, 48))
MASK = png(_mask)


class Uploads:
    """A folder standing in for the blob store: key -> file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def ref(self, key: str, family: str, kind: str = "checkpoint", weight: float = 1.0) -> ModelRef:
        return ModelRef(key, file_sha256(self.path(key)), family, kind=kind, blob_key=key, weight=weight)


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> Uploads:
    up = Uploads(tmp_path_factory.mktemp("blobs"))
    for family in FAMILIES:
        save_single_file(build_tiny_pipeline(family, seed=3), up.path(f"{family}.safetensors"))
        save_single_file(build_tiny_pipeline(family, inpaint=True, seed=4), up.path(f"{family}-inpaint.safetensors"))
        build_tiny_lora(family, up.path(f"{family}-kohya.safetensors"), layout="kohya", seed=1)
        build_tiny_lora(family, up.path(f"{family}-diffusers.safetensors"), layout="diffusers", seed=2,
                        text_encoder=False)
    return up


@pytest.fixture(scope="module")
def rt(uploads: Uploads, models_dir: Path) -> Runtime:
    """A runtime of its own, so that the cache's counters and adapters start clean here."""
    return Runtime(models_dir, device="cpu", blob_path=uploads.path)


def job(uploads: Uploads, family: str, *loras: ModelRef, pipeline: str = "txt2img", checkpoint: str = "",
        **params) -> JobSpec:
    ckpt = uploads.ref(checkpoint or f"{family}.safetensors", family)
    return JobSpec(pipeline, {**PARAMS, **params}, ckpt, tuple(loras), init_image=INIT, mask_image=MASK)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_weight_zero_is_the_base_image_and_no_lora_is_unchanged_by_earlier_loras(rt, uploads, family):
    kohya = uploads.ref(f"{family}-kohya.safetensors", family, "lora")
    base = rt.run(job(uploads, family)).images[0].png  # before this pipeline ever saw a LoRA

    zero = rt.run(job(uploads, family, dataclasses.replace(kohya, weight=0.0)))
    assert zero.images[0].png == base and zero.signals["loras_loaded_now"] == [kohya.sha256]

    one = rt.run(job(uploads, family, kohya))
    assert one.images[0].png != base and one.signals["loras_loaded_now"] == []
    assert one.signals["loras_active"] == [kohya.sha256]
    half = rt.run(job(uploads, family, dataclasses.replace(kohya, weight=0.5))).images[0].png
    assert half not in (base, one.images[0].png)

    after = rt.run(job(uploads, family))
    assert after.images[0].png == base and after.signals["loras_active"] == []
    assert rt.run(job(uploads, family, kohya)).images[0].png == one.images[0].png  # re-weighted back, same image


@pytest.mark.parametrize("family", FAMILIES)
def test_two_loras_stack_and_switching_never_reloads_the_checkpoint(rt, uploads, family):
    kohya = uploads.ref(f"{family}-kohya.safetensors", family, "lora")
    peft = uploads.ref(f"{family}-diffusers.safetensors", family, "lora")
    a = rt.run(job(uploads, family, kohya))
    loads = rt.cache.loads
    b = rt.run(job(uploads, family, peft))
    assert b.signals["checkpoint_loaded_now"] is False and rt.cache.loads == loads
    assert b.signals["loras_loaded_now"] in ([peft.sha256], [])  # [] when an earlier test loaded it
    both = rt.run(job(uploads, family, kohya, peft))
    assert both.signals["checkpoint_loaded_now"] is False and both.signals["loras_loaded_now"] == []
    assert len({a.images[0].png, b.images[0].png, both.images[0].png}) == 3
    assert rt.run(job(uploads, family, peft, kohya)).images[0].png == both.images[0].png  # order does not matter
    assert rt.cache.loads == loads
    assert {"lora_seconds", "load_seconds", "inference_seconds", "family", "pipeline"} <= set(both.signals)
    assert both.signals["family"] == family


@pytest.mark.parametrize("kind", ["img2img", "inpaint", "hires_fix"])
def test_loras_apply_to_every_pipeline_kind(rt, uploads, kind):
    kohya = uploads.ref("sd15-kohya.safetensors", "sd15", "lora")
    base = rt.run(job(uploads, "sd15", pipeline=kind)).images[0].png
    with_lora = rt.run(job(uploads, "sd15", kohya, pipeline=kind))
    assert with_lora.images[0].png != base and with_lora.signals["checkpoint_loaded_now"] is False


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["txt2img", "img2img", "inpaint", "hires_fix"])
def test_every_pipeline_kind_runs_on_an_inpainting_single_file(rt, uploads, family, kind):
    spec = job(uploads, family, pipeline=kind, checkpoint=f"{family}-inpaint.safetensors")
    result = rt.run(spec)
    size = 96 if kind == "hires_fix" else 64
    assert (result.images[0].width, result.images[0].height) == (size, size)
    assert result.signals["family"] == family and rt.run(spec).images[0].png == result.images[0].png


def test_lora_for_another_family_is_refused(rt, uploads):
    xl_lora = uploads.ref("sdxl-kohya.safetensors", "sdxl", "lora")
    with pytest.raises(ModelLoadError):  # refused from the spec, before anything loads
        rt.run(job(uploads, "sd15", xl_lora))
    # A spec that mislabels its checkpoint: the loaded pipeline's own architecture decides.
    sd15_as_sdxl = dataclasses.replace(uploads.ref("sd15.safetensors", "sd15"), family="sdxl")
    with pytest.raises(ModelLoadError):
        rt.run(JobSpec("txt2img", PARAMS, sd15_as_sdxl, (xl_lora,)))


def test_a_lora_that_does_not_fit_is_refused_and_leaves_the_pipeline_clean(rt, uploads):
    # An SDXL LoRA made for another SDXL UNet (the synthetic one) on the built-in imagen-tiny-xl: shapes differ.
    builtin = rt.checkpoints.get("imagen-tiny-xl")
    ref = ModelRef(builtin.name, builtin.sha256, "sdxl")
    base = rt.run(JobSpec("txt2img", PARAMS, ref)).images[0].png
    misfit = uploads.ref("sdxl-diffusers.safetensors", "sdxl", "lora")
    with pytest.raises(ModelLoadError):
        rt.run(JobSpec("txt2img", PARAMS, ref, (misfit,)))
    model, _ = rt.load(ref)
    assert model.adapters.loaded == [] and not any(model.base.get_list_adapters().values())
    assert rt.run(JobSpec("txt2img", PARAMS, ref)).images[0].png == base


def test_a_changed_upload_is_refused(rt, uploads):
    # Files no pipeline has loaded yet (a loaded one is in memory under its hash and is not read again).
    build_tiny_lora("sd15", uploads.path("fresh-lora.safetensors"), seed=9)
    uploads.path("fresh-ckpt.safetensors").write_bytes(uploads.path("sd15.safetensors").read_bytes())
    ckpt = uploads.ref("fresh-ckpt.safetensors", "sd15")
    lora = uploads.ref("fresh-lora.safetensors", "sd15", "lora")
    with uploads.path("fresh-lora.safetensors").open("r+b") as f:  # same size, one byte different
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(CheckpointMismatch):
        rt.run(JobSpec("txt2img", PARAMS, ckpt, (lora,)))
    with uploads.path("fresh-ckpt.safetensors").open("ab") as f:
        f.write(b" ")
    rt.cache.clear()
    with pytest.raises(CheckpointMismatch):
        rt.run(JobSpec("txt2img", PARAMS, ckpt))
    assert rt.loaded_checkpoints() == set()


def test_least_recently_used_adapters_are_unloaded_and_reload_on_demand(rt, uploads):
    kohya = uploads.ref("sd15-kohya.safetensors", "sd15", "lora")
    peft = uploads.ref("sd15-diffusers.safetensors", "sd15", "lora")
    first = rt.run(job(uploads, "sd15", kohya)).images[0].png
    model, _ = rt.load(uploads.ref("sd15.safetensors", "sd15"))
    model.adapters.max_loaded = 1
    try:
        rt.run(job(uploads, "sd15", peft))
        assert model.adapters.loaded == [peft.sha256]
        again = rt.run(job(uploads, "sd15", kohya))
        assert again.signals["loras_loaded_now"] == [kohya.sha256] and again.images[0].png == first
        assert again.signals["checkpoint_loaded_now"] is False
        stacked = rt.run(job(uploads, "sd15", kohya, peft))  # one job may exceed the bound
        assert set(model.adapters.loaded) == {kohya.sha256, peft.sha256} and stacked.images[0].png
    finally:
        model.adapters.max_loaded = 16


def test_evicting_a_checkpoint_drops_its_adapters(uploads, models_dir):
    small = Runtime(models_dir, device="cpu", blob_path=uploads.path, cache_bytes=1)  # room for one pipeline
    kohya = uploads.ref("sd15-kohya.safetensors", "sd15", "lora")
    first = small.run(job(uploads, "sd15", kohya))
    sd15 = uploads.ref("sd15.safetensors", "sd15").sha256
    small.run(job(uploads, "sdxl"))
    assert small.loaded_checkpoints() == {uploads.ref("sdxl.safetensors", "sdxl").sha256}
    back = small.run(job(uploads, "sd15", kohya))
    assert back.signals["checkpoint_loaded_now"] is True and back.signals["loras_loaded_now"] == [kohya.sha256]
    assert back.images[0].png == first.images[0].png and small.cache.loads == 3 and sd15 in small.loaded_checkpoints()
