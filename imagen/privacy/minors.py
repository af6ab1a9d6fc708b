"""Reports that an account belongs to a minor (policy §10): a public form, an admin queue, erasure on confirmation.

The reporter learns nothing about whether an account matches. Confirming a report erases the account through
the erasure service at once (no grace period) and keeps the report only as the record of what was decided, with
the details that identify the minor removed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imagen.accounts.models import User
from imagen.kit.config import Settings
from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime, utcnow
from imagen.kit.errors import Conflict, NotFound, ServiceError, field_error
from imagen.kit.inputs import normalize_email
from imagen.kit.tasks import JobControl, TaskQueue

STATUSES = ("open", "confirmed", "dismissed")
ERASED_DETAILS = "[removed when the report was confirmed and the account erased]"


class MinorReport(IdMixin, CreatedMixin, Base):
    __tablename__ = "minor_reports"

    reporter_email: Mapped[str | None] = mapped_column(String(320))
    subject_email: Mapped[str | None] = mapped_column(String(320))
    subject_reference: Mapped[str | None] = mapped_column(String(64))  # a generation or output id
    # The matching account when the report came in (or when confirmed); the reporter never sees it.
    subject_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    details: Mapped[str | None] = mapped_column(Text)  # emptied when the account it names is erased
    status: Mapped[str] = mapped_column(String(16), default="open", nullable=False, index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    resolution: Mapped[str | None] = mapped_column(Text)  # the dismissal reason, or the confirmation note
    erasure_ref: Mapped[str | None] = mapped_column(String(64))  # the erasure the confirmation started


class ErasureUnavailable(ServiceError):
    status_code = 503


class MinorReportService:
    def _match(self, session: Session, *, email: str | None, reference: str | None) -> User | None:
        from imagen.generation.models import Generation, Output

        if email:
            user = session.scalars(select(User).where(User.email == email)).first()
            if user is not None:
                return user
        if reference:
            for model in (Generation, Output):
                owner = session.scalar(select(model.user_id).where(model.id == reference))
                if owner is not None:
                    return session.get(User, owner)
        return None

    def report(self, session: Session, *, reporter_email: str | None, subject_email: str | None,
               reference: str | None, details: str) -> MinorReport:
        subject_email = normalize_email(subject_email or "") or None
        reference = (reference or "").strip() or None
        if reference and reference.startswith("/api/v1/"):  # a pasted image or generation link
            reference = reference.rstrip("/").rsplit("/", 1)[-1]
        if reference and len(reference) > 64:
            raise field_error("reference", "not a generation or image id (or link)")
        if not subject_email and not reference:
            raise field_error("account_email", "name the account: its email address, or the id or link of one "
                                               "of its images or generations")
        user = self._match(session, email=subject_email, reference=reference)
        row = MinorReport(reporter_email=normalize_email(reporter_email or "") or None, subject_email=subject_email,
                          subject_reference=reference, subject_user_id=user.id if user else None,
                          details=details.strip(), status="open")
        session.add(row)
        session.flush()
        return row

    def list(self, session: Session, *, status: str | None = None, limit: int = 200) -> list[MinorReport]:
        query = select(MinorReport).order_by(MinorReport.created_at.desc(), MinorReport.id)
        if status:
            query = query.where(MinorReport.status == status)
        return list(session.scalars(query.limit(limit)))

    def _open(self, session: Session, report_id: str) -> MinorReport:
        row = session.get(MinorReport, report_id)
        if row is None:
            raise NotFound("Report not found")
        if row.status != "open":
            raise Conflict(f"This report is already {row.status}")
        return row

    def dismiss(self, session: Session, *, report_id: str, admin: User, reason: str) -> MinorReport:
        row = self._open(session, report_id)
        row.status, row.resolved_at, row.resolved_by, row.resolution = "dismissed", utcnow(), admin.id, reason.strip()
        return row

    def confirm(self, session: Session, *, report_id: str, admin: User, settings: Settings, note: str | None = None,
                tasks: TaskQueue | None = None, jobs: JobControl | None = None) -> MinorReport:
        """Erase the reported account at once (no grace period) and keep only the decision."""
        row = self._open(session, report_id)
        user = session.get(User, row.subject_user_id) if row.subject_user_id else None
        if user is None:
            user = self._match(session, email=row.subject_email, reference=row.subject_reference)
        if user is None:
            raise Conflict("No account matches this report (or it was already erased); dismiss it with a reason")
        if user.id == admin.id:
            raise Conflict("You cannot confirm a report about your own account")
        try:
            from imagen.privacy.erasure import erasure_service
        except ImportError as exc:  # pragma: no cover - the erasure module ships with the same issue
            raise ErasureUnavailable("Account erasure is not available in this build") from exc
        row.subject_user_id = user.id  # before the erasure: deleting the account then sets it to NULL
        session.flush()
        erasure = erasure_service.request(session, user=user, via="minor_report", grace=False, settings=settings,
                                          tasks=tasks, jobs=jobs)
        row.status, row.resolved_at, row.resolved_by = "confirmed", utcnow(), admin.id
        row.resolution = (note or "").strip() or None
        row.erasure_ref = str(getattr(erasure, "id", "") or "")[:64] or None
        # What identified the minor goes with the account; the decision and its date stay.
        row.subject_email, row.subject_reference, row.details = None, None, ERASED_DETAILS
        return row

    def out(self, session: Session, row: MinorReport) -> dict[str, Any]:
        user = session.get(User, row.subject_user_id) if row.subject_user_id else None
        return {
            "id": row.id, "status": row.status, "created_at": row.created_at, "reporter_email": row.reporter_email,
            "account_email": row.subject_email, "reference": row.subject_reference, "details": row.details,
            "matched_user": {"id": user.id, "email": user.email, "created_at": user.created_at} if user else None,
            "resolved_at": row.resolved_at, "resolved_by": row.resolved_by, "resolution": row.resolution,
            "erasure_ref": row.erasure_ref,
        }


minor_report_service = MinorReportService()
