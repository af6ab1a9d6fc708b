"""The published policy, and reports that an account belongs to a minor (policy §10)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from imagen.accounts.http import AdminUser
from imagen.consent.service import consent_service
from imagen.kit.http import ServicesDep, SessionDep, SettingsDep, limit_sender
from imagen.privacy.minors import minor_report_service
from imagen.privacy.policy import render_version, text_sha256
from imagen.privacy.providers import configured_providers

router = APIRouter(prefix="/api/v1", tags=["privacy"])


@router.get("/policy")
def get_policy(settings: SettingsDep, session: SessionDep) -> dict[str, Any]:
    versions = consent_service.list_versions(session)
    current, text = versions[0], render_version(settings, versions, session=session)
    return {
        "version": current.version,
        "published_at": current.published_at,
        "material": current.material,
        "sha256": text_sha256(text),
        "published_sha256": current.text_sha256,
        "text": text,
        "contact_email": settings.contact_email,
        "providers": [p.__dict__ for p in configured_providers(settings)],
    }


class MinorReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reporter_email: EmailStr | None = Field(default=None, description="optional: how we can reach you")
    account_email: str | None = Field(default=None, max_length=320, description="the reported account's email")
    reference: str | None = Field(default=None, max_length=200,
                                  description="or the id (or link) of one of its generations or images")
    details: str = Field(min_length=10, max_length=5000, description="why you believe the user is under 18")


class MinorReportReceived(BaseModel):
    id: str
    status: str
    message: str


class MinorReportOut(BaseModel):
    id: str
    status: str
    created_at: datetime
    reporter_email: str | None
    account_email: str | None
    reference: str | None
    details: str | None
    matched_user: dict[str, Any] | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    erasure_ref: str | None


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


class DismissIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=2000)


@router.post("/minor-reports", status_code=status.HTTP_202_ACCEPTED, response_model=MinorReportReceived)
def report_minor(data: MinorReportIn, session: SessionDep, request: Request) -> MinorReportReceived:
    """Public, no login. The answer is the same whether or not an account matches."""
    limit_sender(request, "minor-report", email=data.reporter_email)
    row = minor_report_service.report(session, reporter_email=data.reporter_email, subject_email=data.account_email,
                                      reference=data.reference, details=data.details)
    return MinorReportReceived(id=row.id, status="received", message=(
        "Thank you. We will review your report and, if we confirm it, delete the account and its data."))


@router.get("/admin/minor-reports", response_model=list[MinorReportOut])
def list_minor_reports(admin: AdminUser, session: SessionDep,
                       status: Literal["open", "confirmed", "dismissed"] | None = None) -> list[MinorReportOut]:
    return [MinorReportOut(**minor_report_service.out(session, r))
            for r in minor_report_service.list(session, status=status)]


@router.post("/admin/minor-reports/{report_id}/confirm", response_model=MinorReportOut)
def confirm_minor_report(report_id: str, admin: AdminUser, session: SessionDep, services: ServicesDep,
                         data: ConfirmIn | None = None) -> MinorReportOut:
    row = minor_report_service.confirm(session, report_id=report_id, admin=admin, settings=services.settings,
                                       note=data.note if data else None, tasks=services.tasks,
                                       jobs=services.executor)
    return MinorReportOut(**minor_report_service.out(session, row))


@router.post("/admin/minor-reports/{report_id}/dismiss", response_model=MinorReportOut)
def dismiss_minor_report(report_id: str, data: DismissIn, admin: AdminUser, session: SessionDep) -> MinorReportOut:
    row = minor_report_service.dismiss(session, report_id=report_id, admin=admin, reason=data.reason)
    return MinorReportOut(**minor_report_service.out(session, row))
