from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel

from imagen.accounts.http import CurrentUser
from imagen.kit.http import SessionDep
from imagen.notifications.models import Notification
from imagen.notifications.service import notification_service

router = APIRouter(prefix="/api/v1/me", tags=["notifications"])


class NotificationOut(BaseModel):
    id: str
    kind: str
    title: str
    body: str
    link: str | None
    read_at: datetime | None
    created_at: datetime


def notification_out(note: Notification) -> NotificationOut:
    return NotificationOut(id=note.id, kind=note.kind, title=note.title, body=note.body, link=note.link,
                           read_at=note.read_at, created_at=note.created_at)


@router.get("/notifications", response_model=list[NotificationOut])
def list_notifications(user: CurrentUser, session: SessionDep, unread: bool = False) -> list[NotificationOut]:
    return [notification_out(n) for n in notification_service.list(session, user_id=user.id, unread_only=unread)]


@router.post("/notifications/{notification_id}/read", response_model=NotificationOut)
def mark_read(notification_id: str, user: CurrentUser, session: SessionDep) -> NotificationOut:
    return notification_out(notification_service.mark_read(session, user_id=user.id, notification_id=notification_id))


@router.post("/notifications/read-all", status_code=status.HTTP_204_NO_CONTENT)
def mark_all_read(user: CurrentUser, session: SessionDep) -> None:
    notification_service.mark_all_read(session, user_id=user.id)
