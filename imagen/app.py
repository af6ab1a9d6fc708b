"""The FastAPI application factory: the routers and the web surface over the services of imagen/services.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from imagen.a1111.endpoints import png_form_router
from imagen.a1111.endpoints import router as a1111_router
from imagen.accounts.admin_endpoints import router as account_admin_router
from imagen.accounts.endpoints import router as accounts_router
from imagen.accounts.security_endpoints import router as account_security_router
from imagen.assets.endpoints import router as assets_router
from imagen.billing.endpoints import router as billing_router
from imagen.billing.pages import router as billing_pages_router
from imagen.consent.endpoints import router as consent_router
from imagen.consent.service import consent_service
from imagen.generation.endpoints import router as generation_router
from imagen.generation.marketing_endpoints import router as marketing_router
from imagen.inference.runtime import Runtime
from imagen.insights.endpoints import router as insights_router
from imagen.insights.metrics import router as metrics_router
from imagen.insights.pages import router as insights_pages_router
from imagen.kit import surface
from imagen.kit.capacity import OpenStreams, RequestGate
from imagen.kit.config import Settings, get_settings
from imagen.kit.errors import ERROR_RESPONSES
from imagen.kit.http import RequestAddressMiddleware
from imagen.kit.inputs import refuse_control_characters
from imagen.mail.endpoints import router as mail_router
from imagen.notifications.endpoints import router as notifications_router
from imagen.privacy.centre import router as privacy_centre_router
from imagen.privacy.endpoints import router as privacy_router
from imagen.privacy.me_endpoints import router as privacy_me_router
from imagen.privacy.policy import render_policy
from imagen.privacy.requests.endpoints import router as privacy_requests_router
from imagen.safety.bank_endpoints import router as safety_banks_router
from imagen.safety.endpoints import router as safety_router
from imagen.safety.pages import router as safety_pages_router
from imagen.services import build_services
from imagen.web.pages import router as pages_router
from imagen.webhooks.endpoints import router as webhooks_router
from imagen.workflows.endpoints import router as workflows_router

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, run_migrations: bool = True,
               runtime: Runtime | None = None) -> FastAPI:
    settings = settings or get_settings()
    for var, what in settings.unset_operator_settings():  # production refuses these in Settings
        log.warning("%s is not set (%s): the published privacy policy shows a placeholder", var, what)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The one composition root (imagen/services.py): built here, started and stopped with the app.
        services = build_services(settings, role="web", run_migrations=run_migrations, runtime=runtime)
        # Sync endpoints and dependencies run in this many threads; as many requests do database work at once, each
        # with a connection of its own, the rest wait on the event loop (kit/capacity.py).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        app.state.gate = RequestGate(min(settings.worker_threads, settings.resolved_db_pool_size),
                                     max_wait=settings.request_queue_seconds, max_waiting=settings.request_queue_limit)
        app.state.streams = OpenStreams(settings.sse_streams_per_user)
        with services.db.transaction() as session:
            consent_service.ensure_policy_version(
                session, version=settings.policy_version, text=render_policy(settings, session=session))
        # Temp files of uploads cut off by a crash: no live upload stays silent for the idle timeout.
        services.blobs.clean_staging(settings.upload_idle_timeout_seconds)
        if services.signals is not None:
            services.signals.bind(asyncio.get_running_loop())
        app.state.services = services
        services.start()
        try:
            yield
        finally:
            services.stop()

    # Docs pages from local assets (kit/surface.py); control characters refused in every request's text.
    app = FastAPI(title="IMAGEN", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  dependencies=[Depends(refuse_control_characters)])
    app.state.settings = settings
    app.add_middleware(RequestAddressMiddleware)
    # Body limits, security headers, trusted proxies, error answers (ServiceError, 422, 503), /docs and /redoc.
    surface.install(app, settings)

    # On the event loop and without the database: it answers while every thread and connection is busy.
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for router in (accounts_router, account_security_router, assets_router, workflows_router, generation_router,
                   privacy_router,
                   account_admin_router,
                   notifications_router, privacy_centre_router, privacy_requests_router, consent_router,
                   marketing_router, privacy_me_router, safety_banks_router, safety_router, safety_pages_router,
                   webhooks_router, a1111_router, png_form_router, mail_router, insights_router, insights_pages_router,
                   metrics_router, billing_router, billing_pages_router, pages_router):
        app.include_router(router, responses=ERROR_RESPONSES)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "web" / "static"), name="static")
    return app
