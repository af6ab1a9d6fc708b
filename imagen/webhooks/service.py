"""Webhook endpoints (create, list, delete), events recorded as deliveries in the transaction where they happen, and
the delivery steps (claim, record the outcome with backoff, disable an endpoint that keeps failing)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.orm import Session

from imagen.kit.db import new_id, utcnow
from imagen.kit.errors import field_error
from imagen.kit.scoped import get_owned, owned
from imagen.webhooks.models import EVENTS, WebhookDelivery, WebhookEndpoint
from imagen.webhooks.targets import RefusedTarget, check_url

MAX_ENDPOINTS_PER_USER = 20
MAX_BACKOFF_SECONDS = 6 * 3600
LEASE_SECONDS = 120  # a claimed attempt's row is left alone this long (a crashed sender's is retried after it)


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt sends, read in a short transaction and sent after it."""

    delivery_id: str
    endpoint_id: str
    url: str
    secret: str
    event: str
    payload: dict[str, Any]
    created_at: datetime


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def payload_for(event: str, data: dict[str, Any], when: datetime) -> dict[str, Any]:
    return {"type": event, "timestamp": when.isoformat().replace("+00:00", "Z"), "data": data}


class WebhookService:
    # ---- endpoints ----
    def create(self, session: Session, *, user_id: str, url: str, events: list[str],
               allow_private: bool) -> WebhookEndpoint:
        try:
            check_url(url, allow_private=allow_private)
        except RefusedTarget as exc:
            raise field_error("url", str(exc)) from None
        count = len(session.scalars(owned(WebhookEndpoint, user_id)).all())
        if count >= MAX_ENDPOINTS_PER_USER:
            raise field_error("url", f"at most {MAX_ENDPOINTS_PER_USER} webhook endpoints per account")
        endpoint = WebhookEndpoint(user_id=user_id, url=url, events=sorted(set(events)), secret=new_secret(),
                                   enabled=True, failures=0)
        session.add(endpoint)
        session.flush()
        return endpoint

    def list(self, session: Session, *, user_id: str) -> list[WebhookEndpoint]:
        return list(session.scalars(owned(WebhookEndpoint, user_id).order_by(WebhookEndpoint.created_at)))

    def get(self, session: Session, *, user_id: str, endpoint_id: str) -> WebhookEndpoint:
        return get_owned(session, WebhookEndpoint, endpoint_id, user_id, what="Webhook")

    def delete(self, session: Session, *, user_id: str, endpoint_id: str) -> None:
        session.delete(self.get(session, user_id=user_id, endpoint_id=endpoint_id))

    def deliveries(self, session: Session, *, user_id: str, endpoint_id: str,
                   limit: int = 50) -> list[WebhookDelivery]:
        self.get(session, user_id=user_id, endpoint_id=endpoint_id)
        return list(session.scalars(owned(WebhookDelivery, user_id).where(WebhookDelivery.endpoint_id == endpoint_id)
                                    .order_by(WebhookDelivery.created_at.desc()).limit(limit)))

    # ---- events ----
    def emit(self, session: Session | Connection, *, user_id: str, event: str, data: dict[str, Any]) -> list[str]:
        """Record `event` for each of the user's enabled endpoints that asked for it, in the caller's transaction
        (so it exists exactly when what it tells of committed). Returns the new deliveries' ids; the periodic pass
        (`webhooks.send_due`) sends them if nobody enqueues them sooner."""
        assert event in EVENTS, event
        now = utcnow()
        endpoints = session.execute(select(WebhookEndpoint.id, WebhookEndpoint.events).where(
            WebhookEndpoint.user_id == user_id, WebhookEndpoint.enabled.is_(True))).all()
        rows = [{"id": new_id(), "endpoint_id": endpoint_id, "user_id": user_id, "event": event,
                 "payload": payload_for(event, data, now), "status": "pending", "attempts": 0,
                 "next_attempt_at": now, "created_at": now}
                for endpoint_id, events in endpoints if event in (events or [])]
        if rows:
            session.execute(insert(WebhookDelivery), rows)
        return [row["id"] for row in rows]

    # ---- delivering ----
    def due(self, session: Session, *, limit: int = 100) -> list[str]:
        now = utcnow()
        return list(session.scalars(
            select(WebhookDelivery.id).join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                   WebhookEndpoint.enabled.is_(True))
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)))

    def claim(self, session: Session, *, delivery_id: str) -> Attempt | None:
        """Take one due attempt of an enabled endpoint (a conditional update: two senders never send one attempt)."""
        now = utcnow()
        row = session.execute(
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                   WebhookDelivery.next_attempt_at <= now, WebhookEndpoint.enabled.is_(True))).first()
        if row is None:
            return None
        delivery, endpoint = row
        claimed = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                   WebhookDelivery.attempts == delivery.attempts)
            .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS), attempts=delivery.attempts + 1)
            .execution_options(synchronize_session=False)).rowcount
        if not claimed:  # another sender took it first
            return None
        return Attempt(delivery.id, endpoint.id, endpoint.url, endpoint.secret, delivery.event, delivery.payload,
                       delivery.created_at)

    def record(self, session: Session, *, delivery_id: str, ok: bool, status_code: int | None, error: str | None,
               retry_seconds: float, max_attempts: int, disable_after: int) -> str:
        """The attempt's outcome: delivered; or retried later (doubling delays); or failed for good. An endpoint
        failing `disable_after` attempts in a row is disabled. Returns the delivery's status."""
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            return "gone"
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        delivery.last_status_code, delivery.last_error = status_code, (error or None) and error[:1000]
        now = utcnow()
        if ok:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = "delivered", now, None
            if endpoint is not None:
                endpoint.failures = 0
            return delivery.status
        if delivery.attempts >= max_attempts:
            delivery.status, delivery.next_attempt_at = "failed", None
        else:
            delay = min(retry_seconds * 2 ** (delivery.attempts - 1), MAX_BACKOFF_SECONDS)
            delivery.next_attempt_at = now + timedelta(seconds=delay)
        if endpoint is not None:
            endpoint.failures += 1
            if endpoint.enabled and endpoint.failures >= disable_after:
                endpoint.enabled = False
                endpoint.disabled_reason = f"Disabled after {endpoint.failures} failed attempts in a row"[:300]
        return delivery.status


webhook_service = WebhookService()
