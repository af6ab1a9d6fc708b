"""`imagen safety …`: import hash banks, list them, enable or disable them.

`import-bank` commits batch by batch (a long import never holds the database's write lock for long, so it runs
beside a serving instance) and moves the bank's `updated_at` at the end, which running matchers notice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from imagen.kit.cli_database import migrated_database
from imagen.kit.errors import ServiceError
from imagen.safety.bank_models import HASH_TYPES

safety_app = typer.Typer(help="Trust and safety: hash banks.", no_args_is_help=True)
console = Console()


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]{message}[/]", highlight=False)
    return typer.Exit(1)


def _lines_with_progress(path: Path, progress: Progress, task: Any) -> Iterator[str]:
    with path.open("rb") as raw:
        for line in raw:
            progress.advance(task, len(line))
            yield line.decode("utf-8-sig", errors="replace")


@safety_app.command("import-bank")
def import_bank(
    name: Annotated[str, typer.Argument(help="Bank name (created when new)")],
    file: Annotated[Path, typer.Argument(help="One hex hash per line, or a CSV/TSV with a hash column",
                                         exists=True, dir_okay=False, readable=True)],
    hash_type: Annotated[str, typer.Option("--type", help=f"Hash type: {' | '.join(HASH_TYPES)}")],
    source: Annotated[str | None, typer.Option(help="Where the list came from (NCMEC, ThreatExchange, ...)")] = None,
    description: Annotated[str | None, typer.Option(help="A note for other operators")] = None,
) -> None:
    """Import a hash list into a bank; hashes already there are skipped, bad lines reported."""
    from imagen.safety.banks import ImportReport, batched, hash_bank_service, parse_hashes

    if hash_type not in HASH_TYPES:
        raise _fail(f"--type must be one of {', '.join(HASH_TYPES)}")
    report = ImportReport()
    with migrated_database() as (db, _settings):
        try:
            with db.transaction() as session:
                bank_id = hash_bank_service.ensure(session, name=name, hash_type=hash_type, source=source,
                                                   description=description).id
            with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                          console=console, transient=True) as progress:
                task = progress.add_task(f"importing {file.name}", total=file.stat().st_size)
                for batch in batched(parse_hashes(_lines_with_progress(file, progress, task), hash_type, report)):
                    with db.transaction() as session:
                        hash_bank_service.add_hashes(session, bank_id=bank_id, values=batch, report=report)
            with db.transaction() as session:
                count = hash_bank_service.finish_import(session, bank_id=bank_id).count
        except ServiceError as exc:
            raise _fail(exc.message) from None
    for bad in report.bad_lines:
        console.print(f"[yellow]line {bad.line}: {bad.reason}[/]", highlight=False)
    if report.bad_count > len(report.bad_lines):
        console.print(f"[yellow]... and {report.bad_count - len(report.bad_lines)} more bad lines[/]")
    console.print(f"[green]{name}[/]: {report.added} added, {report.duplicates} already there, "
                  f"{report.bad_count} bad lines; {count} {hash_type} hashes in the bank.", highlight=False)
    if report.bad_count and not report.added and not report.duplicates:
        raise typer.Exit(1)


@safety_app.command("banks")
def list_banks() -> None:
    """List the hash banks."""
    from imagen.safety.banks import hash_bank_service

    with migrated_database() as (db, _settings), db.transaction() as session:
        banks = hash_bank_service.list(session)
    table = Table("name", "type", "enabled", "hashes", "source", "updated")
    for bank in banks:
        table.add_row(bank.name, bank.hash_type, "yes" if bank.enabled else "no", str(bank.count), bank.source,
                      bank.updated_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


def _set_enabled(name: str, enabled: bool) -> None:
    from imagen.safety.banks import hash_bank_service

    with migrated_database() as (db, _settings):
        try:
            with db.transaction() as session:
                bank = hash_bank_service.get_by_name(session, name=name)
                hash_bank_service.set_enabled(session, bank=bank, enabled=enabled)
        except ServiceError as exc:
            raise _fail(exc.message) from None
    console.print(f"{name}: {'enabled' if enabled else 'disabled'}.", highlight=False)


@safety_app.command("enable")
def enable(name: Annotated[str, typer.Argument(help="Bank name")]) -> None:
    """Match against this bank."""
    _set_enabled(name, True)


@safety_app.command("disable")
def disable(name: Annotated[str, typer.Argument(help="Bank name")]) -> None:
    """Stop matching against this bank (its hashes are kept)."""
    _set_enabled(name, False)
