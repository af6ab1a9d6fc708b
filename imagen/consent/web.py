"""Consent on the web pages: what every page needs (the analytics flag, the cookie banner, the changed-policy
notice) and the consent centre's content."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy.orm import Session

from imagen.consent.cookies import analytics_state, cookie_registry
from imagen.consent.service import consent_service, explicit_opt_in, parse_defaults

if TYPE_CHECKING:
    from imagen.accounts.http import Principal
    from imagen.accounts.models import User


def page_context(request: Request, principal: Principal | None) -> dict[str, Any]:
    """`analytics_allowed` (the flag later analytics code reads), `cookie_banner`, `policy_notice`."""
    if principal is None:
        state = analytics_state(None, request, None)
        return {"analytics_allowed": state.allowed, "cookie_banner": state.show_banner, "policy_notice": None}
    # The page's own transaction (a second one could wait on the first's write lock with SQLite).
    session: Session | None = getattr(request.state, "db_session", None)
    if session is None:
        with request.app.state.services.db.transaction() as own:
            return _logged_in_context(own, request, own.get(type(principal.user), principal.user.id))
    return _logged_in_context(session, request, principal.user)


def _logged_in_context(session: Session, request: Request, user: User) -> dict[str, Any]:
    state = analytics_state(session, request, user)
    status = consent_service.policy_status(session, user_id=user.id)
    notice = None
    if status.acceptance_required:
        current = status.current
        notice = {"version": current.version, "summary": current.summary, "published_at": current.published_at}
    return {"analytics_allowed": state.allowed, "cookie_banner": state.show_banner, "policy_notice": notice}


@dataclass(frozen=True)
class PurposeText:
    purpose: str
    title: str
    explanation: str


PURPOSE_TEXTS = (
    PurposeText("model_improvement", "Model improvement",
                "Use anonymized, aggregated signals from your generations (parameters, quality and performance "
                "measures) to improve the service and its models (policy §3). Never your uploaded files or "
                "reference images. Generations you make while this is off are never used; turning it off applies from "
                "your next generation, and what was derived before carries no link to you."),
    PurposeText("marketing_emails", "Marketing emails",
                "Occasional emails about new features and offers. Service emails (security, policy changes, "
                "your requests) are sent either way."),
    PurposeText("analytics", "Analytics",
                "Pseudonymous product analytics that help us see which features are used (policy §6). Off while "
                "your browser sends Global Privacy Control."),
)
TITLES = {p.purpose: p.title for p in PURPOSE_TEXTS} | {"policy_acceptance": "Privacy policy"}
SOURCES = {
    "signup": "your choice at sign-up", "signup_default": "default at sign-up",
    "consent_centre": "consent centre", "api": "API", "cookie_banner": "cookie banner",
    "gpc": "Global Privacy Control", "re_acceptance": "accepted after a change",
    "admin_cli": "account created by an operator",
}


def consent_centre_context(session: Session, request: Request, user: User) -> dict[str, Any]:
    from imagen.generation.marketing import marketing_service

    settings = request.app.state.settings
    state = analytics_state(session, request, user)
    return {
        "purposes": PURPOSE_TEXTS, "titles": TITLES, "sources": SOURCES,
        "choices": consent_service.choices(session, user_id=user.id, country=user.country,
                                           elsewhere=parse_defaults(settings.consent_defaults_elsewhere)),
        "history": list(reversed(consent_service.history(session, user_id=user.id))),
        "country": user.country, "explicit_opt_in": explicit_opt_in(user.country), "gpc": state.gpc,
        "policy": consent_service.policy_status(session, user_id=user.id),
        "cookies": cookie_registry(settings), "marketing": marketing_service.for_user(session, user_id=user.id),
    }
