"""`imagen privacy ...`: run due erasures, erase an account, scan for residue, print the processing record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from imagen.kit.config import get_settings

privacy_app = typer.Typer(help="Privacy: erasure, residue scan, record of processing (GDPR Art. 30).",
                          no_args_is_help=True)
console = Console()


@contextmanager
def _open() -> Iterator[tuple[Any, Any, Any]]:  # -> (settings, db, blobs)
    from imagen.kit.cli_database import cli_services

    with cli_services() as services:
        yield services.settings, services.db, services.blobs


def _find_user(session, value: str):
    from imagen.accounts.models import User
    from imagen.accounts.service import account_service

    return account_service.get_by_email(session, value) if "@" in value else session.get(User, value.strip())


@privacy_app.command("erase-due")
def erase_due_command() -> None:
    """Erase every account whose deletion is due (grace period over) or was interrupted."""
    from imagen.privacy.erasure import erase_due

    with _open() as (settings, db, blobs):
        done = erase_due(db, blobs, None, settings=settings)
    console.print(f"[green]Erased {len(done)} account(s).[/]" if done else "No erasure is due.")


@privacy_app.command("erase")
def erase_command(
    email_or_id: Annotated[str, typer.Argument(help="The account's email or id")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
) -> None:
    """Erase an account now (an operator acting on a verified request); the grace period does not apply."""
    from imagen.privacy.erasure import erase_user, erasure_service

    with _open() as (settings, db, blobs):
        with db.transaction() as session:
            user = _find_user(session, email_or_id)
            if user is None:
                console.print(f"[red]No account {email_or_id}[/]")
                raise typer.Exit(1)
            if not yes:
                typer.confirm(f"Erase {user.email} and all its data now?", abort=True)
            erasure_service.request(session, user=user, via="operator", grace=False, settings=settings)
            user_id = user.id
        summary = erase_user(db, blobs, None, user_id, settings=settings, verify=True)
    left = summary.pop("findings")
    count = sum(v for k, v in summary.items() if isinstance(v, int) and k != "residue")
    console.print(f"[green]Erased.[/] {count} records and files.")
    if left:  # searched for what identified the person before the erasure (id, email, IPs, browsers, ...)
        _print_findings(left, f"Residue after erasing {email_or_id}")
        console.print(f"[red]{len(left)} finding(s) are not legal holds in force.[/]")
        raise typer.Exit(1)
    console.print("[green]Verified:[/] the residue scan found nothing outside legal holds in force.")


def _print_findings(findings, title: str) -> None:
    table = Table(title=title)
    for column in ("store", "where", "found", "rows", "verdict"):
        table.add_column(column)
    for f in findings:
        verdict = f"[green]{f.reason}[/]" if f.allowed else f"[red]residue[/] {f.reason}".rstrip()
        table.add_row(f.store, f.where, f.needle, str(f.count), verdict)
    console.print(table)


@privacy_app.command("residue-scan")
def residue_scan_command(
    values: Annotated[list[str], typer.Argument(help="Email and/or id of the (erased) account", metavar="EMAIL_OR_ID")],
) -> None:
    """Search every table and the blob store for the user's id, email and their hashes. Exit 1 on residue.

    (IP addresses and other identifiers are gone once the account is erased; `imagen privacy erase` gathers them
    first and runs this scan with them.)"""
    from imagen.privacy.residue import residue, scan

    user_id = email = None
    with _open() as (settings, db, blobs):
        with db.transaction() as session:
            for value in values:
                user = _find_user(session, value)
                if "@" in value:
                    email = value
                else:
                    user_id = value
                if user is not None:
                    user_id, email = user.id, user.email
        findings = scan(db.engine, blobs, user_id=user_id, email=email, secret=settings.resolved_secret_key(),
                        settings=settings)
    if findings:
        _print_findings(findings, f"Residue scan for {', '.join(values)}")
    bad = residue(findings)
    if bad:
        console.print(f"[red]{len(bad)} finding(s) are not legal holds in force.[/]")
        raise typer.Exit(1)
    console.print("[green]No residue:[/] nothing identifies this person except declared legal holds."
                  if findings else "[green]No residue:[/] nothing found.")


@privacy_app.command("ropa")
def ropa_command(
    fmt: Annotated[Literal["md", "json"], typer.Option("--format", help="md or json")] = "md",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to this file")] = None,
) -> None:
    """The record of processing activities (GDPR Art. 30), generated from the data map."""
    from imagen.privacy.ropa import build_record, to_markdown

    record = build_record(get_settings())
    text = to_markdown(record) if fmt == "md" else json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        console.print(f"[green]Wrote {output}[/]")
