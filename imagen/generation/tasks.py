"""Running one claimed generation through the runtime. Takes IDs, safe to run twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from imagen.generation.models import Generation
from imagen.generation.resolve import refs_from_record
from imagen.generation.service import generation_service
from imagen.inference.runtime import Runtime
from imagen.inference.spec import CheckpointMismatch, JobCanceled, JobSpec, ModelLoadError, ModelRef
from imagen.kit.db import Database
from imagen.storage import BlobNotFound, BlobStore

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL = 0.25  # seconds between progress rows; the SSE stream polls at this rate


def load_spec(db: Database, blobs: BlobStore, generation_id: str) -> JobSpec | None:
    with db.transaction() as session:
        gen = session.get(Generation, generation_id)
        if gen is None or gen.status != "running":
            return None
        if gen.models:
            checkpoint, loras = refs_from_record(gen.models)
        else:  # queued before model records existed: always a built-in SD 1.x checkpoint
            checkpoint, loras = ModelRef(gen.checkpoint, gen.checkpoint_sha256, "sd15"), ()
        return JobSpec(
            gen.pipeline, dict(gen.params), checkpoint, loras,
            init_image=blobs.get(gen.input_blob_key) if gen.input_blob_key else None,
            mask_image=blobs.get(gen.mask_blob_key) if gen.mask_blob_key else None,
        )


def execute_generation(
    db: Database, runtime: Runtime, blobs: BlobStore, generation_id: str,
    is_canceled: Callable[[str], bool] = lambda _id: False,
    changed: Callable[[str], None] = lambda _id: None,
) -> str:
    """Run a generation the worker has claimed; returns its final status. `changed` is told after each commit."""
    try:
        return _execute(db, runtime, blobs, generation_id, is_canceled, changed)
    finally:
        changed(generation_id)


def _execute(
    db: Database, runtime: Runtime, blobs: BlobStore, generation_id: str,
    is_canceled: Callable[[str], bool], changed: Callable[[str], None],
) -> str:
    try:
        spec = load_spec(db, blobs, generation_id)
    except BlobNotFound:
        spec = None
        with db.transaction() as session:
            generation_service.finish_unsuccessfully(
                session, generation_id=generation_id, status="failed",
                error="The input image is no longer available", blobs=blobs)
        return "failed"
    if spec is None:
        return "skipped"

    last_write = 0.0
    stop = False

    def on_progress(step: int, total: int) -> None:
        nonlocal last_write, stop
        now = time.monotonic()
        if now - last_write >= PROGRESS_WRITE_INTERVAL or step == total:
            last_write = now
            with db.transaction() as session:
                stop = generation_service.record_progress(
                    session, generation_id=generation_id, progress=round(step / total, 4))
            changed(generation_id)

    def should_cancel() -> bool:
        return stop or is_canceled(generation_id)

    try:
        result = runtime.run(spec, on_progress=on_progress, should_cancel=should_cancel)
    except JobCanceled:
        with db.transaction() as session:
            # Stopped by the user, or by a worker shutting down: then it goes back in the queue.
            return generation_service.stop_running(session, generation_id=generation_id, blobs=blobs)
    except (CheckpointMismatch, ModelLoadError) as exc:
        return _finish(db, blobs, generation_id, "failed", str(exc))
    except BlobNotFound:
        return _finish(db, blobs, generation_id, "failed", "A model file this job uses was deleted before it ran")
    except Exception as exc:
        log.exception("generation %s failed", generation_id)
        return _finish(db, blobs, generation_id, "failed", f"Generation failed: {type(exc).__name__}")

    with db.transaction() as session:
        done = generation_service.complete(
            session, generation_id=generation_id, images=result.images, signals=result.signals, blobs=blobs)
    if done:
        return "failed" if done == "blocked" else "succeeded"
    return _finish(db, blobs, generation_id, "canceled", None)


def _finish(db: Database, blobs: BlobStore, generation_id: str, status: str, error: str | None) -> str:
    with db.transaction() as session:
        generation_service.finish_unsuccessfully(
            session, generation_id=generation_id, status=status, error=error, blobs=blobs)
    return status
