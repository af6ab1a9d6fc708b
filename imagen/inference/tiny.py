"""The built-in `imagen-tiny` checkpoint: a Stable-Diffusion-architecture pipeline built from code.

It is created with fixed seeds on first use and saved as safetensors, so every install gets the same
weights with no download. Its images are not pretty (the weights are random); it exists so that the
whole service runs, end to end, on any machine.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

TINY_NAME = "imagen-tiny"
_SEED = 20260429


def _byte_level_vocab() -> dict[str, int]:
    """A CLIP-style byte-level vocabulary with no merges: every byte is a token."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def build_tiny_pipeline(target: Path) -> Path:
    """Create the tiny pipeline in `target` (atomically) and return the folder."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        tok_dir = staging / "_tok"
        tok_dir.mkdir()
        vocab = _byte_level_vocab()
        (tok_dir / "vocab.json").write_text(json.dumps(vocab))
        (tok_dir / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)

        with torch.random.fork_rng():
            torch.manual_seed(_SEED)
            unet = UNet2DConditionModel(
                block_out_channels=(32, 64),
                layers_per_block=1,
                sample_size=64,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=32,
                attention_head_dim=8,
                norm_num_groups=32,
            )
            vae = AutoencoderKL(
                block_out_channels=[16, 32, 32, 32],
                in_channels=3,
                out_channels=3,
                down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4,
                latent_channels=4,
                norm_num_groups=16,
                layers_per_block=1,
                sample_size=512,
            )
            text_encoder = CLIPTextModel(
                CLIPTextConfig(
                    bos_token_id=vocab["<|startoftext|>"],
                    eos_token_id=vocab["<|endoftext|>"],
                    pad_token_id=vocab["<|endoftext|>"],
                    hidden_size=32,
                    intermediate_size=37,
                    num_attention_heads=4,
                    num_hidden_layers=2,
                    vocab_size=len(vocab),
                )
            )
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
            steps_offset=1,
        )
        pipe = StableDiffusionPipeline(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        out = staging / "pipeline"
        pipe.save_pretrained(out, safe_serialization=True)
        if target.exists():  # another process won the race; keep theirs
            return target
        out.rename(target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_tiny_checkpoint(models_dir: Path) -> Path:
    target = models_dir / "checkpoints" / TINY_NAME
    if not (target / "model_index.json").exists():
        build_tiny_pipeline(target)
    return target
