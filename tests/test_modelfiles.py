"""Upload inspection: safetensors header validation, pickle refusal and SD 1.x / SDXL family detection.

Every model here is built from code with tiny tensors whose names follow the real layouts; no database needed.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save as np_save
from safetensors.torch import save_file

from imagen.assets.modelfiles import (
    ACCEPTED,
    MAX_HEADER_BYTES,
    ModelFileRejected,
    SafetensorsHeader,
    detect_family,
    inspect_upload,
    read_safetensors_header,
    refuse_pickle,
)

Shapes = dict[str, tuple[int, ...]]


# ---------------------------------------------------------------------------------------------------------------
# Builders


def _save(path: Path, shapes: Shapes) -> Path:
    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}, str(path))
    return path


def _header(path: Path) -> SafetensorsHeader:
    with path.open("rb") as f:
        return read_safetensors_header(f, path.stat().st_size)


def _detect(tmp_path: Path, shapes: Shapes) -> Any:
    return detect_family(_header(_save(tmp_path / "model.safetensors", shapes)))


def sd15_checkpoint(in_channels: int = 4, ctx: int = 8) -> Shapes:
    u, te = "model.diffusion_model.", "cond_stage_model.transformer.text_model."
    return {
        f"{u}input_blocks.0.0.weight": (4, in_channels, 3, 3),
        f"{u}input_blocks.1.1.proj_in.weight": (4, 4, 1, 1),
        f"{u}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (4, ctx),
        f"{u}input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight": (4, ctx),
        f"{u}middle_block.1.transformer_blocks.0.attn1.to_q.weight": (4, 4),
        f"{u}output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight": (4, ctx),
        f"{u}out.2.weight": (4, 4, 3, 3),
        f"{te}embeddings.token_embedding.weight": (16, ctx),
        f"{te}encoder.layers.0.self_attn.q_proj.weight": (ctx, ctx),
        f"{te}final_layer_norm.weight": (ctx,),
        "first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3),
        "first_stage_model.decoder.conv_out.weight": (3, 4, 3, 3),
    }


def sdxl_checkpoint(in_channels: int = 4) -> Shapes:
    u, te1, te2 = "model.diffusion_model.", "conditioner.embedders.0.transformer.text_model.", \
        "conditioner.embedders.1.model."
    return {
        f"{u}input_blocks.0.0.weight": (4, in_channels, 3, 3),
        f"{u}label_emb.0.0.weight": (8, 12),
        f"{u}input_blocks.4.1.proj_in.weight": (4, 4),
        f"{u}input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (4, 14),
        f"{u}input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (4, 14),
        f"{u}middle_block.1.transformer_blocks.9.attn1.to_q.weight": (4, 4),
        f"{te1}embeddings.token_embedding.weight": (16, 6),
        f"{te1}encoder.layers.0.self_attn.q_proj.weight": (6, 6),
        f"{te2}token_embedding.weight": (16, 8),
        f"{te2}transformer.resblocks.0.attn.in_proj_weight": (24, 8),
        f"{te2}text_projection": (8, 8),
        "first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3),
        "first_stage_model.decoder.conv_out.weight": (3, 4, 3, 3),
    }


def _lora_pair(prefix: str, down: str, up: str, fan_in: int = 6, conv: bool = False, alpha: str | None = None,
               rank: int = 2) -> Shapes:
    tail = (1, 1) if conv else ()
    out: Shapes = {f"{prefix}{down}": (rank, fan_in, *tail), f"{prefix}{up}": (6, rank, *tail)}
    if alpha:
        out[f"{prefix}{alpha}"] = ()
    return out


def kohya(modules: list[str], **kw: Any) -> Shapes:
    out: Shapes = {}
    for m in modules:
        out |= _lora_pair(f"{m}.", "lora_down.weight", "lora_up.weight", alpha="alpha", **kw)
    return out


def peft(modules: list[str], **kw: Any) -> Shapes:
    out: Shapes = {}
    for m in modules:
        out |= _lora_pair(f"{m}.", "lora_A.weight", "lora_B.weight", **kw)
    return out


KOHYA_SD15 = kohya([
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
    "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te_text_model_encoder_layers_11_mlp_fc1",
]) | kohya(["lora_unet_down_blocks_0_attentions_0_proj_in"], conv=True)
KOHYA_SDXL = kohya([
    "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q",
    "lora_unet_middle_block_1_transformer_blocks_9_attn2_to_k",
    "lora_unet_output_blocks_0_1_transformer_blocks_0_attn1_to_out_0",
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te2_text_model_encoder_layers_31_mlp_fc2",
])
PEFT_SDXL = peft([
    "unet.down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q",
    "unet.up_blocks.0.attentions.2.transformer_blocks.9.attn2.to_k",
    "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
    "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj",
])
PEFT_SD15 = peft([
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "unet.up_blocks.3.attentions.0.transformer_blocks.0.attn2.to_v",
    "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
])
# diffusers' original single-file (attention processor) format: no "unet." prefix, "_lora.down.weight" suffixes.
ATTN_PROCS_SD15: Shapes = {}
for _m in ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q",
           "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_k"):
    ATTN_PROCS_SD15 |= _lora_pair(f"{_m}_", "lora.down.weight", "lora.up.weight")
OLD_DIFFUSERS_SDXL = _lora_pair("unet.mid_block.attentions.0.transformer_blocks.3.attn1.processor.to_q.",
                                "lora.down.weight", "lora.up.weight") | _lora_pair(
    "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.", "lora_linear_layer.down.weight",
    "lora_linear_layer.up.weight")


# ---------------------------------------------------------------------------------------------------------------
# Detection


@pytest.mark.parametrize(("shapes", "kind", "family", "in_channels", "context_dim"), [
    (sd15_checkpoint(), "checkpoint", "sd15", 4, 8),
    (sd15_checkpoint(ctx=768), "checkpoint", "sd15", 4, 768),
    (sd15_checkpoint(in_channels=9), "checkpoint", "sd15", 9, 8),
    (sdxl_checkpoint(), "checkpoint", "sdxl", 4, 14),
    (sdxl_checkpoint(in_channels=9), "checkpoint", "sdxl", 9, 14),
    (KOHYA_SD15, "lora", "sd15", None, 6),
    (KOHYA_SDXL, "lora", "sdxl", None, 6),
    ({k: v for k, v in KOHYA_SD15.items() if "lora_te_" not in k}, "lora", "sd15", None, 6),  # UNet blocks decide
    ({k: v for k, v in KOHYA_SDXL.items() if "lora_te" not in k}, "lora", "sdxl", None, 6),
    (kohya(["lora_te_text_model_encoder_layers_0_self_attn_q_proj"]), "lora", "sd15", None, None),
    (kohya(["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"], fan_in=2048),
     "lora", "sdxl", None, 2048),  # only the real cross-attention width tells
    (PEFT_SD15, "lora", "sd15", None, 6),
    (PEFT_SDXL, "lora", "sdxl", None, 6),
    (ATTN_PROCS_SD15, "lora", "sd15", None, 6),
    (OLD_DIFFUSERS_SDXL, "lora", "sdxl", None, None),
], ids=["sd15", "sd15-real-ctx", "sd15-inpaint", "sdxl", "sdxl-inpaint", "kohya-sd15", "kohya-sdxl",
        "kohya-sd15-unet-only", "kohya-sdxl-unet-only", "kohya-sd15-te-only", "kohya-ctx-2048", "peft-sd15",
        "peft-sdxl", "diffusers-attn-procs", "diffusers-old-sdxl"])
def test_detects_family(tmp_path: Path, shapes: Shapes, kind: str, family: str, in_channels: int | None,
                        context_dim: int | None) -> None:
    result = _detect(tmp_path, shapes)
    assert (result.kind, result.family, result.in_channels, result.context_dim) == (
        kind, family, in_channels, context_dim)
    assert ("SDXL" if family == "sdxl" else "SD 1.x") in result.description
    assert ("inpainting" in result.description) == (in_channels == 9)


def _without(shapes: Shapes, *fragments: str) -> Shapes:
    return {k: v for k, v in shapes.items() if not any(f in k for f in fragments)}


@pytest.mark.parametrize(("shapes", "reason"), [
    ({"first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3), "first_stage_model.decoder.conv_out.weight":
      (3, 4, 3, 3)}, "a VAE on its own"),
    ({"encoder.conv_in.weight": (4, 3, 3, 3), "encoder.down.0.block.0.conv1.weight": (4, 4, 3, 3),
      "decoder.up.0.block.0.conv1.weight": (4, 4, 3, 3)}, "a VAE on its own"),
    ({"alpha": (2,), "beta": (3, 3)}, "2 tensors in no recognised layout"),
    ({}, "an empty safetensors file"),
    (_without(sd15_checkpoint(), "cond_stage_model.") | {"cond_stage_model.model.token_embedding.weight": (16, 8)},
     "Stable Diffusion 2.x"),
    ({"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": (6, 2)}, "a Flux model"),
    ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (6, 2)}, "an SD3 model"),
    (_without(sdxl_checkpoint(), "conditioner.") | {"conditioner.embedders.0.model.token_embedding.weight": (16, 8)},
     "SDXL refiner"),
    (_without(sd15_checkpoint(), "cond_stage_model."), "not in the SD 1.x or SDXL layout"),
    ({"text_model.encoder.layers.0.self_attn.q_proj.weight": (4, 4)}, "a text encoder on its own"),
    ({"lora_unet_foo.hada_w1_a": (2, 2), "lora_unet_foo.hada_w1_b": (2, 2)}, "unsupported layout"),
    (kohya(["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"]), "cannot be told"),
    (kohya(["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"], fan_in=1024),
     "Stable Diffusion 2.x"),
    (kohya(["lora_unet_down_blocks_0_attentions_0_proj_in"]), "Stable Diffusion 2.x"),
], ids=["vae-ldm", "vae-bare", "random", "empty", "sd2", "flux", "sd3", "sdxl-refiner", "no-text-encoder",
        "text-encoder", "loha", "lora-ambiguous", "lora-sd2-ctx", "lora-sd2-linear-proj"])
def test_refuses_other_models_with_accepted_list(tmp_path: Path, shapes: Shapes, reason: str) -> None:
    with pytest.raises(ModelFileRejected) as e:
        _detect(tmp_path, shapes)
    assert reason in e.value.reason
    assert ACCEPTED in e.value.reason
    assert str(e.value) == e.value.reason


@pytest.mark.parametrize(("shapes", "reason"), [
    (sd15_checkpoint(in_channels=8), "takes 8 input channels"),
    (_without(sd15_checkpoint(), "first_stage_model."), "no VAE weights"),
    (KOHYA_SD15 | {"lora_unet_extra.weight": (2, 2)}, "mixes LoRA weights with other tensors"),
    (KOHYA_SD15 | PEFT_SD15, "mixes Kohya and diffusers"),
    (_without(KOHYA_SD15, "mlp_fc1.lora_up"), "lacks its down or up weight"),
    (KOHYA_SD15 | {"lora_te_text_model_encoder_layers_11_mlp_fc1.lora_up.weight": (6, 3)}, "different ranks"),
    (KOHYA_SD15 | kohya(["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"]), "contradict"),
    (kohya(["lora_unet_down_blocks_0_attentions_0_transformer_blocks_1_attn1_to_q"]), "contradict"),
])
def test_refuses_broken_models(tmp_path: Path, shapes: Shapes, reason: str) -> None:
    with pytest.raises(ModelFileRejected, match=reason):
        _detect(tmp_path, shapes)


# ---------------------------------------------------------------------------------------------------------------
# Header validation


def _raw(header: Any, data: bytes = b"", declared: int | None = None) -> bytes:
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if declared is None else declared) + body + data


def _entry(dtype: str = "F32", shape: list[Any] | None = None, offsets: list[Any] | None = None) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [2] if shape is None else shape, "data_offsets": offsets or [0, 8]}


def _read(blob: bytes) -> SafetensorsHeader:
    return read_safetensors_header(io.BytesIO(blob), len(blob))


def test_reads_header_only_and_matches_safetensors(tmp_path: Path) -> None:
    blob = np_save({"b": np.zeros((2, 3), np.float16), "a": np.zeros(5, np.int64), "empty": np.zeros((0, 4))},
                   metadata={"format": "pt", "ss_base_model_version": "sd_v1"})
    f = io.BytesIO(blob)
    header = read_safetensors_header(f, len(blob))
    assert header.tensors == {"a": ("I64", (5,)), "b": ("F16", (2, 3)), "empty": ("F64", (0, 4))}
    assert header.metadata == {"format": "pt", "ss_base_model_version": "sd_v1"}
    assert header.data_size == 5 * 8 + 6 * 2
    assert f.tell() == 8 + header.header_length  # stopped at the end of the header: tensor data is never read


GOOD = {"a": _entry(offsets=[0, 8]), "b": _entry("F16", [3], [8, 14])}


@pytest.mark.parametrize(("blob", "reason"), [
    (b"\x01\x00\x00", "too small"),
    (_raw({}, declared=0), "empty"),
    (_raw(GOOD, declared=10_000), "declares 10000 bytes but the file has only"),
    (_raw(GOOD, declared=MAX_HEADER_BYTES + 1), "more than the 100000000 allowed"),
    (struct.pack("<Q", 2**64 - 1) + b"{}", "more than the"),
    (_raw(b'{"a": '), "not valid JSON"),
    (_raw(b"\xff\xfe{}"), "not valid UTF-8"),
    (_raw(b"[" * 100_000 + b"]" * 100_000), "not valid JSON"),
    (_raw(b'{"a": NaN}'), "not valid JSON"),
    (_raw([1, 2]), "not a JSON object"),
    (_raw(b'"just a string"'), "not a JSON object"),
    (_raw(b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": {}}'), "'a' twice"),
    (_raw({"a": [1, 2]}), "exactly dtype, shape and data_offsets"),
    (_raw({"a": _entry() | {"extra": 1}}, bytes(8)), "exactly dtype, shape and data_offsets"),
    (_raw({"a": _entry("F7")}, bytes(8)), "unknown dtype 'F7'"),
    (_raw({"a": _entry(shape=[-2])}, bytes(8)), "not a list of non-negative integers"),
    (_raw({"a": _entry(shape=[True, 2])}, bytes(8)), "not a list of non-negative integers"),
    (_raw({"a": _entry(shape=[2.0])}, bytes(8)), "not a list of non-negative integers"),
    (_raw({"a": _entry(offsets=[8, 0])}, bytes(8)), "invalid data_offsets"),
    (_raw({"a": _entry(offsets=[0, 8, 9])}, bytes(8)), "invalid data_offsets"),
    (_raw({"a": _entry(shape=[3])}, bytes(8)), "occupies 8 bytes but its dtype and shape need 12"),
    (_raw({"a": _entry("F64")}, bytes(8)), "need 16"),
    (_raw({"a": _entry(), "b": _entry(offsets=[4, 12])}, bytes(12)), "'b' overlaps the previous tensor"),
    (_raw({"a": _entry(), "b": _entry(offsets=[0, 8])}, bytes(8)), "overlaps"),
    (_raw({"a": _entry(), "b": _entry(offsets=[12, 20])}, bytes(20)), "'b' leaves a gap"),
    (_raw({"a": _entry(offsets=[4, 12])}, bytes(12)), "leaves a gap"),
    (_raw(GOOD, bytes(13)), "the data section has 13"),
    (_raw(GOOD, bytes(20)), "trailing data"),
    (_raw(GOOD | {"__metadata__": {"k": 1}}, bytes(14)), "__metadata__ must map strings to strings"),
    (_raw(GOOD | {"__metadata__": ["k"]}, bytes(14)), "__metadata__"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_refuses_malformed_header(blob: bytes, reason: str) -> None:
    with pytest.raises(ModelFileRejected) as e:
        _read(blob)
    assert reason in e.value.reason


def test_refuses_truncated_upload(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.safetensors", sd15_checkpoint())
    blob = path.read_bytes()
    with pytest.raises(ModelFileRejected, match="truncated"):
        _read(blob[:-1])
    (length,) = struct.unpack("<Q", blob[:8])
    with pytest.raises(ModelFileRejected, match="truncated"):
        _read(blob[: 8 + length // 2])
    with pytest.raises(ModelFileRejected, match="truncated"):  # the caller's size is trusted only up to EOF
        read_safetensors_header(io.BytesIO(blob[: 8 + length // 2]), len(blob))


def test_refuses_too_many_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    from imagen.assets import modelfiles

    monkeypatch.setattr(modelfiles, "MAX_TENSORS", 3)
    header = {f"t{i}": _entry("U8", [1], [i, i + 1]) for i in range(4)}
    with pytest.raises(ModelFileRejected, match="lists 4 tensors; at most 3"):
        _read(_raw(header, bytes(4)))
    assert len(_read(_raw(dict(list(header.items())[:3]), bytes(3))).tensors) == 3


# ---------------------------------------------------------------------------------------------------------------
# Pickle refusal


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise AssertionError("a model upload was unpickled")

    for target, attr in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(target, attr, boom)


@pytest.mark.parametrize("name", ["model.ckpt", "model.pt", "MODEL.PTH", "pytorch_lora_weights.bin", "x.pkl",
                                  "x.pickle", "dir/sub/model.Ckpt"])
def test_refuses_pickle_extensions(name: str) -> None:
    with pytest.raises(ModelFileRejected) as e:
        refuse_pickle(name, b"")
    assert "can run arbitrary code" in e.value.reason
    assert "safetensors.torch.save_file" in e.value.reason
    assert "conversion scripts" in e.value.reason


def _torch_zip(path: Path) -> bytes:
    torch.save({"w": torch.zeros(2)}, path)
    return path.read_bytes()


def _torch_legacy(path: Path) -> bytes:
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


@pytest.mark.parametrize(("make", "why"), [
    (_torch_zip, "zip archive"),
    (_torch_legacy, "pickle (protocol 2)"),
    *[((lambda _p, proto=proto: pickle.dumps({"w": [1, 2]}, protocol=proto)), f"pickle (protocol {proto})")
      for proto in (2, 3, 4, 5)],
])
def test_sniffs_pickles_with_innocent_names(tmp_path: Path, no_unpickling: None,
                                           make: Callable[[Path], bytes], why: str) -> None:
    blob = make(tmp_path / "saved")
    with pytest.raises(ModelFileRejected, match=re.escape(why)):
        refuse_pickle("looks-fine.safetensors", blob[:16])
    with pytest.raises(ModelFileRejected, match="arbitrary code"):
        inspect_upload("looks-fine.safetensors", io.BytesIO(blob), len(blob))


def test_safetensors_whose_length_resembles_a_pickle_opcode_is_not_refused() -> None:
    # A 640-byte header is 0x280: its first bytes are b"\x80\x02", the pickle protocol-2 opening.
    body = json.dumps({"a": _entry()}).encode()
    blob = _raw(body.ljust(640), bytes(8))
    assert blob[:2] == b"\x80\x02"
    refuse_pickle("model.safetensors", blob[:16])
    assert _read(blob).tensors == {"a": ("F32", (2,))}


def test_inspect_upload_accepts_a_good_file(tmp_path: Path, no_unpickling: None) -> None:
    path = _save(tmp_path / "lora.safetensors", KOHYA_SDXL)
    with path.open("rb") as f:
        header, family = inspect_upload(path.name, f, path.stat().st_size)
    assert (family.kind, family.family) == ("lora", "sdxl")
    assert "Kohya" in family.description
    assert len(header.tensors) == len(KOHYA_SDXL)
