"""Cookies and analytics consent (policy §6).

Only essential, first-party cookies are ever set: the session and CSRF cookies (at login) and the cookie that
remembers the visitor's choice about analytics. Analytics is allowed only when the visitor accepted it (the
account's `analytics` consent record for logged-in users, else the choice cookie) and the browser does not send
Global Privacy Control (`Sec-GPC: 1`), which always wins and is recorded once as a withdrawal for logged-in users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request, Response
from sqlalchemy.orm import Session

from imagen.consent.service import consent_service, parse_defaults
from imagen.kit.config import Settings

if TYPE_CHECKING:
    from imagen.accounts.http import Principal
    from imagen.accounts.models import User

CONSENT_COOKIE = "imagen_cookie_consent"
ACCEPTED, DECLINED = "accepted", "declined"


@dataclass(frozen=True)
class CookieInfo:
    name: str
    category: str  # "essential" | "analytics"
    purpose: str
    lifetime: str


def cookie_registry(settings: Settings) -> list[CookieInfo]:
    """Every cookie this service can set; the policy's §6 and the consent centre list them from here."""
    days = settings.session_days
    return [
        CookieInfo("imagen_session", "essential", "keeps you logged in (HttpOnly; sent only to this site)",
                   f"until you log out, at most {days} days"),
        CookieInfo("imagen_csrf", "essential", "protects your actions against cross-site request forgery",
                   f"until you log out, at most {days} days"),
        CookieInfo(CONSENT_COOKIE, "essential", "remembers whether you accepted or declined analytics",
                   f"{settings.cookie_consent_days} days"),
    ]


def gpc(request: Request) -> bool:
    """Global Privacy Control: the browser's standing opt-out."""
    return request.headers.get("sec-gpc", "").strip() == "1"


def cookie_choice(request: Request) -> bool | None:
    value = request.cookies.get(CONSENT_COOKIE)
    return True if value == ACCEPTED else False if value == DECLINED else None


def set_choice_cookie(response: Response, *, analytics: bool, settings: Settings) -> None:
    response.set_cookie(CONSENT_COOKIE, ACCEPTED if analytics else DECLINED,
                        max_age=settings.cookie_consent_days * 86400, httponly=True,
                        secure=settings.cookie_secure, samesite="lax", path="/")


@dataclass(frozen=True)
class AnalyticsState:
    allowed: bool
    gpc: bool
    cookie_choice: bool | None
    account_choice: bool | None  # None: anonymous, or no analytics record yet
    show_banner: bool


def analytics_state(session: Session | None, request: Request, user: User | None, *,
                    record_gpc: bool = True) -> AnalyticsState:
    """Whether analytics may run for this request, and whether to ask (the cookie banner)."""
    settings: Settings = request.app.state.settings
    sends_gpc, cookie = gpc(request), cookie_choice(request)
    account: bool | None = None
    default = False
    if user is not None and session is not None:
        row = consent_service.current(session, user_id=user.id).get("analytics")
        account = row.granted if row is not None else None
        default = consent_service.default_for(country=user.country, purpose="analytics",
                                              elsewhere=parse_defaults(settings.consent_defaults_elsewhere))
        if sends_gpc and record_gpc and (row is None or row.granted):
            consent_service.record(session, user_id=user.id, purpose="analytics", granted=False,
                                   policy_version=consent_service.current_version(session).version, source="gpc")
            account = False
    if sends_gpc:
        allowed = False
    elif account is not None:
        allowed = account
    elif cookie is not None:
        allowed = cookie
    else:
        allowed = default
    banner = not sends_gpc and cookie is None and account is None
    return AnalyticsState(allowed, sends_gpc, cookie, account, banner)


def analytics_allowed(request: Request, principal: Principal | None, session: Session | None = None) -> bool:
    """The gate for analytics code: False under GPC or without consent.

    It reads (and records a GPC withdrawal) through `session`, else the request's own transaction, else a
    short one of its own.
    """
    user = principal.user if principal else None
    if user is None:
        return analytics_state(None, request, None).allowed
    session = session or getattr(request.state, "db_session", None)
    if session is not None:
        return analytics_state(session, request, user).allowed
    with request.app.state.services.db.transaction() as own:
        return analytics_state(own, request, own.get(type(user), user.id)).allowed
