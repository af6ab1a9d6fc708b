"""The in-process executor: one worker thread that drains the persistent queue fairly, and a watchdog thread.

The watchdog reports that this process's job is alive (its heartbeat), writes the ends the worker could not record
while the database was away, and ends running jobs whose worker stopped reporting or that ran far past the time
limit, in whichever process they ran.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from imagen.generation.queue import FairQueue
from imagen.generation.service import generation_service
from imagen.generation.tasks import execute_generation
from imagen.inference.runtime import Runtime
from imagen.kit.db import Database, utcnow
from imagen.safety.checks import Safety
from imagen.storage import BlobStore

log = logging.getLogger(__name__)


class LocalExecutor:
    def __init__(self, db: Database, runtime: Runtime, blobs: BlobStore, *, safety: Safety,
                 idle_poll_seconds: float = 2.0,
                 on_change: Callable[[str], None] = lambda _id: None, job_timeout_seconds: float = 0.0,
                 stale_seconds: float = 60.0, on_end: Callable[[str], None] = lambda _id: None,
                 previews: Any = None):
        self.on_end = on_end  # told once a job's final state has committed
        self.previews = previews  # the signals: where a running job's live preview is kept (memory only)
        self.db, self.runtime, self.blobs, self.on_change, self.safety = db, runtime, blobs, on_change, safety
        self.fair = FairQueue()
        self.idle_poll_seconds = idle_poll_seconds
        self.job_timeout_seconds, self.stale_seconds = job_timeout_seconds, stale_seconds
        self.watchdog_seconds = min(stale_seconds / 4, 10.0)  # several heartbeats per stale period
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._canceled: set[str] = set()
        self._unrecorded: dict[str, tuple[str, str | None]] = {}  # ends to write once the database is back
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self.current_job: str | None = None

    def start(self) -> None:
        with self.db.transaction() as session:
            failed = generation_service.recover_after_restart(session, blobs=self.blobs)
        if failed:
            log.warning("marked %d interrupted generations as failed", failed)
        with self.db.transaction() as session:  # the process died after a job's end, before its input went
            generation_service.drop_leftover_inputs(session, blobs=self.blobs)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="imagen-local-executor", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="imagen-job-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.current_job:
            self._canceled.add(self.current_job)
        self._wake.set()
        for thread in (self._thread, self._watchdog):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._watchdog = None

    def submit(self, generation_id: str) -> None:
        self._wake.set()

    def cancel(self, generation_id: str) -> None:
        self._canceled.add(generation_id)

    def run_ticket(self, generation_id: str) -> None:
        """The `generation.run` task here: the one lane drains the queue itself, so a ticket only wakes it."""
        self.submit(generation_id)

    def _is_canceled(self, generation_id: str) -> bool:
        return generation_id in self._canceled or self._stopping.is_set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._wake.clear()  # before looking, so a submit that lands meanwhile is not missed
                with self.db.transaction() as session:
                    job = generation_service.claim_next(
                        session, fair=self.fair, loaded=self.runtime.loaded_checkpoints())
                    job_id = job.id if job else None
                if job_id is None:
                    self._wake.wait(self.idle_poll_seconds)
                    continue
                self.current_job = job_id
                execute_generation(self.db, self.runtime, self.blobs, job_id, self._is_canceled, self.on_change,
                                   safety=self.safety, timeout_seconds=self.job_timeout_seconds,
                                   unrecorded=self._remember_unrecorded, ended=self.on_end, previews=self.previews)
            except Exception:
                log.exception("executor loop error")
                time.sleep(0.5)
            finally:
                self._canceled.discard(self.current_job or "")
                self.current_job = None

    def _remember_unrecorded(self, generation_id: str, status: str, error: str | None) -> None:
        self._unrecorded[generation_id] = (status, error)

    def _watch(self) -> None:
        while not self._stopping.wait(self.watchdog_seconds):
            try:
                self.watch_once()
            except Exception:  # the database is away: try again at the next tick
                log.warning("job watchdog tick failed", exc_info=True)

    def watch_once(self) -> list[str]:
        """One watchdog tick; returns the jobs it ended."""
        ended = []
        for generation_id, (status, error) in list(self._unrecorded.items()):
            with self.db.transaction() as session:
                generation_service.finish_unsuccessfully(session, generation_id=generation_id, status=status,
                                                         error=error, blobs=self.blobs)
            del self._unrecorded[generation_id]
            ended.append(generation_id)
        current = self.current_job
        now = utcnow()
        with self.db.transaction() as session:
            if current:  # first, in the same transaction: this process's job is never taken for abandoned
                generation_service.heartbeat(session, generation_ids=[current])
            timeout = self.job_timeout_seconds
            ended += generation_service.end_abandoned(
                session, silent_since=now - timedelta(seconds=self.stale_seconds),
                started_before=now - timedelta(seconds=timeout + self.stale_seconds) if timeout > 0 else None,
                timeout_seconds=timeout, blobs=self.blobs)
        for generation_id in ended:
            log.warning("job watchdog ended generation %s", generation_id)
            self.on_change(generation_id)
        return ended
