from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Event = Literal["generation.succeeded", "generation.failed", "export.ready"]


class WebhookIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000, description="https:// URL on a public address")
    events: list[Event] = Field(min_length=1, max_length=3)


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    enabled: bool
    failures: int = Field(description="failed attempts in a row; the endpoint is disabled at the configured limit")
    disabled_reason: str | None
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="whsec_...: verifies the webhook-signature header; shown only now")


class DeliveryOut(BaseModel):
    id: str
    message_id: str
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    payload: dict[str, Any]
