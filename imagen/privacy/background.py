"""Where exports are built and erasures carried out: a small thread pool next to the app (the embedded default).

The work itself is two plain functions that take IDs and are safe to run twice (`exports.build_export`,
`erasure.erase_user`); a Celery task can call them as they are. Services find the running app's context through
the session's engine (`context_for`), so callers (endpoints, privacy requests, the CLI) need not pass it; without
one (the CLI) work stays pending and `imagen privacy erase-due` or the next server start picks it up.

The server also runs `tick` every `privacy_jobs_interval_seconds`: due erasures, pending exports left by a
restart, expired export files and ended legal holds, and automatic NCMEC reports still due (imagen/safety).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from imagen.kit.config import Settings
from imagen.kit.db import Database, utcnow
from imagen.storage import BlobStore

log = logging.getLogger(__name__)

STALE = timedelta(hours=1)  # pending/in-progress work older than this is taken as interrupted


@dataclass
class PrivacyContext:
    db: Database
    blobs: BlobStore
    settings: Settings
    executor: Any | None = None  # the generation executor (cancel running jobs)
    pool: ThreadPoolExecutor | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


_CONTEXTS: dict[Any, PrivacyContext] = {}
_LOCK = threading.Lock()


def context_for(session: Session) -> PrivacyContext | None:
    bind = session.get_bind()
    return _CONTEXTS.get(getattr(bind, "engine", bind))


def _logged(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception:
        log.exception("privacy job %s failed; it is safe to run again", getattr(fn, "__name__", fn))
        return None


def submit(ctx: PrivacyContext, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future | None:
    """Run `fn` in the context's pool (after the caller's commit: use with run_after_commit)."""
    if ctx.pool is None or ctx.stopping.is_set():
        return None
    return ctx.pool.submit(_logged, fn, *args, **kwargs)


def start(db: Database, blobs: BlobStore, settings: Settings, executor: Any | None = None) -> PrivacyContext:
    ctx = PrivacyContext(db, blobs, settings, executor,
                         pool=ThreadPoolExecutor(max_workers=2, thread_name_prefix="imagen-privacy"))
    with _LOCK:
        _CONTEXTS[db.engine] = ctx
    submit(ctx, resume, ctx)  # work a restart interrupted
    if settings.privacy_jobs_interval_seconds > 0:
        ctx.thread = threading.Thread(target=_loop, args=(ctx,), name="imagen-privacy-tick", daemon=True)
        ctx.thread.start()
    return ctx


def stop(ctx: PrivacyContext) -> None:
    ctx.stopping.set()
    if ctx.thread is not None:
        ctx.thread.join(30)
    if ctx.pool is not None:
        ctx.pool.shutdown(wait=True, cancel_futures=True)
    with _LOCK:
        if _CONTEXTS.get(ctx.db.engine) is ctx:
            del _CONTEXTS[ctx.db.engine]


def _loop(ctx: PrivacyContext) -> None:
    while not ctx.stopping.wait(ctx.settings.privacy_jobs_interval_seconds):
        _logged(tick, ctx)


def resume(ctx: PrivacyContext, stale: timedelta | None = None) -> None:
    """Exports still pending and erasures already started (a restart interrupted them; with `stale`, only work
    older than that, so a scheduled pass does not redo what the pool is doing now)."""
    from imagen.privacy.erasure import erase_user, erasure_service
    from imagen.privacy.exports import build_export, export_service

    before = utcnow() - stale if stale is not None else None
    with ctx.db.transaction() as session:
        exports = export_service.pending_ids(session, created_before=before)
        erasures = erasure_service.due_user_ids(session, only_started=True, started_before=before)
    for export_id in exports:
        _logged(build_export, ctx.db, ctx.blobs, export_id, expiry_days=ctx.settings.export_expiry_days)
    for user_id in erasures:
        _logged(erase_user, ctx.db, ctx.blobs, ctx.executor, user_id, settings=ctx.settings)


def tick(ctx: PrivacyContext) -> dict[str, int]:
    """One scheduled pass; each part is idempotent."""
    from imagen.privacy.erasure import erase_due
    from imagen.privacy.exports import export_service

    resume(ctx, STALE)
    erased = erase_due(ctx.db, ctx.blobs, ctx.executor, settings=ctx.settings, started_before=utcnow() - STALE)
    with ctx.db.transaction() as session:
        # Expired links lose their file within minutes, not at the daily retention run (which purges the rest).
        expired = export_service.purge_expired(session, blobs=ctx.blobs)
    reported = _logged(_retry_automatic_reports, ctx) or []
    return {"erased": len(erased), "expired_exports": expired, "ncmec_reports": len(reported)}


def _retry_automatic_reports(ctx: PrivacyContext) -> list[str]:
    """NCMEC reports the after-commit job did not complete (only when the operator turned confirmation off)."""
    from imagen.safety.checks import context_for_db
    from imagen.safety.service import retry_automatic_reports

    safety = context_for_db(ctx.db)  # the app's quarantine: its key is read once, at start-up
    return retry_automatic_reports(ctx.db, safety.quarantine, ctx.settings) if safety else []
