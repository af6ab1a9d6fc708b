"""/metrics in the Prometheus text format, from a registry of this app's own (held by the services container, never
prometheus-client's global one, so several apps in one process do not collide).

At each scrape the numbers are brought up to date from the database, which every process shares: the queue (each
generation state), the running jobs (a busy worker each), the job latencies and model-cache results of every job
that finished since the last scrape (histograms and counters that only grow, as Prometheus expects), safety cases by
kind, and open privacy requests due soon or overdue. Upload refusals are counted by the web process that refused
them. Access: `Authorization: Bearer IMAGEN_METRICS_TOKEN`, or a client address in IMAGEN_METRICS_ALLOW; without
either configured the endpoint does not exist (404).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from imagen.generation.models import Generation
from imagen.kit.db import utcnow
from imagen.kit.http import ServicesDep, SessionDep
from imagen.privacy.requests.models import CLOSED_STATUSES, PrivacyRequest
from imagen.safety.models import CASE_KINDS, SafetyCase

STATES = ("queued", "running", "succeeded", "failed", "canceled")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
SCRAPE_BATCH = 5000  # finished jobs read per scrape at most; the rest come with the next one


class ServiceMetrics:
    def __init__(self, *, clock: Callable[[], datetime] = utcnow, soon_days: int = 7) -> None:
        self.clock, self.soon_days = clock, soon_days
        self.registry = CollectorRegistry()
        r = self.registry
        self.generations = Gauge("imagen_generations", "Generations by state (queued and running: the queue)",
                                 ["state"], registry=r)
        self.busy = Gauge("imagen_workers_busy", "Workers busy: generations running now", registry=r)
        self.job_seconds = Histogram("imagen_job_seconds", "Job latency by phase (queue_wait, run, load, inference)",
                                     ["phase"], buckets=LATENCY_BUCKETS, registry=r)
        self.jobs_finished = Counter("imagen_jobs_finished", "Jobs that reached a final state, by state", ["state"],
                                     registry=r)
        self.model_cache = Counter("imagen_model_cache", "Checkpoint lookups of finished jobs: hit (already loaded) "
                                   "or load", ["result"], registry=r)
        self.upload_refusals = Counter("imagen_upload_refusals", "Uploads refused, by reason", ["reason"],
                                       registry=r)
        self.safety_matches = Gauge("imagen_safety_matches", "Safety cases by kind (hash_match: a hash bank matched)",
                                    ["kind"], registry=r)
        self.privacy_due = Gauge("imagen_privacy_requests_due", "Open privacy requests: due within the warning "
                                 "period (soon) or past their deadline (overdue)", ["when"], registry=r)
        for state in ("succeeded", "failed", "canceled"):  # every series present from the first scrape
            self.jobs_finished.labels(state)
        for result in ("hit", "load"):
            self.model_cache.labels(result)
        # Counting starts with this process: jobs that finished before it are not observed.
        self._mark: tuple[datetime, str] = (clock(), "")

    def upload_refused(self, reason: str) -> None:
        self.upload_refusals.labels(reason).inc()

    def refresh(self, session: Session) -> None:
        now = self.clock()
        counts = dict(session.execute(select(Generation.status, func.count()).group_by(Generation.status)).all())
        for state in STATES:
            self.generations.labels(state).set(counts.get(state, 0))
        self.busy.set(counts.get("running", 0))
        kinds = dict(session.execute(select(SafetyCase.kind, func.count()).group_by(SafetyCase.kind)).all())
        for kind in CASE_KINDS:
            self.safety_matches.labels(kind).set(kinds.get(kind, 0))
        open_request = PrivacyRequest.status.not_in(CLOSED_STATUSES)
        due = select(func.count()).select_from(PrivacyRequest).where(open_request)
        self.privacy_due.labels("soon").set(session.scalar(
            due.where(PrivacyRequest.due_at <= now + timedelta(days=self.soon_days))) or 0)
        self.privacy_due.labels("overdue").set(session.scalar(due.where(PrivacyRequest.due_at < now)) or 0)
        self._observe_finished(session)

    def _observe_finished(self, session: Session) -> None:
        at, last_id = self._mark
        rows = session.execute(
            select(Generation.id, Generation.status, Generation.created_at, Generation.started_at,
                   Generation.finished_at, Generation.signals)
            .where(Generation.finished_at.is_not(None),
                   or_(Generation.finished_at > at, and_(Generation.finished_at == at, Generation.id > last_id)))
            .order_by(Generation.finished_at, Generation.id).limit(SCRAPE_BATCH)).all()
        for row in rows:
            self.jobs_finished.labels(row.status).inc()
            if row.started_at is not None:
                self.job_seconds.labels("queue_wait").observe(max(0.0, (row.started_at - row.created_at)
                                                                  .total_seconds()))
                self.job_seconds.labels("run").observe(max(0.0, (row.finished_at - row.started_at).total_seconds()))
            signals: dict[str, Any] = row.signals or {}
            for phase in ("load", "inference"):
                value = signals.get(f"{phase}_seconds")
                if isinstance(value, (int, float)) and value >= 0:
                    self.job_seconds.labels(phase).observe(float(value))
            if isinstance(signals.get("checkpoint_loaded_now"), bool):
                self.model_cache.labels("load" if signals["checkpoint_loaded_now"] else "hit").inc()
            self._mark = (row.finished_at, row.id)

    def exposition(self, session: Session) -> bytes:
        self.refresh(session)
        return generate_latest(self.registry)


router = APIRouter(include_in_schema=False)


def _allowed_address(address: str | None, allow: list[str]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in allow)


@router.get("/metrics")
def metrics(request: Request, services: ServicesDep, session: SessionDep) -> Response:
    settings = services.settings
    token, allow = settings.metrics_token, settings.metrics_allow_list
    if not token and not allow:
        return PlainTextResponse("Not Found", status_code=404)
    given = request.headers.get("authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        pass
    elif not _allowed_address(request.client.host if request.client else None, allow):
        if token:
            return PlainTextResponse("A metrics token is required", status_code=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        return PlainTextResponse("Not Found", status_code=404)
    return Response(services.metrics.exposition(session), media_type=CONTENT_TYPE_LATEST)
