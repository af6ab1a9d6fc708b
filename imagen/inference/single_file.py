"""Load an SD 1.x or SDXL single-file checkpoint (A1111/LDM key layout) into a diffusers pipeline, offline.

The architecture is read from the file's own tensor names and shapes, as ComfyUI's `model_detection.py` does: no
original YAML config and no hub download. What shapes cannot tell (attention heads, norm groups, VAE scaling,
scheduler, tokenizers) is fixed per family as in the real models, in `configs/<family>.json`. Keys are converted
with diffusers' own single-file converters; every tensor a component needs must be in the file, and a tensor under
a component's prefix that the derived architecture has no place for is an error (a wrong guess, not a silent skip).

This module also owns the reverse key mapping (diffusers names -> LDM names): it names missing tensors in the
file's own terms, and `synthetic.save_single_file` uses it to write files in the original layout.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagen.inference.clip_tokenizer import VOCAB_SIZE, clip_tokenizer
from imagen.inference.spec import Family, ModelLoadError

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_TE_PREFIX = "cond_stage_model.transformer."  # CLIP-L, HF layout, with or without the text_model. level
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer."  # CLIP-L, HF layout
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG layout

# Tensors real checkpoints carry that no diffusers module holds: CLIP's position-id buffer, OpenCLIP's logit scale.
_IGNORED_SUFFIXES = ("embeddings.position_ids", "logit_scale")

Shapes = dict[str, tuple[int, ...]]


@functools.cache
def family_settings(family: Family) -> dict[str, Any]:
    """The packaged per-family settings (configs/<family>.json)."""
    text = resources.files("imagen.inference.configs").joinpath(f"{family}.json").read_text(encoding="utf-8")
    return json.loads(text)


class _Shapes:
    """Shape look-ups under one component's prefix that fail with a message naming the tensor."""

    def __init__(self, shapes: Shapes, prefix: str, component: str) -> None:
        self.shapes, self.prefix, self.component = shapes, prefix, component
        self.keys = sorted(k[len(prefix):] for k in shapes if k.startswith(prefix))

    def has(self, key: str) -> bool:
        return self.prefix + key in self.shapes

    def has_under(self, start: str) -> bool:
        # Binary search over sorted names: real SDXL files have ~2,500 tensors and this runs per block.
        i = bisect.bisect_left(self.keys, start)
        return i < len(self.keys) and self.keys[i].startswith(start)

    def get(self, key: str, ndim: int | None = None) -> tuple[int, ...]:
        shape = self.shapes.get(self.prefix + key)
        if shape is None:
            raise ModelLoadError(
                f"The checkpoint has no tensor {self.prefix + key!r}, which the {self.component} needs; "
                "the file is incomplete or not an SD 1.x/SDXL checkpoint.")
        if ndim is not None and len(shape) != ndim:
            raise ModelLoadError(
                f"Tensor {self.prefix + key!r} has shape {list(shape)}, expected {ndim} dimensions; "
                f"this {self.component} layout is not supported.")
        return shape

    def count(self, pattern: str) -> int:
        """How many consecutive indices 0, 1, ... have tensors starting with pattern.format(index)."""
        n = 0
        while self.has_under(pattern.format(n)):
            n += 1
        return n


def _unsupported(what: str) -> ModelLoadError:
    return ModelLoadError(f"This checkpoint's {what}; only SD 1.x and SDXL architectures are supported.")


def _uniform(values: Iterable[Any], what: str) -> Any:
    distinct = set(values)
    if len(distinct) != 1:
        raise _unsupported(f"{what} differs between blocks ({sorted(distinct)})")
    return distinct.pop()


# ---------------------------------------------------------------------------------------------------------------
# Architecture from shapes


def _attention_depth(s: _Shapes, block: str) -> int:
    """Transformer blocks in the spatial transformer at `block` (e.g. "input_blocks.1.1."); 0 = no attention."""
    return s.count(block + "transformer_blocks.{}.")


def detect_unet_config(shapes: Shapes) -> dict[str, Any]:
    """A diffusers `UNet2DConditionModel` config derived from tensor shapes (keys with or without the
    `model.diffusion_model.` prefix; SDXL also needs encoder 2's `text_projection` for the pooled width)."""
    prefix = UNET_PREFIX if any(k.startswith(UNET_PREFIX) for k in shapes) else ""
    s = _Shapes(shapes, prefix, "UNet")
    family: Family = "sdxl" if s.has("label_emb.0.0.weight") else "sd15"
    settings = family_settings(family)["unet"]

    model_channels, in_channels = s.get("input_blocks.0.0.weight", 4)[:2]
    out_channels = s.get("out.2.weight", 4)[0]
    if s.get("time_embed.0.weight", 2) != (4 * model_channels, model_channels):
        raise _unsupported("time embedding is not 4x the base channel count")

    # Down path: input_blocks.N is a res block (+ optional transformer) or a downsampler that closes a level.
    levels: list[list[tuple[int, int]]] = [[]]
    for i in range(1, s.count("input_blocks.{}.")):
        if s.has(f"input_blocks.{i}.0.op.weight"):
            levels.append([])
            continue
        channels = s.get(f"input_blocks.{i}.0.out_layers.3.weight", 4)[0]
        levels[-1].append((channels, _attention_depth(s, f"input_blocks.{i}.1.")))
    if any(not level for level in levels):
        raise _unsupported("UNet has a level without res blocks")
    layers_per_block = _uniform((len(level) for level in levels), "UNet res block count per level")
    block_out = [_uniform((c for c, _ in level), f"UNet channel count in level {n}") for n, level in enumerate(levels)]
    down_depth = [_uniform((d for _, d in level), f"UNet attention depth in level {n}")
                  for n, level in enumerate(levels)]
    n_levels = len(levels)

    # Up path: (layers_per_block + 1) res blocks per level, deepest level first.
    if s.count("output_blocks.{}.") != n_levels * (layers_per_block + 1):
        raise _unsupported("UNet decoder does not mirror its encoder")
    up_depth = []
    for u in range(n_levels):
        blocks = range(u * (layers_per_block + 1), (u + 1) * (layers_per_block + 1))
        channels = _uniform((s.get(f"output_blocks.{b}.0.out_layers.3.weight", 4)[0] for b in blocks),
                            f"UNet channel count in up level {u}")
        if channels != block_out[n_levels - 1 - u]:
            raise _unsupported("UNet decoder channels do not mirror the encoder's")
        up_depth.append(_uniform((_attention_depth(s, f"output_blocks.{b}.1.") for b in blocks),
                                 f"UNet attention depth in up level {u}"))
    mid_depth = _attention_depth(s, "middle_block.1.")
    if mid_depth == 0:
        raise _unsupported("UNet has no attention in its middle block")

    # diffusers keeps one depth per level (the up path uses it reversed, the middle block the last one).
    depth = []
    for i in range(n_levels):
        wanted = {down_depth[i], up_depth[n_levels - 1 - i]} - {0}
        if i == n_levels - 1:
            wanted.add(mid_depth)
        if len(wanted) > 1:
            raise _unsupported(f"UNet level {i} has different transformer depths ({sorted(wanted)})")
        depth.append(wanted.pop() if wanted else 1)

    # The middle block always has a transformer: it sets the text width and the projection kind for all.
    context_dim = s.get("middle_block.1.transformer_blocks.0.attn2.to_k.weight", 2)[1]
    _uniform([context_dim] + [s.get(k, 2)[1] for k in s.keys if k.endswith(".attn2.to_k.weight")],
             "UNet cross-attention width")
    use_linear_projection = len(s.get("middle_block.1.proj_in.weight")) == 2

    if family == "sd15":
        heads: int | list[int] = settings["attention_heads"]
    else:
        heads = [max(1, c // settings["attention_head_channels"]) for c in block_out]
    config: dict[str, Any] = {
        "sample_size": settings["sample_size"],
        "in_channels": in_channels,
        "out_channels": out_channels,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in down_depth],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in up_depth],
        "block_out_channels": block_out,
        "layers_per_block": layers_per_block,
        "cross_attention_dim": context_dim,
        "attention_head_dim": heads,
        "use_linear_projection": use_linear_projection,
        "transformer_layers_per_block": depth[0] if len(set(depth)) == 1 else depth,
        "norm_num_groups": settings["norm_num_groups"],
    }
    if family == "sdxl":
        adm_in = s.get("label_emb.0.0.weight", 2)[1]
        projection = shapes.get(SDXL_TE2_PREFIX + "text_projection")
        if projection is None or len(projection) != 2:
            raise ModelLoadError(
                f"This SDXL checkpoint has no {SDXL_TE2_PREFIX}text_projection, which sets the width of the pooled "
                "text embedding the UNet is conditioned on.")
        time_ids = adm_in - projection[1]
        if time_ids <= 0 or time_ids % 6:
            raise _unsupported(f"added conditioning width {adm_in} is not pooled width {projection[1]} + 6 time ids")
        config.update(addition_embed_type="text_time", addition_time_embed_dim=time_ids // 6,
                      projection_class_embeddings_input_dim=adm_in)
    return config


def detect_vae_config(shapes: Shapes, family: Family) -> dict[str, Any]:
    """A diffusers `AutoencoderKL` config from the `first_stage_model.` tensors."""
    s = _Shapes(shapes, VAE_PREFIX, "VAE")
    settings = family_settings(family)["vae"]
    n_levels = s.count("encoder.down.{}.")
    if n_levels == 0:
        s.get("encoder.down.0.block.0.conv1.weight")  # raises, naming what is missing
    layers = _uniform((s.count(f"encoder.down.{i}.block.{{}}.") for i in range(n_levels)),
                      "VAE encoder res block count per level")
    if s.count("decoder.up.{}.") != n_levels or any(
            s.count(f"decoder.up.{i}.block.{{}}.") != layers + 1 for i in range(n_levels)):
        raise _unsupported("VAE decoder does not mirror its encoder")
    latent_channels = s.get("encoder.conv_out.weight", 4)[0] // 2  # the encoder emits mean and log-variance
    if s.get("decoder.conv_in.weight", 4)[1] != latent_channels:
        raise _unsupported("VAE encoder and decoder disagree on the latent channel count")
    return {
        "in_channels": s.get("encoder.conv_in.weight", 4)[1],
        "out_channels": s.get("decoder.conv_out.weight", 4)[0],
        "down_block_types": ["DownEncoderBlock2D"] * n_levels,
        "up_block_types": ["UpDecoderBlock2D"] * n_levels,
        "block_out_channels": [s.get(f"encoder.down.{i}.block.0.conv1.weight", 4)[0] for i in range(n_levels)],
        "layers_per_block": layers,
        "latent_channels": latent_channels,
        "norm_num_groups": settings["norm_num_groups"],
        "sample_size": settings["sample_size"],
        "scaling_factor": settings["scaling_factor"],
        "use_quant_conv": s.has("quant_conv.weight"),
        "use_post_quant_conv": s.has("post_quant_conv.weight"),
        "mid_block_add_attention": s.has("encoder.mid.attn_1.q.weight"),
    }


def _clip_config(*, vocab: int, hidden: int, intermediate: int, layers: int, positions: int, projection: int,
                 settings: dict[str, Any]) -> dict[str, Any]:
    if vocab != VOCAB_SIZE:
        raise ModelLoadError(
            f"This checkpoint's text encoder has a {vocab}-token vocabulary; SD 1.x/SDXL use CLIP's {VOCAB_SIZE} "
            "tokens, so no tokenizer matches it.")
    tokenizer = clip_tokenizer(settings["tokenizer"])
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // settings["head_channels"]),
        "max_position_embeddings": positions,
        "projection_dim": projection,
        "hidden_act": settings["hidden_act"],
        "layer_norm_eps": 1e-5,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def sd15_text_prefix(shapes: Shapes) -> str:
    """SD 1.x files name the CLIP-L weights with or without the `text_model.` level."""
    nested = SD15_TE_PREFIX + "text_model."
    return nested if any(k.startswith(nested) for k in shapes) else SD15_TE_PREFIX


def detect_clip_config(shapes: Shapes, prefix: str, settings: dict[str, Any]) -> dict[str, Any]:
    """CLIPTextConfig fields for a CLIP text model in the HF layout under `prefix` (ending at `text_model.`)."""
    s = _Shapes(shapes, prefix, "text encoder")
    vocab, hidden = s.get("embeddings.token_embedding.weight", 2)
    return _clip_config(
        vocab=vocab, hidden=hidden, intermediate=s.get("encoder.layers.0.mlp.fc1.weight", 2)[0],
        layers=s.count("encoder.layers.{}."), positions=s.get("embeddings.position_embedding.weight", 2)[0],
        projection=hidden, settings=settings)


def detect_open_clip_config(shapes: Shapes, prefix: str, settings: dict[str, Any]) -> dict[str, Any]:
    """CLIPTextConfig fields for an OpenCLIP text tower (SDXL's second encoder) under `prefix`."""
    s = _Shapes(shapes, prefix, "second text encoder")
    vocab, hidden = s.get("token_embedding.weight", 2)
    return _clip_config(
        vocab=vocab, hidden=hidden, intermediate=s.get("transformer.resblocks.0.mlp.c_fc.weight", 2)[0],
        layers=s.count("transformer.resblocks.{}."), positions=s.get("positional_embedding", 2)[0],
        projection=s.get("text_projection", 2)[1], settings=settings)


# ---------------------------------------------------------------------------------------------------------------
# diffusers names -> LDM names (the reverse of diffusers' single-file converters)

_UNET_RESNET = (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
                ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."),
                ("conv_shortcut.", "skip_connection."))
_VAE_ATTENTION = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                  ("to_out.0.", "proj_out."))
_OPEN_CLIP = (("text_model.encoder.layers.", "transformer.resblocks."), (".self_attn.", ".attn."),
              (".layer_norm1.", ".ln_1."), (".layer_norm2.", ".ln_2."), (".mlp.fc1.", ".mlp.c_fc."),
              (".mlp.fc2.", ".mlp.c_proj."))
_OPEN_CLIP_TOP = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                  "text_model.embeddings.position_embedding.weight": "positional_embedding",
                  "text_model.final_layer_norm.weight": "ln_final.weight",
                  "text_model.final_layer_norm.bias": "ln_final.bias",
                  "text_projection.weight": "text_projection"}


def _unet_prefixes(config: dict[str, Any]) -> dict[str, str]:
    per = config["layers_per_block"] + 1  # LDM index stride per level: res blocks + the down/upsampler
    prefixes = {
        "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
        "mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    for i, up_type in enumerate(config["up_block_types"]):
        for j in range(per - 1):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{1 + i * per + j}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{1 + i * per + j}.1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * per}.0.op."
        for j in range(per):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{i * per + j}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{i * per + j}.1."
        upsampler = 2 if "CrossAttn" in up_type else 1  # after the transformer when the level has one
        prefixes[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{i * per + per - 1}.{upsampler}."
    return prefixes


def _vae_prefixes(config: dict[str, Any]) -> dict[str, str]:
    n, per = len(config["block_out_channels"]), config["layers_per_block"]
    prefixes = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out."}
    for part in ("encoder", "decoder"):
        prefixes[f"{part}.mid_block.resnets.0."] = f"{part}.mid.block_1."
        prefixes[f"{part}.mid_block.resnets.1."] = f"{part}.mid.block_2."
        prefixes[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
    for i in range(n):
        for j in range(per):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        for j in range(per + 1):  # decoder levels are numbered from the deepest in LDM
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{n - 1 - i}.block.{j}."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{n - 1 - i}.upsample."
    return prefixes


def _rename(key: str, prefixes: dict[str, str], inner: Callable[[str, str], str]) -> str:
    """Replace the longest mapped prefix of `key`; `inner(diffusers_prefix, rest)` renames what follows."""
    dot = len(key)
    while (dot := key.rfind(".", 0, dot)) > 0:
        head = key[: dot + 1]
        if head in prefixes:
            return prefixes[head] + inner(head, key[dot + 1:])
    return key


def _replace_start(rest: str, pairs: Iterable[tuple[str, str]]) -> str:
    for old, new in pairs:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def unet_key_to_ldm(config: dict[str, Any]) -> Callable[[str], str]:
    """diffusers UNet parameter name -> name under `model.diffusion_model.` (without the prefix)."""
    prefixes = _unet_prefixes(config)
    return lambda key: _rename(
        key, prefixes, lambda head, rest: _replace_start(rest, _UNET_RESNET) if ".resnets." in head else rest)


def vae_key_to_ldm(config: dict[str, Any]) -> Callable[[str], str]:
    """diffusers VAE parameter name -> name under `first_stage_model.` (without the prefix)."""
    prefixes = _vae_prefixes(config)

    def inner(head: str, rest: str) -> str:
        if ".resnets." in head:
            return _replace_start(rest, (("conv_shortcut.", "nin_shortcut."),))
        if ".attentions." in head:
            return _replace_start(rest, _VAE_ATTENTION)
        return rest

    return lambda key: _rename(key, prefixes, inner)


def open_clip_key_to_ldm(key: str) -> str:
    """diffusers CLIPTextModelWithProjection name -> OpenCLIP name; q/k/v projections share one in_proj."""
    if key in _OPEN_CLIP_TOP:
        return _OPEN_CLIP_TOP[key]
    for qkv in ("q_proj", "k_proj", "v_proj"):
        if f".self_attn.{qkv}." in key:
            key = key.replace(f".self_attn.{qkv}.", ".self_attn.in_proj_")
            break
    for old, new in _OPEN_CLIP:
        key = key.replace(old, new)
    return key


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _read_header(path: Path) -> Shapes:
    from imagen.assets.modelfiles import ModelFileRejected, detect_family, read_safetensors_header

    try:
        with path.open("rb") as f:
            header = read_safetensors_header(f, path.stat().st_size)
        found = detect_family(header)
    except ModelFileRejected as e:
        raise ModelLoadError(e.reason) from None
    except OSError as e:
        raise ModelLoadError(f"The checkpoint file could not be read ({e.strerror or e}).") from None
    if found.kind != "checkpoint":
        raise ModelLoadError(f"This file is a {found.description}, not a checkpoint; load it as a LoRA.")
    return {name: shape for name, (_, shape) in header.tensors.items()}


def _shown(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


class _Component:
    """One model inside the file: its prefix, an empty (meta) module, and how its names map to the file's."""

    def __init__(self, label: str, prefix: str, module: torch.nn.Module, to_ldm: Callable[[str], str],
                 convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
        self.label, self.prefix, self.module, self.to_ldm, self.convert = label, prefix, module, to_ldm, convert

    def file_keys(self) -> set[str]:
        return {self.prefix + self.to_ldm(k) for k in self.module.state_dict()}


def _check_keys(components: list[_Component], present: Iterable[str]) -> None:
    """Every tensor each component needs is in the file, and nothing under a component's prefix is left over."""
    present = set(present)
    needed: set[str] = set()
    for c in components:
        expected = c.file_keys()
        missing = sorted(expected - present)
        if missing:
            raise ModelLoadError(
                f"The checkpoint is incomplete: its {c.label} lacks {len(missing)} tensor(s): {_shown(missing)}.")
        needed |= expected
    prefixes = tuple(c.prefix for c in components)
    extra = sorted(k for k in present - needed if k.startswith(prefixes) and not k.endswith(_IGNORED_SUFFIXES))
    if extra:
        raise ModelLoadError(
            f"The checkpoint has tensors that the architecture derived from its shapes has no place for: "
            f"{_shown(extra)}. It is not a standard SD 1.x/SDXL checkpoint.")
    ignored = [k for k in present - needed if not k.startswith(prefixes)]
    if ignored:
        log.debug("single-file checkpoint: %d tensors outside the model components ignored", len(ignored))


def _fill(component: _Component, f: Any, *, device: str, dtype: torch.dtype) -> None:
    """Read one component's tensors, convert them with diffusers' converters and assign them to the module."""
    raw: dict[str, torch.Tensor] = {}
    for key in component.file_keys():
        # Straight to the device and dtype, one tensor at a time: the host never holds a whole component.
        tensor = f.get_tensor(key)
        raw[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
    try:
        state = component.convert(raw)
    except (KeyError, IndexError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"The checkpoint's {component.label} weights could not be converted ({e}).") from None
    del raw  # the converted dict holds the same tensors; keep one copy
    try:
        component.module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise ModelLoadError(f"The checkpoint's {component.label} weights do not fit: {' '.join(first)}") from None
    left_on_meta = [n for n, p in component.module.named_parameters() if p.device.type == "meta"]
    if left_on_meta:
        raise ModelLoadError(f"The checkpoint's {component.label} left {_shown(left_on_meta)} unset.")
    component.module.to(device).eval()  # non-persistent buffers (CLIP's position ids) were built on the host


def _clip_converter() -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

    def convert(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # diffusers strips the file's prefix; transformers 5's CLIPTextModel has no text_model. level.
        state = convert_ldm_clip_checkpoint(raw)
        return {k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}

    return convert


def _build(cls: Any, config: Any, label: str) -> Any:
    from accelerate import init_empty_weights

    try:
        with init_empty_weights():
            return cls(config) if not isinstance(config, dict) else cls(**config)
    except (ValueError, RuntimeError, TypeError) as e:
        raise ModelLoadError(f"The {label} architecture read from the checkpoint cannot be built ({e}).") from None


def load_single_file_pipeline(
    path: Path, *, device: str, dtype: torch.dtype,
) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """SD 1.x -> StableDiffusionPipeline, SDXL -> StableDiffusionXLPipeline (safety_checker None, progress bars off).

    9-input-channel (inpainting) UNets load too; the caller switches pipeline class with from_pipe.
    """
    from diffusers import (
        AutoencoderKL,
        UNet2DConditionModel,
    )
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from safetensors import safe_open
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    path = Path(path)
    shapes = _read_header(path)
    unet_config = detect_unet_config(shapes)
    family: Family = "sdxl" if "addition_embed_type" in unet_config else "sd15"
    settings = family_settings(family)
    vae_config = detect_vae_config(shapes, family)

    unet = _build(UNet2DConditionModel, unet_config, "UNet")
    vae = _build(AutoencoderKL, vae_config, "VAE")
    components = [
        _Component("UNet", UNET_PREFIX, unet, unet_key_to_ldm(unet_config),
                   lambda raw: convert_ldm_unet_checkpoint(raw, unet_config)),
        _Component("VAE", VAE_PREFIX, vae, vae_key_to_ldm(vae_config),
                   lambda raw: convert_ldm_vae_checkpoint(raw, vae_config)),
    ]
    te_settings = settings["text_encoders"]
    if family == "sd15":
        prefix = sd15_text_prefix(shapes)
        te_config = CLIPTextConfig(**detect_clip_config(shapes, prefix, te_settings[0]))
        text_encoder = _build(CLIPTextModel, te_config, "text encoder")
        level = prefix[len(SD15_TE_PREFIX):]  # "text_model." or ""
        components.append(_Component("text encoder", SD15_TE_PREFIX, text_encoder, lambda k: level + k,
                                     _clip_converter()))
        text_encoders = [text_encoder]
    else:
        te1_config = CLIPTextConfig(**detect_clip_config(shapes, SDXL_TE1_PREFIX + "text_model.", te_settings[0]))
        te2_config = CLIPTextConfig(**detect_open_clip_config(shapes, SDXL_TE2_PREFIX, te_settings[1]))
        te1 = _build(CLIPTextModel, te1_config, "first text encoder")
        te2 = _build(CLIPTextModelWithProjection, te2_config, "second text encoder")
        components += [
            _Component("first text encoder", SDXL_TE1_PREFIX, te1, lambda k: "text_model." + k, _clip_converter()),
            _Component("second text encoder", SDXL_TE2_PREFIX, te2, open_clip_key_to_ldm,
                       lambda raw: convert_open_clip_checkpoint(te2, raw, prefix=SDXL_TE2_PREFIX)),
        ]
        text_encoders = [te1, te2]
    _check_keys(components, shapes)

    with safe_open(str(path), framework="pt", device="cpu") as f:
        for component in components:
            _fill(component, f, device=device, dtype=dtype)

    return assemble_pipeline(family, unet=unet, vae=vae, text_encoders=text_encoders)


def assemble_pipeline(family: Family, *, unet: Any, vae: Any, text_encoders: list[Any]) -> Any:
    """The family's pipeline around loaded models, with the packaged scheduler and the real CLIP tokenizers."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, schedulers

    settings = family_settings(family)
    scheduler_config = dict(settings["scheduler"])
    scheduler = getattr(schedulers, scheduler_config.pop("_class_name")).from_config(scheduler_config)
    tokenizers = [clip_tokenizer(t["tokenizer"]) for t in settings["text_encoders"]]
    pipe: StableDiffusionPipeline | StableDiffusionXLPipeline
    if family == "sd15":
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoders[0], tokenizer=tokenizers[0], unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoders[0], text_encoder_2=text_encoders[1], tokenizer=tokenizers[0],
            tokenizer_2=tokenizers[1], unet=unet, scheduler=scheduler, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
