from __future__ import annotations

from fastapi import APIRouter, status

from imagen.accounts.http import CurrentUser
from imagen.kit.http import SessionDep, SettingsDep
from imagen.webhooks.models import WebhookDelivery, WebhookEndpoint
from imagen.webhooks.schemas import DeliveryOut, WebhookCreated, WebhookIn, WebhookOut
from imagen.webhooks.sender import message_id
from imagen.webhooks.service import webhook_service

router = APIRouter(prefix="/api/v1", tags=["webhooks"])


def webhook_out(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(id=endpoint.id, url=endpoint.url, events=endpoint.events, enabled=endpoint.enabled,
                      failures=endpoint.failures, disabled_reason=endpoint.disabled_reason,
                      created_at=endpoint.created_at)


@router.post("/webhooks", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated)
def create_webhook(data: WebhookIn, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> WebhookCreated:
    """Events are POSTed to `url`, signed per the Standard Webhooks spec with the `secret` answered here only."""
    endpoint = webhook_service.create(session, user_id=user.id, url=data.url, events=list(data.events),
                                      allow_private=settings.webhooks_allow_private)
    return WebhookCreated(**webhook_out(endpoint).model_dump(), secret=endpoint.secret)


@router.get("/webhooks", response_model=list[WebhookOut])
def list_webhooks(user: CurrentUser, session: SessionDep) -> list[WebhookOut]:
    return [webhook_out(e) for e in webhook_service.list(session, user_id=user.id)]


@router.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: str, user: CurrentUser, session: SessionDep) -> None:
    webhook_service.delete(session, user_id=user.id, endpoint_id=webhook_id)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryOut])
def list_deliveries(webhook_id: str, user: CurrentUser, session: SessionDep) -> list[DeliveryOut]:
    """The delivery log, newest first (at most 50)."""
    return [delivery_out(d) for d in webhook_service.deliveries(session, user_id=user.id, endpoint_id=webhook_id)]


def delivery_out(d: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(id=d.id, message_id=message_id(d.id), event=d.event, status=d.status, attempts=d.attempts,
                       next_attempt_at=d.next_attempt_at, last_status_code=d.last_status_code,
                       last_error=d.last_error, delivered_at=d.delivered_at, created_at=d.created_at,
                       payload=d.payload)
