"""The public request form (/privacy/request) and the operator's queue (/admin/privacy-requests)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from imagen.accounts.http import OptionalPrincipalDep
from imagen.kit.http import SessionDep, SettingsDep
from imagen.privacy.requests.service import QUEUE_FILTERS, TRANSITIONS, deadline, privacy_request_service
from imagen.web.pages import render, to_login

router = APIRouter(include_in_schema=False)

KIND_CHOICES = (
    ("access", "Access: a copy of the personal data IMAGEN holds about me"),
    ("deletion", "Deletion: erase my account and personal data"),
    ("correction", "Correction: fix data that is wrong or incomplete"),
    ("restriction", "Restriction: limit how my data is processed"),
    ("objection", "Objection: stop a particular use of my data"),
    ("opt_out", "Opt-out: of sale, sharing or marketing"),
)
STATUS_LABELS = {
    "received": "received", "identity_unverified": "identity unverified", "pending": "pending (verified)",
    "in_progress": "in progress", "completed": "completed", "denied": "denied", "extended": "extended",
    "canceled": "canceled",
}


@router.get("/privacy/request")
def request_page(request: Request, principal: OptionalPrincipalDep, settings: SettingsDep,
                 id: str | None = None) -> Response:
    return render(request, "privacy_request.html", principal, kinds=KIND_CHOICES, request_id=id,
                  response_days=settings.privacy_response_days, contact_email=settings.contact_email,
                  code_hours=settings.privacy_code_ttl_hours, mail_sent=settings.mail_delivered)


@router.get("/admin/privacy-requests")
def admin_queue_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                     settings: SettingsDep, status: str = "open") -> Response:
    if principal is None:
        return to_login()
    if not principal.user.is_admin:
        response = render(request, "admin_privacy_requests.html", principal, forbidden=True)
        response.status_code = 403
        return response
    status = status if status in QUEUE_FILTERS else "open"
    rows = []
    for req in privacy_request_service.queue(session, status=status):
        latest = req.received_at + timedelta(days=settings.privacy_max_response_days)
        rows.append({"req": req, "due": deadline(req, settings), "allowed": TRANSITIONS[req.status],
                     "extend_room": max((latest - req.due_at).days, 0)})
    return render(request, "admin_privacy_requests.html", principal, rows=rows, filter=status,
                  filters=("open", "closed", "all"), kinds=KIND_CHOICES, labels=STATUS_LABELS,
                  overdue=sum(r["due"].overdue for r in rows), due_soon=sum(r["due"].due_soon for r in rows),
                  due_soon_days=settings.privacy_due_soon_days, max_days=settings.privacy_max_response_days)
