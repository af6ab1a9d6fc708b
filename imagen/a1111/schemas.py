"""A1111's request and response shapes (modules/api/models.py of stable-diffusion-webui), as far as IMAGEN honours
them. Requests ignore unknown fields, as A1111 clients send many (scripts, restore_faces, styles...)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_IGNORE = ConfigDict(extra="ignore")


class GenerationIn(BaseModel):
    model_config = _IGNORE

    prompt: str = ""
    negative_prompt: str | None = ""
    seed: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = Field(default="Euler", description="the older name of `sampler_name`")
    scheduler: str | None = Field(default=None, description="Karras with DPM++ 2M; others are ignored")
    batch_size: int = 1
    n_iter: int = Field(default=1, description="batches; batch_size x n_iter images in one job (at most 4)")
    steps: int = 50
    cfg_scale: float = Field(default=7.0, allow_inf_nan=False)
    width: int = 512
    height: int = 512
    denoising_strength: float | None = Field(default=None, allow_inf_nan=False)
    override_settings: dict[str, Any] | None = Field(
        default=None, description="only `sd_model_checkpoint` is honoured (a title, model name, file name or hash "
                                  "from /sdapi/v1/sd-models)")
    send_images: bool = True
    save_images: bool = Field(default=False, description="ignored: every image is kept in your gallery")


class Txt2ImgIn(GenerationIn):
    enable_hr: bool = False
    hr_scale: float = Field(default=2.0, allow_inf_nan=False)
    hr_upscaler: str | None = Field(default=None, description="ignored: the hires fix upscales with Lanczos")
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0


class Img2ImgIn(GenerationIn):
    init_images: list[str] | None = Field(default=None, description="base64 images; the first is used")
    mask: str | None = Field(default=None, description="base64 mask (white = repaint): an inpaint job")
    inpainting_mask_invert: int = Field(default=0, description="1: repaint the black part of the mask")
    include_init_images: bool = False


class ImagesOut(BaseModel):
    images: list[str] | None = Field(default=None, description="the generated images, base64 PNG")
    parameters: dict[str, Any]
    info: str = Field(description="a JSON string: seed, all_seeds, prompt, sampler_name, steps, cfg_scale, ...")


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None = None


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any] = Field(default_factory=dict)


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = -1
    need_inner_model: bool | None = False


class UpscalerItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class ProgressOut(BaseModel):
    progress: float = Field(description="0 to 1")
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = Field(default=None, description="the running job's newest live preview (base64 JPEG)")
    textinfo: str | None = None


class PNGInfoIn(BaseModel):
    model_config = _IGNORE

    image: str = Field(max_length=30_000_000, description="a base64 PNG (or data: URL)")


class PNGInfoOut(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]
