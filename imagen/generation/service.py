"""Generations: submit, read, list, cancel, delete; the worker's claim and completion steps."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.billing.ledger import ledger
from imagen.billing.service import Billing
from imagen.consent.service import consent_service
from imagen.generation.gallery import output_thumb_key, store_thumbnail
from imagen.generation.limits import check_job_cost
from imagen.generation.models import ACTIVE_STATUSES, FINAL_STATUSES, Generation, Output
from imagen.generation.queue import FairQueue, QueuedJob
from imagen.generation.resolve import resolve_image, resolve_models
from imagen.inference.checkpoints import CheckpointRegistry
from imagen.inference.spec import ImageResult
from imagen.insights.stats import image_stats
from imagen.kit.db import new_id, run_after_commit, run_after_rollback, utcnow
from imagen.kit.errors import Conflict, TooManyRequests, Unprocessable, field_error
from imagen.kit.locks import lock_row
from imagen.kit.scoped import get_owned, owned
from imagen.safety.checks import NEUTRAL_GENERATION, Safety, screen_outputs, screen_prompt, screen_reference_image
from imagen.storage import BlobStore
from imagen.workflows.library import UnknownWorkflow
from imagen.workflows.service import preset_service, workflow_service

log = logging.getLogger(__name__)
MAX_SEED = 2**32 - 1


def output_key(user_id: str, generation_id: str, index: int) -> str:
    return f"outputs/{user_id}/{generation_id}/{index}.png"


def input_key(user_id: str, generation_id: str, field: str) -> str:
    return f"inputs/{user_id}/{generation_id}/{field}.png"


def encode_cursor(gen: Generation) -> str:
    return base64.urlsafe_b64encode(f"{gen.created_at.isoformat()}|{gen.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, gen_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        when = datetime.fromisoformat(stamp)
    except Exception:
        raise field_error("cursor", "invalid cursor", where="query") from None
    # Only what encode_cursor makes: an aware time (a naive one can't be compared) and a generation id.
    if when.tzinfo is None or not re.fullmatch(r"[0-9a-f]{32}", gen_id):
        raise field_error("cursor", "invalid cursor", where="query")
    return when, gen_id


class GenerationService:
    # ---- user-facing ----
    def submit(
        self, session: Session, *, user: User, workflow_name: str, params: dict[str, Any], preset_id: str | None,
        checkpoints: CheckpointRegistry, blobs: BlobStore, max_queued: int, enqueue: Callable[[str], None],
        safety: Safety, max_job_cost: int = 0, max_queued_cost: int = 0, billing: Billing | None = None,
    ) -> Generation:
        try:
            workflow = workflow_service.get(session, workflow_name)
        except UnknownWorkflow:
            names = ", ".join(w.name for w in workflow_service.list(session))
            raise field_error("workflow", f"unknown workflow {workflow_name!r}; available: {names}") from None
        if preset_id:
            params = preset_service.apply(session, user=user, preset_id=preset_id, workflow_name=workflow.name,
                                          params=params)
        try:
            clean = workflow.validate_params(params)
        except ValidationError as exc:
            raise Unprocessable([
                {"loc": ["body", "params", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False)
            ]) from None
        screen_prompt(safety, session, user_id=user.id, prompt=clean.get("prompt", ""),
                      negative_prompt=clean.get("negative_prompt", ""))
        models = resolve_models(session, user=user, workflow=workflow, params=clean, checkpoints=checkpoints)
        check_limits = partial(self._check_limits, session, user_id=user.id, pipeline=workflow.pipeline, params=clean,
                               max_queued=max_queued, max_job_cost=max_job_cost, max_queued_cost=max_queued_cost)
        check_limits()  # before any work on the inputs

        if clean["seed"] == -1:
            clean["seed"] = secrets.randbelow(MAX_SEED + 1)
        gen = Generation(
            id=new_id(), user_id=user.id, workflow=workflow.name, workflow_version=workflow.version,
            pipeline=workflow.pipeline, checkpoint=models.checkpoint.name,
            checkpoint_sha256=models.checkpoint.sha256, models=models.record(),
            consent_model_improvement=consent_service.is_granted(
                session, user_id=user.id, purpose="model_improvement"),
            status="queued", progress=0.0,
        )
        for field, column in (("init_image", "input_blob_key"), ("mask_image", "mask_blob_key")):
            if not clean.get(field):
                continue
            image = resolve_image(session, user=user, field=field, value=clean[field], blobs=blobs)
            png = image.png
            if image.received is not None:  # an inline upload: screened like an asset, on the bytes as sent
                png = screen_reference_image(safety, session, user_id=user.id, original=image.received, png=png,
                                             filename=field)
                # The input is transient: kept only until the job ends, referenced by hash in the record.
                clean[field] = "sha256:" + hashlib.sha256(png).hexdigest()
            key = input_key(user.id, gen.id, field)
            blobs.put(key, png, "image/png")
            run_after_rollback(session, blobs.delete, key)
            setattr(gen, column, key)
        # Again, under a lock on the user's row until the commit: simultaneous submits cannot all pass the limits.
        lock_row(session, User.id, user.id, touch=User.role)
        check_limits()
        if billing is not None:  # its price held until the job ends (402 when the balance is short)
            billing.hold(session, user_id=user.id, generation_id=gen.id, workflow=workflow.name, params=clean)
        gen.params = clean
        session.add(gen)
        session.flush()
        run_after_commit(session, enqueue, gen.id)
        return gen

    def _check_limits(self, session: Session, *, user_id: str, pipeline: str, params: dict[str, Any], max_queued: int,
                      max_job_cost: int, max_queued_cost: int) -> None:
        """The user's queued and running jobs: how many (429) and what they cost (422, generation/limits.py)."""
        active = session.execute(
            select(Generation.pipeline, Generation.params)
            .where(Generation.user_id == user_id, Generation.status.in_(ACTIVE_STATUSES))
        ).tuples().all()
        if len(active) >= max_queued:
            raise TooManyRequests(f"You already have {len(active)} queued or running generations; wait for some")
        check_job_cost(pipeline=pipeline, params=params, active=active, max_job_cost=max_job_cost,
                       max_queued_cost=max_queued_cost)

    def get(self, session: Session, *, user: User, generation_id: str) -> Generation:
        return get_owned(session, Generation, generation_id, user.id, what="Generation")

    def list(
        self, session: Session, *, user: User, limit: int, cursor: str | None
    ) -> tuple[list[Generation], str | None]:
        query = owned(Generation, user.id).order_by(Generation.created_at.desc(), Generation.id.desc())
        if cursor:
            stamp, gen_id = decode_cursor(cursor)
            query = query.where(or_(Generation.created_at < stamp,
                                    and_(Generation.created_at == stamp, Generation.id < gen_id)))
        rows = list(session.scalars(query.limit(limit + 1)))
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def queue(self, session: Session, *, user: User) -> list[tuple[Generation, int]]:
        """The user's active jobs, oldest first, with the number of queued jobs older than each (at most 100)."""
        mine = list(session.scalars(owned(Generation, user.id).where(Generation.status.in_(ACTIVE_STATUSES))
                                    .order_by(Generation.created_at).limit(100)))
        result = []
        for gen in mine:
            ahead = 0 if gen.status == "running" else session.scalar(
                select(func.count()).select_from(Generation)
                .where(Generation.status == "queued", Generation.created_at < gen.created_at)) or 0
            result.append((gen, ahead))
        return result

    def cancel(self, session: Session, *, user: User, generation_id: str, blobs: BlobStore,
               notify: Callable[[str], None]) -> Generation:
        gen = self.get(session, user=user, generation_id=generation_id)
        if gen.status not in ACTIVE_STATUSES:
            raise Conflict(f"Generation is already {gen.status}")
        gen.cancel_requested = True
        if gen.status == "queued":
            gen.status = "canceled"
            gen.finished_at = utcnow()
            self._ended(session, gen, blobs)
        run_after_commit(session, notify, gen.id)
        return gen

    def delete(self, session: Session, *, user: User, generation_id: str, blobs: BlobStore,
               notify: Callable[[str], None]) -> None:
        gen = self.get(session, user=user, generation_id=generation_id)
        keys = [key for o in gen.outputs for key in (o.blob_key, output_thumb_key(o))]
        keys += [k for k in (gen.input_blob_key, gen.mask_blob_key) if k]
        if gen.status in ACTIVE_STATUSES:
            run_after_commit(session, notify, gen.id)
        ledger.release(session, generation_id=gen.id)  # a deleted job that was still queued or running
        session.delete(gen)
        for key in keys:
            run_after_commit(session, blobs.delete, key)

    def get_output(self, session: Session, *, user: User, output_id: str) -> Output:
        return get_owned(session, Output, output_id, user.id, what="Output")

    # ---- worker-facing ----
    def claim_next(self, session: Session, *, fair: FairQueue, loaded: Collection[str] = (),
                   worker: str | None = None) -> Generation | None:
        """Claim the fairest queued job; `loaded` (checkpoint hashes in memory) breaks ties. The claim's `attempt`
        is its token: the worker's later writes name it (a requeued job's earlier worker is refused)."""
        if fair.shared:  # a fleet: claims one at a time, before reading the queue
            fair.lock(session)
        rows = session.execute(
            select(Generation.id, Generation.user_id, Generation.created_at, Generation.checkpoint_sha256)
            .where(Generation.status == "queued").order_by(Generation.created_at).limit(1000)
        ).all()
        fair.load(session, {r.user_id for r in rows})
        job = fair.choose([QueuedJob(r.id, r.user_id, r.created_at, r.checkpoint_sha256) for r in rows], loaded)
        if job is None:
            return None
        claimed = session.execute(
            update(Generation).where(Generation.id == job.id, Generation.status == "queued")
            .values(status="running", started_at=utcnow(), heartbeat_at=utcnow(), progress=0.0,
                    attempt=Generation.attempt + 1, claimed_by=worker, served_turn=fair.next_turn(session))
            .execution_options(synchronize_session=False)
        ).rowcount
        if not claimed:  # another worker took it first
            return None
        fair.served(job.user_id)
        gen = session.get(Generation, job.id)
        if gen is not None:
            session.refresh(gen)
        return gen

    def recover_after_restart(self, session: Session, *, blobs: BlobStore) -> int:
        """Jobs that were running when the process died cannot be resumed mid-way: fail them (their transient
        inputs go after the commit, as for any job that ends)."""
        interrupted = list(session.scalars(select(Generation).where(Generation.status == "running")))
        for gen in interrupted:
            gen.status, gen.error, gen.finished_at = "failed", "Interrupted by a server restart; submit it again", \
                utcnow()
            self._ended(session, gen, blobs)
        return len(interrupted)

    def drop_leftover_inputs(self, session: Session, *, blobs: BlobStore) -> int:
        """Transient inputs of jobs that already ended (the process died between the commit and the delete).

        Inputs without a row are left to the retention run: their submit may not have committed yet."""
        by_gen: dict[str, list[str]] = {}
        for key in blobs.keys("inputs/"):
            parts = key.split("/")
            if len(parts) == 4:
                by_gen.setdefault(parts[2], []).append(key)
        ended = set(session.scalars(select(Generation.id).where(
            Generation.id.in_(list(by_gen)), Generation.status.in_(FINAL_STATUSES)))) if by_gen else set()
        keys = [key for gen_id in ended for key in by_gen[gen_id]]
        for key in keys:
            run_after_commit(session, blobs.delete, key)
        return len(keys)

    def heartbeat(self, session: Session, *, generation_ids: Collection[str]) -> None:
        """The worker running these jobs is alive (the watchdog leaves them alone)."""
        if generation_ids:
            session.execute(update(Generation).where(
                Generation.id.in_(list(generation_ids)), Generation.status == "running").values(heartbeat_at=utcnow()))

    def end_abandoned(self, session: Session, *, silent_since: datetime, started_before: datetime | None,
                      timeout_seconds: float, blobs: BlobStore) -> list[str]:
        """The watchdog: end running jobs whose worker stopped reporting before `silent_since`, or that started
        before `started_before` (past the time limit, wherever they run). A job the user asked to cancel ends
        canceled, the others failed, saying why."""
        abandoned = or_(Generation.heartbeat_at < silent_since,
                        and_(Generation.heartbeat_at.is_(None), Generation.started_at < silent_since))
        if started_before is not None:  # a job stuck inside a step never checks its own deadline
            abandoned = or_(abandoned, Generation.started_at < started_before)
        query = select(Generation).where(Generation.status == "running", abandoned)
        ended = []
        for gen in session.scalars(query.with_for_update(skip_locked=True)):
            if gen.cancel_requested:
                status, error = "canceled", None
            elif started_before is not None and gen.started_at is not None and gen.started_at < started_before:
                status, error = "failed", f"Timed out after {timeout_seconds:g} s (the server's limit per job)"
            else:
                status, error = "failed", "The worker running this job stopped reporting; submit it again"
            gen.status, gen.error, gen.finished_at = status, error, utcnow()
            self._ended(session, gen, blobs)
            ended.append(gen.id)
        return ended

    def record_progress(self, session: Session, *, generation_id: str, progress: float,
                        attempt: int | None = None) -> bool:
        """Store progress; returns whether the job should stop (canceled, deleted, or claimed again since)."""
        gen = session.get(Generation, generation_id)
        if gen is None or gen.cancel_requested or not _holds(gen, attempt):
            return True
        gen.progress, gen.heartbeat_at = progress, utcnow()
        return False

    def complete(self, session: Session, *, generation_id: str, images: list[ImageResult],
                 signals: dict[str, Any], blobs: BlobStore, safety: Safety, attempt: int | None = None) -> bool | str:
        """Store the outputs (True), or fail the job when the safety checks block them ("blocked"). With `attempt`,
        only that claim may (the row locked): the first finisher wins, a zombie's outputs are never stored."""
        gen = session.get(Generation, generation_id, with_for_update=attempt is not None)
        if gen is not None and gen.status in ACTIVE_STATUSES and not _holds(gen, attempt):
            return "superseded"
        if gen is None or gen.status != "running" or gen.cancel_requested:
            return False
        nsfw_scores: list[float] = []
        screened = screen_outputs(safety, session, gen=gen, images=images, nsfw_scores=nsfw_scores)
        if screened is None:  # never stored, never served; a hash match opened a case
            gen.status, gen.error, gen.finished_at = "failed", NEUTRAL_GENERATION, utcnow()
            self._ended(session, gen, blobs)
            return "blocked"
        stamp = utcnow()
        for index, image in enumerate(screened):
            key = output_key(gen.user_id, gen.id, index)
            blobs.put(key, image.png, "image/png")
            run_after_rollback(session, blobs.delete, key)
            store_thumbnail(session, blobs, user_id=gen.user_id, generation_id=gen.id, index=index, png=image.png)
            # A batch's images a microsecond apart, the first newest: the gallery (newest first) shows them in order.
            session.add(Output(generation_id=gen.id, user_id=gen.user_id, index=index, blob_key=key,
                               width=image.width, height=image.height, seed=image.seed,
                               size_bytes=len(image.png), created_at=stamp - timedelta(microseconds=index)))
        if gen.consent_model_improvement:  # from the bytes in hand: the insights code never opens an image
            signals = {**signals, "image_stats": _image_stats(screened, gen.id)}
            if nsfw_scores:  # the detector ran (the operator's NSFW policy needs it): the batch's highest score
                signals["nsfw_score"] = round(max(nsfw_scores), 3)
        gen.status, gen.progress, gen.signals, gen.finished_at = "succeeded", 1.0, signals, utcnow()
        self._ended(session, gen, blobs)
        return True

    def finish_unsuccessfully(self, session: Session, *, generation_id: str, status: str,
                              error: str | None, blobs: BlobStore, attempt: int | None = None) -> None:
        gen = session.get(Generation, generation_id)
        if gen is None or gen.status not in ACTIVE_STATUSES or not _holds(gen, attempt):
            return
        gen.status, gen.error, gen.finished_at = status, error, utcnow()
        self._ended(session, gen, blobs)

    def stop_running(self, session: Session, *, generation_id: str, blobs: BlobStore,
                     attempt: int | None = None) -> str:
        gen = session.get(Generation, generation_id)
        if gen is None:
            return "deleted"
        if not _holds(gen, attempt):
            return "superseded"
        if gen.cancel_requested:
            self.finish_unsuccessfully(session, generation_id=generation_id, status="canceled", error=None,
                                       blobs=blobs)
            return "canceled"
        gen.status, gen.progress, gen.started_at, gen.heartbeat_at = "queued", 0.0, None, None
        return "requeued"

    def requeue_abandoned(self, session: Session, *, silent_since: datetime, dead_workers: Collection[str] = (),
                          dead_silent_since: datetime | None = None, max_attempts: int,
                          blobs: BlobStore) -> tuple[list[str], list[str]]:
        """The fleet's watchdog: running jobs whose worker died (silent since `silent_since`, or claimed by one of
        `dead_workers` and silent since `dead_silent_since`) go back to the queue to run again elsewhere, until they
        have been claimed `max_attempts` times; then they fail. Returns (requeued, ended)."""
        silent = or_(Generation.heartbeat_at < silent_since,
                     and_(Generation.heartbeat_at.is_(None), Generation.started_at < silent_since))
        if dead_workers and dead_silent_since is not None:
            silent = or_(silent, and_(Generation.claimed_by.in_(list(dead_workers)),
                                      Generation.heartbeat_at < dead_silent_since))
        requeued, ended = [], []
        for gen in session.scalars(select(Generation).where(Generation.status == "running", silent)
                                   .with_for_update(skip_locked=True)):
            if gen.cancel_requested:
                gen.status, gen.finished_at = "canceled", utcnow()
                self._ended(session, gen, blobs)
                ended.append(gen.id)
            elif gen.attempt >= max_attempts:
                gen.status, gen.finished_at = "failed", utcnow()
                gen.error = f"The workers running this job stopped reporting {gen.attempt} times; submit it again"
                self._ended(session, gen, blobs)
                ended.append(gen.id)
            else:
                gen.status, gen.progress, gen.started_at, gen.heartbeat_at = "queued", 0.0, None, None
                gen.claimed_by = None
                requeued.append(gen.id)
        return requeued, ended

    def has_queued(self, session: Session) -> bool:
        return session.scalar(select(Generation.id).where(Generation.status == "queued").limit(1)) is not None

    def _ended(self, session: Session, gen: Generation, blobs: BlobStore) -> None:
        """Every path that gives a job its final state comes here: its credit hold is settled (succeeded) or
        released (failed, canceled), once (a hold already ended is left alone), and its transient inputs go."""
        if gen.status == "succeeded":
            ledger.settle(session, generation_id=gen.id)
        else:
            ledger.release(session, generation_id=gen.id)
        self._drop_transient_input(session, gen, blobs)

    def _drop_transient_input(self, session: Session, gen: Generation, blobs: BlobStore) -> None:
        for key in (gen.input_blob_key, gen.mask_blob_key):
            if key:
                run_after_commit(session, blobs.delete, key)
        gen.input_blob_key = gen.mask_blob_key = None


def _image_stats(images: list[ImageResult], generation_id: str) -> dict[str, float]:
    try:
        return image_stats([image.png for image in images])
    except Exception:  # a statistic is never worth failing a job for
        log.warning("generation %s: image statistics not computed", generation_id, exc_info=True)
        return {}


def _holds(gen: Generation, attempt: int | None) -> bool:
    """The writer's claim is the job's current one: still running under the same attempt (None: the in-process lane,
    which never requeues a job elsewhere)."""
    return attempt is None or (gen.status == "running" and gen.attempt == attempt)


generation_service = GenerationService()
