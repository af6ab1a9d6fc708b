"""The Celery side of the task backend: one Celery task per `@task` of the domains, each running
`run_task(<this worker's services>, name, *ids)`; `CeleryTasks` is the `TaskQueue` the web, the CLI and the workers
enqueue into.

Delivery: late acks (a message is acknowledged when its task has returned) and prefetch 1, so a worker holds one
message at a time and a worker that dies before finishing leaves its message to the broker to deliver again. Tasks
are idempotent, so a second delivery is harmless; a generation's ticket in particular only claims what is queued.
No result backend: tasks write their results to the database.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from imagen.kit.config import Settings
from imagen.kit.tasks import DEFAULT_QUEUE, TASKS, run_task, task_named

log = logging.getLogger(__name__)

_services: Any = None  # the services of the worker process running the tasks (set by `imagen worker`)


def set_worker_services(services: Any) -> None:
    global _services
    _services = services


def make_celery(settings: Settings) -> Celery:
    app = Celery("imagen", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_default_queue=DEFAULT_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,  # no broadcast queues: the fleet coordinates through Redis and the DB
        broker_transport_options={
            # Redis redelivers an unacknowledged message after this long; the fleet's watchdog requeues a dead
            # worker's job long before, so this only bounds how late a spare (harmless) ticket can arrive.
            "visibility_timeout": max(3600, int(settings.job_timeout_seconds * 2)),
        },
    )
    for definition in TASKS.values():
        app.task(name=definition.name, queue=definition.queue, acks_late=True)(_runner(definition.name))
    return app


def _runner(name: str) -> Any:
    def run(*args: str) -> Any:
        if _services is None:
            raise RuntimeError("this process has no worker services (start it with `imagen worker`)")
        return run_task(_services, name, *args)

    run.__name__ = run.__qualname__ = name.replace(".", "_")
    return run


class CeleryTasks:
    """The fleet's `TaskQueue`: tasks go to the broker, to the queue their declaration names."""

    def __init__(self, settings: Settings) -> None:
        self.app = make_celery(settings)

    def enqueue(self, name: str, *args: str) -> None:
        self.send(name, *args, queue=task_named(name).queue)

    def send(self, name: str, *args: str, queue: str) -> None:
        task_named(name)
        self.app.send_task(name, args=list(args), queue=queue)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.app.close()
