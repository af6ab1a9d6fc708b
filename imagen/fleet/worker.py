"""The GPU worker of a fleet (`imagen worker`): runs generation tickets one at a time, and a watchdog.

A ticket (`generation.run`) claims the fairest queued job (fairness shared through the database,
`SharedFairQueue`), preferring a checkpoint this worker has loaded, and runs it under the claim's attempt number:
every write of the job names it, so if this worker is presumed dead and its job runs again elsewhere, whatever it
still writes is refused (the first finisher wins; never two sets of outputs).

The watchdog, every `tick` seconds: publishes this worker in the registry (alive, idle or busy, loaded checkpoints),
writes the heartbeat of its job, and puts back in the queue the running jobs of workers that died (their presence in
Redis expired, or their heartbeat in the database is older than `IMAGEN_JOB_STALE_SECONDS`), each with a new ticket,
until a job has been claimed `IMAGEN_FLEET_JOB_ATTEMPTS` times (then it fails, saying why). It also re-sends the
tickets that were routed to a dead worker, ends jobs past their time limit, and, when this worker is idle while jobs
have waited a whole tick, sends itself a ticket (a ticket lost on the way cannot strand a job).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from imagen.fleet.registry import WorkerRegistry
from imagen.fleet.routing import RUN, TicketRouter
from imagen.generation.models import Generation
from imagen.generation.queue import SharedFairQueue
from imagen.generation.service import generation_service
from imagen.generation.signals import RedisGenerationSignals
from imagen.generation.tasks import execute_generation
from imagen.kit.db import utcnow
from imagen.kit.tasks import GPU_QUEUE

log = logging.getLogger(__name__)

CLAIM_TRIES = 20  # lost races between claimers are retried; claims are serialized, so this is a bound only


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class FleetWorker:
    def __init__(self, *, db: Any, runtime: Any, blobs: Any, safety: Any, signals: RedisGenerationSignals,
                 registry: WorkerRegistry, router: TicketRouter, settings: Any, name: str | None = None,
                 on_end: Callable[[str], None] = lambda _id: None) -> None:
        self.on_end = on_end  # told once a job's final state has committed
        self.db, self.runtime, self.blobs, self.safety = db, runtime, blobs, safety
        self.signals, self.registry, self.router, self.settings = signals, registry, router, settings
        self.name = name or default_worker_name()
        self.fair = SharedFairQueue()
        self.stale_seconds = settings.job_stale_seconds
        self.tick = min(self.stale_seconds / 4, 5.0)
        self._run_lock = threading.Lock()  # one job at a time on this runtime, whatever the pool's concurrency
        self._stopping = threading.Event()
        self._canceled: set[str] = set()
        self._unrecorded: dict[str, tuple[str, str | None, int]] = {}
        self._watchdog: threading.Thread | None = None
        self.current: tuple[str, int] | None = None  # (generation id, attempt)
        self.ran: list[str] = []  # ids of the jobs this worker ran to an end (tests, benchmarks)

    @property
    def queue(self) -> str:
        """This worker's own queue: tickets routed to it for a checkpoint it has loaded."""
        return f"gpu.{self.name}"

    # ---- lifecycle ----
    def start(self) -> None:
        self._stopping.clear()
        self.signals.on_cancel = self.cancel
        self.signals.start()
        self._publish()
        self._watchdog = threading.Thread(target=self._watch, name="imagen-fleet-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.current:
            self._canceled.add(self.current[0])
        if self._watchdog is not None:
            self._watchdog.join(timeout)
            self._watchdog = None
        try:
            for ticket in self.registry.forget(self.name):  # tickets routed here and not taken: to the others
                self.router.tasks.send(RUN, ticket, queue=GPU_QUEUE)
        except Exception:
            log.warning("could not hand this worker's routed tickets back", exc_info=True)
        self.signals.stop()

    # ---- the Executor protocol (a worker enqueuing a job, a cancel committed here) ----
    def submit(self, generation_id: str) -> None:
        self.router.submit(generation_id)

    def cancel(self, generation_id: str) -> None:
        if self.current and self.current[0] == generation_id:
            self._canceled.add(generation_id)

    def _is_canceled(self, generation_id: str) -> bool:
        return generation_id in self._canceled or self._stopping.is_set()

    # ---- a ticket ----
    def run_ticket(self, ticket: str) -> str | None:
        with self._run_lock:
            self.registry.busy(self.name, took=ticket)
            try:
                claimed = self._claim()
                if claimed is None:
                    return None
                self.current = claimed
                generation_id, attempt = claimed
                status = execute_generation(
                    self.db, self.runtime, self.blobs, generation_id, self._is_canceled, self.signals.notify,
                    safety=self.safety, timeout_seconds=self.settings.job_timeout_seconds,
                    unrecorded=self._remember_unrecorded, attempt=attempt, ended=self.on_end, previews=self.signals)
                if status == "requeued":  # this worker is stopping: the job goes to another one
                    self.router.submit(generation_id)
                elif status != "superseded":
                    self.ran.append(generation_id)
                log.info("generation %s (attempt %d): %s", generation_id, attempt, status)
                return generation_id
            finally:
                if self.current:
                    self._canceled.discard(self.current[0])
                self.current = None
                self._publish()

    def _claim(self) -> tuple[str, int] | None:
        loaded = self.runtime.loaded_checkpoints() if self.router.affinity else ()
        for _ in range(CLAIM_TRIES):
            with self.db.transaction() as session:
                gen = generation_service.claim_next(session, fair=self.fair, loaded=loaded, worker=self.name)
                if gen is not None:
                    return gen.id, gen.attempt
                if not generation_service.has_queued(session):
                    return None
        return None

    def _remember_unrecorded(self, generation_id: str, status: str, error: str | None) -> None:
        if self.current:
            self._unrecorded[generation_id] = (status, error, self.current[1])

    # ---- the watchdog ----
    def _publish(self) -> None:
        try:
            self.registry.publish(self.name, queue=self.queue, loaded=self.runtime.loaded_checkpoints(),
                                  idle=self.current is None and not self._stopping.is_set())
        except Exception:
            log.warning("could not publish this worker to Redis", exc_info=True)

    def _watch(self) -> None:
        while not self._stopping.wait(self.tick):
            try:
                self.watch_once()
            except Exception:  # the database or Redis is away: again at the next tick
                log.warning("fleet watchdog tick failed", exc_info=True)

    def watch_once(self) -> dict[str, list[str]]:
        """One watchdog tick; returns what it did, by kind."""
        self._publish()
        done: dict[str, list[str]] = {"recorded": [], "requeued": [], "ended": [], "rerouted": []}
        for generation_id, (status, error, attempt) in list(self._unrecorded.items()):
            with self.db.transaction() as session:
                generation_service.finish_unsuccessfully(session, generation_id=generation_id, status=status,
                                                         error=error, blobs=self.blobs, attempt=attempt)
            del self._unrecorded[generation_id]
            done["recorded"].append(generation_id)
        dead = self.registry.dead()
        current = self.current
        now = utcnow()
        timeout = self.settings.job_timeout_seconds
        with self.db.transaction() as session:
            if current:  # first, in the same transaction: this worker's job is never taken for abandoned
                generation_service.heartbeat(session, generation_ids=[current[0]])
            requeued, ended = generation_service.requeue_abandoned(
                session, silent_since=now - timedelta(seconds=self.stale_seconds), dead_workers=dead,
                dead_silent_since=now - timedelta(seconds=2 * self.tick),
                max_attempts=self.settings.fleet_job_attempts, blobs=self.blobs)
            ended += generation_service.end_abandoned(
                session, silent_since=now - timedelta(seconds=self.stale_seconds),
                started_before=now - timedelta(seconds=timeout + self.stale_seconds) if timeout > 0 else None,
                timeout_seconds=timeout, blobs=self.blobs)
            stranded = (not current and not requeued and self._waited(session, now - timedelta(seconds=self.tick)))
        for generation_id in requeued:
            log.warning("generation %s: its worker died; queued again", generation_id)
            self.router.submit(generation_id)
            self.signals.notify(generation_id)
        for generation_id in ended:
            log.warning("fleet watchdog ended generation %s", generation_id)
            self.signals.notify(generation_id)
        for name in dead:
            for ticket in self.registry.forget(name):
                self.router.tasks.send(RUN, ticket, queue=GPU_QUEUE)
                done["rerouted"].append(ticket)
        if stranded and self.registry.reserve_self(self.name):
            self.router.tasks.send(RUN, "", queue=self.queue)
        done["requeued"], done["ended"] = requeued, ended
        return done

    @staticmethod
    def _waited(session: Any, before: Any) -> bool:
        return session.scalar(select(Generation.id).where(
            Generation.status == "queued", Generation.created_at < before).limit(1)) is not None

