"""The in-process executor: one worker thread that drains the persistent queue fairly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from imagen.generation.queue import FairQueue
from imagen.generation.service import generation_service
from imagen.generation.tasks import execute_generation
from imagen.inference.runtime import Runtime
from imagen.kit.db import Database
from imagen.storage import BlobStore

log = logging.getLogger(__name__)


class LocalExecutor:
    def __init__(self, db: Database, runtime: Runtime, blobs: BlobStore, *, idle_poll_seconds: float = 2.0,
                 on_change: Callable[[str], None] = lambda _id: None):
        self.db, self.runtime, self.blobs, self.on_change = db, runtime, blobs, on_change
        self.fair = FairQueue()
        self.idle_poll_seconds = idle_poll_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._canceled: set[str] = set()
        self._thread: threading.Thread | None = None
        self.current_job: str | None = None

    def start(self) -> None:
        with self.db.transaction() as session:
            failed = generation_service.recover_after_restart(session, blobs=self.blobs)
        if failed:
            log.warning("marked %d interrupted generations as failed", failed)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="imagen-local-executor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.current_job:
            self._canceled.add(self.current_job)
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, generation_id: str) -> None:
        self._wake.set()

    def cancel(self, generation_id: str) -> None:
        self._canceled.add(generation_id)

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
                execute_generation(self.db, self.runtime, self.blobs, job_id, self._is_canceled, self.on_change)
            except Exception:
                log.exception("executor loop error")
                time.sleep(0.5)
            finally:
                self._canceled.discard(self.current_job or "")
                self.current_job = None
