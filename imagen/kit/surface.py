"""The HTTP surface every route shares: input bounds, security headers, error answers and the API docs.

`create_app` calls `install` once; the routers are included afterwards with `ERROR_RESPONSES`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import exc as sa_exc
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from imagen.kit.config import Settings
from imagen.kit.errors import ServiceError, TooManyRequests
from imagen.kit.http import SecurityHeadersMiddleware
from imagen.kit.inputs import bounded_errors
from imagen.kit.limits import BodyLimitMiddleware, SenderLimiter

log = logging.getLogger(__name__)

# Swagger UI and ReDoc from the pinned fastapi-offline distribution: the docs load nothing from a CDN.
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
DOCS_STATIC = "/static-docs"
RETRY_AFTER_SECONDS = 10


def install(app: FastAPI, settings: Settings) -> None:
    """Middleware (outermost last), exception handlers, the docs pages and the public forms' sender limiter."""
    app.add_middleware(BodyLimitMiddleware, default=settings.max_body_bytes, routes=lambda: app.router.routes)
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.trusted_proxies.strip():
        # The client address and scheme a trusted proxy forwarded (X-Forwarded-For/-Proto), for everything inside.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.state.form_limiter = SenderLimiter(settings.public_form_limit, settings.public_form_window_seconds)
    _error_handlers(app)
    _docs(app)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        headers = None
        if isinstance(exc, TooManyRequests) and exc.retry_after is not None:
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse({"detail": jsonable_encoder(bounded_errors(exc.detail))}, status_code=exc.status_code,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_encoder(bounded_errors(exc.errors()))}, status_code=422)

    def unavailable(what: str) -> Any:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            log.error("%s unavailable during %s %s: %s", what, request.method, request.url.path, exc, exc_info=exc)
            return JSONResponse({"detail": f"{what} unavailable; try again shortly"}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

        return handler

    # The blob store (a folder that is read-only, full or gone) and the database (down, restarted, pool exhausted).
    # Other database errors (integrity, data) stay 500s: they are bugs to fix, not outages.
    app.add_exception_handler(OSError, unavailable("Storage"))
    database = unavailable("Database")
    app.add_exception_handler(sa_exc.OperationalError, database)
    app.add_exception_handler(sa_exc.InterfaceError, database)
    app.add_exception_handler(sa_exc.TimeoutError, database)

    @app.exception_handler(sa_exc.DBAPIError)
    async def _dbapi_error(request: Request, exc: sa_exc.DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:  # the connection dropped mid-request
            return await database(request, exc)
        raise exc


def _docs(app: FastAPI) -> None:
    app.mount(DOCS_STATIC, StaticFiles(directory=DOCS_ASSETS), name="docs-static")
    favicon = f"{DOCS_STATIC}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=favicon, swagger_ui_parameters={"validatorUrl": None})

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
                              redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js", redoc_favicon_url=favicon,
                              with_google_fonts=False)
