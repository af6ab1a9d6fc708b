"""Postmark's bounce and spam-complaint webhook: the address goes on the suppression list (no more mail to it).

Postmark calls `POST /api/v1/mail/postmark/webhook` with HTTP basic auth set in the webhook's URL
(`https://postmark:<IMAGEN_POSTMARK_WEBHOOK_TOKEN>@<site>/api/v1/mail/postmark/webhook`); any user name, the token as
password. Without the Postmark backend and a token the route answers 404, so it is not an open door.
"""

from __future__ import annotations

import base64
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel

from imagen.kit.errors import NotFound, Unauthorized
from imagen.kit.http import SessionDep, SettingsDep
from imagen.mail.suppressions import suppression_service

router = APIRouter(prefix="/api/v1/mail", tags=["mail"])


class WebhookResult(BaseModel):
    result: str  # suppressed, lifted or ignored


def _password(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


@router.post("/postmark/webhook", response_model=WebhookResult)
def postmark_webhook(request: Request, event: Annotated[dict[str, Any], Body()], session: SessionDep,
                     settings: SettingsDep) -> WebhookResult:
    """A Postmark Bounce, SpamComplaint or SubscriptionChange record; other records are acknowledged and ignored."""
    token = (settings.postmark_webhook_token or "").strip()
    if settings.mail_backend != "postmark" or not token:
        raise NotFound()
    given = _password(request)
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("Postmark webhook: wrong or missing basic-auth credentials")
    return WebhookResult(result=suppression_service.apply_postmark_event(session, event))
