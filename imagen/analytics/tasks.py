"""PostHog person deletion after an erasure: `analytics.delete_person` once the erasure commits, `analytics.retry`
on a schedule until PostHog agrees (both safe to run twice: a deleted row is done)."""

from __future__ import annotations

from typing import Any

from imagen.analytics.service import analytics_service
from imagen.kit.tasks import periodic, task

Services = Any  # imagen/services.py: the running process's services (domains sit below the root)


@task("analytics.delete_person")
def delete_person(services: Services, deletion_id: str) -> bool:
    return analytics_service.delete_person(services.db, services.analytics, deletion_id)


@periodic("analytics.retry", every=lambda settings: settings.analytics_retry_interval_seconds
          if settings.analytics == "posthog" else 0)
def retry(services: Services) -> int:
    with services.db.transaction() as session:
        ids = analytics_service.pending_ids(session)
    return sum(analytics_service.delete_person(services.db, services.analytics, i) for i in ids)
