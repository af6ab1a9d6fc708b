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

from imagen.accounts.service import MINIMUM_AGE
from imagen.generation.service import generation_service
from imagen.kit.http import OptionalPrincipalDep, Principal, SessionDep, SettingsDep
from imagen.privacy.policy import render_policy

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

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


templates.env.filters["number"] = _number
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True


def render(request: Request, name: str, principal: Principal | None, **context: Any) -> HTMLResponse:
    context["user"] = principal.user if principal else None
    return templates.TemplateResponse(request, name, context, headers=PAGE_HEADERS)


def to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


@router.get("/")
def home(request: Request, principal: OptionalPrincipalDep) -> Response:
    if principal is not None:
        return RedirectResponse("/generate", status_code=303)
    return render(request, "index.html", None, minimum_age=MINIMUM_AGE)


@router.get("/signup")
def signup_page(request: Request, principal: OptionalPrincipalDep, settings: SettingsDep) -> Response:
    if principal is not None:
        return RedirectResponse("/generate", status_code=303)
    countries = sorted(pycountry.countries, key=lambda c: c.name)
    return render(request, "signup.html", None, countries=countries, policy_version=settings.policy_version,
                  minimum_age=MINIMUM_AGE, today=date.today().isoformat())


@router.get("/login")
def login_page(request: Request, principal: OptionalPrincipalDep) -> Response:
    if principal is not None:
        return RedirectResponse("/generate", status_code=303)
    return render(request, "login.html", None)


@router.get("/generate")
def generate_page(request: Request, principal: OptionalPrincipalDep, workflow: str | None = None) -> Response:
    if principal is None:
        return to_login()
    workflows = request.app.state.library.list()
    by_name = {w.name: w for w in workflows}
    selected = by_name.get(workflow or "") or by_name.get("txt2img") or workflows[0]
    checkpoints = [c.name for c in request.app.state.runtime.checkpoints.list()]
    return render(request, "generate.html", principal, workflows=workflows, workflow=selected,
                  checkpoints=checkpoints)


@router.get("/gallery")
def gallery_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep) -> Response:
    if principal is None:
        return to_login()
    outputs = generation_service.list_outputs(session, user=principal.user)
    return render(request, "gallery.html", principal, outputs=outputs)


@router.get("/privacy")
def privacy_page(request: Request, principal: OptionalPrincipalDep, settings: SettingsDep) -> Response:
    return render(request, "privacy.html", principal, blocks=policy_blocks(render_policy(settings)),
                  version=settings.policy_version, contact_email=settings.contact_email)


HEADING = re.compile(r"^(\d+)\.(\d+)?\.? \S")


def policy_blocks(text: str) -> list[tuple[str, str]]:
    """Split the policy on blank lines; numbered one-line blocks ("4.", "4.1") become headings."""
    blocks = []
    for block in (b.strip("\n") for b in text.split("\n\n")):
        if not block.strip():
            continue
        match = HEADING.match(block)
        kind = "p"
        if match and "\n" not in block and len(block) < 100:
            kind = "h3" if match.group(2) else "h2"
        blocks.append((kind, block))
    return blocks
