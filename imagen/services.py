"""The composition root: every long-lived object the service runs on, built once and passed explicitly.

`build_services` is called by `create_app` (role "web"), by CLI commands ("cli") and by `imagen worker` /
`imagen beat` ("worker", "beat"). Request dependencies read `app.state.services`; tasks get the services of the
process that runs them. Nothing below this module looks services up by engine or reads the environment.

What runs where:
- embedded (`IMAGEN_EXECUTOR=local`, the default): the web process runs the tasks in its own threads
  (`InProcessTasks`), the in-process scheduler, and generations on the in-process GPU lane;
- fleet (`IMAGEN_EXECUTOR=celery`): the web process only enqueues; `imagen worker` runs tasks and generations,
  `imagen beat` schedules the periodic ones (imagen/fleet/);
- a CLI command enqueues to the fleet in fleet mode; in the embedded mode its work stays pending in its rows and
  the server's scheduled pass picks it up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# Every table, and every domain's tasks: the root is the one place that knows them all.
import imagen.accounts.tasks
import imagen.analytics.tasks
import imagen.generation.tasks
import imagen.insights.tasks
import imagen.mail.tasks
import imagen.models
import imagen.privacy.tasks
import imagen.safety.tasks
import imagen.webhooks.tasks  # noqa: F401
from imagen.analytics.client import Analytics, NoAnalytics, make_analytics
from imagen.billing.service import Billing
from imagen.insights.metrics import ServiceMetrics
from imagen.kit import migrate
from imagen.kit.config import Settings
from imagen.kit.db import Database, utcnow
from imagen.kit.tasks import InProcessTasks, PendingTasks, Scheduler, TaskQueue
from imagen.mail.backends import Mailer, make_mailer
from imagen.mail.outbox import Outbox
from imagen.safety.checks import Safety, build_safety
from imagen.storage import BlobStore, make_blob_store

log = logging.getLogger(__name__)

Role = Literal["web", "worker", "beat", "cli"]


@dataclass
class Services:
    settings: Settings
    db: Database
    blobs: BlobStore
    mailer: Mailer
    outbox: Outbox
    safety: Safety
    tasks: TaskQueue
    role: Role = "web"
    clock: Callable[[], datetime] = utcnow
    scheduler: Scheduler | None = None
    # The generation side (imagen/generation/): the runtime that turns a job into images (workers only), the
    # executor that runs queued jobs, and the signals that carry progress and cancels to the streams.
    runtime: Any = None
    executor: Any = None
    run_executor: bool = True
    signals: Any = None
    # Product analytics (imagen/analytics): PostHog's SDK client or nothing; flushed and stopped with the process.
    analytics: Analytics = field(default_factory=NoAnalytics)
    # /metrics (imagen/insights/metrics.py): this app's own Prometheus registry, never the process-global one.
    metrics: ServiceMetrics | None = None
    billing: Billing | None = None  # credits and Stripe (imagen/billing); off: generation is free
    extras: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self.tasks.start()
        if self.executor is not None and self.run_executor:
            self.executor.start()
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.executor is not None:
            self.executor.stop()
        self.tasks.stop()
        close = getattr(self.runtime, "close", None)  # a remote runtime's HTTP client (RunPod)
        if callable(close):
            close()
        self.analytics.stop()
        close_mailer = getattr(self.mailer, "close", None)  # Postmark's HTTP client
        if callable(close_mailer):
            close_mailer()
        self.db.dispose()


def build_services(settings: Settings, *, role: Role = "web", run_migrations: bool = True,
                   runtime: Any = None) -> Services:
    """Everything the process needs, not yet started (`Services.start` starts the threads)."""
    settings.ensure_data_dir()
    if run_migrations:
        migrate.upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url, pool_size=settings.resolved_db_pool_size if role == "web" else None,
                  pool_timeout=settings.db_pool_timeout_seconds)
    blobs = make_blob_store(settings)
    services = Services(settings=settings, db=db, blobs=blobs, mailer=make_mailer(settings), outbox=None,  # type: ignore[arg-type]
                        safety=None, tasks=PendingTasks(), role=role,  # type: ignore[arg-type]
                        analytics=make_analytics(settings))
    services.tasks = _task_backend(services)
    services.outbox = Outbox(db, services.mailer, services.tasks, domain=settings.site_domain)
    services.safety = build_safety(db, blobs, settings, services.tasks)
    services.metrics = ServiceMetrics(soon_days=settings.privacy_due_soon_days)
    services.billing = Billing(settings)
    if role == "web" and settings.executor != "celery":
        services.scheduler = Scheduler(services.tasks, settings, run_at_start=("privacy.resume",))
    from imagen.generation.wiring import attach_generation  # the executor and runtime for this role

    attach_generation(services, runtime=runtime)
    return services


def _task_backend(services: Services) -> TaskQueue:
    settings = services.settings
    if settings.executor == "celery":
        from imagen.fleet.celery_app import CeleryTasks

        return CeleryTasks(settings)
    if services.role == "web":
        return InProcessTasks(services)
    return PendingTasks()


@contextmanager
def open_services(settings: Settings, *, role: Role = "cli") -> Iterator[Services]:
    """Services for one CLI command: migrated, the policy version recorded, disposed afterwards."""
    from imagen.consent.service import consent_service
    from imagen.privacy.policy import render_policy

    services = build_services(settings, role=role)
    try:
        with services.db.transaction() as session:
            consent_service.ensure_policy_version(session, version=settings.policy_version,
                                                  text=render_policy(settings, session=session))
        yield services
    finally:
        services.analytics.stop()
        services.db.dispose()
