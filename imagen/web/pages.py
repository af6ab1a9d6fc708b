"""Server-rendered pages. They only read; every write goes through the JSON API from imagen.js."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import pycountry
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from imagen.accounts.http import OptionalPrincipalDep, Principal
from imagen.accounts.service import MINIMUM_AGE
from imagen.assets.service import asset_service
from imagen.consent.service import consent_service
from imagen.consent.web import consent_centre_context
from imagen.consent.web import page_context as consent_page_context
from imagen.generation.endpoints import GalleryFilterDep, gallery_item
from imagen.generation.gallery import gallery_service
from imagen.generation.resolve import FAMILY_LABELS
from imagen.inference.demo import DEMO_NAME, DEMO_SIZE
from imagen.kit.db import utcnow
from imagen.kit.http import SessionDep, SettingsDep
from imagen.privacy.minors import minor_report_service
from imagen.privacy.policy import render_version
from imagen.web.admin_home import admin_counts
from imagen.workflows.service import preset_service, workflow_service

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
GALLERY_PAGE = 48

# Pages load only this service's own script, style and images; nothing inline, nothing third-party.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _number(value: Any) -> Any:
    """7.0 -> 7, so integer bounds render as min="1" rather than min="1.0"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _filesize(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


templates.env.filters["number"] = _number
templates.env.filters["filesize"] = _filesize
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True


def render(request: Request, name: str, principal: Principal | None, **context: Any) -> HTMLResponse:
    context["user"] = principal.user if principal else None
    context.update(consent_page_context(request, principal))  # analytics flag, cookie banner, policy notice
    return templates.TemplateResponse(request, name, context, headers=PAGE_HEADERS)


def to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


def not_found_page() -> HTMLResponse:
    """What a page answers to someone without the role for it: the page's existence stays quiet."""
    return HTMLResponse("<!doctype html><title>Not found</title><p>Not found.</p>", status_code=404,
                        headers=PAGE_HEADERS)


@router.get("/")
def home(request: Request, principal: OptionalPrincipalDep) -> Response:
    if principal is not None:
        return RedirectResponse("/generate", status_code=303)
    return render(request, "index.html", None, minimum_age=MINIMUM_AGE)


@router.get("/signup")
def signup_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep) -> Response:
    if principal is not None:
        return RedirectResponse("/generate", status_code=303)
    countries = sorted(pycountry.countries, key=lambda c: c.name)
    policy_version = consent_service.current_version(session).version
    return render(request, "signup.html", None, countries=countries, policy_version=policy_version,
                  minimum_age=MINIMUM_AGE, today=date.today().isoformat())


@router.get("/login")
def login_page(request: Request, principal: OptionalPrincipalDep) -> Response:
    if principal is not None:
        return RedirectResponse("/generate", status_code=303)
    return render(request, "login.html", None)


@router.get("/reset-password")
def reset_password_page(request: Request, principal: OptionalPrincipalDep, token: str = "") -> Response:
    """With the emailed link's `token`: choose the new password; without: ask for a link."""
    return render(request, "reset_password.html", principal, token=token[:200])


@router.get("/verify-email")
def verify_email_page(request: Request, principal: OptionalPrincipalDep, token: str = "") -> Response:
    """The emailed link of an address confirmation (sign-up or email change); a button confirms it."""
    return render(request, "verify_email.html", principal, token=token[:200])


@router.get("/generate")
def generate_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                  workflow: str | None = None, preset: str | None = None) -> Response:
    if principal is None:
        return to_login()
    user = principal.user
    workflows = workflow_service.list(session)
    by_name = {w.name: w for w in workflows}
    selected = by_name.get(workflow or "") or by_name.get("txt2img") or workflows[0]
    presets = [p for p in preset_service.list(session, user=user) if p.workflow == selected.name]
    chosen = next((p for p in presets if p.id == preset), None)
    parameters = [
        p.model_copy(update={"default": chosen.params[p.name]}) if chosen and p.name in chosen.params else p
        for p in selected.parameters
    ]
    models = asset_service.list_models(session, user=user)
    # "sizes" picks the size-preset group: the family's, except the demo model's own native size.
    checkpoints = [{"value": c.name, "label": f"{c.name} (built-in, {FAMILY_LABELS[c.family]})", "family": c.family,
                    "sizes": "demo" if c.name == DEMO_NAME else c.family}
                   for c in request.app.state.services.runtime.checkpoints.list() if c.family in selected.families]
    checkpoints += [{"value": a.id, "label": f"{a.filename} [{a.short_hash}] ({FAMILY_LABELS[a.family]})",
                     "family": a.family, "sizes": a.family}
                    for a in models if a.kind == "checkpoint" and a.family in selected.families]
    loras = [{"value": a.id, "label": f"{a.filename} [{a.short_hash}] ({FAMILY_LABELS[a.family]})",
              "family": a.family} for a in models if a.kind == "lora"]
    references = asset_service.list(session, user=user, kind="reference_image")
    return render(request, "generate.html", principal, workflows=workflows, workflow=selected,
                  parameters=parameters, checkpoints=checkpoints, loras=loras, references=references,
                  presets=presets, preset=chosen, demo_name=DEMO_NAME, demo_size=DEMO_SIZE)


@router.get("/models")
def models_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                settings: SettingsDep) -> Response:
    if principal is None:
        return to_login()
    assets = asset_service.list(session, user=principal.user)
    used = asset_service.used_bytes(session, user_id=principal.user.id)
    return render(request, "models.html", principal, assets=assets, used=used,
                  quota=settings.user_storage_quota_bytes)


@router.get("/gallery")
def gallery_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                 filters: GalleryFilterDep) -> Response:
    """The first page of the user's images; imagen.js loads the next ones from /api/v1/outputs with the cursor."""
    if principal is None:
        return to_login()
    rows, next_cursor = gallery_service.page(session, user=principal.user, limit=GALLERY_PAGE, filters=filters)
    workflows, models = gallery_service.facets(session, user=principal.user)
    return render(request, "gallery.html", principal, items=[gallery_item(o, g) for o, g in rows],
                  next_cursor=next_cursor, filters=filters, workflows=workflows, models=models)


@router.get("/account")
def account_page(request: Request, principal: OptionalPrincipalDep) -> Response:
    """API keys and notifications; studio.js reads and writes them through the JSON API."""
    if principal is None:
        return to_login()
    return render(request, "account.html", principal)


@router.get("/admin")
def admin_home_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                    settings: SettingsDep) -> Response:
    """Links to every admin page with what waits on each (moderators see their queue only)."""
    if principal is None:
        return to_login()
    if principal.user.role not in ("moderator", "admin"):
        return not_found_page()
    counts = admin_counts(session, now=utcnow(), soon_days=settings.privacy_due_soon_days)
    return render(request, "admin_home.html", principal, counts=counts, soon_days=settings.privacy_due_soon_days)


@router.get("/admin/minor-reports")
def admin_minor_reports_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                             status: str = "open") -> Response:
    """Reports that an account belongs to a minor; confirm and dismiss go to the admin API."""
    if principal is None:
        return to_login()
    if principal.user.role != "admin":
        return not_found_page()
    rows = minor_report_service.list(session, status=None if status == "all" else "open")
    return render(request, "admin_minor_reports.html", principal,
                  reports=[minor_report_service.out(session, r) for r in rows])


@router.get("/privacy")
def privacy_page(request: Request, principal: OptionalPrincipalDep, settings: SettingsDep,
                 session: SessionDep) -> Response:
    versions = consent_service.list_versions(session)
    text = render_version(settings, versions, session=session)
    return render(request, "privacy.html", principal, blocks=policy_blocks(text), version=versions[0].version,
                  versions=versions, contact_email=settings.contact_email,
                  unset_settings=settings.unset_operator_settings())


HEADING = re.compile(r"^(\d+)\.(\d+)?\.? \S")
BULLET = "  • "


def policy_blocks(text: str) -> list[tuple[str, Any]]:
    """Split the policy on blank lines; numbered one-line blocks ("4.", "4.1") become headings, "  • " lines
    lists, and `a | b | c` rows (the §4.1 providers) a table whose first row is the header."""
    blocks = []
    for block in (b.strip("\n") for b in text.split("\n\n")):
        if not block.strip():
            continue
        match = HEADING.match(block)
        kind = "p"
        if match and "\n" not in block and len(block) < 100:
            kind = "h3" if match.group(2) else "h2"
        lines = block.split("\n")
        if all(line.startswith(BULLET) for line in lines):
            blocks.append(("ul", [line[len(BULLET):] for line in lines]))
            continue
        if len(lines) > 1 and all(line.count(" | ") == lines[0].count(" | ") > 0 for line in lines):
            blocks.append(("table", [line.split(" | ") for line in lines]))
            continue
        blocks.append((kind, block))
    return blocks


# ---- consent and policy (policy §3, §6, §10, §11) ----
@router.get("/privacy/consents")
def consent_centre_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep) -> Response:
    if principal is None:
        return to_login()
    return render(request, "consent_centre.html", principal,
                  **consent_centre_context(session, request, principal.user))


@router.get("/report-minor")
def report_minor_page(request: Request, principal: OptionalPrincipalDep) -> Response:
    return render(request, "report_minor.html", principal)
