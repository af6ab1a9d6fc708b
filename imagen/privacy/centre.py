"""Pages: the privacy centre for users (/privacy/centre) and the admin records pages (breaches, legal requests).

Pages only read; every write goes through the JSON API (the records API is included in this router, so the
app mounts one router for both).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from imagen.accounts.http import OptionalPrincipalDep
from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.kit.http import SessionDep, SettingsDep
from imagen.privacy.datamap import DATA_MAP
from imagen.privacy.records import holdings
from imagen.privacy.records.endpoints import router as records_api
from imagen.privacy.records.models import SEVERITIES
from imagen.privacy.records.service import records_service
from imagen.web.pages import not_found_page, render, to_login

# The pages stay out of /openapi.json; the records API they sit beside is in it (an inclusion can't re-include
# what its router leaves out, so the two are siblings).
pages = APIRouter(include_in_schema=False)
router = APIRouter()

DECISION_LABELS = {"pending": "Pending", "complied": "Complied", "partially_complied": "Partially complied",
                   "refused": "Refused"}


def retention_rows(settings: Settings) -> list[tuple[str, str]]:
    """Every retention period and legal hold the data map declares, with the configured values (entries the law
    lets us withhold are left out, as in the holdings)."""
    rows = [(i.category[:1].upper() + i.category[1:], holdings.period_text(i.retention, settings))
            for i in DATA_MAP if not i.withheld and i.collected and (i.period or i.hold or not i.table)]
    return list(dict.fromkeys(rows))


@pages.get("/privacy/centre")
def privacy_centre(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                   settings: SettingsDep) -> Response:
    if principal is None:
        return to_login()
    items = holdings.holdings(settings)
    counts = holdings.counts(session, items, principal.user.id)
    rows = [{"category": h.category, "description": h.description, "count": counts.get(h.category, 0),
             "where": list(h.where), "retention": h.retention, "collected": h.collected} for h in items]
    return render(request, "privacy_centre.html", principal, rows=rows,
                  retention=retention_rows(settings), contact_email=settings.contact_email,
                  response_days=settings.privacy_response_days)


def _hours(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f} h left" if value >= 0 else f"{-value:.1f} h overdue"


@pages.get("/admin/breaches")
def admin_breaches(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                   settings: SettingsDep) -> Response:
    if principal is None:
        return to_login()
    if not principal.user.is_admin:
        return not_found_page()
    breaches: list[dict[str, Any]] = []
    for b in records_service.list_breaches(session):
        deadline, passed, hours_left = records_service.deadline_status(b, settings)
        breaches.append({"b": b, "deadline": deadline, "passed": passed, "hours": _hours(hours_left),
                         "notified": records_service.notified_count(session, b.id)})
    items = holdings.holdings(settings)
    return render(request, "admin_breaches.html", principal, breaches=breaches, severities=SEVERITIES,
                  categories=holdings.category_names(items), hours=settings.breach_regulator_hours,
                  now=_local_input(utcnow()))


@pages.get("/admin/legal-requests")
def admin_legal_requests(request: Request, principal: OptionalPrincipalDep, session: SessionDep) -> Response:
    if principal is None:
        return to_login()
    if not principal.user.is_admin:
        return not_found_page()
    requests = [{"r": r, "users": records_service.legal_request_user_ids(session, r.id)}
                for r in records_service.list_legal_requests(session)]
    transfers = records_service.list_transfers(session)
    return render(request, "admin_legal_requests.html", principal, requests=requests, decisions=DECISION_LABELS,
                  transfers=transfers, now=_local_input(utcnow()))


def _local_input(value: datetime) -> str:
    """A UTC time for a datetime-local input (the page sends it back with a Z)."""
    return value.strftime("%Y-%m-%dT%H:%M")


router.include_router(records_api)
router.include_router(pages)
