"""The built-in tiny checkpoints, one per family, built from code: `imagen-tiny` (SD 1.x) and `imagen-tiny-xl` (SDXL).

Each is created with fixed seeds on first use and saved as safetensors, so every install gets the same weights with
no download. Their images are not pretty (the weights are random); they exist so that every workflow runs, end to
end, on any machine, for both architectures.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagen.inference import demo

TINY_NAME = "imagen-tiny"
TINY_XL_NAME = "imagen-tiny-xl"
_SEED = 20260429
_XL_SEED = 20260430


def _byte_level_vocab() -> dict[str, int]:
    """A CLIP-style byte-level vocabulary with no merges: every byte is a token."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def _tokenizer(folder: Path, vocab: dict[str, int]) -> Any:
    from transformers import CLIPTokenizer

    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _text_config(vocab: dict[str, int], **extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=len(vocab),
        **extra,
    )


def _vae(**extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[16, 32, 32, 32], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4, norm_num_groups=16, layers_per_block=1, sample_size=512, **extra,
    )


def _scheduler(**extra: Any) -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1,
        **extra,
    )


def _sd15_components(tok_dir: Path) -> Any:
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    vocab = _byte_level_vocab()
    tokenizer = _tokenizer(tok_dir, vocab)
    with torch.random.fork_rng():
        torch.manual_seed(_SEED)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=64, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
        )
        vae = _vae()
        text_encoder = CLIPTextModel(_text_config(vocab))
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _sdxl_components(tok_dir: Path) -> Any:
    """SDXL's layout at toy size: two text encoders (the second with a projection whose pooled output conditions the
    UNet with the size/crop time ids), cross-attention over both encoders' hidden states concatenated (32 + 32)."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    vocab = _byte_level_vocab()
    tokenizer = _tokenizer(tok_dir, vocab)
    with torch.random.fork_rng():
        torch.manual_seed(_XL_SEED)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=64, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=32,
        )
        vae = _vae(scaling_factor=0.13025, force_upcast=False)
        text_encoder = CLIPTextModel(_text_config(vocab))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(vocab, projection_dim=32))
    return StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, scheduler=_scheduler(timestep_spacing="leading"), add_watermarker=False,
        force_zeros_for_empty_prompt=True,
    )


def _build(target: Path, components: Callable[[Path], Any]) -> Path:
    """Build a pipeline with `components` and save it to `target` atomically (a staging folder renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        pipe = components(staging / "_tok")
        out = staging / "pipeline"
        pipe.save_pretrained(out, safe_serialization=True)
        if target.exists():  # another process won the race; keep theirs
            return target
        out.rename(target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_tiny_pipeline(target: Path) -> Path:
    """Create `imagen-tiny` (SD 1.x architecture) in `target` and return the folder."""
    return _build(target, _sd15_components)


def build_tiny_xl_pipeline(target: Path) -> Path:
    """Create `imagen-tiny-xl` (SDXL architecture) in `target` and return the folder."""
    return _build(target, _sdxl_components)


BUILTINS: dict[str, Callable[[Path], Path]] = {TINY_NAME: build_tiny_pipeline, TINY_XL_NAME: build_tiny_xl_pipeline}
if demo.shipped():  # trained weights shipped in the package (imagen/inference/demo), copied on first use
    BUILTINS[demo.DEMO_NAME] = demo.install_demo


def ensure_builtin(models_dir: Path, name: str) -> Path:
    target = models_dir / "checkpoints" / name
    if not (target / "model_index.json").exists():
        BUILTINS[name](target)
    return target


def ensure_tiny_checkpoint(models_dir: Path) -> Path:
    return ensure_builtin(models_dir, TINY_NAME)


def ensure_tiny_xl_checkpoint(models_dir: Path) -> Path:
    return ensure_builtin(models_dir, TINY_XL_NAME)
