"""Single-file SD 1.x / SDXL checkpoints and LoRAs: real CLIP tokenizers, architecture from shapes, exact round trips.

Every model is a tiny synthetic one built from code (imagen/inference/synthetic.py); nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from imagen.assets.modelfiles import inspect_upload
from imagen.inference.clip_tokenizer import clip_tokenizer
from imagen.inference.single_file import detect_unet_config, load_single_file_pipeline
from imagen.inference.spec import ModelLoadError
from imagen.inference.synthetic import build_tiny_lora, build_tiny_pipeline, save_single_file

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
TEXT_CONFIG_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "max_position_embeddings", "projection_dim", "hidden_act", "layer_norm_eps", "bos_token_id",
                    "eos_token_id", "pad_token_id")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # The tiny models are far faster on one thread than fighting other processes for two cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def generate(pipe: Any, **extra: Any) -> np.ndarray:
    out = pipe(prompt="a photo of a cat", negative_prompt="blurry", num_inference_steps=2, height=64, width=64,
               guidance_scale=5.0, output_type="np", generator=torch.Generator("cpu").manual_seed(7), **extra)
    return out.images[0]


def inspect(path: Path) -> Any:
    with path.open("rb") as f:
        return inspect_upload(path.name, f, path.stat().st_size)[1]


def plain(config: Any) -> dict[str, Any]:
    """A diffusers config without private keys, tuples as lists (JSON round trips turn one into the other)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(config).items() if not k.startswith("_")}


def shapes_of(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as f:
        names = f.keys()  # a safe_open handle is not iterable itself
        return {k: tuple(f.get_slice(k).get_shape()) for k in names}


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers


@pytest.mark.parametrize(("variant", "pad_id"), [("clip_l", 49407), ("clip_g", 0)])
def test_real_clip_tokenizers(variant: str, pad_id: int) -> None:
    tokenizer = clip_tokenizer(variant)  # type: ignore[arg-type]
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert tokenizer.pad_token_id == pad_id
    padded = tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert padded == CAT_IDS + [pad_id] * 70
    long = tokenizer("cat " * 100, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(long) == 77 and long[0] == 49406 and long[-1] == 49407
    assert clip_tokenizer(variant) is tokenizer  # built once per process  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: build -> single file -> load, and the two pipelines agree exactly


@pytest.mark.parametrize(("family", "inpaint"), [("sd15", False), ("sd15", True), ("sdxl", False)],
                         ids=["sd15", "sd15-inpaint", "sdxl"])
def test_single_file_round_trip(tmp_path: Path, family: str, inpaint: bool) -> None:
    original = build_tiny_pipeline(family, inpaint=inpaint)  # type: ignore[arg-type]
    path = save_single_file(original, tmp_path / "tiny.safetensors")
    assert path.stat().st_size < 25_000_000

    found = inspect(path)
    assert (found.kind, found.family, found.in_channels) == ("checkpoint", family, 9 if inpaint else 4)
    assert detect_unet_config(shapes_of(path)).items() <= plain(original.unet.config).items()

    loaded = load_single_file_pipeline(path, device="cpu", dtype=torch.float32)
    assert type(loaded) is type(original)
    assert plain(loaded.unet.config) == plain(original.unet.config)
    assert plain(loaded.vae.config) == plain(original.vae.config)
    assert plain(loaded.scheduler.config) == plain(original.scheduler.config)
    encoders = ["text_encoder", "text_encoder_2"] if family == "sdxl" else ["text_encoder"]
    for name in encoders:
        want, got = getattr(original, name), getattr(loaded, name)
        assert type(got) is type(want)
        assert {k: getattr(got.config, k) for k in TEXT_CONFIG_KEYS} == \
               {k: getattr(want.config, k) for k in TEXT_CONFIG_KEYS}
    if family == "sdxl":
        assert loaded.tokenizer_2.pad_token_id == 0 and loaded.tokenizer.pad_token_id == 49407
    for module in ("unet", "vae", *encoders):
        want, got = getattr(original, module).state_dict(), getattr(loaded, module).state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), module

    if inpaint:
        from diffusers import StableDiffusionInpaintPipeline

        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (16, 16, 48, 48))
        extra = {"image": image, "mask_image": mask, "strength": 1.0}
        original = StableDiffusionInpaintPipeline.from_pipe(original)
        loaded = StableDiffusionInpaintPipeline.from_pipe(loaded)
    else:
        extra = {}
    expected = generate(original, **extra)
    assert expected.std() > 0.01  # not a flat image
    assert np.array_equal(generate(loaded, **extra), expected)


@pytest.fixture(scope="module")
def sd15_pipe() -> Any:
    return build_tiny_pipeline("sd15")


@pytest.fixture(scope="module")
def sd15_state(sd15_pipe: Any) -> dict[str, torch.Tensor]:
    from imagen.inference.synthetic import single_file_state_dict

    return single_file_state_dict(sd15_pipe)


def _save(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "edited.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


REAL_UNETS = {
    "sd15": {"sample_size": 64, "in_channels": 4, "out_channels": 4,
             "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
             "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "block_out_channels": [320, 640, 1280, 1280],
             "layers_per_block": 2, "cross_attention_dim": 768, "attention_head_dim": 8,
             "use_linear_projection": False, "transformer_layers_per_block": 1, "norm_num_groups": 32},
    "sdxl": {"sample_size": 128, "in_channels": 4, "out_channels": 4,
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
             "block_out_channels": [320, 640, 1280], "layers_per_block": 2, "cross_attention_dim": 2048,
             "attention_head_dim": [5, 10, 20], "use_linear_projection": True,
             "transformer_layers_per_block": [1, 2, 10], "norm_num_groups": 32, "addition_embed_type": "text_time",
             "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816},
}
REAL_VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_real_size_layouts_give_the_real_configs(family: str) -> None:
    """Full-size SD 1.5 / SDXL key layouts (meta tensors: names and shapes only) detect as the published configs,
    and diffusers' own converters map the file's names back onto every parameter."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from imagen.inference.single_file import detect_vae_config, unet_key_to_ldm, vae_key_to_ldm

    with init_empty_weights():
        unet = UNet2DConditionModel(**REAL_UNETS[family])
        vae = AutoencoderKL(**REAL_VAE)
    to_ldm = unet_key_to_ldm(REAL_UNETS[family])
    unet_file = {"model.diffusion_model." + to_ldm(k): v for k, v in unet.state_dict().items()}
    shapes = {k: tuple(v.shape) for k, v in unet_file.items()}
    shapes["conditioner.embedders.1.model.text_projection"] = (1280, 1280)
    assert detect_unet_config(shapes) == REAL_UNETS[family]
    known = {"sd15": ["input_blocks.11.0.out_layers.3.weight", "output_blocks.2.1.conv.weight",
                      "output_blocks.8.2.conv.weight", "middle_block.1.proj_in.weight"],
             "sdxl": ["input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight", "output_blocks.2.2.conv.weight",
                      "label_emb.0.2.weight", "middle_block.1.transformer_blocks.9.ff.net.2.bias"]}[family]
    assert all("model.diffusion_model." + k in shapes for k in known)
    assert convert_ldm_unet_checkpoint(unet_file, REAL_UNETS[family]).keys() == unet.state_dict().keys()

    to_ldm = vae_key_to_ldm(REAL_VAE)
    vae_file = {"first_stage_model." + to_ldm(k): v for k, v in vae.state_dict().items()}
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in vae_file
    assert "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight" in vae_file
    vae_config = detect_vae_config({k: tuple(v.shape) for k, v in vae_file.items()}, family)  # type: ignore[arg-type]
    assert vae_config.items() >= REAL_VAE.items()
    assert vae_config["scaling_factor"] == {"sd15": 0.18215, "sdxl": 0.13025}[family]
    assert convert_ldm_vae_checkpoint(vae_file, vae_config).keys() == vae.state_dict().keys()


def test_sd15_text_encoder_without_text_model_level_and_half_precision(
        tmp_path: Path, sd15_pipe: Any, sd15_state: dict[str, torch.Tensor]) -> None:
    level = "cond_stage_model.transformer.text_model."
    old_layout = {k.replace(level, "cond_stage_model.transformer."): v for k, v in sd15_state.items()}
    loaded = load_single_file_pipeline(_save(tmp_path, old_layout), device="cpu", dtype=torch.float16)
    for module in ("unet", "vae", "text_encoder"):
        want, got = getattr(sd15_pipe, module).state_dict(), getattr(loaded, module).state_dict()
        assert all(got[k].dtype == torch.float16 and torch.equal(got[k], want[k].half()) for k in want), module


# ---------------------------------------------------------------------------------------------------------------
# Files that must be refused, with a message that says why




@pytest.mark.parametrize("removed", [
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_v.weight",
    "model.diffusion_model.out.2.weight",
    "first_stage_model.decoder.up.2.block.0.nin_shortcut.weight",
    "first_stage_model.encoder.mid.attn_1.q.bias",
    "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.bias",
])
def test_a_missing_tensor_is_named(tmp_path: Path, sd15_state: dict[str, torch.Tensor], removed: str) -> None:
    assert removed in sd15_state
    path = _save(tmp_path, {k: v for k, v in sd15_state.items() if k != removed})
    with pytest.raises(ModelLoadError, match=removed.replace(".", r"\.")):
        load_single_file_pipeline(path, device="cpu", dtype=torch.float32)


def test_a_tensor_without_a_place_is_refused(tmp_path: Path, sd15_state: dict[str, torch.Tensor]) -> None:
    stray = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.extra.weight"
    path = _save(tmp_path, {**sd15_state, stray: torch.zeros(4, 4)})
    with pytest.raises(ModelLoadError, match=r"no place for.*attn1\.extra\.weight"):
        load_single_file_pipeline(path, device="cpu", dtype=torch.float32)


def test_a_text_encoder_with_another_vocabulary_is_refused(
        tmp_path: Path, sd15_state: dict[str, torch.Tensor]) -> None:
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    path = _save(tmp_path, {**sd15_state, key: sd15_state[key][:1000]})
    with pytest.raises(ModelLoadError, match="1000-token vocabulary"):
        load_single_file_pipeline(path, device="cpu", dtype=torch.float32)


def test_a_lora_is_not_loaded_as_a_checkpoint(tmp_path: Path) -> None:
    path = build_tiny_lora("sd15", tmp_path / "lora.safetensors")
    with pytest.raises(ModelLoadError, match="not a checkpoint"):
        load_single_file_pipeline(path, device="cpu", dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# LoRAs


@pytest.mark.parametrize("layout", ["kohya", "diffusers"])
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_tiny_lora_loads_and_changes_the_image(tmp_path: Path, family: str, layout: str) -> None:
    path = build_tiny_lora(family, tmp_path / "lora.safetensors", layout=layout)  # type: ignore[arg-type]
    found = inspect(path)
    assert (found.kind, found.family) == ("lora", family)
    assert ("Kohya" if layout == "kohya" else "diffusers") in found.description
    assert "UNet + text encoder" in found.description

    pipe = build_tiny_pipeline(family)  # type: ignore[arg-type]
    base = generate(pipe)
    pipe.load_lora_weights(str(path), adapter_name="tiny")
    adapted = ["unet", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    for name in adapted:
        assert "tiny" in getattr(getattr(pipe, name), "peft_config", {}), f"{name} got no LoRA layers"
    assert np.abs(generate(pipe) - base).max() > 0.01
    pipe.set_adapters(["tiny"], [0.0])
    assert np.array_equal(generate(pipe), base)
