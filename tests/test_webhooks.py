"""Webhooks: endpoints per user, events signed per the Standard Webhooks spec (checked with the `standardwebhooks`
library, as a receiver would), retries with backoff, the delivery log, disabling, and private targets refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from imagen.app import create_app
from imagen.kit.db import utcnow
from imagen.kit.tasks import run_task
from imagen.webhooks.sender import send
from imagen.webhooks.service import Attempt, new_secret
from tests.conftest import TINY, signup, wait_for


class Receiver:
    """An HTTP receiver on 127.0.0.1 answering each request with the next scripted status (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_app(settings, runtime):
    # Local receivers allowed; no schedule (the tests run the pass themselves), retries due at once.
    return create_app(settings.model_copy(update={
        "webhooks_allow_private": True, "webhooks_interval_seconds": 0, "webhooks_retry_seconds": 0,
        "webhooks_timeout_seconds": 5}), run_migrations=False, runtime=runtime)


@pytest.fixture
def hook_client(hook_app) -> Iterator[TestClient]:
    with TestClient(hook_app, base_url="https://testserver") as c:
        signup(c)
        yield c


def register(client: TestClient, url: str, events: list[str]) -> dict[str, Any]:
    r = client.post("/api/v1/webhooks", json={"url": url, "events": events})
    assert r.status_code == 201, r.text
    return r.json()


def generate(client: TestClient) -> dict[str, Any]:
    r = client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {
        "prompt": "a fox", "checkpoint": "imagen-tiny", **TINY}})
    assert r.status_code == 202, r.text
    return wait_for(client, r.json()["id"])


def passes(app, receiver: Receiver, *, until: int, most: int = 10) -> None:
    """Run the delivery pass (bounded) until the receiver has had `until` requests."""
    for _ in range(most):
        if len(receiver.requests) >= until:
            return
        run_task(app.state.services, "webhooks.send_due")


def test_a_generation_event_is_signed_per_standard_webhooks(hook_app, hook_client):
    with Receiver() as receiver:
        hook = register(hook_client, receiver.url, ["generation.succeeded", "generation.failed"])
        assert hook["secret"].startswith("whsec_")
        assert "secret" not in hook_client.get("/api/v1/webhooks").json()[0]  # shown once
        gen = generate(hook_client)
        assert gen["status"] == "succeeded"
        passes(hook_app, receiver, until=1)
        assert len(receiver.requests) == 1
        headers, body = receiver.requests[0]
        payload = Webhook(hook["secret"]).verify(body, headers)  # raises if the signature is wrong
        assert payload["type"] == "generation.succeeded" and payload["data"]["id"] == gen["id"]
        assert payload["data"]["status"] == "succeeded" and payload["data"]["url"] == f"/api/v1/generations/{gen['id']}"
        with pytest.raises(Exception):  # noqa: B017 (the library's own verification error)
            Webhook(new_secret()).verify(body, headers)
        log = hook_client.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()
        assert [(d["event"], d["status"], d["attempts"], d["message_id"]) for d in log] == [
            ("generation.succeeded", "delivered", 1, headers["webhook-id"])]
        run_task(hook_app.state.services, "webhooks.send_due")
        assert len(receiver.requests) == 1  # delivered once


def test_a_receiver_failing_three_times_gets_the_event_once_more_not_more(hook_app, hook_client):
    with Receiver([500, 503, 502]) as receiver:
        hook = register(hook_client, receiver.url, ["generation.succeeded"])
        generate(hook_client)
        passes(hook_app, receiver, until=4)
        for _ in range(3):
            run_task(hook_app.state.services, "webhooks.send_due")
        assert len(receiver.requests) == 4
        assert len({h["webhook-id"] for h, _ in receiver.requests}) == 1  # one message, retried
        assert {b for _, b in receiver.requests} == {receiver.requests[0][1]}  # the same body each time
        log = hook_client.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()
        assert [(d["status"], d["attempts"], d["last_status_code"]) for d in log] == [("delivered", 4, 200)]
        assert hook_client.get("/api/v1/webhooks").json()[0]["failures"] == 0


def test_retries_back_off_and_an_endpoint_that_keeps_failing_is_disabled(settings, runtime):
    app = create_app(settings.model_copy(update={
        "webhooks_allow_private": True, "webhooks_interval_seconds": 0, "webhooks_retry_seconds": 3600,
        "webhooks_disable_after": 2}), run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as client, Receiver([500] * 10) as receiver:
        signup(client)
        hook = register(client, receiver.url, ["generation.succeeded"])
        generate(client)
        generate(client)
        for _ in range(3):
            run_task(app.state.services, "webhooks.send_due")
        # Each delivery tried once: the retry waits an hour (backoff); two failures in a row disable the endpoint.
        assert len(receiver.requests) == 2
        log = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()
        assert [(d["status"], d["attempts"]) for d in log] == [("pending", 1), ("pending", 1)]
        assert all((d["next_attempt_at"] or "") > utcnow().isoformat() for d in log)
        listed = client.get("/api/v1/webhooks").json()[0]
        assert listed["enabled"] is False and "2 failed attempts" in listed["disabled_reason"]


def test_export_ready_is_delivered_after_the_export(hook_app, hook_client):
    with Receiver() as receiver:
        hook = register(hook_client, receiver.url, ["export.ready"])
        generate(hook_client)  # not subscribed: no generation event
        r = hook_client.post("/api/v1/me/exports")
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        run_task(hook_app.state.services, "webhooks.send_due")
        assert len(receiver.requests) == 1
        payload = Webhook(hook["secret"]).verify(receiver.requests[0][1], receiver.requests[0][0])
        assert payload["type"] == "export.ready" and payload["data"]["id"] == r.json()["id"]


def test_endpoints_are_per_user_and_private_targets_are_refused(client, new_client):
    signup(client)
    for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://[::1]/hook", "http://169.254.169.254/",
                "ftp://example.com/hook", "https://user:pw@93.184.216.34/hook"):
        r = client.post("/api/v1/webhooks", json={"url": url, "events": ["generation.failed"]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "url"], (url, r.text)
    assert client.post("/api/v1/webhooks", json={"url": "https://93.184.216.34/hook",
                                                  "events": ["nope"]}).status_code == 422
    hook = register(client, "https://93.184.216.34/hook", ["generation.failed"])
    other = new_client()
    signup(other, "other@example.com")
    assert other.get("/api/v1/webhooks").json() == []
    assert other.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 404
    assert client.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    assert client.get("/api/v1/webhooks").json() == []


def test_a_redirect_to_a_private_address_is_not_followed():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "93.184.216.34":
            return httpx.Response(307, headers={"location": "http://127.0.0.1:8080/internal"})
        return httpx.Response(200)

    attempt = Attempt("d" * 32, "e" * 32, "https://93.184.216.34/hook", new_secret(), "generation.failed",
                      {"type": "generation.failed", "data": {}}, utcnow())
    outcome = send(attempt, allow_private=False, timeout=5, transport=httpx.MockTransport(handler))
    assert not outcome.ok and "private or loopback" in (outcome.error or "")
    assert seen == ["https://93.184.216.34/hook"]
    seen.clear()
    assert send(attempt, allow_private=True, timeout=5, transport=httpx.MockTransport(handler)).ok
    assert seen == ["https://93.184.216.34/hook", "http://127.0.0.1:8080/internal"]


def test_erasure_removes_the_endpoints_and_the_delivery_log(hook_app, hook_client):
    from sqlalchemy import func, select

    from imagen.a1111.models import A1111Options
    from imagen.accounts.models import User
    from imagen.webhooks.models import WebhookDelivery, WebhookEndpoint
    from tests.conftest import PASSWORD

    with Receiver([500]) as receiver:
        register(hook_client, receiver.url, ["generation.succeeded"])
        generate(hook_client)
        passes(hook_app, receiver, until=1)
    assert hook_client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "imagen-tiny"}).status_code == 200
    user_id = hook_client.get("/api/v1/me").json()["id"]
    db = hook_app.state.services.db
    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
    assert hook_client.request("DELETE", "/api/v1/me", json={"password": PASSWORD}).status_code == 202
    deadline, left = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        with db.transaction() as s:
            left = (s.get(User, user_id), *(s.scalar(select(func.count()).select_from(t))
                                           for t in (WebhookEndpoint, WebhookDelivery, A1111Options)))
        if left == (None, 0, 0, 0):
            break
        time.sleep(0.05)
    assert left == (None, 0, 0, 0)
