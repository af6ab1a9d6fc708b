"""The counts on /admin: what needs a person, and the legal deadlines (reads only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imagen.privacy.minors import MinorReport
from imagen.privacy.records.models import Breach
from imagen.privacy.requests.models import CLOSED_STATUSES, PrivacyRequest
from imagen.safety.models import SafetyCase


@dataclass(frozen=True)
class AdminCounts:
    open_cases: int
    requests_open: int
    requests_due_soon: int  # open and due within `soon` days (or overdue)
    requests_overdue: int
    breaches_open: int
    minor_reports_open: int


def admin_counts(session: Session, *, now: datetime, soon_days: int) -> AdminCounts:
    def count(model: type, *conditions: object) -> int:
        return session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0

    open_request = PrivacyRequest.status.not_in(CLOSED_STATUSES)
    return AdminCounts(
        open_cases=count(SafetyCase, SafetyCase.status == "open"),
        requests_open=count(PrivacyRequest, open_request),
        requests_due_soon=count(PrivacyRequest, open_request, PrivacyRequest.due_at <= now + timedelta(days=soon_days)),
        requests_overdue=count(PrivacyRequest, open_request, PrivacyRequest.due_at < now),
        breaches_open=count(Breach, Breach.closed_at.is_(None)),
        minor_reports_open=count(MinorReport, MinorReport.status == "open"),
    )
