"""The safety domain's background work: automatic NCMEC reports (only with IMAGEN_NCMEC_REQUIRE_CONFIRMATION off).

`safety.report_case` runs after a hash-match case commits; `safety.retry_reports` is the scheduled pass that
reports what a restart lost and retries failed reports once their back-off is over. Both are safe to run twice: a
reported case, or one waiting for a moderator, is left alone.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select

from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.kit.tasks import periodic, task
from imagen.safety.models import SafetyCase
from imagen.safety.quarantine import Quarantine
from imagen.safety.reporting import AUTO_REPORT_GRACE, AUTO_REPORT_RETRY, reports_without_confirmation
from imagen.safety.service import case_service

Services = Any  # imagen/services.py: the running process's services (domains sit below the root)

log = logging.getLogger(__name__)


@task("safety.report_case")
def report_case(services: Services, case_id: str) -> None:
    report_case_automatically(services.db, services.safety.quarantine, services.settings, case_id)


@periodic("safety.retry_reports", every=lambda settings: settings.privacy_jobs_interval_seconds)
def retry_reports(services: Services) -> list[str]:
    return retry_automatic_reports(services.db, services.safety.quarantine, services.settings)


def report_case_automatically(db: Any, quarantine: Quarantine, settings: Settings, case_id: str) -> str | None:
    """Background, after the case's commit; safe to run twice (a reported case, or one a moderator must look at,
    is left alone)."""
    with db.transaction() as session:
        case = session.get(SafetyCase, case_id, with_for_update=True)
        if case is None or case.ncmec_report_id or case.status not in ("open", "report_failed"):
            return None
        case_service.act(session, case_id=case_id, actor=None, action="report", settings=settings,
                         quarantine=quarantine, blobs=None,
                         note="automatic: IMAGEN_NCMEC_REQUIRE_CONFIRMATION is off")
        return case.ncmec_report_id


def retry_automatic_reports(db: Any, quarantine: Quarantine, settings: Settings, *,
                            now: datetime | None = None) -> list[str]:
    """The scheduled pass (`safety.retry_reports`): hash-match cases that the after-commit job never got to
    (a restart) and failed attempts whose delay is over. Returns the report ids obtained."""
    if not reports_without_confirmation(settings):
        return []
    now = now or utcnow()
    with db.transaction() as session:
        due = list(session.scalars(select(SafetyCase.id).where(
            SafetyCase.kind == "hash_match", SafetyCase.ncmec_report_id.is_(None),
            or_(and_(SafetyCase.status == "open", SafetyCase.created_at < now - AUTO_REPORT_GRACE),
                and_(SafetyCase.status == "report_failed",
                     or_(SafetyCase.ncmec_retry_at <= now,  # cases failed before retry times were kept:
                         and_(SafetyCase.ncmec_retry_at.is_(None), SafetyCase.updated_at < now - AUTO_REPORT_RETRY)))))
            .order_by(SafetyCase.created_at).limit(100)))
    reported = []
    for case_id in due:
        try:
            report_id = report_case_automatically(db, quarantine, settings, case_id)
        except Exception:  # one case's trouble must not stop the others; it stays due
            log.exception("automatic NCMEC report for case %s failed", case_id)
            continue
        if report_id:
            reported.append(report_id)
    return reported
