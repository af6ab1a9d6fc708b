from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlalchemy import select

from imagen.accounts.http import CurrentUser, VerifiedUser
from imagen.analytics.service import analytics_service
from imagen.generation.gallery import GalleryFilter, gallery_service
from imagen.generation.metadata import parameters_text, with_parameters
from imagen.generation.models import FINAL_STATUSES, Generation, Output
from imagen.generation.schemas import (
    Deleted,
    FavoriteIn,
    GalleryItem,
    GalleryPage,
    GenerationCreate,
    GenerationOut,
    GenerationPage,
    OutputOut,
    OutputSelection,
    QueueItem,
    QueuePage,
)
from imagen.generation.service import generation_service
from imagen.kit.capacity import CappedStreamingResponse
from imagen.kit.db import run_after_commit
from imagen.kit.errors import NotFound
from imagen.kit.http import SessionDep, SettingsDep
from imagen.storage import BlobNotFound

router = APIRouter(prefix="/api/v1", tags=["generation"])

# In-process changes wake a stream at once (generation/signals.py); this re-read is the fallback for changes the
# signals miss (a worker in another process, a cancel while queued), so it can be slow and cheap.
SSE_POLL_SECONDS = 2.0
SSE_RECHECK_SECONDS = 0.25
T = TypeVar("T")


def generation_out(gen: Generation) -> GenerationOut:
    return GenerationOut(
        id=gen.id, status=gen.status, progress=gen.progress, workflow=gen.workflow,
        workflow_version=gen.workflow_version, pipeline=gen.pipeline, params=gen.params, checkpoint=gen.checkpoint,
        checkpoint_sha256=gen.checkpoint_sha256,
        models=[{k: v for k, v in m.items() if k != "blob_key"} for m in gen.models or []],
        consent_model_improvement=gen.consent_model_improvement,
        outputs=[OutputOut(id=o.id, url=f"/api/v1/outputs/{o.id}", width=o.width, height=o.height, seed=o.seed)
                 for o in gen.outputs],
        error=gen.error, signals=gen.signals, created_at=gen.created_at, started_at=gen.started_at,
        finished_at=gen.finished_at,
    )


@router.post("/generations", status_code=status.HTTP_202_ACCEPTED, response_model=GenerationOut)
def submit_generation(data: GenerationCreate, user: VerifiedUser, session: SessionDep, settings: SettingsDep,
                      request: Request) -> GenerationOut:
    services = request.app.state.services
    gen = generation_service.submit(
        session, user=user, workflow_name=data.workflow, params=data.params, preset_id=data.preset,
        checkpoints=services.runtime.checkpoints, blobs=services.blobs, max_queued=settings.max_queued_per_user,
        enqueue=services.executor.submit, safety=services.safety, max_job_cost=settings.max_job_cost,
        max_queued_cost=settings.max_queued_cost_per_user, billing=services.billing,
    )
    params = gen.params if isinstance(gen.params, dict) else {}
    analytics_service.track(session, request, analytics=services.analytics, user=user, event="generation_submitted",
                            workflow=gen.workflow, size=f"{params.get('width')}x{params.get('height')}",
                            steps=params.get("steps"))
    return generation_out(gen)


@router.get("/generations", response_model=GenerationPage)
def list_generations(user: CurrentUser, session: SessionDep,
                     limit: Annotated[int, Query(ge=1, le=100)] = 20, cursor: str | None = None) -> GenerationPage:
    items, next_cursor = generation_service.list(session, user=user, limit=limit, cursor=cursor)
    return GenerationPage(items=[generation_out(g) for g in items], next_cursor=next_cursor)


@router.get("/queue", response_model=QueuePage)
def my_queue(user: CurrentUser, session: SessionDep) -> QueuePage:
    """Your queued and running jobs, oldest first, each with how many queued jobs (anyone's) are older than it.
    The fair queue takes users in turn, so that count is an upper bound on the wait, not an exact position."""
    return QueuePage(items=[
        QueueItem(id=gen.id, status=gen.status, progress=gen.progress, workflow=gen.workflow, ahead=ahead,
                  prompt=str(gen.params.get("prompt", "")) if isinstance(gen.params, dict) else "",
                  created_at=gen.created_at)
        for gen, ahead in generation_service.queue(session, user=user)])


@router.get("/generations/{generation_id}", response_model=GenerationOut)
def get_generation(generation_id: str, user: CurrentUser, session: SessionDep) -> GenerationOut:
    return generation_out(generation_service.get(session, user=user, generation_id=generation_id))


@router.post("/generations/{generation_id}/cancel", response_model=GenerationOut)
def cancel_generation(generation_id: str, user: CurrentUser, session: SessionDep, request: Request) -> GenerationOut:
    services = request.app.state.services
    gen = generation_service.cancel(session, user=user, generation_id=generation_id, blobs=services.blobs,
                                    notify=services.executor.cancel)
    run_after_commit(session, services.signals.notify, generation_id)  # a queued job's streams end now
    return generation_out(gen)


@router.delete("/generations/{generation_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_generation(generation_id: str, user: CurrentUser, session: SessionDep, request: Request) -> None:
    services = request.app.state.services
    generation_service.delete(session, user=user, generation_id=generation_id, blobs=services.blobs,
                              notify=services.executor.cancel)


@router.get("/generations/{generation_id}/events")
def generation_events(generation_id: str, user: CurrentUser, session: SessionDep,
                      request: Request) -> StreamingResponse:
    """Server-Sent Events: `progress` while it runs, then one `done` with the final state.

    A `progress` event carries `preview` (a `data:image/jpeg;base64,...` URL) when a new live preview was made since
    the last event (every `IMAGEN_PREVIEW_EVERY_STEPS` steps).

    At most `IMAGEN_SSE_STREAMS_PER_USER` streams per user are open at once (429 beyond). A stream waits on the
    event loop, holding no thread and no connection; each look at the job is a short transaction of its own.
    """
    gen = generation_service.get(session, user=user, generation_id=generation_id)  # 404 before streaming
    # The first event comes from this read, so a new stream does not queue for a slot twice before it says anything.
    initial = (gen.status, gen.progress, None), generation_out(gen) if gen.status in FINAL_STATUSES else None
    state = request.app.state
    db, gate, user_id, signals = state.services.db, state.gate, user.id, state.services.signals

    def progress() -> tuple[str, float, str | None] | None:
        with db.transaction() as s:
            row = s.execute(select(Generation.status, Generation.progress)
                            .where(Generation.id == generation_id, Generation.user_id == user_id)).first()
        if row is None:
            return None
        # The newest live preview (transient, in memory or Redis; never stored), only while it runs.
        return row.status, row.progress, signals.preview(generation_id) if row.status == "running" else None

    def final() -> GenerationOut | None:
        with db.transaction() as s:
            gen = s.get(Generation, generation_id)
            return generation_out(gen) if gen is not None and gen.user_id == user_id else None

    async def look(read: Callable[[], T]) -> T:
        # Queued with the requests for a slot (no timeout: this stream has answered already).
        async with gate.slot(bounded=False):
            return await run_in_threadpool(read)

    async def stream() -> AsyncIterator[str]:
        last, pause = None, None
        while True:
            changed = signals.listen(generation_id)  # before reading, so a change in between is not missed
            try:
                if pause is None:
                    # The initial read came before `listen`: look again soon in case it changed in between.
                    (current, done), pause = initial, SSE_RECHECK_SECONDS
                else:
                    pause = SSE_POLL_SECONDS
                    current, done = await look(progress), None
                    if current is not None and current[0] in FINAL_STATUSES:
                        done = await look(final)  # the whole generation, once
                        current = (done.status, done.progress, None) if done is not None else None
                if current is None:
                    yield _sse("done", {"id": generation_id, "status": "deleted"})
                    return
                if current != last:
                    event = {"id": generation_id, "status": current[0], "progress": current[1]}
                    if current[2] is not None and (last is None or current[2] != last[2]):
                        event["preview"] = current[2]  # a data URL of a few KB, sent once per new preview
                    last = current
                    yield _sse("progress", event)
                if done is not None:
                    yield _sse("done", json.loads(done.model_dump_json()))
                    return
                if await request.is_disconnected():
                    return
                await signals.wait(changed, pause)
            finally:
                signals.forget(generation_id, changed)

    return CappedStreamingResponse(stream(), streams=state.streams, user_id=user_id, media_type="text/event-stream",
                                   headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def gallery_item(output: Output, gen: Generation) -> GalleryItem:
    prompt = gen.params.get("prompt") if isinstance(gen.params, dict) else None
    return GalleryItem(
        id=output.id, url=f"/api/v1/outputs/{output.id}", thumb_url=f"/api/v1/outputs/{output.id}/thumb",
        width=output.width, height=output.height, seed=output.seed, favorite=output.favorite,
        created_at=output.created_at, generation_id=output.generation_id, index=output.index, workflow=gen.workflow,
        checkpoint=gen.checkpoint, prompt=prompt if isinstance(prompt, str) else "")


def gallery_filter(workflow: Annotated[str | None, Query(max_length=64)] = None,
                   model: Annotated[str | None, Query(max_length=200, description="checkpoint name or hash")] = None,
                   since: date | None = None, until: date | None = None,
                   q: Annotated[str | None, Query(max_length=200, description="words of the prompt")] = None,
                   favorites: bool = False) -> GalleryFilter:
    return GalleryFilter(workflow=workflow or None, model=model or None, since=since, until=until, q=q or None,
                         favorites=favorites)


GalleryFilterDep = Annotated[GalleryFilter, Depends(gallery_filter)]


@router.get("/outputs", response_model=GalleryPage)
def list_outputs(user: CurrentUser, session: SessionDep, filters: GalleryFilterDep,
                 limit: Annotated[int, Query(ge=1, le=100)] = 48, cursor: str | None = None) -> GalleryPage:
    """Your images, newest first, in keyset pages: pass `next_cursor` back as `cursor` until it is null."""
    rows, next_cursor = gallery_service.page(session, user=user, limit=limit, cursor=cursor, filters=filters)
    return GalleryPage(items=[gallery_item(o, g) for o, g in rows], next_cursor=next_cursor)


@router.get("/outputs/archive", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "A ZIP of the chosen PNGs"}})
def download_outputs(user: CurrentUser, session: SessionDep, request: Request,
                     ids: Annotated[str, Query(max_length=3400, description="comma-separated image ids (<= 100)")]
                     ) -> StreamingResponse:
    chunks = gallery_service.archive(session, user=user, output_ids=[i for i in ids.split(",") if i],
                                     blobs=request.app.state.services.blobs)
    return StreamingResponse(chunks, media_type="application/zip", headers={
        "Content-Disposition": 'attachment; filename="imagen-images.zip"', "Cache-Control": "private, no-store"})


@router.post("/outputs/delete", response_model=Deleted)
def delete_outputs(data: OutputSelection, user: CurrentUser, session: SessionDep, request: Request) -> Deleted:
    """Delete these images (not the rest of their batches)."""
    return Deleted(deleted=gallery_service.delete(session, user=user, output_ids=data.ids,
                                                  blobs=request.app.state.services.blobs))


@router.delete("/outputs/{output_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_output(output_id: str, user: CurrentUser, session: SessionDep, request: Request) -> None:
    """Delete this one image; the other images of its batch stay."""
    gallery_service.get(session, user=user, output_id=output_id)  # 404 for a malformed or unknown id
    gallery_service.delete(session, user=user, output_ids=[output_id], blobs=request.app.state.services.blobs)


@router.put("/outputs/{output_id}/favorite", response_model=GalleryItem)
def set_favorite(output_id: str, data: FavoriteIn, user: CurrentUser, session: SessionDep) -> GalleryItem:
    output = gallery_service.set_favorite(session, user=user, output_id=output_id, favorite=data.favorite)
    return gallery_item(output, output.generation)


@router.get("/outputs/{output_id}/thumb", response_class=Response,
            responses={200: {"content": {"image/webp": {}}, "description": "A WebP thumbnail (<= 256 px, < 30 KB)"}})
def get_thumbnail(output_id: str, user: CurrentUser, session: SessionDep, request: Request) -> Response:
    data = gallery_service.thumbnail(session, user=user, output_id=output_id, blobs=request.app.state.services.blobs)
    return Response(data, media_type="image/webp", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/outputs/{output_id}", response_model=None,
            responses={307: {"description": "Redirect to a short-lived presigned URL of the image (S3 storage)"}})
def get_output(output_id: str, user: CurrentUser, session: SessionDep, settings: SettingsDep, request: Request,
               download: bool = False) -> Response:
    output = generation_service.get_output(session, user=user, output_id=output_id)
    name = f"imagen-{output.id}.png"
    if user.embed_metadata:  # the file as stored, with the settings that made it written into it
        try:
            png = with_parameters(request.app.state.services.blobs.get(output.blob_key),
                                  parameters_text(output.generation, output))
        except BlobNotFound:
            raise NotFound("Output not found") from None
        headers = {"Cache-Control": "private, no-store"}
        if download:
            headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return Response(png, media_type="image/png", headers=headers)
    # The owner is checked above; the URL is signed per request and expires, so no cache may keep it.
    if settings.s3_redirect_outputs and (url := request.app.state.services.blobs.presigned_url(
            output.blob_key, settings.s3_url_seconds, download_name=name if download else None)):
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "private, no-store"})
    try:
        chunks = request.app.state.services.blobs.open_stream(output.blob_key)
    except BlobNotFound:
        raise NotFound("Output not found") from None
    headers = {"Cache-Control": "private, max-age=3600"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return StreamingResponse(chunks, media_type="image/png", headers=headers)
