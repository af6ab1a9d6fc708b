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
    # For LCM-distilled checkpoints and LCM LoRAs (4-8 steps, guidance ~1-2); runs on any model.
    "lcm": ("LCMScheduler", {}),
}

# LCMScheduler refuses more steps than the schedule it was distilled on (50 by default); more is allowed by widening it.
_LCM_ORIGINAL_STEPS = 50


def make_scheduler(name: str, base_config: Any, steps: int | None = None) -> Any:
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    if name == "lcm" and steps is not None and steps > _LCM_ORIGINAL_STEPS:
        overrides = {**overrides, "original_inference_steps": steps}
    return getattr(diffusers, class_name).from_config(base_config, **overrides)
