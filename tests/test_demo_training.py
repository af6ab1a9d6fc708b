"""The demo model's training script, at toy scale: it writes a pipeline the runtime loads and a LoRA the adapter
manager applies, two runs with one seed give the same bytes, and the judge the benchmark scores with reads the
pictures the world draws exactly. (Whether a full run meets the accuracy bar is the model card's business.)"""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from imagen.inference.checkpoints import file_sha256
from imagen.inference.demo import DEMO_NAME
from imagen.inference.demo.shapes import judge, random_scene, render, render_with_mask
from imagen.inference.demo.train import LORA_NAME, pixel_weights, train
from imagen.inference.runtime import Runtime
from imagen.inference.spec import JobSpec, ModelRef

TOY = {"seed": 7, "images": 96, "vae_steps": 3, "unet_steps": 3, "lora_steps": 2, "threads": 1, "eval_count": 0}


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    # train() sets process-wide torch state (seed, threads, deterministic algorithms): put it back for the others.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        with torch.random.fork_rng():
            for out in (first, second):
                train(out, report=lambda _line: None, **TOY)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return first, second


def test_two_runs_with_one_seed_give_the_same_weights(toy_runs):
    first, second = toy_runs
    weights = sorted(p.relative_to(first) for p in first.rglob("*.safetensors"))
    assert len(weights) == 4  # unet, vae, text encoder, LoRA
    for rel in weights:
        assert file_sha256(first / rel) == file_sha256(second / rel), rel


def test_the_trained_folder_loads_and_generates_through_the_runtime_with_its_lora(toy_runs, tmp_path):
    out = toy_runs[0]
    summary = json.loads((out / "training.json").read_text())
    assert set(summary["stages"]) == {"vae", "unet", "lora"} and summary["seed"] == TOY["seed"]
    shutil.copytree(out / DEMO_NAME, tmp_path / "checkpoints" / DEMO_NAME)
    lora_file = out / "loras" / f"{LORA_NAME}.safetensors"
    runtime = Runtime(tmp_path, device="cpu", blob_path=lambda key: lora_file)
    ckpt = runtime.checkpoints.get(DEMO_NAME)
    ref = ModelRef(ckpt.name, ckpt.sha256, ckpt.family)
    params = {"prompt": "a large red star in the top left on a blue background", "negative_prompt": "", "steps": 2,
              "guidance": 7.0, "width": 64, "height": 64, "seed": 1, "batch_size": 1, "scheduler": "euler"}

    def png(weight: float | None) -> bytes:
        loras = () if weight is None else (
            ModelRef("striped", file_sha256(lora_file), "sd15", kind="lora", blob_key="k", weight=weight),)
        return runtime.run(JobSpec("txt2img", params, ref, loras=loras)).images[0].png

    base = png(None)
    assert Image.open(io.BytesIO(base)).size == (64, 64)
    assert png(0.0) == base and png(1.0) != base


def test_the_lora_file_keeps_its_attention_layers_in_one_naming(toy_runs):
    # A file mixing diffusers' old names with PEFT's loads without its attention layers (the first session's did).
    with safe_open(toy_runs[0] / "loras" / f"{LORA_NAME}.safetensors", "pt") as f:
        keys = list(f.keys())
    assert any(".attn2.to_k." in k for k in keys) and any(".conv1." in k for k in keys)
    assert all(".lora_A." in k or ".lora_B." in k for k in keys), [k for k in keys if ".lora_" not in k][:3]


def test_the_judge_reads_every_drawn_picture_exactly():
    rng = random.Random(31)
    for _ in range(120):
        scene = random_scene(rng)
        assert all(judge(render(scene, rng)).score(scene).values()), scene


def test_the_shapes_pixels_weigh_more_in_the_loss():
    rng = random.Random(3)
    scene = random_scene(rng)
    picture, mask = render_with_mask(scene, rng)
    masks = torch.from_numpy(np.asarray(mask)[None, None] > 127)
    weights = pixel_weights(masks)
    assert weights.shape == (1, 1, 16, 16)
    assert float(weights.min()) == 1.0 and float(weights.max()) > 3.5  # background 1, inside the shape 4
    assert picture.size == (64, 64)
