"""Running one claimed generation through the runtime. Takes IDs, safe to run twice.

Every job reaches a final state: storing the outputs and recording the end are retried a few times (a full or
read-only blob store, a database that went away), then the job fails saying why; the end itself, when even that
cannot be written, goes to `unrecorded` (the executor writes it once the database is back). A job past its time limit
is stopped at the next step and fails.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from imagen.generation.models import FINAL_STATUSES, Generation
from imagen.generation.resolve import refs_from_record
from imagen.generation.service import generation_service
from imagen.inference.runtime import Runtime
from imagen.inference.spec import CheckpointMismatch, JobCanceled, JobSpec, ModelLoadError, ModelRef
from imagen.kit.db import Database
from imagen.kit.tasks import GPU_QUEUE, task
from imagen.safety.checks import Safety
from imagen.storage import BlobNotFound, BlobStore

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL = 0.25  # seconds between progress rows; the SSE stream polls at this rate
FINISH_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between attempts at storing outputs or recording an end

Unrecorded = Callable[[str, str, "str | None"], None]  # (generation id, final status, error)
T = TypeVar("T")


def _log_unrecorded(generation_id: str, status: str, error: str | None) -> None:
    log.error("generation %s: could not record its end (%s: %s); the watchdog will end it", generation_id, status,
              error)


class _GaveUp(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _with_retries(generation_id: str, what: str, work: Callable[[], T]) -> T:
    """Run `work` (one transaction) again after storage or database errors, a bounded number of times."""
    cause: BaseException | None = None
    for attempt, delay in enumerate((0.0, *FINISH_RETRY_DELAYS), start=1):
        time.sleep(delay)
        try:
            return work()
        except (OSError, SQLAlchemyError) as exc:
            cause = exc
            log.warning("generation %s: could not %s (attempt %d): %s", generation_id, what, attempt,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    assert cause is not None
    raise _GaveUp(cause)


def failure_reason(exc: BaseException, doing: str = "store the outputs") -> str:
    """What the user reads when storage or the database failed (the cause, never a server path)."""
    if isinstance(exc, OSError):
        why = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        return f"Could not {doing} ({why}); submit it again later"
    return f"Could not {doing}: the database was unavailable; submit it again"


def load_spec(db: Database, blobs: BlobStore, generation_id: str, attempt: int | None = None) -> JobSpec | None:
    with db.transaction() as session:
        gen = session.get(Generation, generation_id)
        if gen is None or gen.status != "running" or (attempt is not None and gen.attempt != attempt):
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
    *, safety: Safety, timeout_seconds: float = 0.0, unrecorded: Unrecorded = _log_unrecorded,
    attempt: int | None = None, ended: Callable[[str], None] = lambda _id: None, previews: Any = None,
) -> str:
    """Run a generation the worker has claimed; returns its final status. `changed` is told after each commit;
    `timeout_seconds` (0: none) stops it at the next step once it has run that long. `attempt` (a fleet worker's
    claim token) makes every write conditional on the claim still being this one ("superseded" when it is not).
    `ended` is told once the job's final state has committed (the insights derivation is enqueued there).
    `previews` (the signals) holds the job's newest live preview while it runs, when the runtime makes them."""
    status = "skipped"
    try:
        status = _Job(db, runtime, blobs, generation_id, is_canceled, changed, timeout_seconds, unrecorded,
                      safety, attempt, previews).run()
        return status
    finally:
        if previews is not None:
            previews.drop_preview(generation_id)
        changed(generation_id)
        if status in FINAL_STATUSES:
            try:
                ended(generation_id)
            except Exception:  # what follows a job's end never fails the job (the insights sweep catches up)
                log.warning("generation %s: after-end hook failed", generation_id, exc_info=True)


class _Job:
    def __init__(self, db: Database, runtime: Runtime, blobs: BlobStore, generation_id: str,
                 is_canceled: Callable[[str], bool], changed: Callable[[str], None], timeout_seconds: float,
                 unrecorded: Unrecorded, safety: Safety, attempt: int | None = None, previews: Any = None) -> None:
        self.db, self.runtime, self.blobs, self.id, self.safety = db, runtime, blobs, generation_id, safety
        self.previews = previews
        self.attempt = attempt
        self.is_canceled, self.changed, self.unrecorded = is_canceled, changed, unrecorded
        self.timeout = timeout_seconds
        self.deadline = time.monotonic() + timeout_seconds if timeout_seconds > 0 else None
        self.last_write = 0.0
        self.stop = self.timed_out = self.progress_lost = False

    def run(self) -> str:
        try:
            spec = load_spec(self.db, self.blobs, self.id, self.attempt)
        except BlobNotFound:
            return self.finish("failed", "The input image is no longer available")
        except Exception as exc:  # the blob store or the database failing before anything ran
            log.exception("generation %s could not start", self.id)
            return self.finish("failed", failure_reason(exc, "start the job"))
        if spec is None:
            return "skipped"
        try:
            previews = self.previews is not None and _makes_previews(self.runtime)
            extra = {"on_preview": self.on_preview} if previews else {}
            result = self.runtime.run(spec, on_progress=self.on_progress, should_cancel=self.should_cancel, **extra)
        except JobCanceled:
            if self.timed_out:
                return self.finish("failed", f"Timed out after {self.timeout:g} s (the server's limit per job)")
            # Stopped by the user, or by a worker shutting down: then it goes back in the queue.
            try:
                return _with_retries(self.id, "stop it", self._stop_running)
            except _GaveUp:
                return self.finish("failed", "Stopped, and the database was unavailable to requeue it")
        except (CheckpointMismatch, ModelLoadError) as exc:
            return self.finish("failed", str(exc))
        except BlobNotFound:
            return self.finish("failed", "A model file this job uses was deleted before it ran")
        except Exception as exc:
            log.exception("generation %s failed", self.id)
            return self.finish("failed", f"Generation failed: {type(exc).__name__}")

        try:
            done = _with_retries(self.id, "store the outputs", lambda: self._complete(result.images, result.signals))
        except _GaveUp as gave_up:
            return self.finish("failed", failure_reason(gave_up.cause))
        if done == "superseded":  # requeued and claimed again while this worker was presumed dead
            return "superseded"
        if done:
            return "failed" if done == "blocked" else "succeeded"
        return self.finish("canceled", None)

    def on_progress(self, step: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last_write < PROGRESS_WRITE_INTERVAL and step != total:
            return
        self.last_write = now
        try:
            with self.db.transaction() as session:
                self.stop = generation_service.record_progress(
                    session, generation_id=self.id, progress=round(step / total, 4), attempt=self.attempt)
        except SQLAlchemyError as exc:  # the database is away: keep computing, the end is retried when it comes
            if not self.progress_lost:
                log.warning("generation %s: progress not recorded: %s", self.id, str(exc).splitlines()[0])
            self.progress_lost = True
            return
        self.changed(self.id)

    def on_preview(self, jpeg: bytes) -> None:
        self.previews.set_preview(self.id, jpeg)
        self.changed(self.id)

    def should_cancel(self) -> bool:
        if self.stop or self.is_canceled(self.id):
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = True
        return self.timed_out

    def _complete(self, images: list, signals: dict) -> bool | str:
        with self.db.transaction() as session:
            return generation_service.complete(
                session, generation_id=self.id, images=images, signals=signals, blobs=self.blobs,
                safety=self.safety, attempt=self.attempt)

    def _stop_running(self) -> str:
        with self.db.transaction() as session:
            return generation_service.stop_running(session, generation_id=self.id, blobs=self.blobs,
                                                   attempt=self.attempt)

    def finish(self, status: str, error: str | None) -> str:
        try:
            _with_retries(self.id, "record its end",
                          lambda: _finish(self.db, self.blobs, self.id, status, error, self.attempt))
        except _GaveUp:
            self.unrecorded(self.id, status, error)
        return status


def _makes_previews(runtime: Any) -> bool:
    """Only a runtime that makes previews is asked for them: RunPod's makes none, and a wrapped `run` (a test's or
    an operator's) that does not take `on_preview` is called as before."""
    if not getattr(runtime, "preview_every", 0):
        return False
    try:
        parameters = inspect.signature(runtime.run).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "on_preview" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _finish(db: Database, blobs: BlobStore, generation_id: str, status: str, error: str | None,
            attempt: int | None = None) -> str:
    with db.transaction() as session:
        generation_service.finish_unsuccessfully(
            session, generation_id=generation_id, status=status, error=error, blobs=blobs, attempt=attempt)
    return status


@task("generation.run", queue=GPU_QUEUE)
def run_generation(services: Any, generation_id: str) -> str | None:
    """A ticket: one per submitted (or requeued) job. The process's executor claims the fairest queued job, which
    need not be `generation_id` (fairness and model affinity decide), and runs it; as many tickets as jobs, so every
    job runs. Safe to run twice: a ticket that finds the queue empty does nothing, and a claim is a conditional
    update, so no job runs twice at once. Returns the id of the job it ran, if any."""
    return services.executor.run_ticket(generation_id)
