"""`/sdapi/v1`: AUTOMATIC1111's API, per user, on the native generation service (docs/a1111.md).

txt2img and img2img answer when their job has ended, as A1111 does. The wait holds no thread and no database
connection: the submit and the final read are short transactions of their own (each in a slot of the request gate),
and in between the request waits on the event loop for the job's signal (or the 2 s fallback re-read).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Query, Request
from fastapi.concurrency import run_in_threadpool

from imagen.a1111.schemas import (
    ImagesOut,
    Img2ImgIn,
    LoraItem,
    PNGInfoIn,
    PNGInfoOut,
    ProgressOut,
    SamplerItem,
    SchedulerItem,
    SDModelItem,
    Txt2ImgIn,
    UpscalerItem,
)
from imagen.a1111.service import Submitted, a1111_service, body_parameters
from imagen.a1111.translate import SAMPLERS, SCHEDULERS, info_json, native_scheduler, parse_infotext, png_text
from imagen.accounts.http import CurrentUser, authenticate, require_verified_email
from imagen.accounts.models import User
from imagen.generation.images import MAX_ENCODED_BYTES, BadImage, decode_base64
from imagen.generation.models import FINAL_STATUSES, Generation, Output
from imagen.generation.service import generation_service
from imagen.kit.db import run_after_commit, utcnow
from imagen.kit.errors import Conflict, ErrorOut, NotFound, ServiceError, field_error
from imagen.kit.http import SessionDep
from imagen.kit.limits import body_limit

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"])

POLL_SECONDS = 2.0  # the fallback re-read while waiting (a worker in another process, a missed signal)
ENCODED_IMAGE_BYTES = MAX_ENCODED_BYTES * 4 // 3 + 4
T = TypeVar("T")


class TimedOut(ServiceError):
    status_code = 408


WAIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    408: {"model": ErrorOut, "description": "The job did not end within IMAGEN_A1111_WAIT_SECONDS; it was canceled"},
}


# ---- generating ----
@router.post("/txt2img", response_model=ImagesOut, responses=WAIT_RESPONSES)
async def txt2img(body: Txt2ImgIn, request: Request) -> ImagesOut:
    """Generate from a prompt (the hires fix with `enable_hr`); answers when the job has ended."""
    return await _generate(request, body)


@router.post("/img2img", response_model=ImagesOut, responses=WAIT_RESPONSES)
@body_limit(2 * ENCODED_IMAGE_BYTES + 1024**2)  # an init image and a mask, base64
async def img2img(body: Img2ImgIn, request: Request) -> ImagesOut:
    """From `init_images[0]`; with `mask`, inpaint. Answers when the job has ended."""
    return await _generate(request, body)


async def _generate(request: Request, body: Txt2ImgIn | Img2ImgIn) -> ImagesOut:
    state = request.app.state
    services, gate = state.services, state.gate

    async def short(work: Callable[[], T]) -> T:
        async with gate.slot():
            return await run_in_threadpool(work)

    def submit() -> tuple[str, Submitted]:
        with services.db.transaction() as session:
            user = authenticate(request, session)
            require_verified_email(services.settings, user)
            return user.id, a1111_service.submit(session, user=user, body=body, services=services)

    user_id, submitted = await short(submit)
    if not services.run_executor and services.settings.executor != "celery":
        raise Conflict(f"No worker runs generations in this server (IMAGEN_WORKER_AUTOSTART=false); the job stays "
                       f"queued as generation {submitted.generation_id}")
    status = await _wait(request, user_id, submitted.generation_id, short)
    if status is None:
        raise Conflict("The generation was deleted before it ended")
    return await short(lambda: _answer(services, body, submitted, status))


async def _wait(request: Request, user_id: str, generation_id: str,
                short: Callable[[Callable[[], Any]], Any]) -> str | None:
    services = request.app.state.services
    settings = services.settings
    limit = settings.a1111_wait_seconds or (settings.job_timeout_seconds + settings.job_stale_seconds
                                            if settings.job_timeout_seconds > 0 else 0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit if limit > 0 else None
    signals = services.signals

    def read_status() -> str | None:
        with services.db.transaction() as session:
            return a1111_service.status(session, user_id=user_id, generation_id=generation_id)

    while True:
        changed = signals.listen(generation_id)  # before reading, so a change in between is not missed
        try:
            status = await short(read_status)
            if status is None or status in FINAL_STATUSES:
                return status
            pause = POLL_SECONDS
            if deadline is not None:
                pause = min(pause, deadline - loop.time())
                if pause <= 0:
                    await short(lambda: _cancel(services, user_id, generation_id))
                    raise TimedOut(f"The generation did not end within {limit:g} s; it was canceled")
            await signals.wait(changed, pause)
        finally:
            signals.forget(generation_id, changed)


def _cancel(services: Any, user_id: str, generation_id: str) -> None:
    with services.db.transaction() as session:
        gen, user = session.get(Generation, generation_id), session.get(User, user_id)
        if gen is not None and user is not None and gen.user_id == user_id and gen.status not in FINAL_STATUSES:
            generation_service.cancel(session, user=user, generation_id=gen.id, blobs=services.blobs,
                                      notify=services.executor.cancel)
            run_after_commit(session, services.signals.notify, gen.id)


def _answer(services: Any, body: Txt2ImgIn | Img2ImgIn, submitted: Submitted, status: str) -> ImagesOut:
    with services.db.transaction() as session:
        gen = session.get(Generation, submitted.generation_id)
        if gen is None:
            raise Conflict("The generation was deleted before it ended")
        if status == "failed":
            raise Conflict(f"The generation failed: {gen.error or 'no reason recorded'}")
        outputs: list[Output] = sorted(gen.outputs, key=lambda o: o.index)
        keys, seeds = [o.blob_key for o in outputs], [o.seed for o in outputs]
        params, created = dict(gen.params), gen.created_at
    # Canceled (interrupted): no images, as A1111 answers an interrupted batch with what it had.
    images = [base64.b64encode(services.blobs.get(key)).decode() for key in keys] if body.send_images else []
    info = info_json(body=body, params=params, seeds=seeds, model_name=submitted.checkpoint.model_name,
                     model_hash=submitted.checkpoint.short_hash, timestamp=created.strftime("%Y%m%d%H%M%S"),
                     prompt=submitted.prompt)
    return ImagesOut(images=images, parameters=body_parameters(body), info=info)


# ---- the job in progress ----
@router.get("/progress", response_model=ProgressOut)
def progress(user: CurrentUser, session: SessionDep, request: Request,
             skip_current_image: Annotated[bool, Query()] = False) -> ProgressOut:
    """Your current job (the running one, else the oldest queued): its progress and state. `current_image` is the
    running job's newest live preview (base64 JPEG, every `IMAGEN_PREVIEW_EVERY_STEPS` steps; transient, never
    stored), null before the first one, while queued, or with `skip_current_image`."""
    active = a1111_service.active(session, user=user)
    if not active:
        return ProgressOut(progress=0.0, eta_relative=0.0, state=_state(None, 0), current_image=None,
                           textinfo=None)
    gen = active[0]
    done = gen.progress if gen.status == "running" else 0.0
    eta = 0.0
    if gen.status == "running" and gen.started_at is not None and done > 0:
        elapsed = (utcnow() - gen.started_at).total_seconds()
        eta = max(elapsed / done - elapsed, 0.0)
    current_image = None
    signals = request.app.state.services.signals
    if gen.status == "running" and not skip_current_image and signals is not None:
        preview = signals.preview(gen.id)  # a data URL: A1111 answers the bare base64
        current_image = preview.split(",", 1)[1] if preview else None
    return ProgressOut(progress=round(done, 4), eta_relative=round(eta, 2), state=_state(gen, len(active)),
                       current_image=current_image, textinfo="Running" if gen.status == "running" else "Queued")


def _state(gen: Generation | None, count: int) -> dict[str, Any]:
    steps = int(gen.params.get("steps", 0)) if gen is not None and isinstance(gen.params, dict) else 0
    return {
        "skipped": False, "interrupted": bool(gen is not None and gen.cancel_requested),
        "job": gen.id if gen is not None else "", "job_count": count, "job_no": 0,
        "job_timestamp": gen.created_at.strftime("%Y%m%d%H%M%S") if gen is not None else "0",
        "sampling_step": round((gen.progress if gen.status == "running" else 0) * steps) if gen else 0,
        "sampling_steps": steps, "status": gen.status if gen is not None else "idle",
    }


@router.post("/interrupt", response_model=dict[str, Any])
def interrupt(user: CurrentUser, session: SessionDep, request: Request) -> dict[str, Any]:
    """Stop your running and queued jobs (their txt2img/img2img calls answer with no images)."""
    _notify(session, request, a1111_service.interrupt(session, user=user, services=request.app.state.services))
    return {}


@router.post("/skip", response_model=dict[str, Any])
def skip(user: CurrentUser, session: SessionDep, request: Request) -> dict[str, Any]:
    """Stop your running job only; queued ones go on."""
    _notify(session, request, a1111_service.interrupt(session, user=user, services=request.app.state.services,
                                                      running_only=True))
    return {}


def _notify(session: Any, request: Request, generation_ids: list[str]) -> None:
    for generation_id in generation_ids:  # waiting requests and streams see the cancel at once
        run_after_commit(session, request.app.state.services.signals.notify, generation_id)


# ---- what there is ----
@router.get("/sd-models", response_model=list[SDModelItem])
def sd_models(user: CurrentUser, session: SessionDep, request: Request) -> list[SDModelItem]:
    """The built-in checkpoints, yours and the published ones."""
    registry = request.app.state.services.runtime.checkpoints
    return [SDModelItem(title=c.title, model_name=c.model_name, hash=c.short_hash, sha256=c.sha256,
                        filename=c.filename) for c in a1111_service.checkpoints(session, user=user, registry=registry)]


@router.get("/loras", response_model=list[LoraItem])
def loras(user: CurrentUser, session: SessionDep) -> list[LoraItem]:
    """Your LoRAs and the published ones; use them in a prompt as `<lora:NAME:WEIGHT>`."""
    items = []
    for asset in a1111_service.loras(session, user=user):
        name = asset.filename.rsplit(".", 1)[0]
        items.append(LoraItem(name=name, alias=name, path=asset.filename,
                              metadata={"sha256": asset.sha256, "family": asset.family}))
    return items


@router.get("/samplers", response_model=list[SamplerItem])
def samplers(user: CurrentUser) -> list[SamplerItem]:
    return [SamplerItem(name=name, aliases=list(aliases), options={}) for name, aliases, _native in SAMPLERS]


@router.get("/schedulers", response_model=list[SchedulerItem])
def schedulers(user: CurrentUser) -> list[SchedulerItem]:
    return [SchedulerItem(name=name, label=label) for name, label in SCHEDULERS]


@router.get("/upscalers", response_model=list[UpscalerItem])
def upscalers(user: CurrentUser) -> list[UpscalerItem]:
    """The hires fix upscales with Lanczos whatever `hr_upscaler` names."""
    return [UpscalerItem(name="None"), UpscalerItem(name="Lanczos", scale=4)]


@router.get("/options", response_model=dict[str, Any])
def get_options(user: CurrentUser, session: SessionDep, request: Request) -> dict[str, Any]:
    return a1111_service.options(session, user=user, registry=request.app.state.services.runtime.checkpoints)


@router.post("/options", response_model=dict[str, Any])
def set_options(user: CurrentUser, session: SessionDep, request: Request,
                values: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """Sets your own default checkpoint (`sd_model_checkpoint`); other options are accepted and ignored."""
    a1111_service.set_options(session, user=user, registry=request.app.state.services.runtime.checkpoints,
                              values=values)
    return {}


@router.post("/png-info", response_model=PNGInfoOut)
@body_limit(ENCODED_IMAGE_BYTES + 64 * 1024)
def png_info(data: PNGInfoIn, user: CurrentUser) -> PNGInfoOut:
    """The A1111 generation parameters written into a PNG. IMAGEN's own images carry none (metadata is stripped)."""
    try:
        raw = decode_base64(data.image.strip())
    except BadImage as exc:
        raise field_error("image", str(exc)) from None
    info, items = png_text(raw)
    return PNGInfoOut(info=info, items=items, parameters=parse_infotext(info))



# ---- the generate page's PNG drop: A1111 parameters into the native form's fields ----
png_form_router = APIRouter(prefix="/api/v1", tags=["generation"])
PNG_INFO_MAX_BYTES = 25 * 1024 * 1024


@png_form_router.post("/png-info", response_model=dict[str, Any])
@body_limit(PNG_INFO_MAX_BYTES)
async def png_form_fields(request: Request, user: CurrentUser) -> dict[str, Any]:
    """The A1111 `parameters` text of an image sent as the raw body (a PNG as downloaded with the metadata setting
    on), as the generate form's fields: prompt, negative_prompt, steps, scheduler, guidance, seed, width, height.
    Read from the header only; nothing is stored. 422 when the body is not an image or carries no parameters."""
    raw = await request.body()
    if not raw:
        raise field_error("image", "send the image file as the request body")
    info, _items = png_text(raw)
    parsed = parse_infotext(info)
    if not info.strip() or not parsed:
        raise field_error("image", "this image carries no generation parameters (A1111 'parameters' text)")
    return {"info": info, "fields": form_fields(parsed)}


def form_fields(parsed: dict[str, Any]) -> dict[str, Any]:
    """A1111 infotext keys -> the native workflow parameters; values that do not parse are left out."""
    fields: dict[str, Any] = {"prompt": parsed.get("Prompt", ""), "negative_prompt": parsed.get("Negative prompt", "")}
    for key, name, kind in (("Steps", "steps", int), ("CFG scale", "guidance", float), ("Seed", "seed", int),
                            ("Size-1", "width", int), ("Size-2", "height", int)):
        try:
            fields[name] = kind(parsed[key])
        except (KeyError, ValueError):
            continue
    sampler = parsed.get("Sampler")
    if sampler:
        with contextlib.suppress(NotFound):
            fields["scheduler"] = native_scheduler(sampler, parsed.get("Schedule type"))
    return fields
