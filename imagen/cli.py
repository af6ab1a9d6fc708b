"""The `imagen` command line (Typer + Rich)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from imagen.assets.cli import models_app
from imagen.consent.cli import policy_app
from imagen.kit.cli_database import CLI_OPENER
from imagen.kit.config import Settings, get_settings
from imagen.privacy.cli import privacy_app
from imagen.privacy.records_cli import records_app
from imagen.privacy.retention_cli import retention_app
from imagen.safety.bank_cli import safety_app
from imagen.workflows.cli import workflows_app

app = typer.Typer(help="IMAGEN: a self-hostable, multi-user image-generation service.", no_args_is_help=True)
db_app = typer.Typer(help="Database commands.", no_args_is_help=True)
admin_app = typer.Typer(help="Administration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(models_app, name="models")
app.add_typer(workflows_app, name="workflows")
app.add_typer(policy_app, name="policy")
app.add_typer(retention_app, name="retention")
app.add_typer(records_app, name="records")
app.add_typer(privacy_app, name="privacy")
app.add_typer(safety_app, name="safety")
console = Console()


@app.callback()
def main() -> None:
    """Commands that need the database open it through the composition root (imagen/services.py), lazily."""

    @contextmanager
    def opener() -> Iterator[Any]:
        from imagen.services import open_services

        with open_services(get_settings()) as services:
            yield services

    CLI_OPENER.set(opener)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
) -> None:
    """Run the web service (migrates the database first)."""
    import uvicorn
    from pydantic import ValidationError

    from imagen.app import create_app

    try:
        settings = get_settings()
    except ValidationError as exc:
        # Only the messages: the error's input would print every setting, secrets included.
        for error in exc.errors():
            console.print(f"[red]{escape(str(error['msg']).removeprefix('Value error, '))}[/]")
        raise typer.Exit(2) from None
    if unset := settings.unset_operator_settings():
        console.print("[yellow]Warning: the published privacy policy shows placeholders; set "
                      + escape(", ".join(f"{var} ({what})" for var, what in unset))
                      + ". IMAGEN_ENV=production refuses to start without them.[/]")
    if settings.base_url == "http://127.0.0.1:8000" and (host, port) != ("127.0.0.1", 8000):
        settings.base_url = f"http://{host}:{port}"
    console.print(f"[bold]IMAGEN[/] on http://{host}:{port}")
    for line in first_run_lines(settings):
        console.print(line)
    # Forwarded headers are trusted by the app itself, per IMAGEN_TRUSTED_PROXIES (imagen/kit/surface.py).
    uvicorn.run(create_app(settings), host=host, port=port, proxy_headers=False)


def describe_device(settings: Settings) -> str:
    """What generations run on here: the CPU, a named GPU, or the fleet's workers."""
    if settings.executor != "local":
        return f"none in this process (IMAGEN_EXECUTOR={settings.executor}: the workers run generations)"
    import torch

    from imagen.inference.runtime import pick_device

    device = pick_device(settings.device)
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return "cpu (no GPU found: generations are slow; set IMAGEN_DEVICE=cuda on a GPU machine)" if device == "cpu" \
        else device


def first_run_lines(settings: Settings) -> list[str]:
    """What `imagen serve` prints under its address: where the data is, what runs the models, the first admin."""
    lines = [f"  data folder: {escape(str(settings.data_dir.resolve()))}  (IMAGEN_DATA_DIR; the CLI finds it the same "
             "way: run commands from this folder or set the variable)",
             f"  database: {escape(settings.resolved_database_url.split('@')[-1])}",
             f"  device: {escape(describe_device(settings))}",
             "  model: imagen-demo, a small built-in model that draws one coloured shape on a plain background at "
             "64x64 (\"a large red star in the top left on a blue background\"); add real SD 1.5/SDXL "
             "checkpoints on /models or with `imagen models add`"]
    from imagen.accounts.models import User
    from imagen.kit.db import Database

    database = Database(settings.resolved_database_url)
    try:
        with database.transaction() as session:
            has_admin = session.scalar(select(User.id).where(User.role == "admin").limit(1)) is not None
    except SQLAlchemyError:  # not migrated yet: the app migrates it at start
        has_admin = False
    finally:
        database.dispose()
    if not has_admin:
        lines.append("  no admin yet: [bold]imagen admin create-user you@example.com --admin[/] (asks for a password)")
    return lines


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated: gpu (generations), default (exports, mail, ...)")]
    = "gpu,default",
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks at once (a GPU runs one generation at a time)")] = 1,
    name: Annotated[str | None, typer.Option(help="This worker's name (default: host-pid)")] = None,
) -> None:
    """Run a fleet worker (IMAGEN_EXECUTOR=celery): tasks from the broker, generations on this machine's runtime."""
    settings = get_settings()
    if settings.executor != "celery":
        console.print("[red]imagen worker needs IMAGEN_EXECUTOR=celery and IMAGEN_BROKER_URL.[/]")
        raise typer.Exit(2)
    from imagen.fleet.commands import run_worker

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    if not chosen:
        raise typer.BadParameter("name at least one queue", param_hint="--queues")
    raise typer.Exit(run_worker(settings, queues=chosen, concurrency=concurrency, name=name))


@app.command()
def beat() -> None:
    """Run the fleet's scheduler (IMAGEN_EXECUTOR=celery): enqueues every periodic task on its interval."""
    settings = get_settings()
    if settings.executor != "celery":
        console.print("[red]imagen beat needs IMAGEN_EXECUTOR=celery and IMAGEN_BROKER_URL.[/]")
        raise typer.Exit(2)
    from imagen.fleet.commands import run_beat

    run_beat(settings)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    from imagen.kit import migrate

    settings = get_settings()
    settings.ensure_data_dir()
    migrate.upgrade(settings.resolved_database_url)
    console.print("[green]Database is up to date.[/]")


@admin_app.command("create-user")
def create_user(
    email: str,
    admin: Annotated[bool, typer.Option("--admin", help="Give the account the admin role")] = False,
    password: Annotated[str | None, typer.Option(help="Prompted for when omitted")] = None,
    date_of_birth: Annotated[str, typer.Option(help="YYYY-MM-DD; the account holder must be 18+")] = "1990-01-01",
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 code")] = "US",
) -> None:
    """Create an account (for operators and administrators)."""
    from imagen.accounts.service import MINIMUM_AGE, account_service, age_on
    from imagen.consent.service import consent_service
    from imagen.kit.cli_database import migrated_database
    from imagen.kit.db import utcnow
    from imagen.kit.errors import ServiceError

    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    dob = date.fromisoformat(date_of_birth)
    if age_on(dob, utcnow().date()) < MINIMUM_AGE:
        console.print(f"[red]The account holder must be {MINIMUM_AGE} or older.[/]")
        raise typer.Exit(1)
    with migrated_database() as (db, _settings):
        try:
            with db.transaction() as session:
                user = account_service.create_user(
                    session, email=email, password=password, role="admin" if admin else "user",
                    date_of_birth=dob, country=country.upper(),
                    policy_version=consent_service.current_version(session).version)
        except ServiceError as exc:
            detail = exc.detail if isinstance(exc.detail, str) else exc.detail[0]["msg"]
            console.print(f"[red]{detail}[/]")
            raise typer.Exit(1) from None
        with db.transaction() as session:
            first_admin = admin and account_service.first_admin(session).id == user.id
    console.print(f"[green]Created {user.role} {user.email}[/] (id {user.id})")
    from imagen.inference.demo import LORA_FILE

    if first_admin and LORA_FILE.is_file():  # the built-in demo LoRA, published so every user can try a LoRA
        from imagen.assets.cli import add_demo_lora

        add_demo_lora(owner=user.email)


@admin_app.command("set-role")
def set_role(
    email: str,
    role: Annotated[str, typer.Argument(help="user, moderator or admin")],
) -> None:
    """Give an account a role: moderators work the moderation queue (/admin/cases), admins everything."""
    from imagen.accounts.service import account_service
    from imagen.kit.cli_database import migrated_database
    from imagen.kit.errors import ServiceError
    from imagen.safety.service import case_service

    with migrated_database() as (db, _settings):
        try:
            with db.transaction() as session:
                user = account_service.get_by_email(session, email)
                if user is None:
                    console.print(f"[red]No account with the email {email}[/]", highlight=False)
                    raise typer.Exit(1)
                case_service.set_role(session, user_id=user.id, role=role)
        except ServiceError as exc:
            console.print(f"[red]{exc.message}[/]", highlight=False)
            raise typer.Exit(1) from None
    console.print(f"[green]{email} is now {role}[/]", highlight=False)


@app.command()
def generate(
    prompt: str,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write")] = Path("out.png"),
    steps: Annotated[int, typer.Option(min=1, max=150)] = 20,
    seed: Annotated[int | None, typer.Option(min=0, max=2**32 - 1, help="Default: a random seed (printed)")] = None,
    size: Annotated[str | None, typer.Option(
        help="WIDTHxHEIGHT, multiples of 8. Default: the txt2img workflow's (the demo model's native size)")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Default: the txt2img workflow's (imagen-demo)")] = None,
    guidance: Annotated[float | None, typer.Option(min=0.0, max=30.0, help="Default: the txt2img workflow's")] = None,
    negative_prompt: Annotated[str, typer.Option()] = "",
) -> None:
    """Generate one image with the runtime directly (no server, no database)."""
    import secrets

    from imagen.inference.checkpoints import CheckpointNotFound
    from imagen.inference.runtime import Runtime
    from imagen.inference.spec import JobSpec, ModelRef
    from imagen.workflows.library import ValidationError, library

    defaults = {p.name: p.default for p in library.get("txt2img").parameters}
    size = size or f"{defaults['width']}x{defaults['height']}"
    checkpoint = checkpoint or defaults["checkpoint"]
    guidance = defaults["guidance"] if guidance is None else guidance
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter("use WIDTHxHEIGHT, e.g. 512x512", param_hint="--size") from None
    if seed is None:
        seed = secrets.randbelow(2**32)  # like the web form: a new image each run; the seed printed reproduces it
    try:
        params = library.get("txt2img").validate_params(dict(
            prompt=prompt, negative_prompt=negative_prompt, steps=steps, seed=seed, width=width,
            height=height, checkpoint=checkpoint, guidance=guidance))
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(msg) from None
    settings = get_settings()
    from imagen.safety.prompt_rules import prompt_rules  # the same rules as the API; the built-ins always apply

    refusal = prompt_rules(settings).check(prompt, negative_prompt)
    if refusal is not None:
        raise typer.BadParameter(refusal.message, param_hint=refusal.field.replace("_", "-"))
    with console.status("Loading model…"):
        runtime = Runtime(settings.resolved_models_dir, device=settings.device)
        try:
            ckpt = runtime.checkpoints.get(checkpoint)
        except CheckpointNotFound:
            names = ", ".join(c.name for c in runtime.checkpoints.list())
            raise typer.BadParameter(f"unknown checkpoint; available: {names}", param_hint="--checkpoint") from None
        ref = ModelRef(ckpt.name, ckpt.sha256, ckpt.family)
        spec = JobSpec("txt2img", params, ref)
        runtime.load(ref)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("Denoising", total=steps)
        result = runtime.run(spec, on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    output.write_bytes(result.images[0].png)
    console.print(f"[green]Wrote {output}[/] ({width}x{height}, seed {seed}, "
                  f"{result.signals['inference_seconds']:.2f}s in the model)")


if __name__ == "__main__":
    app()
