"""Webhook deliveries: `webhooks.deliver` (one delivery's due attempt) and `webhooks.send_due` (every
`IMAGEN_WEBHOOKS_INTERVAL_SECONDS`: new events and retries that are due). Both are safe to run twice: an attempt is
claimed by a conditional update before it is sent, and no transaction is open while it is sent."""

from __future__ import annotations

import logging
from typing import Any

import imagen.webhooks.events  # noqa: F401  (records generation events)
from imagen.kit.tasks import periodic, task
from imagen.webhooks.sender import send
from imagen.webhooks.service import webhook_service

log = logging.getLogger(__name__)


@task("webhooks.deliver")
def deliver(services: Any, delivery_id: str) -> str | None:
    settings = services.settings
    with services.db.transaction() as session:
        attempt = webhook_service.claim(session, delivery_id=delivery_id)
    if attempt is None:
        return None
    outcome = send(attempt, allow_private=settings.webhooks_allow_private, timeout=settings.webhooks_timeout_seconds)
    with services.db.transaction() as session:
        status = webhook_service.record(
            session, delivery_id=delivery_id, ok=outcome.ok, status_code=outcome.status_code, error=outcome.error,
            retry_seconds=settings.webhooks_retry_seconds, max_attempts=settings.webhooks_max_attempts,
            disable_after=settings.webhooks_disable_after)
    if not outcome.ok:
        log.info("webhook delivery %s to endpoint %s failed (%s): %s", delivery_id, attempt.endpoint_id,
                 outcome.error, status)
    return status


@periodic("webhooks.send_due", every=lambda settings: settings.webhooks_interval_seconds)
def send_due(services: Any) -> int:
    """Every due delivery, one after another; returns how many were attempted."""
    with services.db.transaction() as session:
        due = webhook_service.due(session)
    for delivery_id in due:
        deliver(services, delivery_id)
    return len(due)
