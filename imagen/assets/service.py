"""Assets: store uploaded checkpoints, LoRAs and reference images after checking them; read, publish, delete.

The API (after streaming an upload into the blob store's staging folder) and the CLI (after copying a local file
there) both hand a `StagedFile` to `AssetService.add_file`, which runs every check and stores the file or refuses it.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.assets.images import BadImage, clean_image
from imagen.assets.modelfiles import ModelFileRejected, inspect_upload, refuse_pickle
from imagen.assets.models import ASSET_KINDS, MODEL_KINDS, Asset
from imagen.kit.config import Settings
from imagen.kit.db import new_id, run_after_commit, run_after_rollback, utcnow
from imagen.kit.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
    field_error,
)
from imagen.kit.locks import lock_row
from imagen.kit.scoped import get_owned, owned
from imagen.safety import checks
from imagen.safety.checks import Safety
from imagen.storage import BlobStore

MODEL_SUFFIX = ".safetensors"
MAX_FILENAME = 255
KIND_LABELS = {"checkpoint": "a checkpoint", "lora": "a LoRA", "reference_image": "a reference image"}


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}".replace(".0 ", " ")
    raise AssertionError  # pragma: no cover


def asset_key(user_id: str, sha256: str, kind: str) -> str:
    return f"assets/{user_id}/{sha256}.{'png' if kind == 'reference_image' else 'safetensors'}"


def clean_filename(name: str) -> str:
    """The name a user gave, if it is a plain file name; path tricks and odd characters are refused (400)."""
    name = unicodedata.normalize("NFC", name or "")
    problem = None
    if not name.strip():
        problem = "is empty"
    elif len(name) > MAX_FILENAME:
        problem = f"is longer than {MAX_FILENAME} characters"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator (/ or \\); send the file's name only"
    elif name in (".", "..") or ".." in name.split("."):
        problem = "contains '..'"
    elif any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        problem = "contains control or invisible characters"
    elif name != name.strip():
        problem = "starts or ends with whitespace"
    if problem:
        raise BadRequest(f"The file name {name[:80]!r} {problem}.")
    return name


def check_model_name(name: str) -> None:
    """Models must be .safetensors; pickle-based names get the conversion advice (415)."""
    if PurePath(name).suffix.lower() == MODEL_SUFFIX:
        return
    try:
        refuse_pickle(name, b"")
    except ModelFileRejected as exc:
        raise UnsupportedMediaType(exc.reason) from None
    raise UnsupportedMediaType(
        f"{name[:80]!r} is not a .safetensors file. Checkpoints and LoRAs are accepted as .safetensors only; "
        "convert other formats with safetensors.torch.save_file or the diffusers/kohya conversion scripts.")


@dataclass(frozen=True)
class UploadLimits:
    model_bytes: int
    image_bytes: int
    quota_bytes: int | None  # None: no quota (the operator's CLI with --ignore-quota)

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(settings.max_model_upload_bytes, settings.max_image_upload_bytes,
                   settings.user_storage_quota_bytes)

    def per_file(self, kind: str | None) -> tuple[int, str]:
        """The size limit for one file of this kind (the larger one while the kind is not known yet)."""
        if kind == "reference_image":
            return self.image_bytes, f"the {human_bytes(self.image_bytes)} limit for reference images"
        if kind in MODEL_KINDS or self.model_bytes >= self.image_bytes:
            return self.model_bytes, f"the {human_bytes(self.model_bytes)} limit for model files"
        return self.image_bytes, f"the {human_bytes(self.image_bytes)} limit for reference images"

    def allowed(self, kind: str | None, used: int) -> tuple[int, str]:
        """How many bytes one upload may have, and what sets that limit (for the 413 message)."""
        limit, why = self.per_file(kind)
        if self.quota_bytes is not None and self.quota_bytes - used < limit:
            left = max(self.quota_bytes - used, 0)
            limit, why = left, (f"your storage quota ({human_bytes(self.quota_bytes)} in all, "
                                f"{human_bytes(left)} left)")
        return limit, why


@dataclass
class StagedFile:
    """A file in the blob store's staging folder, hashed while it was written; `add_file` consumes it."""

    path: Path
    filename: str
    size: int
    sha256: str


@dataclass
class _Checked:
    kind: str
    sha256: str
    size: int
    filename: str
    content_type: str
    family: str | None = None
    description: str = ""
    width: int | None = None
    height: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    png: bytes | None = None  # reference images: the re-encoded bytes that are stored instead of the upload


class AssetService:
    # ---- adding ----
    def add_file(
        self, session: Session, *, user: User, staged: StagedFile, kind: str | None, blobs: BlobStore,
        limits: UploadLimits, safety: Safety, public: bool = False, operator: bool = False,
    ) -> tuple[Asset, bool]:
        """Check and store one file; returns (asset, created). A file the user already has returns that asset.

        `kind` None detects checkpoint or LoRA (the CLI). The staged file is always consumed: moved into the
        store, or deleted. Nothing is left behind when this raises or the transaction rolls back.
        """
        try:
            return self._add(session, user=user, staged=staged, kind=kind, blobs=blobs, limits=limits,
                             safety=safety, public=public, operator=operator)
        finally:
            staged.path.unlink(missing_ok=True)

    def _add(self, session: Session, *, user: User, staged: StagedFile, kind: str | None, blobs: BlobStore,
             limits: UploadLimits, safety: Safety, public: bool, operator: bool) -> tuple[Asset, bool]:
        if kind is not None and kind not in ASSET_KINDS:
            raise field_error("kind", f"must be one of {', '.join(ASSET_KINDS)}")
        if public and not (operator or user.is_admin):
            raise Forbidden("Only administrators can publish assets")
        if public and kind == "reference_image":
            raise field_error("public", "reference images cannot be published; only checkpoints and LoRAs")
        name = clean_filename(staged.filename)
        if staged.size == 0:
            raise field_error("file", "the file is empty")
        limit, why = limits.per_file(kind)
        if staged.size > limit:
            raise PayloadTooLarge(f"The file is {human_bytes(staged.size)}, more than {why}.")

        checked = (self._check_image(staged, name) if kind == "reference_image"
                   else self._check_model(staged, name, kind))
        self._screen(safety, session, user=user, staged=staged, checked=checked, operator=operator)
        limit, why = limits.per_file(checked.kind)
        if kind is None and staged.size > limit:
            raise PayloadTooLarge(f"The file is {human_bytes(staged.size)}, more than {why}.")
        if limits.quota_bytes is not None:
            # One store per user at a time from this check to the commit: simultaneous uploads cannot all fit in
            # what is left of the quota (each would count only the others already committed).
            lock_row(session, User.id, user.id, touch=User.role)
        existing = self._find(session, user.id, checked.sha256)
        if existing is not None:
            return self._existing(existing, public), False
        used = self.used_bytes(session, user_id=user.id)
        if limits.quota_bytes is not None and used + checked.size > limits.quota_bytes:
            raise PayloadTooLarge(
                f"Storing this {human_bytes(checked.size)} file would pass your storage quota of "
                f"{human_bytes(limits.quota_bytes)} ({human_bytes(used)} used); delete some assets first.")
        return self._store(session, user=user, checked=checked, staged=staged, blobs=blobs, public=public)

    def _check_model(self, staged: StagedFile, name: str, kind: str | None) -> _Checked:
        check_model_name(name)
        try:
            with staged.path.open("rb") as f:
                first = f.read(16)
                try:
                    refuse_pickle(name, first)
                except ModelFileRejected as exc:
                    raise UnsupportedMediaType(exc.reason) from None
                header, found = inspect_upload(name, f, staged.size)
        except ModelFileRejected as exc:
            raise Unprocessable(exc.reason) from None
        if kind is not None and found.kind != kind:
            raise Unprocessable(
                f"This file is {KIND_LABELS[found.kind]} ({found.description}), not {KIND_LABELS[kind]}; "
                f"upload it with kind={found.kind}.")
        return _Checked(
            kind=found.kind, sha256=staged.sha256, size=staged.size, filename=name,
            content_type="application/octet-stream", family=found.family, description=found.description,
            details={"in_channels": found.in_channels, "context_dim": found.context_dim,
                     "tensors": len(header.tensors), "header_bytes": header.header_length})

    def _check_image(self, staged: StagedFile, name: str) -> _Checked:
        try:
            image = clean_image(staged.path.read_bytes())  # at most max_image_upload_bytes
        except BadImage as exc:
            raise Unprocessable(f"The reference image was refused: {exc}.") from None
        return _Checked(
            kind="reference_image", sha256=hashlib.sha256(image.png).hexdigest(), size=len(image.png),
            filename=str(PurePath(name).with_suffix(".png")), content_type="image/png",
            width=image.width, height=image.height, png=image.png)

    def _screen(self, safety: Safety, session: Session, *, user: User, staged: StagedFile, checked: _Checked,
                operator: bool) -> None:
        """Trust and safety (imagen/safety/checks.py): hash banks, NSFW policy; raises a neutral 422."""
        if checked.png is None:
            checks.screen_model_file(safety, session, user_id=user.id, sha256=checked.sha256, path=staged.path,
                                     filename=staged.filename, suspend=not operator)
            return
        png = checks.screen_reference_image(safety, session, user_id=user.id, original=staged.path.read_bytes(),
                                            png=checked.png, filename=staged.filename)
        if png is not checked.png:  # blurred by the NSFW policy: that is what is stored
            checked.png, checked.sha256, checked.size = png, hashlib.sha256(png).hexdigest(), len(png)

    def _existing(self, asset: Asset, public: bool) -> Asset:
        if public and not asset.public and asset.kind in MODEL_KINDS:
            asset.public = True
        return asset

    def _store(self, session: Session, *, user: User, checked: _Checked, staged: StagedFile, blobs: BlobStore,
               public: bool) -> tuple[Asset, bool]:
        asset_id, key = new_id(), asset_key(user.id, checked.sha256, checked.kind)
        values = dict(
            id=asset_id, user_id=user.id, kind=checked.kind, family=checked.family,
            description=checked.description[:300], filename=checked.filename, sha256=checked.sha256,
            size_bytes=checked.size, blob_key=key, content_type=checked.content_type, public=public,
            width=checked.width, height=checked.height, details=checked.details, created_at=utcnow())
        # Two uploads of the same file at once: the second insert does nothing and gets the first one's row.
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        table = Asset.__table__
        inserted = session.execute(
            insert(table).values(**values).on_conflict_do_nothing(index_elements=["user_id", "sha256"])
            .returning(table.c.id)
        ).scalar()
        if inserted is None:
            existing = self._find(session, user.id, checked.sha256)
            if existing is None:  # pragma: no cover - the conflicting row was deleted in between
                raise Unprocessable("The same file is being stored by another request; try again.")
            return self._existing(existing, public), False
        # The row holds the (user, sha256) slot until this transaction ends, so the key is ours alone.
        if checked.png is not None:
            blobs.put(key, checked.png, checked.content_type)
        else:
            blobs.put_file(key, staged.path, checked.content_type)
        run_after_rollback(session, blobs.delete, key)
        asset = session.get(Asset, asset_id)
        assert asset is not None
        return asset, True

    def _find(self, session: Session, user_id: str, sha256: str) -> Asset | None:
        return session.scalars(owned(Asset, user_id).where(Asset.sha256 == sha256)).first()

    # ---- reading ----
    def _visible(self, user: User):  # own or published
        return select(Asset).where(or_(Asset.user_id == user.id, Asset.public.is_(True)))

    def get_owned(self, session: Session, *, user: User, asset_id: str) -> Asset:
        return get_owned(session, Asset, asset_id, user.id, what="Asset")

    def get_visible(self, session: Session, *, user: User, asset_id: str) -> Asset:
        asset = session.scalars(self._visible(user).where(Asset.id == asset_id)).first()
        if asset is None:
            raise NotFound("Asset not found")
        return asset

    def get_usable(self, session: Session, *, user: User, asset_id: str, kinds: tuple[str, ...],
                   what: str) -> Asset:
        """The user's own or a published asset of one of `kinds` (what a generation may use)."""
        asset = session.scalars(
            self._visible(user).where(Asset.id == asset_id, Asset.kind.in_(kinds))).first()
        if asset is None:
            raise NotFound(f"{what} not found")
        return asset

    def list(self, session: Session, *, user: User, kind: str | None = None,
             include_public: bool = False) -> list[Asset]:
        query = self._visible(user) if include_public else owned(Asset, user.id)
        if kind is not None:
            query = query.where(Asset.kind == kind)
        return list(session.scalars(query.order_by(Asset.created_at.desc(), Asset.id)))

    def list_models(self, session: Session, *, user: User) -> list[Asset]:
        """Own and published checkpoints and LoRAs."""
        return list(session.scalars(self._visible(user).where(Asset.kind.in_(MODEL_KINDS))
                                    .order_by(Asset.kind, Asset.filename, Asset.id)))

    def list_all(self, session: Session, *, user_id: str | None = None) -> list[tuple[Asset, str]]:
        """Operator view (CLI): every asset with its owner's email."""
        query = select(Asset, User.email).join(User, User.id == Asset.user_id)
        if user_id is not None:
            query = query.where(Asset.user_id == user_id)
        return [(a, email) for a, email in session.execute(query.order_by(User.email, Asset.created_at))]

    def used_bytes(self, session: Session, *, user_id: str) -> int:
        return int(session.scalar(select(func.coalesce(func.sum(Asset.size_bytes), 0))
                                  .where(Asset.user_id == user_id)) or 0)

    # ---- changing ----
    def delete(self, session: Session, *, user: User, asset_id: str, blobs: BlobStore) -> None:
        self._delete(session, self.get_owned(session, user=user, asset_id=asset_id), blobs)

    def remove(self, session: Session, *, asset_id: str, blobs: BlobStore) -> Asset:
        """Operator removal (CLI), whoever owns it."""
        asset = session.get(Asset, asset_id)
        if asset is None:
            raise NotFound("Asset not found")
        self._delete(session, asset, blobs)
        return asset

    def _delete(self, session: Session, asset: Asset, blobs: BlobStore) -> None:
        session.delete(asset)
        session.flush()
        run_after_commit(session, blobs.delete, asset.blob_key)

    def publish(self, session: Session, *, admin: User, asset_id: str) -> Asset:
        """An admin publishes one of their own models; every user may then use it (read-only)."""
        asset = self.get_owned(session, user=admin, asset_id=asset_id)
        if asset.kind not in MODEL_KINDS:
            raise Unprocessable("Only checkpoints and LoRAs can be published; reference images stay private")
        asset.public = True
        return asset

    def unpublish(self, session: Session, *, admin: User, asset_id: str) -> Asset:
        """An admin withdraws any published asset (or one of their own) from the other users."""
        asset = self.get_visible(session, user=admin, asset_id=asset_id)
        asset.public = False
        return asset


asset_service = AssetService()
