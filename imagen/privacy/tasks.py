"""The privacy domain's background work, each a named task that takes ids and is safe to run twice.

- `privacy.build_export` / `privacy.erase_user`: enqueued after the request's commit;
- `privacy.resume` (at start) and `privacy.tick` (every `privacy_jobs_interval_seconds`): exports still pending and
  erasures already started that a restart interrupted, erasures whose grace period is over, expired export files;
- `privacy.retention` (every `retention_interval_hours`, first five minutes after start): the retention purge.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from imagen.kit.db import utcnow
from imagen.kit.tasks import periodic, task
from imagen.privacy.erasure import erase_user, erasure_service
from imagen.privacy.exports import build_export, export_service
from imagen.privacy.retention import run_retention

Services = Any  # imagen/services.py: the running process's services (domains sit below the root)

log = logging.getLogger(__name__)

STALE = timedelta(hours=1)  # pending/in-progress work older than this is taken as interrupted
RETENTION_FIRST_DELAY_SECONDS = 300.0  # not in the way of a start, and not skipped by frequent restarts


@task("privacy.build_export")
def build_export_task(services: Services, export_id: str) -> None:
    if build_export(services.db, services.blobs, export_id, expiry_days=services.settings.export_expiry_days,
                    outbox=services.outbox, settings=services.settings) == "ready":
        services.tasks.enqueue("webhooks.send_due")  # its export.ready event now, not at the next pass


@task("privacy.erase_user")
def erase_user_task(services: Services, user_id: str) -> None:
    summary = erase_user(services.db, services.blobs, services.executor, user_id, settings=services.settings)
    if deletion_id := summary.get("analytics_deletion"):
        services.tasks.enqueue("analytics.delete_person", deletion_id)


@task("privacy.resume")
def resume(services: Services) -> dict[str, int]:
    """At start: enqueue exports still pending and erasures already started (a restart interrupted them)."""
    with services.db.transaction() as session:
        exports = export_service.pending_ids(session)
        erasures = erasure_service.due_user_ids(session, only_started=True)
    for export_id in exports:
        services.tasks.enqueue("privacy.build_export", export_id)
    for user_id in erasures:
        services.tasks.enqueue("privacy.erase_user", user_id)
    return {"exports": len(exports), "erasures": len(erasures)}


@periodic("privacy.tick", every=lambda settings: settings.privacy_jobs_interval_seconds)
def tick(services: Services) -> dict[str, int]:
    """One scheduled pass; each part is idempotent."""
    stale = utcnow() - STALE
    with services.db.transaction() as session:
        exports = export_service.pending_ids(session, created_before=stale)
        # Due after their grace period, or started over an hour ago and not finished (a restart).
        erasures = erasure_service.due_user_ids(session, started_before=stale)
        # Expired links lose their file within minutes, not at the daily retention run (which purges the rest).
        expired = export_service.purge_expired(session, blobs=services.blobs)
    for export_id in exports:
        services.tasks.enqueue("privacy.build_export", export_id)
    for user_id in erasures:
        services.tasks.enqueue("privacy.erase_user", user_id)
    return {"exports": len(exports), "erasures": len(erasures), "expired_exports": expired}


@periodic("privacy.retention", every=lambda settings: settings.retention_interval_hours * 3600,
          first=lambda settings: min(RETENTION_FIRST_DELAY_SECONDS, settings.retention_interval_hours * 3600))
def retention(services: Services) -> list:
    return run_retention(services.db, services.blobs, services.settings)
