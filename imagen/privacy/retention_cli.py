"""`imagen retention run [--dry-run]`: purge what is past its retention period, or show what would go."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

retention_app = typer.Typer(help="Retention periods (policy §7): purge expired personal data.",
                            no_args_is_help=True)
console = Console(width=160)


@retention_app.callback()
def _group() -> None:
    """Retention periods (policy §7)."""


@retention_app.command("run")
def run(dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be purged; change nothing")]
        = False) -> None:
    """Purge every category past its period (rows now, their files after the commit)."""
    from imagen.kit.cli_database import migrated_database
    from imagen.privacy.retention import retention_service
    from imagen.storage import make_blob_store

    with migrated_database() as (db, settings), db.transaction() as session:
        purges = retention_service.run(session, settings=settings, blobs=make_blob_store(settings),
                                       dry_run=dry_run)
    table = Table(title="Would purge (dry run)" if dry_run else "Purged")
    for column in ("category", "what", "rows", "files", "period", "setting"):
        table.add_column(column, justify="right" if column in ("rows", "files") else "left")
    for p in purges:
        table.add_row(p.category, p.what + (f" [dim]({p.skipped})[/]" if p.skipped else ""), str(p.count),
                      str(p.blobs), p.period or "", p.setting or "")
    console.print(table)
    total = sum(p.count for p in purges)
    verb = "would be purged" if dry_run else "purged"
    console.print(f"[green]{total} item(s) {verb}.[/]")
