"""`imagen models …`: add, list and remove uploaded checkpoints and LoRAs from the command line.

`add` copies the file into the blob store's staging folder (hashing it on the way, with a progress bar) and hands it
to the same `asset_service.add_file` the upload API uses, so every check is the same.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

models_app = typer.Typer(help="Uploaded models (checkpoints and LoRAs): add, list, remove.", no_args_is_help=True)
console = Console()
COPY_CHUNK = 8 << 20


@contextmanager
def _open() -> Iterator[tuple[Any, Any, Any, Any]]:
    """(settings, db, blobs, safety): the same hash banks the upload API checks."""
    from imagen.kit.cli_database import cli_services

    with cli_services() as services:
        yield services.settings, services.db, services.blobs, services.safety


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]{message}[/]", highlight=False)
    return typer.Exit(1)


def _stage(source: Path, staging: Path) -> Any:
    """Copy `source` into the staging folder while hashing it; a progress bar for the big ones."""
    from imagen.assets.service import StagedFile

    size = source.stat().st_size
    fd, tmp = tempfile.mkstemp(dir=staging, prefix=".tmp-cli-")
    hasher = hashlib.sha256()
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src, \
                Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(f"Hashing and copying {source.name}", total=size)
            while chunk := src.read(COPY_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
                bar.advance(task, len(chunk))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return StagedFile(path=Path(tmp), filename=source.name, size=size, sha256=hasher.hexdigest())


@models_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="a .safetensors file")],
    owner: Annotated[str | None, typer.Option(help="Email of the owning account; default: the first admin")] = None,
    kind: Annotated[str | None, typer.Option(help="checkpoint or lora; detected from the file when omitted")] = None,
    public: Annotated[bool, typer.Option("--public", help="Publish it: every user may use it")] = False,
    ignore_quota: Annotated[bool, typer.Option("--ignore-quota", help="Do not count it against the quota")] = False,
) -> None:
    """Add a checkpoint or LoRA from a local file, with the same checks as an upload."""
    from imagen.accounts.service import account_service
    from imagen.assets.modelfiles import ModelFileRejected, inspect_upload
    from imagen.assets.models import MODEL_KINDS
    from imagen.assets.service import UploadLimits, asset_service, check_model_name, clean_filename, human_bytes
    from imagen.kit.errors import ServiceError

    if kind is not None and kind not in MODEL_KINDS:
        raise typer.BadParameter("use checkpoint or lora (reference images are uploaded through the API)",
                                 param_hint="--kind")
    try:  # fail fast, before copying gigabytes: the same checks run again on the copy
        check_model_name(clean_filename(file.name))
        with file.open("rb") as f:
            inspect_upload(file.name, f, file.stat().st_size)
    except ServiceError as exc:
        raise _fail(exc.message) from None
    except ModelFileRejected as exc:
        raise _fail(exc.reason) from None
    with _open() as (settings, db, blobs, safety):
        limits = UploadLimits.from_settings(settings)
        if ignore_quota:
            limits = UploadLimits(limits.model_bytes, limits.image_bytes, None)
        with db.transaction() as session:
            user = account_service.get_by_email(session, owner) if owner else account_service.first_admin(session)
        if user is None:
            raise _fail(f"No account with the email {owner}" if owner else "No admin account yet: create one with "
                        "`imagen admin create-user EMAIL --admin`, or pass --owner")
        owner_id = user.id
        limit, why = limits.per_file(kind or "checkpoint")
        if file.stat().st_size > limit:
            raise _fail(f"{file.name} is {human_bytes(file.stat().st_size)}, more than {why} "
                        "(IMAGEN_MAX_MODEL_UPLOAD_BYTES)")
        staged = _stage(file, blobs.staging_dir())
        try:
            with db.transaction() as session:
                user = session.get(type(user), owner_id)
                asset, created = asset_service.add_file(session, user=user, staged=staged, kind=kind, blobs=blobs,
                                                        limits=limits, safety=safety, public=public,
                                                        operator=True)
        except ServiceError as exc:
            raise _fail(exc.message) from None
        finally:
            staged.path.unlink(missing_ok=True)
    verb = "Added" if created else "Already there:"
    console.print(f"[green]{verb} {asset.description}[/] {asset.filename} (id {asset.id}, hash {asset.short_hash}"
                  f"{', public' if asset.public else ''})", highlight=False)


@models_app.command("add-demo-lora")
def add_demo_lora(
    owner: Annotated[str | None, typer.Option(help="Email of the owning account; default: the first admin")] = None,
) -> None:
    """Publish the built-in demo LoRA (imagen-demo-striped: the demo model's shapes drawn striped) for every user.
    The first admin account gets it published when it is created; this adds it again after a removal."""
    from imagen.inference.demo import LORA_FILE

    if not LORA_FILE.is_file():
        raise _fail(f"The demo LoRA is missing from {LORA_FILE.parent}; reinstall imagen")
    add(LORA_FILE, owner=owner, kind="lora", public=True, ignore_quota=True)


@models_app.command("list")
def list_models(
    owner: Annotated[str | None, typer.Option(help="Only this account's models (built-ins are left out)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout, for scripts")] = False,
) -> None:
    """List the built-in checkpoints and the uploaded checkpoints and LoRAs (everyone's, or one account's)."""
    import json

    from imagen.accounts.service import account_service
    from imagen.assets.models import MODEL_KINDS
    from imagen.assets.service import asset_service, human_bytes
    from imagen.inference.checkpoints import CheckpointRegistry

    with _open() as (settings, db, _blobs, _safety), db.transaction() as session:
        user_id = None
        if owner is not None:
            user = account_service.get_by_email(session, owner)
            if user is None:
                raise _fail(f"No account with the email {owner}")
            user_id = user.id
        rows = [(a, e) for a, e in asset_service.list_all(session, user_id=user_id) if a.kind in MODEL_KINDS]
    builtins = [] if owner is not None else [
        c for c in CheckpointRegistry(settings.resolved_models_dir).list() if c.builtin]
    entries = [{"id": c.name, "owner": None, "kind": "checkpoint", "family": c.family, "sha256": c.sha256,
                "size_bytes": None, "public": True, "builtin": True, "file": None, "description": "built in"}
               for c in builtins]
    entries += [{"id": a.id, "owner": email, "kind": a.kind, "family": a.family, "sha256": a.sha256,
                 "size_bytes": a.size_bytes, "public": a.public, "builtin": False, "file": a.filename,
                 "description": a.description} for a, email in rows]
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    if not entries:
        console.print("No models.")
        return
    table = Table()
    table.add_column("id", overflow="fold")  # full ids, folded rather than cut: `remove` and the API take them
    for heading in ("kind", "family", "hash", "size", "public", "owner", "file", "what"):
        table.add_column(heading)
    for e in entries:
        size = "" if e["size_bytes"] is None else human_bytes(e["size_bytes"])
        table.add_row(e["id"], e["kind"], e["family"] or "", (e["sha256"] or "")[:12], size,
                      "yes" if e["public"] else "", e["owner"] or "(built in)", e["file"] or "", e["description"] or "")
    console.print(table)


@models_app.command("remove")
def remove(asset_id: str) -> None:
    """Remove a model (its file is deleted once the database change is committed)."""
    from imagen.assets.service import asset_service
    from imagen.kit.errors import NotFound

    with _open() as (_settings, db, blobs, _safety):
        try:
            with db.transaction() as session:
                asset = asset_service.remove(session, asset_id=asset_id, blobs=blobs)
        except NotFound:
            raise _fail(f"No asset with the id {asset_id}") from None
    console.print(f"[green]Removed {asset.filename}[/] (id {asset.id})", highlight=False)
