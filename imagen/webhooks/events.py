"""Generation events, recorded in the very transaction that ends the job, whatever ends it (the worker storing the
outputs, a failure, the watchdog, a restart's recovery): a mapper hook on the row's status, so no end path can
forget it. The deliveries are sent after the commit by `webhooks.send_due` (or `webhooks.deliver`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect

from imagen.generation.models import Generation
from imagen.webhooks.service import webhook_service

ENDED = {"succeeded": "generation.succeeded", "failed": "generation.failed"}


def generation_data(gen: Generation) -> dict[str, Any]:
    return {
        "id": gen.id, "status": gen.status, "workflow": gen.workflow, "checkpoint": gen.checkpoint,
        "error": gen.error, "url": f"/api/v1/generations/{gen.id}",
        "created_at": gen.created_at.isoformat() if gen.created_at else None,
        "finished_at": gen.finished_at.isoformat() if gen.finished_at else None,
    }


@event.listens_for(Generation, "after_update")
def _generation_ended(_mapper: Any, connection: Any, gen: Generation) -> None:
    history = inspect(gen).attrs.status.history
    if not history.added or gen.status not in ENDED or gen.status in (history.deleted or ()):
        return
    webhook_service.emit(connection, user_id=gen.user_id, event=ENDED[gen.status], data=generation_data(gen))
