"""The A1111 API's reads and writes, each on the native services: the checkpoints and LoRAs a user may use (their
own, the published ones, the built-ins), the user's own options, submitting, progress and interrupting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from imagen.a1111.models import A1111Options
from imagen.a1111.schemas import GenerationIn, Img2ImgIn, Txt2ImgIn
from imagen.a1111.translate import a1111_errors, base_params, img2img_job, split_loras, txt2img_job
from imagen.accounts.models import User
from imagen.assets.models import Asset
from imagen.assets.service import asset_service
from imagen.generation.models import ACTIVE_STATUSES, Generation
from imagen.generation.service import generation_service
from imagen.inference.checkpoints import CheckpointRegistry
from imagen.kit.errors import NotFound, Unprocessable, field_error
from imagen.kit.scoped import owned
from imagen.workflows.library import UnknownWorkflow
from imagen.workflows.service import workflow_service

DEFAULT_CHECKPOINT = "imagen-tiny"


@dataclass(frozen=True)
class CheckpointEntry:
    ref: str  # what the native API's `checkpoint` takes: a built-in name or an asset id
    title: str  # A1111: "<file name> [<short hash>]"
    model_name: str
    sha256: str
    filename: str

    @property
    def short_hash(self) -> str:
        return self.sha256[:10]

    def names(self) -> set[str]:
        """Every way a client may name it in `sd_model_checkpoint`."""
        stem = PurePosixPath(self.filename).stem
        return {self.title, self.model_name, self.filename, stem, self.short_hash, self.sha256,
                f"{stem} [{self.short_hash}]", self.ref}


@dataclass(frozen=True)
class Submitted:
    generation_id: str
    checkpoint: CheckpointEntry
    prompt: str


def _stem(filename: str) -> str:
    return PurePosixPath(filename).stem


class A1111Service:
    # ---- models ----
    def checkpoints(self, session: Session, *, user: User, registry: CheckpointRegistry) -> list[CheckpointEntry]:
        """Built-ins, then the user's own and the published checkpoints (never another user's private ones)."""
        entries = [CheckpointEntry(ref=c.name, title=f"{c.name} [{c.sha256[:10]}]", model_name=c.name,
                                   sha256=c.sha256, filename=c.name) for c in registry.list()]
        for asset in asset_service.list(session, user=user, kind="checkpoint", include_public=True):
            entries.append(CheckpointEntry(ref=asset.id, title=f"{asset.filename} [{asset.short_hash}]",
                                           model_name=_stem(asset.filename), sha256=asset.sha256,
                                           filename=asset.filename))
        return entries

    def find_checkpoint(self, session: Session, *, user: User, registry: CheckpointRegistry,
                        name: str) -> CheckpointEntry:
        entries = self.checkpoints(session, user=user, registry=registry)
        wanted = name.strip()
        for candidate in (wanted, wanted.removesuffix(".safetensors")):
            for entry in entries:
                if candidate in entry.names():
                    return entry
        raise NotFound(f"Model not found: {name!r} (see /sdapi/v1/sd-models)")

    def loras(self, session: Session, *, user: User) -> list[Asset]:
        return asset_service.list(session, user=user, kind="lora", include_public=True)

    def find_lora(self, session: Session, *, user: User, name: str) -> Asset:
        """By file name without extension (A1111's LoRA name); the user's own before a published one."""
        candidates = sorted(self.loras(session, user=user), key=lambda a: a.user_id != user.id)
        for match in (lambda a: _stem(a.filename) == name, lambda a: _stem(a.filename).lower() == name.lower()):
            found = next((a for a in candidates if match(a)), None)
            if found is not None:
                return found
        raise field_error("prompt", f"LoRA not found: {name!r} (see /sdapi/v1/loras)")

    # ---- the user's options ----
    def default_checkpoint(self, session: Session, *, user: User, registry: CheckpointRegistry) -> CheckpointEntry:
        """The user's choice (POST options), else the txt2img workflow's default, else `imagen-tiny`."""
        chosen = session.get(A1111Options, user.id)
        for name in (chosen.checkpoint if chosen is not None else None, self._workflow_default(session),
                     DEFAULT_CHECKPOINT):
            if name:
                try:
                    return self.find_checkpoint(session, user=user, registry=registry, name=name)
                except NotFound:  # deleted or unpublished since, or not installed: the next one
                    pass
        raise NotFound("No checkpoint is available")

    def _workflow_default(self, session: Session) -> str | None:
        try:
            workflow = workflow_service.get(session, "txt2img")
        except UnknownWorkflow:
            return None
        default = next((p.default for p in workflow.parameters if p.name == "checkpoint"), None)
        return default if isinstance(default, str) else None

    def options(self, session: Session, *, user: User, registry: CheckpointRegistry) -> dict[str, Any]:
        checkpoint = self.default_checkpoint(session, user=user, registry=registry)
        return {"sd_model_checkpoint": checkpoint.title, "sd_checkpoint_hash": checkpoint.sha256,
                "samples_format": "png", "CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic",
                "show_progress_every_n_steps": -1}

    def set_options(self, session: Session, *, user: User, registry: CheckpointRegistry,
                    values: dict[str, Any]) -> None:
        """Only `sd_model_checkpoint` is kept (this user's default); other options are accepted and ignored."""
        name = values.get("sd_model_checkpoint")
        if name is None:
            return
        if not isinstance(name, str) or not name.strip():
            raise field_error("sd_model_checkpoint", "must be a checkpoint's title, name or hash")
        entry = self.find_checkpoint(session, user=user, registry=registry, name=name)
        row = session.get(A1111Options, user.id)
        if row is None:
            session.add(A1111Options(user_id=user.id, checkpoint=entry.ref))
        else:
            row.checkpoint = entry.ref

    # ---- generating ----
    def submit(self, session: Session, *, user: User, body: Txt2ImgIn | Img2ImgIn, services: Any) -> Submitted:
        """The native submit (queue, fairness, limits, safety checks, prompt rules, consent stamp, gallery)."""
        registry = services.runtime.checkpoints
        name = (body.override_settings or {}).get("sd_model_checkpoint")
        if name is not None and not isinstance(name, str):
            raise field_error("override_settings.sd_model_checkpoint", "must be a string")
        checkpoint = (self.find_checkpoint(session, user=user, registry=registry, name=name) if name
                      else self.default_checkpoint(session, user=user, registry=registry))
        prompt, tags = split_loras(body.prompt)
        loras = [{"id": self.find_lora(session, user=user, name=t.name).id, "weight": t.weight} for t in tags]
        params = base_params(body, prompt=prompt, checkpoint=checkpoint.ref, loras=loras)
        workflow, params = txt2img_job(body, params) if isinstance(body, Txt2ImgIn) else img2img_job(body, params)
        settings = services.settings
        try:
            gen = generation_service.submit(
                session, user=user, workflow_name=workflow, params=params, preset_id=None, checkpoints=registry,
                blobs=services.blobs, max_queued=settings.max_queued_per_user, enqueue=services.executor.submit,
                safety=services.safety, max_job_cost=settings.max_job_cost,
                max_queued_cost=settings.max_queued_cost_per_user, billing=services.billing)
        except Unprocessable as exc:
            raise a1111_errors(exc) from None
        return Submitted(gen.id, checkpoint, prompt)

    def status(self, session: Session, *, user_id: str, generation_id: str) -> str | None:
        return session.scalar(select(Generation.status).where(Generation.id == generation_id,
                                                              Generation.user_id == user_id))

    def active(self, session: Session, *, user: User) -> list[Generation]:
        """The user's queued and running jobs, running first, then oldest first."""
        running_first = case((Generation.status == "running", 0), else_=1)
        return list(session.scalars(owned(Generation, user.id).where(Generation.status.in_(ACTIVE_STATUSES))
                                    .order_by(running_first, Generation.created_at).limit(100)))

    def interrupt(self, session: Session, *, user: User, services: Any, running_only: bool = False) -> list[str]:
        """Cancel the user's jobs (A1111's interrupt), or only the running one (skip). Another user's are untouched."""
        canceled = []
        for gen in self.active(session, user=user):
            if running_only and gen.status != "running":
                continue
            generation_service.cancel(session, user=user, generation_id=gen.id, blobs=services.blobs,
                                      notify=services.executor.cancel)
            canceled.append(gen.id)
        return canceled


a1111_service = A1111Service()


def body_parameters(body: GenerationIn) -> dict[str, Any]:
    """A1111's `parameters`: the request as understood (input images left out unless asked for, as A1111 does)."""
    data = body.model_dump()
    if isinstance(body, Img2ImgIn) and not body.include_init_images:
        data["init_images"], data["mask"] = None, None
    return data
