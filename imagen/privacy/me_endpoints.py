"""The user's own privacy rights through the API: export (policy §8) and account deletion (policy §3, §7, §8).

Exports and erasures are carried out by the privacy tasks (imagen/privacy/tasks.py), enqueued after the commit.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from imagen.accounts.http import CurrentUser
from imagen.accounts.security import verify_password
from imagen.analytics.service import analytics_service
from imagen.kit.errors import Forbidden
from imagen.kit.http import CSRF_COOKIE, SESSION_COOKIE, ServicesDep, SessionDep, SettingsDep
from imagen.privacy.erasure import erasure_service
from imagen.privacy.exports import download_url, export_service
from imagen.privacy.models import Erasure, Export

router = APIRouter(prefix="/api/v1/me", tags=["privacy"])


class ExportOut(BaseModel):
    id: str
    status: str  # pending | ready | failed | expired
    download_url: str | None
    requested_via: str
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    size_bytes: int | None
    error: str | None


class ErasureRequest(BaseModel):
    password: str


class ErasureOut(BaseModel):
    id: str
    status: str  # scheduled | in_progress | completed | canceled
    due_at: datetime
    created_at: datetime
    can_cancel: bool


def export_out(export: Export) -> ExportOut:
    state = export_service.status(export)
    return ExportOut(id=export.id, status=state, download_url=download_url(export) if state == "ready" else None,
                     requested_via=export.requested_via, created_at=export.created_at, finished_at=export.finished_at,
                     expires_at=export.expires_at, size_bytes=export.size_bytes, error=export.error)


def erasure_out(erasure: Erasure) -> ErasureOut:
    return ErasureOut(id=erasure.id, status=erasure.status, due_at=erasure.due_at, created_at=erasure.created_at,
                      can_cancel=erasure.status == "scheduled")


@router.post("/exports", status_code=status.HTTP_202_ACCEPTED, response_model=ExportOut)
def request_export(user: CurrentUser, session: SessionDep, services: ServicesDep, request: Request) -> ExportOut:
    export = export_service.request(session, user_id=user.id, requested_via="self", tasks=services.tasks)
    analytics_service.track(session, request, analytics=services.analytics, user=user, event="export_requested")
    return export_out(export)


@router.get("/exports", response_model=list[ExportOut])
def list_exports(user: CurrentUser, session: SessionDep) -> list[ExportOut]:
    return [export_out(e) for e in export_service.list(session, user_id=user.id)]


@router.get("/exports/{export_id}", response_model=ExportOut)
def get_export(export_id: str, user: CurrentUser, session: SessionDep) -> ExportOut:
    return export_out(export_service.get(session, user_id=user.id, export_id=export_id))


@router.get("/exports/{export_id}/download")
def download_export(export_id: str, user: CurrentUser, session: SessionDep, request: Request) -> StreamingResponse:
    export, chunks = export_service.open_download(session, user_id=user.id, export_id=export_id,
                                                  blobs=request.app.state.services.blobs)
    name = f"imagen-export-{export.created_at:%Y-%m-%d}-{export.id[:8]}.zip"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "private, no-store"}
    if export.size_bytes is not None:
        headers["Content-Length"] = str(export.size_bytes)
    return StreamingResponse(chunks, media_type="application/zip", headers=headers)


@router.delete("", status_code=status.HTTP_202_ACCEPTED, response_model=ErasureOut)
def delete_account(data: ErasureRequest, user: CurrentUser, session: SessionDep, settings: SettingsDep,
                   services: ServicesDep, response: Response) -> ErasureOut:
    if not verify_password(user.password_hash, data.password):
        raise Forbidden("The password is not correct; your account was not changed")
    erasure = erasure_service.request(session, user=user, via="self", grace=True, settings=settings,
                                      tasks=services.tasks, jobs=services.executor)
    if erasure.status == "in_progress":  # signed out everywhere now
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(CSRF_COOKIE, path="/")
    return erasure_out(erasure)


@router.get("/erasure", response_model=ErasureOut)
def get_erasure(user: CurrentUser, session: SessionDep) -> ErasureOut:
    return erasure_out(erasure_service.get_current(session, user_id=user.id))


@router.post("/erasure/cancel", response_model=ErasureOut)
def cancel_erasure(user: CurrentUser, session: SessionDep) -> ErasureOut:
    return erasure_out(erasure_service.cancel(session, user_id=user.id))
