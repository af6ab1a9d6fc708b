"""Sampler names users know (A1111 / ComfyUI) mapped to diffusers schedulers."""

from __future__ import annotations

from typing import Any

SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str, base_config: Any) -> Any:
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(base_config, **overrides)
