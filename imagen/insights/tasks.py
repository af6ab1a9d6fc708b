"""Deriving insights as background work, after the generation's end has committed, so it never slows or fails the
job. Each task is handed only the database: the insights code gets no blob store (tests/test_insights.py)."""

from __future__ import annotations

from typing import Any

from imagen.insights.service import insights_service
from imagen.kit.tasks import periodic, task

Services = Any  # imagen/services.py: the running process's services (domains sit below the root)


@task("insights.derive")
def derive(services: Services, generation_id: str) -> bool:
    """One ended generation; safe to run twice (the generation is marked derived in the same transaction)."""
    with services.db.transaction() as session:
        return insights_service.derive(session, generation_id=generation_id) is not None


@periodic("insights.sweep", every=lambda settings: settings.insights_sweep_interval_seconds)
def sweep(services: Services) -> int:
    """Ended generations whose task was lost (a restart, a job the watchdog ended), a batch at a time."""
    with services.db.transaction() as session:
        ids = insights_service.pending(session)
    for generation_id in ids:
        derive(services, generation_id)
    return len(ids)
