"""A1111 requests into the native workflows' parameters, and the answers back into A1111's shapes. No I/O."""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from imagen.a1111.schemas import GenerationIn, Img2ImgIn, Txt2ImgIn
from imagen.generation.images import BadImage, decode_base64
from imagen.kit.errors import NotFound, Unprocessable, field_error

# (A1111 name, aliases, the native scheduler). Karras as A1111's separate `scheduler` turns DPM++ 2M into Karras.
SAMPLERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Euler", ("k_euler",), "euler"),
    ("Euler a", ("k_euler_a",), "euler_a"),
    ("DPM++ 2M", ("k_dpmpp_2m",), "dpmpp_2m"),
    ("DPM++ 2M Karras", ("k_dpmpp_2m_ka",), "dpmpp_2m_karras"),
    ("DDIM", (), "ddim"),
    ("UniPC", (), "unipc"),
    ("LCM", (), "lcm"),
)
SCHEDULERS = (("automatic", "Automatic"), ("karras", "Karras"))
NATIVE_TO_SAMPLER = {native: name for name, _aliases, native in SAMPLERS}
_SAMPLER_LOOKUP = {key.lower(): native for name, aliases, native in SAMPLERS for key in (name, *aliases)}

# `<lora:name>`, `<lora:name:weight>`, `<lora:name:te_weight:unet_weight>` (the first weight is used).
LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?(?::[^<>]*)?>")
# Native parameter -> the A1111 field a client sent, so a 422 names what the client can fix.
FIELD_NAMES = {"guidance": "cfg_scale", "strength": "denoising_strength", "init_image": "init_images",
               "mask_image": "mask", "hires_scale": "hr_scale", "hires_steps": "hr_second_pass_steps",
               "hires_strength": "denoising_strength", "checkpoint": "override_settings.sd_model_checkpoint",
               "scheduler": "sampler_name", "loras": "prompt"}
MAX_IMAGES = 4  # the workflows' batch_size bound


@dataclass(frozen=True)
class LoraTag:
    name: str
    weight: float


def native_scheduler(sampler_name: str | None, scheduler: str | None) -> str:
    name = (sampler_name or "Euler").strip()
    native = _SAMPLER_LOOKUP.get(name.lower())
    if native is None:
        available = ", ".join(s[0] for s in SAMPLERS)
        raise NotFound(f"Sampler not found: {name!r}; available: {available}")
    if native == "dpmpp_2m" and (scheduler or "").strip().lower() == "karras":
        native = "dpmpp_2m_karras"
    return native


def split_loras(prompt: str) -> tuple[str, list[LoraTag]]:
    """The prompt without its `<lora:...>` tags, and the tags (A1111's extra-networks syntax)."""
    tags = []
    for match in LORA_TAG.finditer(prompt):
        raw = (match.group(2) or "").strip()
        try:
            weight = float(raw) if raw else 1.0
        except ValueError:
            raise field_error("prompt", f"LoRA weight {raw!r} in {match.group(0)!r} is not a number") from None
        if weight != weight or abs(weight) == float("inf"):
            raise field_error("prompt", f"LoRA weight in {match.group(0)!r} is not a finite number")
        tags.append(LoraTag(match.group(1).strip(), weight))
    cleaned = re.sub(r"\s{2,}", " ", LORA_TAG.sub("", prompt)).strip(" ,")
    return cleaned, tags


def images_of(body: GenerationIn) -> int:
    if body.batch_size < 1 or body.n_iter < 1:
        raise field_error("batch_size" if body.batch_size < 1 else "n_iter", "must be at least 1")
    count = body.batch_size * body.n_iter
    if count > MAX_IMAGES:
        raise field_error("n_iter", f"batch_size x n_iter is {count}; at most {MAX_IMAGES} images per request")
    return count


def base_params(body: GenerationIn, *, prompt: str, checkpoint: str, loras: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "prompt": prompt, "negative_prompt": split_loras(body.negative_prompt or "")[0], "checkpoint": checkpoint,
        "loras": loras, "scheduler": native_scheduler(body.sampler_name or body.sampler_index, body.scheduler),
        "steps": body.steps, "guidance": body.cfg_scale, "width": body.width, "height": body.height,
        "seed": body.seed, "batch_size": images_of(body),
    }


def txt2img_job(body: Txt2ImgIn, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(workflow, parameters): the hires fix when `enable_hr`."""
    if not body.enable_hr:
        return "txt2img", params
    scale = body.hr_scale
    if body.hr_resize_x > 0 or body.hr_resize_y > 0:  # a target size instead of a factor: its larger ratio
        scale = max(body.hr_resize_x / max(body.width, 1), body.hr_resize_y / max(body.height, 1))
    return "hires_fix", params | {
        "hires_scale": round(scale, 4), "hires_steps": body.hr_second_pass_steps or body.steps,
        "hires_strength": body.denoising_strength if body.denoising_strength is not None else 0.7}


def img2img_job(body: Img2ImgIn, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if not body.init_images:
        raise field_error("init_images", "an img2img request needs init_images (one base64 image)")
    params = params | {"init_image": body.init_images[0],
                       "strength": body.denoising_strength if body.denoising_strength is not None else 0.75}
    if not body.mask:
        return "img2img", params
    mask = invert_mask(body.mask) if body.inpainting_mask_invert == 1 else body.mask
    return "inpaint", params | {"mask_image": mask}


def invert_mask(value: str) -> str:
    try:
        with Image.open(io.BytesIO(decode_base64(value))) as image:
            if image.width * image.height > 4096 * 4096:  # before decoding any pixels
                raise field_error("mask", "the mask is larger than 4096 x 4096 pixels")
            inverted = Image.eval(image.convert("L"), lambda v: 255 - v)
    except (BadImage, UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise field_error("mask", f"not a readable image ({exc})") from None
    out = io.BytesIO()
    inverted.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def a1111_errors(exc: Unprocessable) -> Unprocessable:
    """The native workflow's field errors, renamed to the A1111 fields the client sent."""
    if not isinstance(exc.detail, list):
        return exc
    renamed = []
    for item in exc.detail:
        loc = [str(part) for part in item.get("loc", [])]
        if loc[:2] == ["body", "params"] and len(loc) > 2:
            loc = ["body", *FIELD_NAMES.get(loc[2], loc[2]).split("."), *loc[3:]]
        renamed.append(item | {"loc": loc})
    return Unprocessable(renamed)


def info_json(*, body: GenerationIn, params: dict[str, Any], seeds: list[int], model_name: str, model_hash: str,
              timestamp: str, prompt: str) -> str:
    """A1111's `info` (Processed.js()): enough for clients that read the seed, size, sampler and model."""
    count = len(seeds) or 1
    sampler = NATIVE_TO_SAMPLER.get(params["scheduler"], params["scheduler"])
    negative = params.get("negative_prompt", "")
    infotexts = [infotext(prompt=prompt, negative=negative, params=params, seed=s, model_name=model_name,
                          model_hash=model_hash) for s in seeds]
    return json.dumps({
        "prompt": prompt, "all_prompts": [prompt] * count, "negative_prompt": negative,
        "all_negative_prompts": [negative] * count, "seed": seeds[0] if seeds else params["seed"],
        "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * count, "subseed_strength": 0,
        "width": params["width"], "height": params["height"], "sampler_name": sampler, "sampler": sampler,
        "cfg_scale": params["guidance"], "steps": params["steps"], "batch_size": body.batch_size,
        "restore_faces": False, "face_restoration_model": None, "sd_model_name": model_name,
        "sd_model_hash": model_hash, "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": params.get("strength", params.get("hires_strength")),
        "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": infotexts, "styles": [],
        "job_timestamp": timestamp, "clip_skip": 1, "is_using_inpainting_conditioning": "mask_image" in params,
        "version": "imagen",
    })


def infotext(*, prompt: str, negative: str, params: dict[str, Any], seed: int, model_name: str,
             model_hash: str) -> str:
    sampler = NATIVE_TO_SAMPLER.get(params["scheduler"], params["scheduler"])
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(f"Steps: {params['steps']}, Sampler: {sampler}, CFG scale: {params['guidance']}, Seed: {seed}, "
                 f"Size: {params['width']}x{params['height']}, Model hash: {model_hash}, Model: {model_name}")
    return "\n".join(lines)


_INFOTEXT_FIELD = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_infotext(text: str) -> dict[str, Any]:
    """A1111's generation parameters text ("prompt\\nNegative prompt: ...\\nSteps: 20, Sampler: ...") as a dict."""
    if not text.strip():
        return {}
    *lines, last = text.strip().split("\n")
    if len(_INFOTEXT_FIELD.findall(last)) < 3:  # no settings line: all prompt
        lines.append(last)
        last = ""
    prompt, negative, into_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            into_negative, line = True, line[16:].strip()
        (negative if into_negative else prompt).append(line)
    result: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _INFOTEXT_FIELD.findall(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        if key.strip() == "Size" and re.fullmatch(r"\d+x\d+", value):
            width, height = value.split("x")
            result["Size-1"], result["Size-2"] = width, height
        result[key.strip()] = value
    return result


def png_text(data: bytes) -> tuple[str, dict[str, Any]]:
    """(the `parameters` text, the other text chunks) of a PNG, read from its header without decoding pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = dict(image.info)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise field_error("image", f"not a readable image ({type(exc).__name__})") from None
    texts = {k: v for k, v in info.items() if isinstance(k, str) and isinstance(v, str)}
    return texts.pop("parameters", ""), texts
