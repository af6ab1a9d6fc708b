"""Who is asking: the login session (with its CSRF token) or the API key, and the role checks endpoints need."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from imagen.accounts.models import LoginSession, TotpCredential, User
from imagen.accounts.service import ClientInfo, account_service
from imagen.consent.service import consent_service
from imagen.kit.config import Settings
from imagen.kit.errors import Forbidden, Unauthorized
from imagen.kit.http import CSRF_HEADER, SESSION_COOKIE, UNSAFE_METHODS, SessionDep


async def get_client_info(request: Request) -> ClientInfo:
    return ClientInfo(
        ip_address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


ClientDep = Annotated[ClientInfo, Depends(get_client_info)]


@dataclass(frozen=True)
class Principal:
    user: User
    via: str  # "session" | "api_key"
    login_session: LoginSession | None = None


def _basic_password(value: str) -> str:
    """The password of an HTTP Basic header (A1111 clients send the API key there, with any user name)."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise Unauthorized("Malformed Basic credentials") from None
    return decoded.partition(":")[2]


def _resolve_principal(request: Request, session: Session) -> Principal | None:
    auth = request.headers.get("authorization", "")
    scheme = auth[:7].lower()
    if scheme == "bearer " or scheme.startswith("basic "):
        key = auth[7:].strip() if scheme == "bearer " else _basic_password(auth[6:])
        user = account_service.api_key_user(session, key) if key else None
        if user is None:
            raise Unauthorized("Invalid API key")
        return Principal(user=user, via="api_key")
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        found = account_service.session_user(session, token)
        if found is not None:
            login, user = found
            if request.method in UNSAFE_METHODS and request.headers.get(CSRF_HEADER) != login.csrf_token:
                raise Forbidden(f"Missing or invalid {CSRF_HEADER} header")
            return Principal(user=user, via="session", login_session=login)
    return None


def get_principal(request: Request, session: SessionDep) -> Principal:
    principal = _resolve_principal(request, session)
    if principal is None:
        raise Unauthorized("Log in or send an API key (Authorization: Bearer …, or Basic with the key as the "
                           "password)")
    # After a material policy change, writes wait for the user's acceptance (privacy functions excepted).
    consent_service.require_policy_accepted(session, user_id=principal.user.id, method=request.method,
                                            path=request.url.path)
    return principal


def authenticate(request: Request, session: Session) -> User:
    """`get_principal` for an endpoint that opens its own transactions (one that waits long without holding a
    connection: imagen/a1111)."""
    return get_principal(request, session).user


def get_optional_principal(request: Request, session: SessionDep) -> Principal | None:
    return _resolve_principal(request, session)


async def get_current_user(principal: Annotated[Principal, Depends(get_principal)]) -> User:
    return principal.user


STAFF_ROLES = ("moderator", "admin")


def require_verified_email(settings: Settings, user: User) -> None:
    """Generation and uploads wait for a verified address when IMAGEN_REQUIRE_EMAIL_VERIFICATION is on."""
    if settings.email_verification_required and user.email_verified_at is None:
        raise Forbidden("Confirm your email address first: open the link we emailed you (a new one: POST "
                        "/api/v1/me/verify-email, or the button on your account page)")


def require_staff_2fa(settings: Settings, session: Session, user: User) -> None:
    """With IMAGEN_REQUIRE_STAFF_2FA, moderator and admin powers wait for TOTP two-factor sign-in."""
    if not settings.require_staff_2fa or user.role not in STAFF_ROLES:
        return
    cred = session.get(TotpCredential, user.id)
    if cred is None or cred.confirmed_at is None:
        raise Forbidden("Moderators and administrators must turn on two-factor authentication first (your account "
                        "page, or POST /api/v1/me/2fa/setup)")


def get_verified_user(request: Request, user: Annotated[User, Depends(get_current_user)]) -> User:
    require_verified_email(request.app.state.settings, user)
    return user


def get_admin(request: Request, session: SessionDep, user: Annotated[User, Depends(get_current_user)]) -> User:
    if not user.is_admin:
        raise Forbidden("Administrators only")
    require_staff_2fa(request.app.state.settings, session, user)
    return user


def get_moderator(request: Request, session: SessionDep, user: Annotated[User, Depends(get_current_user)]) -> User:
    if user.role not in STAFF_ROLES:
        raise Forbidden("Moderators only")
    require_staff_2fa(request.app.state.settings, session, user)
    return user


PrincipalDep = Annotated[Principal, Depends(get_principal)]
OptionalPrincipalDep = Annotated[Principal | None, Depends(get_optional_principal)]
CurrentUser = Annotated[User, Depends(get_current_user)]
VerifiedUser = Annotated[User, Depends(get_verified_user)]
AdminUser = Annotated[User, Depends(get_admin)]
ModeratorUser = Annotated[User, Depends(get_moderator)]
