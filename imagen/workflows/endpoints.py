from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request, status

from imagen.accounts.http import AdminUser, CurrentUser
from imagen.assets.service import asset_service
from imagen.kit.http import SessionDep
from imagen.kit.inputs import INT32_MAX
from imagen.workflows.models import Preset
from imagen.workflows.schemas import PresetCreate, PresetOut, WorkflowOut
from imagen.workflows.service import preset_service, workflow_service

router = APIRouter(prefix="/api/v1", tags=["workflows"])


def preset_out(preset: Preset) -> PresetOut:
    return PresetOut(id=preset.id, name=preset.name, workflow=preset.workflow, params=preset.params,
                     created_at=preset.created_at)


@router.get("/workflows", response_model=list[WorkflowOut])
def list_workflows(_user: CurrentUser, session: SessionDep) -> list[dict[str, Any]]:
    """The latest version of each workflow."""
    return [w.public_schema() for w in workflow_service.list(session)]


@router.get("/workflows/{name}", response_model=WorkflowOut)
def get_workflow(name: str, _user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    return workflow_service.get(session, name).public_schema()


@router.get("/workflows/{name}/versions/{version}", response_model=WorkflowOut)
def get_workflow_version(name: str, version: Annotated[int, Path(ge=1, le=INT32_MAX)], _user: CurrentUser,
                         session: SessionDep) -> dict[str, Any]:
    return workflow_service.get(session, name, version).public_schema()


@router.post("/workflows", status_code=status.HTTP_201_CREATED, response_model=WorkflowOut)
def publish_workflow(definition: Annotated[dict[str, Any], Body(description="a workflow definition, "
                                                                 "as in imagen/workflows/builtin/*.json")],
                     admin: AdminUser, session: SessionDep) -> dict[str, Any]:
    """Publish a new version (administrators): newer than every existing version of that name."""
    return workflow_service.publish(session, admin=admin, definition=definition).public_schema()


@router.get("/presets", response_model=list[PresetOut])
def list_presets(user: CurrentUser, session: SessionDep) -> list[PresetOut]:
    return [preset_out(p) for p in preset_service.list(session, user=user)]


@router.post("/presets", status_code=status.HTTP_201_CREATED, response_model=PresetOut)
def create_preset(data: PresetCreate, user: CurrentUser, session: SessionDep) -> PresetOut:
    return preset_out(preset_service.create(session, user=user, name=data.name, workflow=data.workflow,
                                            params=data.params))


@router.get("/presets/{preset_id}", response_model=PresetOut)
def get_preset(preset_id: str, user: CurrentUser, session: SessionDep) -> PresetOut:
    return preset_out(preset_service.get(session, user=user, preset_id=preset_id))


@router.delete("/presets/{preset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_preset(preset_id: str, user: CurrentUser, session: SessionDep) -> None:
    preset_service.delete(session, user=user, preset_id=preset_id)


@router.get("/models")
def list_models(request: Request, user: CurrentUser, session: SessionDep) -> list[dict[str, Any]]:
    """Built-in checkpoints by name, then the caller's own and published uploads by asset id.

    `id` is what the generation parameters take (`checkpoint`, `loras[].id`)."""
    builtin = [
        {"id": c.name, "name": c.name, "kind": "checkpoint", "family": c.family, "sha256": c.sha256,
         "short_hash": c.sha256[:10], "builtin": True, "public": True, "owned": False}
        for c in request.app.state.services.runtime.checkpoints.list()
    ]
    uploaded = [
        {"id": a.id, "name": a.filename, "kind": a.kind, "family": a.family, "sha256": a.sha256,
         "short_hash": a.short_hash, "builtin": False, "public": a.public, "owned": a.user_id == user.id,
         "description": a.description, "size_bytes": a.size_bytes,
         "in_channels": (a.details or {}).get("in_channels")}
        for a in asset_service.list_models(session, user=user)
    ]
    return builtin + uploaded
