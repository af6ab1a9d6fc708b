"""Pages: the moderation queue and a case's evidence and audit log (moderators and admins), hash banks (admins).

Pages only read; every action, toggle and import goes through the JSON API from moderation.js. Evidence images
are never shown here: moderators must not view suspected CSAM, so a case shows hashes and facts only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from imagen.accounts.http import OptionalPrincipalDep, Principal
from imagen.accounts.models import User
from imagen.kit.errors import NotFound
from imagen.kit.http import SessionDep
from imagen.safety.bank_models import HASH_TYPES
from imagen.safety.banks import hash_bank_service
from imagen.safety.models import CASE_KINDS, CASE_STATUSES, SafetyCase
from imagen.safety.service import case_service
from imagen.web.pages import not_found_page, render, to_login

router = APIRouter(include_in_schema=False)

MODERATOR_ROLES = ("moderator", "admin")
# (action, button label, confirm first): "report" sends evidence to NCMEC and "remove" deletes outputs.
CASE_BUTTONS = (("dismiss", "Dismiss", False), ("remove", "Remove content", True),
                ("suspend", "Suspend account", False), ("restore", "Restore account", False),
                ("escalate", "Escalate (note: the immediate risk)", False), ("report", "Report to NCMEC", True),
                ("preserve", "Extend hold", False))


def _refusal(principal: Principal | None, roles: tuple[str, ...]) -> Response | None:
    """Signed out: to the login page; signed in without the role: a 404, so the page's existence stays quiet."""
    if principal is None:
        return to_login()
    if principal.user.role not in roles:
        return not_found_page()
    return None


def account_states(session: Session, user_ids: set[str]) -> dict[str, str]:
    """"active" or "suspended" for each account that still exists; erased accounts are missing."""
    if not user_ids:
        return {}
    rows = session.execute(select(User.id, User.suspended_at).where(User.id.in_(user_ids)))
    return {uid: ("suspended" if suspended else "active") for uid, suspended in rows}


def account_label(case: SafetyCase, states: dict[str, str]) -> str:
    if not case.user_email and not case.user_id:
        return "erased"
    label = case.user_email or case.user_id or ""
    return label if case.user_id in states else f"{label} (erased)"


QUEUE_PAGE = 100


@router.get("/admin/cases")
def admin_cases(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                status: str = "open", kind: str = "", before: str = "") -> Response:
    if (refused := _refusal(principal, MODERATOR_ROLES)) is not None:
        return refused
    status = status if status == "all" or status in CASE_STATUSES else "open"
    kind = kind if kind in CASE_KINDS else ""
    if before and session.get(SafetyCase, before) is None:  # a stale link to a purged case: start from the newest
        before = ""
    cases = case_service.list(session, status=None if status == "all" else status, kind=kind or None,
                              limit=QUEUE_PAGE, before=before or None)
    states = account_states(session, {c.user_id for c in cases if c.user_id})
    rows = [{"c": c, "account": account_label(c, states)} for c in cases]
    older = urlencode({"status": status, "kind": kind, "before": cases[-1].id}) \
        if len(cases) == QUEUE_PAGE else None
    return render(request, "admin_cases.html", principal, rows=rows, status=status, kind=kind,
                  statuses=CASE_STATUSES, kinds=CASE_KINDS, older=older, paged=bool(before))


def evidence_rows(case: SafetyCase) -> list[dict[str, Any]]:
    rows = []
    for e in case.evidence:
        match = dict(e.match or {})
        rows.append({"e": e, "quarantined": e.quarantine_blob_key is not None,
                     "bank_name": match.pop("bank_name", None), "hash_type": match.pop("hash_type", None),
                     "distance": match.pop("distance", None), "matched_value": match.pop("matched_value", None),
                     "other_match": {k: v for k, v in match.items() if k != "bank_id"}})
    return rows


@router.get("/admin/cases/{case_id}")
def admin_case(case_id: str, request: Request, principal: OptionalPrincipalDep, session: SessionDep) -> Response:
    if (refused := _refusal(principal, MODERATOR_ROLES)) is not None:
        return refused
    try:
        case = case_service.get(session, case_id=case_id)
    except NotFound:
        return not_found_page()
    states = account_states(session, {case.user_id} if case.user_id else set())
    return render(request, "admin_case.html", principal, case=case, account=account_label(case, states),
                  account_state=states.get(case.user_id or "", "erased"), evidence=evidence_rows(case),
                  buttons=CASE_BUTTONS)


USERS_PAGE = 100


@router.get("/admin/users")
def admin_users(request: Request, principal: OptionalPrincipalDep, session: SessionDep, q: str = "",
                after: str = "") -> Response:
    """Accounts and their roles (admins): who may moderate; suspended accounts are marked."""
    from imagen.accounts.service import account_service
    from imagen.safety.service import ROLES

    if (refused := _refusal(principal, ("admin",))) is not None:
        return refused
    users = account_service.list_users(session, email_contains=q, after_email=after, limit=USERS_PAGE)
    more = urlencode({"q": q, "after": users[-1].email}) if len(users) == USERS_PAGE else None
    return render(request, "admin_users.html", principal, users=users, q=q, roles=ROLES, more=more,
                  me=principal.user.id)


@router.get("/admin/hash-banks")
def admin_hash_banks(request: Request, principal: OptionalPrincipalDep, session: SessionDep) -> Response:
    if (refused := _refusal(principal, ("admin",))) is not None:
        return refused
    return render(request, "admin_hash_banks.html", principal, banks=hash_bank_service.list(session),
                  hash_types=HASH_TYPES)
