"""`imagen policy …`: publish a new version of the privacy policy, list versions, check the rendered text."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imagen.kit.cli_database import cli_services, migrated_database

policy_app = typer.Typer(help="Privacy policy versions (policy §11).", no_args_is_help=True)
console = Console()


@policy_app.command("publish")
def publish(
    version: Annotated[str, typer.Argument(help="The new version's name, e.g. 2026-06-01")],
    material: Annotated[bool, typer.Option(
        "--material", help="A material change: notify every user in-app; each must accept it at next login")] = False,
    summary: Annotated[str | None, typer.Option(help="What changed, shown in the notice")] = None,
) -> None:
    """Publish a new version of the policy (rendered from the template and this configuration) as current."""
    from imagen.consent.service import consent_service
    from imagen.kit.db import utcnow
    from imagen.kit.errors import ServiceError
    from imagen.privacy.policy import DRAFTING_NOTES, render_policy

    with cli_services() as services:
        db, settings = services.db, services.settings
        try:
            with db.transaction() as session:
                text = render_policy(settings, session=session, updated=utcnow().date())
                row, notified = consent_service.publish(session, version=version, material=material,
                                                        summary=summary, text=text, outbox=services.outbox)
                published = row.version
        except ServiceError as exc:
            detail = exc.detail if isinstance(exc.detail, str) else exc.detail[0]["msg"]
            console.print(f"[red]{escape(detail)}[/]")
            raise typer.Exit(1) from None
        notes = sum(render_policy(settings, drafting_notes=True).count(n) for n in DRAFTING_NOTES)
    kind = "material change" if material else "non-material change"
    console.print(f"[green]Published policy version {escape(published)}[/] ({kind}); it is now current.")
    if material:
        how = "in-app and by email" if services.outbox.delivers else "in-app"
        console.print(f"Notified {notified} user(s) {how}; each must accept it before creating anything new.")
    if notes:
        console.print(f"[yellow]The policy template still carries {notes} drafting note(s) for legal review "
                      "([LAWYER] …); they are not shown to users.[/]")


@policy_app.command("list")
def list_versions() -> None:
    """Every published version, newest (current) first."""
    from imagen.consent.service import consent_service

    with migrated_database() as (db, _settings), db.transaction() as session:
        table = Table("version", "published (UTC)", "material", "summary")
        for i, v in enumerate(consent_service.list_versions(session)):
            table.add_row(escape(v.version) + (" (current)" if i == 0 else ""),
                          v.published_at.strftime("%Y-%m-%d %H:%M"), "yes" if v.material else "no",
                          escape(v.summary or ""))
    console.print(table)


@policy_app.command("check")
def check() -> None:
    """Does the policy rendered now (template + configuration) still match the current version's text?"""
    from imagen.consent.service import consent_service
    from imagen.privacy.policy import render_version, text_sha256

    with migrated_database() as (db, settings), db.transaction() as session:
        versions = consent_service.list_versions(session)
        now = text_sha256(render_version(settings, versions, session=session))
        version, published = versions[0].version, versions[0].text_sha256
    if now == published:
        console.print(f"[green]Version {escape(version)} matches the policy as rendered now.[/]")
        return
    console.print(f"[yellow]The policy as rendered now (e.g. after a provider was configured) differs from version "
                  f"{escape(version)} as published. Publish a new version: imagen policy publish VERSION "
                  "[--material].[/]")
    raise typer.Exit(1)
