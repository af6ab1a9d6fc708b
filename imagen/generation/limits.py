"""What a job costs the worker, and the per-user limits checked at submit (422 saying which limit and by how much).

Cost is pixels x denoising steps x images, summed over the passes a pipeline runs (hires fix adds its upscaled
pass), so one user cannot hold the only worker for hours with a few huge jobs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from imagen.kit.errors import Unprocessable


def job_cost(pipeline: str, params: dict[str, Any]) -> int:
    width, height = int(params.get("width", 512)), int(params.get("height", 512))
    steps, batch = int(params.get("steps", 20)), int(params.get("batch_size", 1))
    cost = width * height * steps * batch
    if pipeline == "hires_fix":
        scale = float(params.get("hires_scale", 1.5))
        hires_steps = int(params.get("hires_steps") or steps)
        cost += round(width * scale) * round(height * scale) * hires_steps * batch
    return cost


def _cost_words(cost: int) -> str:
    return f"{cost:,} (pixels x steps x images)"


def check_job_cost(*, pipeline: str, params: dict[str, Any], active: Iterable[tuple[str, dict[str, Any]]],
                   max_job_cost: int, max_queued_cost: int) -> int:
    """Refuse a job over the per-job limit, or one that would take the user's queued and running jobs (`active`:
    (pipeline, params) pairs) over theirs; 0 disables a limit. Returns the job's cost."""
    cost = job_cost(pipeline, params)
    if max_job_cost and cost > max_job_cost:
        raise Unprocessable(
            f"This job's cost is {_cost_words(cost)}, more than the server's limit per job of {max_job_cost:,} "
            "(IMAGEN_MAX_JOB_COST); use a smaller size, fewer steps or fewer images.")
    if max_queued_cost:
        queued = sum(job_cost(kind, values) for kind, values in active)
        if queued + cost > max_queued_cost:
            raise Unprocessable(
                f"Your queued and running jobs cost {_cost_words(queued)}; this one ({cost:,}) would pass your limit "
                f"of {max_queued_cost:,} (IMAGEN_MAX_QUEUED_COST_PER_USER). Wait for some to finish.")
    return cost
