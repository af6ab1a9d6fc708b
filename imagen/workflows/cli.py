"""`imagen workflows …`: list, show, validate and publish workflow definitions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

workflows_app = typer.Typer(help="Workflow definitions: built-in and published versions.", no_args_is_help=True)
console = Console()
T = TypeVar("T")


@contextmanager
def _database() -> Iterator[Any]:
    from imagen.kit import migrate
    from imagen.kit.config import get_settings
    from imagen.kit.db import Database

    settings = get_settings()
    settings.ensure_data_dir()
    migrate.upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    try:
        yield db
    finally:
        db.dispose()


def _in_transaction(work: Callable[[Any], T]) -> T:
    with _database() as db, db.transaction() as session:
        return work(session)


def _read_definition(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        console.print(f"[red]Cannot read {escape(str(file))}: {escape(str(exc))}[/]", highlight=False)
        raise typer.Exit(1) from None
    except json.JSONDecodeError as exc:
        console.print(f"[red]{escape(str(file))} is not JSON: {escape(str(exc))}[/]", highlight=False)
        raise typer.Exit(1) from None


def _print_problems(file: Path, problems: list[dict[str, Any]]) -> None:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    console.print(f"[red]invalid:[/] {escape(str(file))} ({count})", highlight=False, soft_wrap=True)
    for p in problems:
        where = ".".join(str(part) for part in p["loc"] if part != "body") or "definition"
        console.print(f"  - {where}: {p['msg']}", markup=False, highlight=False, soft_wrap=True)


@workflows_app.command("list")
def list_workflows() -> None:
    """The latest version of each workflow (built-in or published)."""
    from imagen.workflows.service import workflow_service

    rows = _in_transaction(lambda s: [
        (w.name, str(w.version), w.pipeline, ", ".join(w.families), workflow_service.source(w), w.title)
        for w in workflow_service.list(s)])
    table = Table()
    for column in ("name", "version", "pipeline", "families", "source"):
        table.add_column(column, no_wrap=True)
    table.add_column("title")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@workflows_app.command("show")
def show_workflow(
    name: str,
    version: Annotated[int | None, typer.Option(help="A specific version (default: the latest)")] = None,
) -> None:
    """Print a workflow's definition as JSON."""
    from imagen.workflows.library import UnknownWorkflow
    from imagen.workflows.service import workflow_service

    try:
        definition = _in_transaction(lambda s: workflow_service.get(s, name, version).definition())
    except UnknownWorkflow as exc:
        console.print(f"[red]{escape(exc.detail)}[/]", highlight=False)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(definition, indent=2, ensure_ascii=False))


@workflows_app.command("validate")
def validate_workflow(file: Path) -> None:
    """Check a definition file without publishing it."""
    from imagen.workflows.library import InvalidDefinition, Workflow

    try:
        wf = Workflow.from_definition(_read_definition(file))
    except InvalidDefinition as exc:
        _print_problems(file, exc.problems)
        raise typer.Exit(1) from None
    console.print(f"[green]valid:[/] {wf.name} v{wf.version} ({wf.pipeline})", highlight=False)


@workflows_app.command("publish")
def publish_workflow(file: Path) -> None:
    """Publish a definition file as a new version (as the operator)."""
    from imagen.kit.errors import Conflict, Unprocessable
    from imagen.workflows.service import workflow_service

    definition = _read_definition(file)
    try:
        wf = _in_transaction(lambda s: workflow_service.publish(s, admin=None, definition=definition))
    except Unprocessable as exc:
        _print_problems(file, exc.detail)
        raise typer.Exit(1) from None
    except Conflict as exc:
        console.print(f"[red]{escape(exc.detail)}[/]", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"[green]published:[/] {wf.name} v{wf.version} ({wf.pipeline})", highlight=False)
