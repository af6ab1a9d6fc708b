"""Where a job's ticket (`generation.run`) goes: to an idle worker that has the job's checkpoint loaded, when there
is one (its own queue), else to the shared GPU queue, where any idle worker takes it. Without affinity
(`IMAGEN_FLEET_AFFINITY=false`) every ticket goes to the shared queue: plain round-robin between idle workers."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from imagen.fleet.registry import PREFIX, WorkerRegistry
from imagen.generation.models import Generation
from imagen.kit.db import Database
from imagen.kit.tasks import GPU_QUEUE

log = logging.getLogger(__name__)

RUN = "generation.run"


class TicketRouter:
    def __init__(self, db: Database, tasks: Any, registry: WorkerRegistry, *, affinity: bool) -> None:
        self.db, self.tasks, self.registry, self.affinity = db, tasks, registry, affinity

    def queue_for(self, generation_id: str) -> str:
        if not self.affinity:
            return GPU_QUEUE
        try:
            with self.db.transaction() as session:
                checkpoint = session.scalar(select(Generation.checkpoint_sha256)
                                            .where(Generation.id == generation_id))
            worker = self.registry.reserve(checkpoint, generation_id) if checkpoint else None
        except Exception:  # Redis or the database away: any worker will do
            log.warning("routing generation %s to the shared queue", generation_id, exc_info=True)
            return GPU_QUEUE
        return worker.queue if worker is not None else GPU_QUEUE

    def submit(self, generation_id: str) -> str:
        """Send the job's ticket; returns the queue it went to."""
        queue = self.queue_for(generation_id)
        try:
            self.tasks.send(RUN, generation_id, queue=queue)
        except Exception:
            if queue != GPU_QUEUE:  # not sent: the worker it was routed to is idle again at its next tick
                self.registry.redis.lrem(f"{PREFIX}routed:{queue.removeprefix('gpu.')}", 1, generation_id)
            raise
        return queue
