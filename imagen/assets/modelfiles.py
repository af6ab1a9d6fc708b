"""Safe inspection of uploaded model files, before anything is stored or loaded.

Everything here reads bytes and JSON only: no torch, no pickle, no tensor data. A file is accepted only when
its safetensors header is well formed and its tensor names say it is one of the model kinds IMAGEN can run.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, BinaryIO, Literal

# The safetensors library itself refuses headers over 100 MB; a real SDXL checkpoint's header is ~200 KB.
MAX_HEADER_BYTES = 100_000_000
MAX_TENSORS = 100_000

DTYPE_SIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "BOOL": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1,
}

ACCEPTED = "SD 1.x checkpoint, SDXL checkpoint, LoRA for SD 1.x, LoRA for SDXL"
PICKLE_EXTENSIONS = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})


class ModelFileRejected(Exception):
    """The upload is refused; `reason` is meant to be shown to the user as is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, tuple[str, tuple[int, ...]]]
    metadata: dict[str, str] = field(default_factory=dict)
    header_length: int = 0
    data_size: int = 0


@dataclass(frozen=True)
class ModelFamily:
    kind: Literal["checkpoint", "lora"]
    family: Literal["sd15", "sdxl"]
    description: str
    in_channels: int | None = None
    context_dim: int | None = None


def _shown(name: str) -> str:
    """Names come from the upload: quote and shorten them before they go into a message."""
    return repr(name if len(name) <= 80 else name[:77] + "...")


# ---------------------------------------------------------------------------------------------------------------
# Header parsing


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would silently keep the last duplicate; two entries for one tensor name is a malformed file.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ModelFileRejected(f"The safetensors header names {_shown(key)} twice.")
        out[key] = value
    return out


def _no_constants(token: str) -> Any:
    raise ModelFileRejected(f"The safetensors header contains {token}, which is not valid JSON.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true/false must not pass as 1/0


def read_safetensors_header(f: BinaryIO, file_size: int) -> SafetensorsHeader:
    """Read and validate only the header of a safetensors file; the tensor data is never read."""
    if file_size < 8:
        raise ModelFileRejected("The file is too small to be a safetensors file (under 8 bytes).")
    f.seek(0)
    prefix = f.read(8)
    if len(prefix) < 8:
        raise ModelFileRejected("The file ended before the safetensors header length.")
    (header_length,) = struct.unpack("<Q", prefix)
    if header_length == 0:
        raise ModelFileRejected("The safetensors header is empty (declared length 0).")
    if header_length > MAX_HEADER_BYTES:
        raise ModelFileRejected(
            f"The safetensors header declares {header_length} bytes, more than the {MAX_HEADER_BYTES} allowed; "
            "this is not a valid safetensors file.")
    if 8 + header_length > file_size:
        raise ModelFileRejected(
            f"The safetensors header declares {header_length} bytes but the file has only {file_size - 8} "
            "after the length; the file is truncated or not a safetensors file.")
    raw = f.read(header_length)
    if len(raw) < header_length:
        raise ModelFileRejected("The file ended inside the safetensors header; the upload is truncated.")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise ModelFileRejected("The safetensors header is not valid UTF-8.") from None
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; absurd nesting hits the recursion limit
        raise ModelFileRejected("The safetensors header is not valid JSON.") from None
    if not isinstance(obj, dict):
        raise ModelFileRejected("The safetensors header is not a JSON object.")

    metadata = obj.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFileRejected("The safetensors __metadata__ must map strings to strings.")
    if len(obj) > MAX_TENSORS:
        raise ModelFileRejected(f"The file lists {len(obj)} tensors; at most {MAX_TENSORS} are accepted.")

    data_size = file_size - 8 - header_length
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in obj.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ModelFileRejected(
                f"Tensor {_shown(name)} must be an object with exactly dtype, shape and data_offsets.")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise ModelFileRejected(f"Tensor {_shown(name)} has an unknown dtype {_shown(str(dtype))}.")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise ModelFileRejected(f"Tensor {_shown(name)} has a shape that is not a list of non-negative integers.")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise ModelFileRejected(
                f"Tensor {_shown(name)} has invalid data_offsets (need [begin, end] with begin <= end).")
        expected = math.prod(shape) * DTYPE_SIZES[dtype]
        if offsets[1] - offsets[0] != expected:
            raise ModelFileRejected(
                f"Tensor {_shown(name)} occupies {offsets[1] - offsets[0]} bytes but its dtype and shape "
                f"need {expected}.")
        tensors[name] = (dtype, tuple(shape))
        spans.append((offsets[0], offsets[1], name))

    # Tensors must tile the data buffer exactly: no overlaps (aliasing), no gaps (hidden payloads), nothing after.
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            problem = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise ModelFileRejected(f"Tensor {_shown(name)} {problem}; the data offsets are not contiguous.")
        position = end
    if position != data_size:
        raise ModelFileRejected(
            f"The tensors cover {position} bytes but the data section has {data_size}; "
            "the file is truncated or has trailing data.")
    return SafetensorsHeader(tensors=tensors, metadata=metadata, header_length=header_length, data_size=data_size)


# ---------------------------------------------------------------------------------------------------------------
# Pickle refusal


def _looks_like_safetensors(first_bytes: bytes) -> bool:
    # A safetensors length such as 640 (0x280) starts with b"\x80\x02", like a pickle; its JSON then begins at 8.
    if len(first_bytes) < 9 or first_bytes[8:9] != b"{":
        return False
    return struct.unpack("<Q", first_bytes[:8])[0] <= MAX_HEADER_BYTES


def refuse_pickle(filename: str, first_bytes: bytes) -> None:
    """Refuse pickle-based formats by name or by content. Nothing is ever unpickled here."""
    suffix = PurePath(filename).suffix.lower()
    why = None
    if suffix in PICKLE_EXTENSIONS:
        why = f"a {suffix} file"
    elif first_bytes.startswith(b"PK\x03\x04"):
        why = "a zip archive, the format torch.save writes"
    elif (len(first_bytes) >= 2 and first_bytes[0] == 0x80 and 2 <= first_bytes[1] <= 5
          and not _looks_like_safetensors(first_bytes)):
        why = f"a Python pickle (protocol {first_bytes[1]})"
    if why is None:
        return
    raise ModelFileRejected(
        f"{_shown(PurePath(filename).name)} is {why}. Pickle-based model formats (.ckpt, .pt, .pth, .bin) can "
        "run arbitrary code when they are loaded, so they are not accepted. Convert it to .safetensors: load it "
        "in a trusted, offline environment and save it with safetensors.torch.save_file, or use the "
        "diffusers/kohya conversion scripts, then upload the .safetensors file.")


# ---------------------------------------------------------------------------------------------------------------
# Family detection (key layouts as in ComfyUI's model_detection and the A1111/Kohya/diffusers formats)

_UNET = "model.diffusion_model."
_SD15_TE = "cond_stage_model.transformer."  # CLIP-L, HF layout (with or without the text_model. level)
_SDXL_TE1 = "conditioner.embedders.0.transformer.text_model."  # CLIP-L
_SDXL_TE2 = "conditioner.embedders.1.model."  # OpenCLIP bigG
_VAE = "first_stage_model."


def _has(names: Iterable[str], *prefixes: str) -> bool:
    return any(n.startswith(prefixes) for n in names)


def _describe(names: list[str]) -> str:
    """A short guess at what an unaccepted file is, so the refusal can say what was found."""
    if not names:
        return "an empty safetensors file"
    if _has(names, "cond_stage_model.model."):
        return "a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder)"
    if _has(names, "conditioner.embedders.0.model.") and not _has(names, _SDXL_TE2):
        return "an SDXL refiner checkpoint"
    if _has(names, _UNET + "joint_blocks.", "joint_blocks."):
        return "an SD3 model"
    if _has(names, _UNET + "double_blocks.", "double_blocks."):
        return "a Flux model"
    if _has(names, _UNET):
        return "a checkpoint whose UNet or text encoders are not in the SD 1.x or SDXL layout"
    if _has(names, _VAE, "encoder.down.", "decoder.up.", "encoder.down_blocks.", "decoder.up_blocks."):
        return "a VAE on its own"
    if _has(names, "text_model.", "cond_stage_model.", "conditioner."):
        return "a text encoder on its own"
    if _has(names, "down_blocks.", "mid_block.", "up_blocks."):
        return "a diffusers-layout UNet without text encoder or VAE"
    if any(s in n for n in names for s in ("lora", "hada_", "lokr_")):
        return "a LoRA in an unsupported layout (for example LoHa/LoKr, or for another base model)"
    plural = "s" if len(names) > 1 else ""
    return f"{len(names)} tensor{plural} in no recognised layout (first: {_shown(sorted(names)[0])})"


def _refuse(found: str) -> ModelFileRejected:
    return ModelFileRejected(f"This file looks like {found}. Accepted model files: {ACCEPTED}, as .safetensors.")


def detect_family(header: SafetensorsHeader) -> ModelFamily:
    """Say whether a validated header is an SD 1.x/SDXL checkpoint or LoRA, or refuse it."""
    names = list(header.tensors)
    if _has(names, _UNET):
        return _detect_checkpoint(header)
    lora = _detect_lora(header)
    if lora is not None:
        return lora
    raise _refuse(_describe(names))


def _detect_checkpoint(header: SafetensorsHeader) -> ModelFamily:
    t, names = header.tensors, list(header.tensors)
    conv_in = t.get(_UNET + "input_blocks.0.0.weight")
    if conv_in is None or len(conv_in[1]) != 4:
        raise _refuse(_describe(names))
    in_channels = conv_in[1][1]
    # label_emb is SDXL's added (size/crop) conditioning; SD 1.x has none (ComfyUI: adm_in_channels).
    adm = _UNET + "label_emb.0.0.weight" in t
    family: Literal["sd15", "sdxl"]
    if adm and _has(names, _SDXL_TE1) and _has(names, _SDXL_TE2):
        family, label = "sdxl", "SDXL"
    elif not adm and _has(names, _SD15_TE) and not _has(names, "conditioner."):
        family, label = "sd15", "SD 1.x"
    else:
        raise _refuse(_describe(names))
    if in_channels not in (4, 9):
        raise ModelFileRejected(
            f"This {label} checkpoint's UNet takes {in_channels} input channels; only standard (4) and "
            "inpainting (9) checkpoints are supported.")
    if not _has(names, _VAE):
        raise ModelFileRejected(
            f"This {label} checkpoint has no VAE weights (first_stage_model.*); upload a complete single-file "
            "checkpoint.")
    # Cross-attention width (768 for SD 1.x, 2048 for SDXL in real models), from the first attn2 key projection.
    keys = sorted(n for n in names if n.startswith(_UNET) and n.endswith(".attn2.to_k.weight"))
    context_dim = t[keys[0]][1][1] if keys and len(t[keys[0]][1]) == 2 else None
    inpaint = " inpainting" if in_channels == 9 else ""
    return ModelFamily(kind="checkpoint", family=family, description=f"{label}{inpaint} checkpoint",
                       in_channels=in_channels, context_dim=context_dim)


_KOHYA = re.compile(
    r"^lora_(unet|te1|te2|te)_([A-Za-z0-9_]+)\.(lora_down\.weight|lora_up\.weight|lora_mid\.weight|alpha|dora_scale)$")
_DIFFUSERS = re.compile(
    r"^(unet\.|text_encoder\.|text_encoder_2\.|(?=(?:down_blocks|mid_block|up_blocks)\.))(.+?)"
    r"(\.lora_A\.weight|\.lora_B\.weight|[._]lora\.down\.weight|[._]lora\.up\.weight"
    r"|\.lora_linear_layer\.down\.weight|\.lora_linear_layer\.up\.weight|\.alpha)$")
_COMPONENTS = {"unet": "unet", "te": "te", "te1": "te1", "te2": "te2",
               "unet.": "unet", "": "unet", "text_encoder.": "te?", "text_encoder_2.": "te2"}

# Where the UNet has attention differs: SD 1.x has it at 3 levels with depth 1, SDXL at 2 levels with depth 2/10.
_SD15_UNET = re.compile(
    r"down_blocks_0_attentions|up_blocks_3_attentions"
    r"|input_blocks_[12]_1_transformer|output_blocks_(?:[6-9]|1[01])_1_transformer")
_SDXL_UNET = re.compile(r"transformer_blocks_[1-9]|up_blocks_0_attentions|output_blocks_[0-2]_1_transformer")


def _role(suffix: str) -> str:
    if "down" in suffix or "lora_A" in suffix:
        return "down"
    if "up" in suffix or "lora_B" in suffix:
        return "up"
    return suffix.strip("._").split(".")[0]  # alpha, lora_mid, dora_scale


def _detect_lora(header: SafetensorsHeader) -> ModelFamily | None:
    t = header.tensors
    modules: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {}
    layouts: set[str] = set()
    others: list[str] = []
    for name in t:
        if m := _KOHYA.match(name):
            layout, component, module, suffix = "Kohya", _COMPONENTS[m[1]], m[2], m[3]
        elif m := _DIFFUSERS.match(name):
            layout, component, module, suffix = "diffusers", _COMPONENTS[m[1]], m[2], m[3]
        else:
            others.append(name)
            continue
        layouts.add(layout)
        # Old diffusers files name "attn1.processor.to_q"; drop the processor level so names line up.
        key = (component, module.replace(".processor.", ".").replace(".", "_"))
        modules.setdefault(key, {})[_role(suffix)] = t[name][1]
    if not modules:
        return None
    if others:
        raise ModelFileRejected(
            f"This file mixes LoRA weights with other tensors (for example {_shown(sorted(others)[0])}). "
            f"Accepted model files: {ACCEPTED}.")
    if len(layouts) > 1:
        raise ModelFileRejected("This LoRA mixes Kohya and diffusers key layouts; upload one or the other.")
    for (_, module), roles in sorted(modules.items()):
        down, up = roles.get("down"), roles.get("up")
        if down is None or up is None:
            raise ModelFileRejected(
                f"LoRA module {_shown(module)} lacks its down or up weight; the file is incomplete.")
        if "lora_mid" not in roles and (len(down) < 2 or len(up) < 2 or up[1] != down[0]):
            raise ModelFileRejected(f"LoRA module {_shown(module)} has down and up weights of different ranks.")

    sd15: list[str] = []
    sdxl: list[str] = []
    sd2: list[str] = []
    components = {c for c, _ in modules}
    if "te" in components:
        sd15.append("one Kohya text encoder (lora_te_)")
    if components & {"te1", "te2"}:
        sdxl.append("two text encoders")
    context_dim = None
    for (component, module), roles in modules.items():
        if component == "unet":
            if _SD15_UNET.search(module):
                sd15.append("SD 1.x UNet blocks")
            if _SDXL_UNET.search(module):
                sdxl.append("SDXL UNet blocks")
            if module.endswith(("proj_in", "proj_out")) and len(roles["down"]) == 2 and _SD15_UNET.search(module):
                sd2.append("linear proj_in/proj_out in an SD 1.x-shaped UNet")
            if module.endswith(("attn2_to_k", "attn2_to_v")):
                context_dim = roles["down"][1]
        elif component in ("te", "te?") and module.endswith("q_proj") and roles["down"][1] == 1024:
            sd2.append("a 1024-wide text encoder")
    # Real-size widths settle files whose key names alone don't (e.g. a LoRA trained on a few layers only).
    if context_dim == 768:
        sd15.append("768-wide cross-attention")
    elif context_dim == 2048:
        sdxl.append("2048-wide cross-attention")
    elif context_dim == 1024:
        sd2.append("1024-wide cross-attention")

    # The base model the file declares (Kohya's sd-scripts write it; so does imagen-demo's trainer) settles files
    # whose key names mislead, e.g. a LoRA for a small UNet with attention in other blocks than SD 1.x's.
    declared = header.metadata.get("ss_base_model_version", "")
    if declared.startswith("sd_v2"):
        sd2.append(f"declared base model {declared}")
    elif declared.startswith(("sd_v1", "sdxl")) and not sd2:
        said = "sdxl" if declared.startswith("sdxl") else "sd15"
        widths = {"sd15": "768-wide cross-attention", "sdxl": "2048-wide cross-attention"}
        clash = widths["sdxl" if said == "sd15" else "sd15"]
        if clash in sd15 + sdxl:
            raise ModelFileRejected(f"This LoRA declares base model {declared} but has {clash}.")
        reason = [f"declared base model {declared}"]
        sd15, sdxl = (reason, []) if said == "sd15" else ([], reason)
    if sd2:
        raise _refuse(f"a LoRA for Stable Diffusion 2.x ({sd2[0]})")
    if sd15 and sdxl:
        raise ModelFileRejected(
            f"This LoRA's keys contradict each other ({sd15[0]} but {sdxl[0]}); it cannot be matched to SD 1.x or "
            "SDXL.")
    if not sd15 and not sdxl:
        raise _refuse("a LoRA whose base model (SD 1.x or SDXL) cannot be told from its keys")
    family: Literal["sd15", "sdxl"] = "sdxl" if sdxl else "sd15"
    parts = " + ".join(p for p, c in (("UNet", {"unet"}), ("text encoder", {"te", "te?", "te1", "te2"}))
                       if components & c)
    label = "SDXL" if family == "sdxl" else "SD 1.x"
    return ModelFamily(kind="lora", family=family, context_dim=context_dim,
                       description=f"LoRA for {label} ({layouts.pop()} layout, {len(modules)} modules, {parts})")


def inspect_upload(filename: str, f: BinaryIO, file_size: int) -> tuple[SafetensorsHeader, ModelFamily]:
    """The whole check for one upload: not a pickle, a sound safetensors header, and a supported model."""
    f.seek(0)
    refuse_pickle(filename, f.read(16))
    header = read_safetensors_header(f, file_size)
    return header, detect_family(header)
