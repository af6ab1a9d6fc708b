"""Request-scoped plumbing: one transaction per request, the client's address, security headers, form limits.

Who is asking (sessions, API keys, CSRF, roles) is the accounts domain's: imagen/accounts/http.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import MutableHeaders

from imagen.kit.config import Settings
from imagen.kit.errors import TooManyRequests
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
    with request.app.state.services.db.transaction() as session:
        request.state.db_session = session  # the page layout (cookie banner, policy notice) reads through it
        yield session


SessionDep = Annotated[Session, Depends(get_db_session, scope="function")]


# Dependencies that do no I/O are async: a sync one would cost every request a trip through the worker threads.
async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_services(request: Request) -> Any:
    """The app's services (imagen/services.py, built once by `create_app`); typed loosely: kit sits below it."""
    return request.app.state.services


ServicesDep = Annotated[Any, Depends(get_services)]


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
