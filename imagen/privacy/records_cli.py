"""`imagen records …`: business-transfer notices (policy §4.4) and the breach and legal-request logs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from imagen.kit.cli_database import cli_services, migrated_database

records_app = typer.Typer(help="Records: breach register, legal requests, business-transfer notices.",
                          no_args_is_help=True)
console = Console(width=160)


@contextmanager
def _session() -> Iterator[Any]:
    with migrated_database() as (db, _settings), db.transaction() as session:
        yield session


def _detail(exc: Any) -> str:
    detail = exc.detail
    if isinstance(detail, list):
        return "; ".join(f"{d['loc'][-1]}: {d['msg']}" for d in detail)
    return str(detail)


@records_app.command("notify-transfer")
def notify_transfer(
    acquirer: Annotated[str, typer.Option(help="Who the service and its data go to")],
    effective: Annotated[str, typer.Option(help="YYYY-MM-DD the transfer takes effect (after today)")],
    summary: Annotated[str, typer.Option(help="What changes for users")] = "",
) -> None:
    """Send every user an in-app notice before a merger, acquisition or sale, and record it."""
    from imagen.kit.errors import ServiceError
    from imagen.privacy.records.schemas import TransferNoticeCreate
    from imagen.privacy.records.service import records_service

    try:
        effective_on = date.fromisoformat(effective)
    except ValueError:
        raise typer.BadParameter("use YYYY-MM-DD", param_hint="--effective") from None
    try:
        with cli_services() as services, services.db.transaction() as session:
            notice = records_service.notify_transfer(
                session, data=TransferNoticeCreate(acquirer=acquirer, effective_on=effective_on, summary=summary),
                outbox=services.outbox)
            recipients = notice.recipients
    except ServiceError as exc:
        console.print(f"[red]{_detail(exc)}[/]", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"[green]Notified {recipients} user(s)[/] of the transfer to {acquirer} on {effective_on}.")


@records_app.command("transfers")
def transfers() -> None:
    """List the business-transfer notices sent."""
    from imagen.privacy.records.service import records_service

    table = Table(title="Business-transfer notices")
    for column in ("acquirer", "effective", "users told", "sent"):
        table.add_column(column)
    with _session() as session:
        for n in records_service.list_transfers(session):
            table.add_row(n.acquirer, n.effective_on.isoformat(), str(n.recipients), f"{n.notified_at:%Y-%m-%d %H:%M}")
    console.print(table)


@records_app.command("breaches")
def breaches() -> None:
    """List the breach register with the regulator deadline of each breach."""
    from imagen.kit.config import get_settings
    from imagen.privacy.records.service import records_service

    settings = get_settings()
    table = Table(title="Breach register")
    for column in ("id", "detected", "severity", "affected", "users told", "regulator"):
        table.add_column(column)
    with _session() as session:
        for b in records_service.list_breaches(session):
            deadline, passed, hours_left = records_service.deadline_status(b, settings)
            if b.regulator_notified_at:
                regulator = f"told {b.regulator_notified_at:%Y-%m-%d %H:%M}" + (" (late)" if passed else "")
            else:
                regulator = f"[{'red' if passed else 'yellow'}]due {deadline:%Y-%m-%d %H:%M} ({hours_left} h)[/]"
            table.add_row(b.id, f"{b.detected_at:%Y-%m-%d %H:%M}", b.severity, str(b.affected_count),
                          str(records_service.notified_count(session, b.id)), regulator)
    console.print(table)


@records_app.command("legal-requests")
def legal_requests() -> None:
    """List the legal and law-enforcement requests received and what was decided."""
    from imagen.privacy.records.service import records_service

    table = Table(title="Legal requests")
    for column in ("received", "authority", "instrument", "accounts", "decision", "responded"):
        table.add_column(column)
    with _session() as session:
        for r in records_service.list_legal_requests(session):
            table.add_row(f"{r.received_at:%Y-%m-%d}", r.authority, r.instrument, str(r.affected_count),
                          r.decision, f"{r.responded_at:%Y-%m-%d}" if r.responded_at else "")
    console.print(table)
