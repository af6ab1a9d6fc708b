"""/metrics (issue 16): Prometheus text from the app's own registry, behind a token or an address allow-list; a
scrape sees the queue and the latency series move as jobs run, and the other series the operator watches."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from imagen.app import create_app
from imagen.kit.db import utcnow
from imagen.privacy.requests.models import PrivacyRequest
from imagen.safety.models import SafetyCase
from tests.conftest import TINY, signup, wait_for

TOKEN = "metrics-token-" + "x" * 20
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def value(text: str, series: str) -> float:
    """One sample's value (0 when the series is absent)."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def paused_settings(settings):
    settings.worker_autostart = False  # the queue is seen before the worker takes the job
    settings.metrics_token = TOKEN
    return settings


def test_scrapes_see_the_queue_and_the_latencies_move_as_a_job_runs(paused_settings, runtime, app):
    with TestClient(app, base_url="https://testserver") as client:
        signup(client)
        first = client.get("/metrics", headers=BEARER)
        assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain")
        text = first.text
        assert value(text, 'imagen_generations{state="queued"}') == 0
        assert value(text, 'imagen_jobs_finished_total{state="succeeded"}') == 0
        assert value(text, 'imagen_job_seconds_count{phase="inference"}') == 0
        assert 'imagen_model_cache_total{result="hit"} 0.0' in text

        ids = [client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {
            "prompt": "a fox", **TINY, "seed": seed}}).json()["id"] for seed in (1, 2)]
        queued = client.get("/metrics", headers=BEARER).text
        assert value(queued, 'imagen_generations{state="queued"}') == 2
        assert value(queued, "imagen_workers_busy") == 0

        app.state.services.executor.start()
        for gen_id in ids:
            assert wait_for(client, gen_id)["status"] == "succeeded"
        done = client.get("/metrics", headers=BEARER).text
        assert value(done, 'imagen_generations{state="queued"}') == 0
        assert value(done, 'imagen_generations{state="succeeded"}') == 2
        assert value(done, 'imagen_jobs_finished_total{state="succeeded"}') == 2
        for phase in ("queue_wait", "run", "load", "inference"):
            assert value(done, f'imagen_job_seconds_count{{phase="{phase}"}}') == 2, phase
        assert value(done, 'imagen_job_seconds_sum{phase="inference"}') > 0
        assert value(done, 'imagen_model_cache_total{result="hit"}') + \
            value(done, 'imagen_model_cache_total{result="load"}') == 2
        # The next scrape counts only what finished since: the counters hold, they do not double.
        again = client.get("/metrics", headers=BEARER).text
        assert value(again, 'imagen_jobs_finished_total{state="succeeded"}') == 2
        assert value(again, 'imagen_job_seconds_count{phase="run"}') == 2
    # The app's own registry: nothing went to prometheus-client's global one.
    assert REGISTRY.get_sample_value("imagen_jobs_finished_total", {"state": "succeeded"}) is None


def test_safety_privacy_and_upload_refusal_series(client, app, settings):
    settings.metrics_token = TOKEN
    signup(client)
    now = utcnow()
    with app.state.services.db.transaction() as s:
        s.add(SafetyCase(kind="hash_match", status="open", hold_until=now + timedelta(days=365)))
        s.add_all([PrivacyRequest(kind="access", channel="email", email="p@example.com", status="pending",
                                  received_at=now - timedelta(days=40), due_at=now - timedelta(days=10)),
                   PrivacyRequest(kind="access", channel="email", email="q@example.com", status="pending",
                                  received_at=now, due_at=now + timedelta(days=30))])
    refused = client.post("/api/v1/assets", files={"file": ("x.bin", b"not a model")}, data={"kind": "checkpoint"})
    assert refused.status_code in (400, 415, 422), refused.text
    text = client.get("/metrics", headers=BEARER).text
    assert value(text, 'imagen_safety_matches{kind="hash_match"}') == 1
    assert value(text, 'imagen_privacy_requests_due{when="overdue"}') == 1
    assert value(text, 'imagen_privacy_requests_due{when="soon"}') == 1
    reasons = re.findall(r'^imagen_upload_refusals_total\{reason="([a-z_0-9]+)"\} 1\.0$', text, re.MULTILINE)
    assert len(reasons) == 1


def test_metrics_need_the_token_or_an_allowed_address(settings, runtime):
    app = create_app(settings, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as client:
        assert client.get("/metrics").status_code == 404  # nothing configured: no endpoint
        assert client.get("/metrics", headers=BEARER).status_code == 404
        settings.metrics_token = TOKEN
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": TOKEN}).status_code == 401
        assert client.get("/metrics", headers=BEARER).status_code == 200
        settings.metrics_allow = "10.0.0.0/8, 192.0.2.7"
        inside = TestClient(app, base_url="https://testserver", client=("10.1.2.3", 40000))
        exact = TestClient(app, base_url="https://testserver", client=("192.0.2.7", 40000))
        outside = TestClient(app, base_url="https://testserver", client=("192.0.2.8", 40000))
        assert inside.get("/metrics").status_code == 200 and exact.get("/metrics").status_code == 200
        assert outside.get("/metrics").status_code == 401  # the token is still an option
        assert outside.get("/metrics", headers=BEARER).status_code == 200
        settings.metrics_token = None
        assert outside.get("/metrics").status_code == 404 and inside.get("/metrics").status_code == 200
        assert "/metrics" not in client.get("/openapi.json").text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_allow_list_is_checked_when_the_settings_are_read(database_url, settings):
    from pydantic import ValidationError

    from imagen.kit.config import Settings

    assert Settings(metrics_allow="127.0.0.1, ::1, 10.0.0.0/8").metrics_allow_list == ["127.0.0.1", "::1",
                                                                                        "10.0.0.0/8"]
    with pytest.raises(ValidationError, match="not an address or network"):
        Settings(metrics_allow="127.0.0.1, localhost")
