"""Privacy requests: the public form and code check, the admin queue and moves, the requester's own list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse

from imagen.accounts.http import AdminUser, CurrentUser, OptionalPrincipalDep
from imagen.kit.config import Settings
from imagen.kit.http import ServicesDep, SessionDep, SettingsDep, limit_sender
from imagen.mail.http import OutboxDep
from imagen.privacy.requests.models import PrivacyRequest
from imagen.privacy.requests.pages import router as pages_router
from imagen.privacy.requests.schemas import (
    AdminRequestCreate,
    MyPrivacyRequestOut,
    PrivacyRequestDetail,
    PrivacyRequestOut,
    PublicRequestCreate,
    PublicRequestOut,
    RequestEventOut,
    StatusChange,
    TransitionRequest,
    VerifyRequest,
)
from imagen.privacy.requests.service import TRANSITIONS, deadline, privacy_request_service

api = APIRouter(prefix="/api/v1", tags=["privacy requests"])


def request_out(req: PrivacyRequest, settings: Settings) -> PrivacyRequestOut:
    due = deadline(req, settings)
    return PrivacyRequestOut(
        id=req.id, kind=req.kind, status=req.status, email=req.email, details=req.details, channel=req.channel,
        user_id=req.user_id, received_by=req.received_by.email if req.received_by else None,
        received_at=req.received_at, due_at=req.due_at, days_left=due.days_left, overdue=due.overdue,
        due_soon=due.due_soon, verified_at=req.verified_at, closed_at=req.closed_at,
        extension_reason=req.extension_reason, denial_reason=req.denial_reason, resolution=req.resolution,
        export_id=req.export_id, allowed_transitions=list(TRANSITIONS[req.status]),
    )


def request_detail(req: PrivacyRequest, settings: Settings) -> PrivacyRequestDetail:
    events = [RequestEventOut(at=e.created_at, actor=e.actor, actor_email=e.actor_user.email if e.actor_user else None,
                              from_status=e.from_status, to_status=e.to_status, note=e.note) for e in req.events]
    return PrivacyRequestDetail(**request_out(req, settings).model_dump(), events=events)


def public_out(req: PrivacyRequest) -> PublicRequestOut:
    return PublicRequestOut(id=req.id, kind=req.kind, status=req.status, received_at=req.received_at,
                            due_at=req.due_at, verification="verified" if req.verified_at else "code_sent")


def my_out(req: PrivacyRequest) -> MyPrivacyRequestOut:
    history = [StatusChange(at=e.created_at, status=e.to_status) for e in req.events if e.from_status != e.to_status]
    return MyPrivacyRequestOut(
        id=req.id, kind=req.kind, status=req.status, details=req.details, received_at=req.received_at,
        due_at=req.due_at, closed_at=req.closed_at, extension_reason=req.extension_reason,
        denial_reason=req.denial_reason, resolution=req.resolution, export_id=req.export_id, history=history,
    )


# ---- the public side: no login needed ----------------------------------------------------------------------------


@api.post("/privacy-requests", status_code=status.HTTP_201_CREATED, response_model=PublicRequestOut)
def submit_request(data: PublicRequestCreate, principal: OptionalPrincipalDep, session: SessionDep,
                   settings: SettingsDep, outbox: OutboxDep, request: Request) -> PublicRequestOut:
    limit_sender(request, "privacy-request", email=data.email)
    req = privacy_request_service.submit(session, outbox=outbox, settings=settings, email=data.email,
                                         kind=data.kind, details=data.details,
                                         signed_in=principal.user if principal else None)
    return public_out(req)


@api.post("/privacy-requests/{request_id}/verify", response_model=PublicRequestOut)
def verify_request(request_id: str, data: VerifyRequest, session: SessionDep,
                   settings: SettingsDep) -> PublicRequestOut | JSONResponse:
    req, problem = privacy_request_service.verify(session, settings=settings, request_id=request_id, code=data.code)
    if problem is not None:
        # Returned, not raised: the wrong attempt must be committed to count against the limit.
        return JSONResponse({"detail": problem.detail}, status_code=problem.status_code)
    return public_out(req)


@api.post("/privacy-requests/{request_id}/resend-code", response_model=PublicRequestOut)
def resend_code(request_id: str, session: SessionDep, settings: SettingsDep, outbox: OutboxDep) -> PublicRequestOut:
    return public_out(privacy_request_service.resend_code(session, outbox=outbox, settings=settings,
                                                          request_id=request_id))


# ---- the requester's own, once linked to their account ---------------------------------------------------------


@api.get("/me/privacy-requests", response_model=list[MyPrivacyRequestOut])
def my_requests(user: CurrentUser, session: SessionDep) -> list[MyPrivacyRequestOut]:
    return [my_out(r) for r in privacy_request_service.list_for_user(session, user_id=user.id)]


# ---- the operator's queue ----------------------------------------------------------------------------------------


@api.post("/admin/privacy-requests", status_code=status.HTTP_201_CREATED, response_model=PrivacyRequestDetail)
def record_request(data: AdminRequestCreate, admin: AdminUser, session: SessionDep, settings: SettingsDep,
                   outbox: OutboxDep) -> PrivacyRequestDetail:
    req = privacy_request_service.record(
        session, outbox=outbox, settings=settings, admin=admin, email=data.email, kind=data.kind,
        details=data.details, channel=data.channel, received_at=data.received_at, send_code=data.send_code)
    return request_detail(req, settings)


@api.get("/admin/privacy-requests", response_model=list[PrivacyRequestOut])
def request_queue(_admin: AdminUser, session: SessionDep, settings: SettingsDep,
                  which: Annotated[str, Query(alias="status", description="open, closed, all or one state")] = "open",
                  ) -> list[PrivacyRequestOut]:
    return [request_out(r, settings) for r in privacy_request_service.queue(session, status=which)]


@api.get("/admin/privacy-requests/{request_id}", response_model=PrivacyRequestDetail)
def get_request(request_id: str, _admin: AdminUser, session: SessionDep,
                settings: SettingsDep) -> PrivacyRequestDetail:
    return request_detail(privacy_request_service.get(session, request_id=request_id), settings)


@api.post("/admin/privacy-requests/{request_id}/transition", response_model=PrivacyRequestDetail)
def transition_request(request_id: str, data: TransitionRequest, admin: AdminUser, session: SessionDep,
                       settings: SettingsDep, services: ServicesDep) -> PrivacyRequestDetail:
    req = privacy_request_service.transition(session, outbox=services.outbox, settings=settings, admin=admin,
                                             request_id=request_id, to=data.status, note=data.note, days=data.days,
                                             tasks=services.tasks, jobs=services.executor)
    return request_detail(req, settings)


@api.post("/admin/privacy-requests/{request_id}/send-code", response_model=PrivacyRequestDetail)
def send_code(request_id: str, admin: AdminUser, session: SessionDep, settings: SettingsDep,
              outbox: OutboxDep) -> PrivacyRequestDetail:
    req = privacy_request_service.resend_code(session, outbox=outbox, settings=settings, request_id=request_id,
                                              admin=admin)
    return request_detail(req, settings)


# One router for app.py: the API and the two pages.
router = APIRouter()
router.include_router(api)
router.include_router(pages_router)
