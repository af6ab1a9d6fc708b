from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from imagen.kit.http import CurrentUser

router = APIRouter(prefix="/api/v1", tags=["workflows"])


@router.get("/workflows")
def list_workflows(request: Request, _user: CurrentUser) -> list[dict[str, Any]]:
    return [w.public_schema() for w in request.app.state.library.list()]


@router.get("/models")
def list_models(request: Request, _user: CurrentUser) -> list[dict[str, Any]]:
    return [
        {"name": c.name, "kind": "checkpoint", "family": "sd15", "sha256": c.sha256,
         "short_hash": c.sha256[:10], "builtin": c.builtin}
        for c in request.app.state.runtime.checkpoints.list()
    ]
