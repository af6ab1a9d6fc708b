from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from imagen.accounts.http import AdminUser, CurrentUser, VerifiedUser
from imagen.accounts.models import User
from imagen.assets.models import ASSET_KINDS, Asset
from imagen.assets.schemas import UPLOAD_OPENAPI, AssetOut
from imagen.assets.service import UploadLimits, asset_service
from imagen.assets.uploads import receive_upload
from imagen.kit.config import Settings
from imagen.kit.errors import NotFound, ServiceError, field_error
from imagen.kit.http import SessionDep, SettingsDep
from imagen.kit.limits import body_limit
from imagen.storage import BlobNotFound

# An upload's refusal, by its answer's status, as /metrics counts it.
REFUSAL_REASONS = {400: "malformed", 403: "forbidden", 409: "conflict", 413: "too_large", 415: "unsupported_type",
                   422: "invalid", 429: "rate_limited", 503: "unavailable"}

router = APIRouter(prefix="/api/v1", tags=["assets"])


def asset_out(asset: Asset, user: User) -> AssetOut:
    return AssetOut(
        id=asset.id, kind=asset.kind, family=asset.family, description=asset.description, filename=asset.filename,
        sha256=asset.sha256, short_hash=asset.short_hash, size_bytes=asset.size_bytes, public=asset.public,
        width=asset.width, height=asset.height, details=asset.details, created_at=asset.created_at,
        owned=asset.user_id == user.id,
    )


def _release_connection(session: Session) -> None:
    """End the transaction so far (the login's reads) and begin the next without a connection: one is taken when
    the upload is stored, and a refusal still rolls back and runs its after-rollback work (safety/checks.py)."""
    session.commit()
    session.begin()


@router.post("/assets", status_code=status.HTTP_201_CREATED, response_model=AssetOut, openapi_extra=UPLOAD_OPENAPI,
             responses={200: {"model": AssetOut, "description": "You already have this file: the existing asset"}})
@body_limit(None)  # streamed to disk under the upload limits and the user's quota (assets/uploads.py)
async def upload_asset(request: Request, response: Response, user: VerifiedUser, session: SessionDep,
                       settings: SettingsDep) -> AssetOut:
    """Upload a checkpoint or LoRA (.safetensors) or a reference image (PNG/JPEG/WebP), streamed to disk."""
    try:
        return await _upload_asset(request, response, user, session, settings)
    except ServiceError as exc:  # counted for /metrics (imagen/insights/metrics.py), then answered as usual
        metrics = getattr(request.app.state.services, "metrics", None)
        if metrics is not None:
            metrics.upload_refused(REFUSAL_REASONS.get(exc.status_code, f"http_{exc.status_code}"))
        raise


async def _upload_asset(request: Request, response: Response, user: User, session: Session,
                        settings: Settings) -> AssetOut:
    blobs, limits = request.app.state.services.blobs, UploadLimits.from_settings(settings)
    # The body may take long: wait for it with nothing open in the database and out of the request's slot, so slow
    # uploads cannot hold every slot and stall everyone else (kit/capacity.py); back in, in turn, to store it.
    await run_in_threadpool(_release_connection, session)
    request.state.db_slot.step_out()
    upload = await receive_upload(request, user=user, limits=limits, staging=blobs.staging_dir(),
                                  idle_timeout=settings.upload_idle_timeout_seconds)
    await request.state.db_slot.step_in()
    asset, created = await run_in_threadpool(
        lambda: asset_service.add_file(session, user=user, staged=upload.staged, kind=upload.kind, blobs=blobs,
                                       limits=limits, safety=request.app.state.services.safety,
                                       public=upload.public))
    if not created:
        response.status_code = status.HTTP_200_OK
    return asset_out(asset, user)


@router.get("/assets", response_model=list[AssetOut])
def list_assets(user: CurrentUser, session: SessionDep, kind: str | None = None,
                include_public: bool = False) -> list[AssetOut]:
    if kind is not None and kind not in ASSET_KINDS:
        raise field_error("kind", f"must be one of {', '.join(ASSET_KINDS)}", where="query")
    assets = asset_service.list(session, user=user, kind=kind, include_public=include_public)
    return [asset_out(a, user) for a in assets]


@router.get("/assets/{asset_id}", response_model=AssetOut)
def get_asset(asset_id: str, user: CurrentUser, session: SessionDep) -> AssetOut:
    return asset_out(asset_service.get_visible(session, user=user, asset_id=asset_id), user)


@router.get("/assets/{asset_id}/content")
def get_asset_content(asset_id: str, user: CurrentUser, session: SessionDep, request: Request) -> StreamingResponse:
    """The stored file (owner only: a published asset is usable by everyone but downloadable by its owner)."""
    asset = asset_service.get_owned(session, user=user, asset_id=asset_id)
    try:
        chunks = request.app.state.services.blobs.open_stream(asset.blob_key)
    except BlobNotFound:
        raise NotFound("Asset not found") from None
    ascii_name = asset.filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    headers = {"Content-Length": str(asset.size_bytes), "Cache-Control": "private, max-age=3600",
               "Content-Disposition": f'attachment; filename="{ascii_name}"; '
                                      f"filename*=UTF-8''{quote(asset.filename, safe='')}"}
    return StreamingResponse(chunks, media_type=asset.content_type, headers=headers)


@router.delete("/assets/{asset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_asset(asset_id: str, user: CurrentUser, session: SessionDep, request: Request) -> None:
    asset_service.delete(session, user=user, asset_id=asset_id, blobs=request.app.state.services.blobs)


@router.post("/assets/{asset_id}/publish", response_model=AssetOut)
def publish_asset(asset_id: str, admin: AdminUser, session: SessionDep) -> AssetOut:
    return asset_out(asset_service.publish(session, admin=admin, asset_id=asset_id), admin)


@router.post("/assets/{asset_id}/unpublish", response_model=AssetOut)
def unpublish_asset(asset_id: str, admin: AdminUser, session: SessionDep) -> AssetOut:
    return asset_out(asset_service.unpublish(session, admin=admin, asset_id=asset_id), admin)
