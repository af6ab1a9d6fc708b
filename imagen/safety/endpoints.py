"""Moderation API: the case queue and its actions (moderators and admins), user reports, roles (admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field

from imagen.accounts.http import AdminUser, CurrentUser, ModeratorUser
from imagen.kit.http import SessionDep, SettingsDep
from imagen.safety.models import SafetyCase
from imagen.safety.service import case_service

router = APIRouter(prefix="/api/v1", tags=["moderation"])


class CaseOut(BaseModel):
    id: str
    kind: str
    status: str
    user_id: str | None
    user_email: str | None
    summary: str
    subject_type: str | None
    subject_id: str | None
    created_at: datetime
    updated_at: datetime
    hold_until: datetime
    ncmec_report_id: str | None
    ncmec_error: str | None  # report_failed: why (retried at ncmec_retry_at); report_refused: what to fix
    ncmec_retry_at: datetime | None
    ncmec_escalation: str | None
    ncmec_attempts: list[dict[str, Any]] | None  # every attempt: report id, state, code, error


class EvidenceOut(BaseModel):
    id: str
    source: str
    user_id: str | None
    user_email: str | None
    ip_address: str | None
    event_time: datetime | None
    filename: str | None
    size_bytes: int | None
    sha256: str | None
    md5: str | None
    pdq: str | None
    match: dict[str, Any] | None
    generation_id: str | None
    prompt: str | None
    negative_prompt: str | None
    quarantined: bool
    created_at: datetime


class ActionOut(BaseModel):
    action: str
    actor_id: str | None
    actor_email: str | None
    note: str
    result: str
    created_at: datetime


class CaseDetail(CaseOut):
    evidence: list[EvidenceOut]
    actions: list[ActionOut]


class ActionIn(BaseModel):
    action: Literal["dismiss", "remove", "suspend", "restore", "report", "preserve", "escalate"]
    note: str = Field(default="", max_length=2000)
    # preserve: keep the case and its evidence at least this many days from now (e.g. a law-enforcement request
    # to preserve, 18 U.S.C. §2703(f): 90 days, renewable); the hold never shortens.
    days: int | None = Field(default=None, ge=1, le=3650)


class ReportIn(BaseModel):
    output_id: str | None = None
    generation_id: str | None = None
    reason: str = Field(default="", max_length=2000)


class RoleIn(BaseModel):
    role: Literal["user", "moderator", "admin"]


def case_out(case: SafetyCase) -> CaseOut:
    return CaseOut.model_validate(case, from_attributes=True)


def case_detail(case: SafetyCase) -> CaseDetail:
    return CaseDetail(
        **case_out(case).model_dump(),
        evidence=[EvidenceOut(**{k: getattr(e, k) for k in EvidenceOut.model_fields if k != "quarantined"},
                              quarantined=e.quarantine_blob_key is not None) for e in case.evidence],
        actions=[ActionOut.model_validate(a, from_attributes=True) for a in case.actions])


@router.get("/admin/cases", response_model=list[CaseOut])
def list_cases(_moderator: ModeratorUser, session: SessionDep, status: str | None = None,
               kind: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 100,
               before: str | None = None) -> list[CaseOut]:
    """Newest first; the next page: `before` = the last id of this one."""
    return [case_out(c) for c in case_service.list(session, status=status, kind=kind, limit=limit, before=before)]


@router.get("/admin/cases/{case_id}", response_model=CaseDetail)
def get_case(case_id: str, _moderator: ModeratorUser, session: SessionDep) -> CaseDetail:
    return case_detail(case_service.get(session, case_id=case_id))


@router.post("/admin/cases/{case_id}/actions", response_model=CaseDetail)
def act_on_case(case_id: str, body: ActionIn, moderator: ModeratorUser, session: SessionDep,
                settings: SettingsDep, request: Request) -> CaseDetail:
    """dismiss, remove (reported content: quarantined and deleted), suspend, restore, report (to NCMEC),
    preserve (extend the hold by `days`), escalate (the NCMEC report asks for high priority; `note`: why)."""
    case = case_service.act(session, case_id=case_id, actor=moderator, action=body.action, note=body.note,
                            days=body.days,
                            settings=settings, quarantine=request.app.state.services.safety.quarantine,
                            blobs=request.app.state.services.blobs)
    return case_detail(case)


@router.post("/reports", status_code=status.HTTP_201_CREATED)
def report_content(body: ReportIn, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> dict[str, str]:
    """"Report this image": opens a case for the moderators."""
    case = case_service.report_content(session, reporter=user, output_id=body.output_id,
                                       generation_id=body.generation_id, reason=body.reason, settings=settings)
    return {"id": case.id, "status": "received"}


class UserOut(BaseModel):
    id: str
    email: str
    role: str
    created_at: datetime
    suspended_at: datetime | None


@router.get("/admin/users", response_model=list[UserOut])
def list_users(_admin: AdminUser, session: SessionDep, q: str = "", after: str = "",
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[UserOut]:
    """Accounts by email (`q`: part of the email; the next page: `after` = the last email of this one)."""
    from imagen.accounts.service import account_service

    return [UserOut.model_validate(u, from_attributes=True)
            for u in account_service.list_users(session, email_contains=q, after_email=after, limit=limit)]


@router.put("/admin/users/{user_id}/role")
def set_role(user_id: str, body: RoleIn, _admin: AdminUser, session: SessionDep) -> dict[str, str]:
    user = case_service.set_role(session, user_id=user_id, role=body.role)
    return {"id": user.id, "role": user.role}
