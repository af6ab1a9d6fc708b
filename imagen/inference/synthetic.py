"""Tiny SD 1.x / SDXL models built from code: pipelines, single-file checkpoints and LoRAs for tests and benchmarks.

They are shaped like the real architectures (same block types, key layouts, head rules and the real 49408-token
CLIP vocabulary, so the real tokenizers are used) but narrow, so each file is a few MB and a 64x64 image takes a
fraction of a second on a CPU. Weights are random but fixed by `seed`; every parameter gets a little noise so that
no two tensors are alike (a swapped key in a conversion shows up as a different image).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from imagen.inference.clip_tokenizer import VOCAB_SIZE
from imagen.inference.single_file import (
    SD15_TE_PREFIX,
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    assemble_pipeline,
    family_settings,
    open_clip_key_to_ldm,
    unet_key_to_ldm,
    vae_key_to_ldm,
)

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

TinyFamily = Literal["sd15", "sdxl"]
LoraLayout = Literal["kohya", "diffusers"]

_NOISE = 0.02  # on top of the default init: norms are no longer all ones, biases no longer all zeros
_UNET_TARGETS = tuple(f".{attn}.{proj}" for attn in ("attn1", "attn2") for proj in ("to_q", "to_k", "to_v", "to_out.0"))
_TEXT_TARGETS = tuple(f".self_attn.{proj}" for proj in ("q_proj", "k_proj", "v_proj", "out_proj"))


def unet_kwargs(family: TinyFamily, *, inpaint: bool = False) -> dict[str, Any]:
    """The tiny UNet's config: real block types, narrow channels (SDXL: heads = channels // 64, at least 1)."""
    common: dict[str, Any] = {
        "in_channels": 9 if inpaint else 4, "out_channels": 4, "block_out_channels": (32, 64),
        "layers_per_block": 2, "norm_num_groups": 32,
    }
    if family == "sd15":
        return common | {
            "sample_size": 64,
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": 32,  # = text encoder width
            "attention_head_dim": 8,  # 8 heads, as SD 1.x
        }
    return common | {
        "sample_size": 128,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2),
        "use_linear_projection": True,
        "cross_attention_dim": 48,  # 16 (CLIP-L stand-in) + 32 (bigG stand-in)
        "attention_head_dim": (1, 1),
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 32 + 6 * 8,  # pooled width + 6 size/crop ids
    }


def vae_kwargs(family: TinyFamily) -> dict[str, Any]:
    """Four levels (8x downsampling, 4 latent channels) like the real VAEs, with 32/64 channels."""
    settings = family_settings(family)["vae"]
    return {
        "in_channels": 3, "out_channels": 3, "block_out_channels": (32, 32, 32, 64), "layers_per_block": 1,
        "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
        "latent_channels": 4, "norm_num_groups": 32, "sample_size": settings["sample_size"],
        "scaling_factor": settings["scaling_factor"],
    }


def text_encoder_kwargs(family: TinyFamily) -> list[dict[str, Any]]:
    """CLIPTextConfig fields per text encoder, with the real vocabulary and special-token ids."""
    def clip(hidden: int, act: str, pad: int) -> dict[str, Any]:
        return {"vocab_size": VOCAB_SIZE, "hidden_size": hidden, "intermediate_size": 2 * hidden,
                "num_hidden_layers": 2, "num_attention_heads": 1, "max_position_embeddings": 77,
                "projection_dim": hidden, "hidden_act": act, "layer_norm_eps": 1e-5,
                "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": pad}

    if family == "sd15":
        return [clip(32, "quick_gelu", 49407)]
    return [clip(16, "quick_gelu", 49407), clip(32, "gelu", 0)]


def _add_noise(*modules: torch.nn.Module) -> None:
    import torch

    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.add_(torch.randn_like(p) * _NOISE)


def build_tiny_pipeline(
    family: TinyFamily, *, inpaint: bool = False, seed: int = 0,
) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """A tiny pipeline of the family's architecture, float32 on the CPU, progress bars off.

    `inpaint=True` gives a 9-input-channel UNet in the same pipeline class (switch with `from_pipe`), as
    `load_single_file_pipeline` does for an inpainting checkpoint.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    te_kwargs = text_encoder_kwargs(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_kwargs(family, inpaint=inpaint))
        vae = AutoencoderKL(**vae_kwargs(family))
        text_encoders = [CLIPTextModel(CLIPTextConfig(**te_kwargs[0]))]
        if family == "sdxl":
            text_encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**te_kwargs[1])))
        _add_noise(unet, vae, *text_encoders)
    for model in (unet, vae, *text_encoders):
        model.eval()

    return assemble_pipeline(family, unet=unet, vae=vae, text_encoders=text_encoders)


def _open_clip_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers CLIPTextModelWithProjection weights -> OpenCLIP names (q/k/v fused, projection transposed)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        name = open_clip_key_to_ldm(key)
        if "in_proj_" in name:
            part = key.split(".self_attn.")[1][0]  # q, k or v
            fused.setdefault(name, {})[part] = tensor
        else:
            out[name] = tensor.T if key == "text_projection.weight" else tensor
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    out["logit_scale"] = torch.tensor(4.6052)  # ln(100), as OpenCLIP keeps it; no diffusers module uses it
    return out


def single_file_state_dict(pipe: Any) -> dict[str, torch.Tensor]:
    """A pipeline's weights in the original A1111/LDM single-file layout (the reverse of loading)."""
    import torch

    state: dict[str, torch.Tensor] = {}
    to_ldm = unet_key_to_ldm(dict(pipe.unet.config))
    state.update({UNET_PREFIX + to_ldm(k): v for k, v in pipe.unet.state_dict().items()})
    to_ldm = vae_key_to_ldm(dict(pipe.vae.config))
    for key, tensor in pipe.vae.state_dict().items():
        name = to_ldm(key)
        if ".mid.attn_1." in name and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        state[VAE_PREFIX + name] = tensor
    position_ids = torch.arange(pipe.text_encoder.config.max_position_embeddings)[None]  # real files carry it
    # Real files name CLIP-L's weights with the text_model. level that transformers 5's CLIPTextModel dropped.
    te_prefix = (SDXL_TE1_PREFIX if hasattr(pipe, "text_encoder_2") else SD15_TE_PREFIX) + "text_model."
    state.update({te_prefix + k: v for k, v in pipe.text_encoder.state_dict().items()})
    state[te_prefix + "embeddings.position_ids"] = position_ids
    if hasattr(pipe, "text_encoder_2"):
        state.update({SDXL_TE2_PREFIX + k: v
                      for k, v in _open_clip_state_dict(pipe.text_encoder_2.state_dict()).items()})
    return state


def save_single_file(pipe: Any, path: Path) -> Path:
    """Write a pipeline (without adapters loaded) as one `.safetensors` file in the original LDM key layout."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in single_file_state_dict(pipe).items()}
    path = Path(path)
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def _lora_targets(family: TinyFamily, text_encoder: bool) -> list[tuple[str, str, int, int]]:
    """(component, module name, in features, out features) for every attention projection a LoRA adapts."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    targets: list[tuple[str, str, int, int]] = []
    with init_empty_weights():  # names and shapes only
        unet = UNet2DConditionModel(**unet_kwargs(family))
        encoders = [CLIPTextModel(CLIPTextConfig(**kw)) for kw in text_encoder_kwargs(family)] if text_encoder else []
    for name, module in unet.named_modules():
        if name.endswith(_UNET_TARGETS) and isinstance(module, torch.nn.Linear):
            targets.append(("unet", name, module.in_features, module.out_features))
    for n, encoder in enumerate(encoders):
        for name, module in encoder.named_modules():
            if name.endswith(_TEXT_TARGETS) and isinstance(module, torch.nn.Linear):
                # LoRA files name text modules with the text_model. level (diffusers accepts both).
                targets.append((f"te{n + 1}", "text_model." + name.removeprefix("text_model."),
                                module.in_features, module.out_features))
    return targets


def build_tiny_lora(
    family: TinyFamily, path: Path, *, layout: LoraLayout = "kohya", seed: int = 1, rank: int = 4,
    text_encoder: bool = True,
) -> Path:
    """A rank-`rank` LoRA for the tiny model of `family` on every UNet attention projection (and the text
    encoders' when `text_encoder`), in the Kohya layout (SD 1.x: diffusers module names; SDXL: LDM names) or the
    diffusers/peft layout. Up weights are non-zero, so it visibly changes the image."""
    import torch
    from safetensors.torch import save_file

    to_ldm = unet_key_to_ldm(unet_kwargs(family))
    kohya_te = {"te1": "lora_te_" if family == "sd15" else "lora_te1_", "te2": "lora_te2_"}
    peft_te = {"te1": "text_encoder.", "te2": "text_encoder_2."}
    state: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for component, module, fan_in, fan_out in _lora_targets(family, text_encoder):
            down = torch.randn(rank, fan_in) * 0.2
            up = torch.randn(fan_out, rank) * 0.2
            if layout == "diffusers":
                name = ("unet." if component == "unet" else peft_te[component]) + module
                state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"] = down, up
                continue
            if component == "unet":
                # Kohya trains SD 1.x on the diffusers UNet and SDXL on the LDM (sgm) one; names follow.
                module = to_ldm(module + ".weight").removesuffix(".weight") if family == "sdxl" else module
                name = "lora_unet_" + module.replace(".", "_")
            else:
                name = kohya_te[component] + module.replace(".", "_")
            state[f"{name}.lora_down.weight"], state[f"{name}.lora_up.weight"] = down, up
            state[f"{name}.alpha"] = torch.tensor(float(rank))  # alpha = rank: scale 1
    path = Path(path)
    save_file(state, str(path), metadata={"format": "pt"})
    return path
