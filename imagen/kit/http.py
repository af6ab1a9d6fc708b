"""Request-scoped plumbing: one transaction per request, who is asking, CSRF."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import MutableHeaders

from imagen.accounts.models import LoginSession, User
from imagen.accounts.service import ClientInfo, account_service
from imagen.consent.service import consent_service
from imagen.kit.config import Settings
from imagen.kit.errors import Forbidden, TooManyRequests, Unauthorized
from imagen.kit.inputs import normalize_email

SESSION_COOKIE = "imagen_session"
CSRF_COOKIE = "imagen_csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


# The address of the request being served, for code deep below the endpoints that must record it only in rare
# cases (evidence of a hash match, imagen/safety/checks.py) without every service taking it as an argument.
REQUEST_IP: ContextVar[str | None] = ContextVar("imagen_request_ip", default=None)


class RequestAddressMiddleware:
    """Pure ASGI: sets `REQUEST_IP` for the request (threadpool calls copy the context, so it reaches them)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        token = REQUEST_IP.set(client[0] if client else None)
        try:
            await self.app(scope, receive, send)
        finally:
            REQUEST_IP.reset(token)


HSTS_SECONDS = 365 * 86400


class SecurityHeadersMiddleware:
    """Pure ASGI: `nosniff` on every answer, `Cache-Control: no-store` on /api answers that set no caching of their
    own (output images do), HSTS on answers served over HTTPS. The scheme is the request's own, or the
    X-Forwarded-Proto of a trusted proxy (IMAGEN_TRUSTED_PROXIES, applied before this middleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/api/")

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if api and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                if scope.get("scheme") == "https":
                    headers["Strict-Transport-Security"] = f"max-age={HSTS_SECONDS}"
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _database_slot(request: Request) -> AsyncIterator[None]:
    # Waited for on the event loop before the session exists: a waiting request holds no thread and no
    # connection (kit/capacity.py). Released after the session has closed, before the response is sent.
    async with request.app.state.gate.slot() as slot:
        request.state.db_slot = slot  # an upload steps out of it while its body arrives (assets/endpoints.py)
        yield


def get_db_session(request: Request,
                   _slot: Annotated[None, Depends(_database_slot, scope="function")]) -> Iterator[Session]:
    # scope="function" below: commit happens before the response is sent, and after-commit
    # work is queued only for data that is really there.
    with request.app.state.db.transaction() as session:
        request.state.db_session = session  # the page layout (cookie banner, policy notice) reads through it
        yield session


SessionDep = Annotated[Session, Depends(get_db_session, scope="function")]


# Dependencies that do no I/O are async: a sync one would cost every request a trip through the worker threads.
async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


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


def _resolve_principal(request: Request, session: Session) -> Principal | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        user = account_service.api_key_user(session, auth[7:].strip())
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
        raise Unauthorized("Log in or send an API key (Authorization: Bearer …)")
    # After a material policy change, writes wait for the user's acceptance (privacy functions excepted).
    consent_service.require_policy_accepted(session, user_id=principal.user.id, method=request.method,
                                            path=request.url.path)
    return principal


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


def limit_sender(request: Request, form: str, *, email: str | None = None) -> None:
    """Per-sender limit of a public form (IMAGEN_PUBLIC_FORM_LIMIT per window): by client address, and by the email
    address given. Over it: 429 with Retry-After. Counts live in this process's memory only, for the window."""
    keys = [f"{form}:ip:{request.client.host if request.client else '-'}"]
    if email:
        keys.append(f"{form}:email:{normalize_email(email)}")
    wait = request.app.state.form_limiter.hit(*keys)
    if wait is not None:
        raise TooManyRequests(f"Too many submissions of this form from you; try again in {wait} seconds",
                              retry_after=wait)
