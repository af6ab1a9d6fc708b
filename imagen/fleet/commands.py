"""`imagen worker` and `imagen beat`: a Celery worker and Celery beat, on this process's own services."""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

from imagen.kit.config import Settings
from imagen.kit.tasks import GPU_QUEUE, periodic_tasks


def run_worker(settings: Settings, *, queues: Sequence[str], concurrency: int, name: str | None = None,
               loglevel: str = "INFO") -> int:
    """Run until stopped (SIGTERM/SIGINT: the job in hand finishes first). Returns the exit code."""
    from imagen.fleet.celery_app import set_worker_services
    from imagen.services import build_services

    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = build_services(settings, role="worker")
    gpu = GPU_QUEUE in queues
    if name:
        services.executor.name = name
    services.run_executor = gpu  # the runtime, watchdog and registry only on GPU workers
    consumed = [*queues, services.executor.queue] if gpu else list(queues)
    set_worker_services(services)
    services.start()
    try:
        worker = services.tasks.app.Worker(
            hostname=f"imagen-{services.executor.name}@{socket.gethostname()}", queues=consumed,
            concurrency=concurrency, pool="threads", loglevel=loglevel, prefetch_multiplier=1, without_gossip=True,
            without_mingle=True, without_heartbeat=True, redirect_stdouts=False)
        worker.start()
        return int(worker.exitcode or 0)
    finally:
        services.stop()
        set_worker_services(None)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each `@periodic` task every `every(settings)` seconds, on its queue (turned off at 0)."""
    schedule = {}
    for definition in periodic_tasks():
        seconds = float(definition.every(settings)) if definition.every is not None else 0.0
        if seconds > 0:
            schedule[definition.name] = {"task": definition.name, "schedule": seconds,
                                         "options": {"queue": definition.queue}}
    return schedule


def run_beat(settings: Settings, *, loglevel: str = "INFO") -> None:
    import imagen.services  # noqa: F401  every domain's tasks, so the schedule has them all
    from imagen.fleet.celery_app import make_celery

    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.ensure_data_dir()
    app = make_celery(settings)
    app.conf.beat_schedule = beat_schedule(settings)
    app.Beat(loglevel=loglevel, schedule=str(settings.data_dir.resolve() / "celerybeat-schedule"),
             redirect_stdouts=False).run()
