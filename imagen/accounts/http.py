"""Who is asking: the login session (with its CSRF token) or the API key, and the role checks endpoints need."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from imagen.accounts.models import LoginSession, User
from imagen.accounts.service import ClientInfo, account_service
from imagen.consent.service import consent_service
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


async def get_admin(user: Annotated[User, Depends(get_current_user)]) -> User:
    if not user.is_admin:
        raise Forbidden("Administrators only")
    return user


async def get_moderator(user: Annotated[User, Depends(get_current_user)]) -> User:
    if user.role not in ("moderator", "admin"):
        raise Forbidden("Moderators only")
    return user


PrincipalDep = Annotated[Principal, Depends(get_principal)]
OptionalPrincipalDep = Annotated[Principal | None, Depends(get_optional_principal)]
CurrentUser = Annotated[User, Depends(get_current_user)]
AdminUser = Annotated[User, Depends(get_admin)]
ModeratorUser = Annotated[User, Depends(get_moderator)]
