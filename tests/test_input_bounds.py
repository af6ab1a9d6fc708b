"""Every input bounded and checked: body limits (413 naming the limit, before and while reading), control characters
(422 naming the field), ids and cursors in range, one form per email address, storage and database failures as
503, per-sender limits on the public forms, security headers, local API docs and a complete /openapi.json."""

from __future__ import annotations

import asyncio
import base64
import errno
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import exc as sa_exc

from imagen.app import create_app
from imagen.consent.service import consent_service
from imagen.inference.runtime import Runtime
from imagen.kit.config import Settings
from imagen.kit.limits import BodyLimitMiddleware, SenderLimiter, body_limit
from tests.conftest import PASSWORD, TINY, signup, signup_payload

MiB = 1024**2
LIMIT = MiB  # IMAGEN_MAX_BODY_BYTES's default


# ---- body limits ------------------------------------------------------------------------------------------------


def asgi_post(app: Any, path: str, chunks: Iterator[bytes], headers: list[tuple[bytes, bytes]],
              ) -> tuple[int, dict[str, Any], int]:
    """POST through the raw ASGI interface with a streamed body: (status, JSON answer, body chunks consumed)."""
    consumed = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal consumed
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        consumed += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
             "client": ("127.0.0.9", 5000), "server": ("testserver", 443)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), consumed


def endless(chunk_size: int = 64 * 1024, total: int = 100 * MiB) -> Iterator[bytes]:
    chunk = b" " * chunk_size
    for _ in range(total // chunk_size):
        yield chunk


def test_declared_body_over_the_limit_is_refused_before_reading(app: FastAPI, client: TestClient) -> None:
    status, body, consumed = asgi_post(app, "/api/v1/auth/login", endless(),
                                       [(b"content-length", str(3 * MiB).encode())])
    assert status == 413
    assert str(LIMIT) in body["detail"] and "1 MiB" in body["detail"]
    assert consumed == 0  # not a byte read


def test_body_without_length_is_cut_off_at_the_limit(app: FastAPI, client: TestClient) -> None:
    """A chunked 100 MB body: counted as it arrives, refused once past 1 MiB (16 chunks of 64 KiB)."""
    status, body, consumed = asgi_post(app, "/api/v1/auth/login", endless(), [])
    assert status == 413 and str(LIMIT) in body["detail"]
    assert consumed == LIMIT // (64 * 1024) + 1


def test_a_route_can_set_its_own_limit() -> None:
    app = FastAPI()

    @app.post("/small")
    @body_limit(10)
    async def small(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @app.post("/default")
    async def default(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    app.add_middleware(BodyLimitMiddleware, default=100, routes=lambda: app.router.routes)
    with TestClient(app) as c:
        assert c.post("/small", content=b'{"a": 1}', headers={"content-type": "application/json"}).status_code == 200
        r = c.post("/small", json={"a": "x" * 20})
        assert r.status_code == 413 and "at most 10 bytes" in r.json()["detail"]
        assert c.post("/default", json={"a": "x" * 50}).status_code == 200
        assert c.post("/default", json={"a": "x" * 200}).status_code == 413

        def chunked() -> Iterator[bytes]:
            yield b'{"a": "'
            yield b"x" * 20
            yield b'"}'

        r = c.post("/small", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "at most 10 bytes" in r.json()["detail"]


def test_asset_upload_keeps_its_own_limits(user_client: TestClient) -> None:
    """Over the 1 MiB body default, under the image upload limit: the upload route streams it as before."""
    noisy = io.BytesIO()
    Image.frombytes("RGB", (800, 800), os.urandom(800 * 800 * 3)).save(noisy, format="PNG")  # incompressible
    assert noisy.tell() > LIMIT
    r = user_client.post("/api/v1/assets", data={"kind": "reference_image"},
                         files={"file": ("big.png", noisy.getvalue(), "image/png")})
    assert r.status_code == 201, r.text


@pytest.fixture
def live(settings: Settings, runtime: Runtime) -> Iterator[str]:
    """The app on a free 127.0.0.1 port, served by uvicorn in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = create_app(settings.model_copy(update={"worker_autostart": False}), run_migrations=False, runtime=runtime)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-bounds", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def raw_post(address: str, head: str, body: Iterator[bytes]) -> tuple[bytes, float, int]:
    """Send a request head, then body chunks while the server reads them; (answer, seconds to it, bytes sent)."""
    host, port = address.split(":")
    started = time.monotonic()
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head.encode())
        stop = threading.Event()

        def feed() -> None:
            nonlocal sent
            for chunk in body:
                if stop.is_set():
                    return
                try:
                    conn.sendall(chunk)
                except OSError:  # the server answered and closed
                    return
                sent += len(chunk)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            data = conn.recv(65536)
            if not data:
                break
            answer += data
        elapsed = time.monotonic() - started
        stop.set()
        feeder.join(timeout=10)
    return answer, elapsed, sent


def chunked(total: int = 100 * MiB, size: int = 64 * 1024) -> Iterator[bytes]:
    for _ in range(total // size):
        yield f"{size:x}\r\n".encode() + b" " * size + b"\r\n"


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def test_big_bodies_get_413_at_once_while_others_keep_answering(live: str) -> None:
    """On a real server: a declared 3 MB or 100 MB body is answered 413 before any of it is sent; a chunked 100 MB
    body once about 1 MiB has arrived. Meanwhile /healthz keeps answering. (Timings: benchmarks/body_limits.py.)"""
    answers: dict[str, Any] = {}

    def healthz_meanwhile() -> None:
        with httpx.Client(base_url=f"http://{live}", timeout=5) as c:
            answers["healthz"] = [c.get("/healthz").status_code for _ in range(20)]

    other = threading.Thread(target=healthz_meanwhile)
    other.start()
    for size in (3 * MiB, 100 * MiB):
        head = ("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {size}\r\n\r\n")
        answer, seconds, _ = raw_post(live, head, iter(()))  # the head alone: the answer can't wait for the body
        assert answer.startswith(b"HTTP/1.1 413") and seconds < 5, (answer[:200], seconds)
        assert b"at most 1048576 bytes" in answer

    head = ("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    answer, seconds, sent = raw_post(live, head, chunked())
    assert answer.startswith(b"HTTP/1.1 413") and b"at most 1048576 bytes" in answer and seconds < 5, answer
    assert sent < 32 * MiB, sent  # cut off near the limit (plus what the sockets' buffers took), not read to the end
    other.join(timeout=30)
    assert answers["healthz"] == [200] * 20


def test_validation_errors_do_not_echo_large_input(client: TestClient) -> None:
    huge = {f"k{i}": i for i in range(30_000)}  # about 400 KB, under the body limit
    r = client.post("/api/v1/auth/signup", json={**signup_payload(), "email": "x" * 500_000})
    assert r.status_code == 422 and len(r.content) < 2_000, len(r.content)
    r = client.post("/api/v1/auth/signup", json={**signup_payload(), **huge})
    assert r.status_code == 422 and len(r.content) < 10_000, len(r.content)
    assert "more errors not shown" in r.text


# ---- text, ids and cursors --------------------------------------------------------------------------------------


def locs(r: httpx.Response) -> list[list[Any]]:
    assert r.status_code == 422, r.text
    return [e["loc"] for e in r.json()["detail"]]


def test_control_characters_are_refused_naming_the_field_on_public_endpoints(client: TestClient) -> None:
    """The endpoints that need no login, where a NUL used to reach PostgreSQL as a 500."""
    assert locs(client.post("/api/v1/auth/signup", json=signup_payload(password=PASSWORD + "\x00"))) == [
        ["body", "password"]]
    assert locs(client.post("/api/v1/auth/login", json={"email": "a\x00@example.com", "password": "x"})) == [
        ["body", "email"]]
    assert locs(client.post("/api/v1/privacy-requests", json={"email": "a@example.com", "kind": "access",
                                                              "details": "my data\x00"})) == [["body", "details"]]
    assert locs(client.post("/api/v1/minor-reports", json={"account_email": "kid@example.com",
                                                           "details": "Clearly under eighteen \x1b[31m"})) == [
        ["body", "details"]]
    assert locs(client.post("/api/v1/privacy-requests/abc%00/verify", json={"code": "123456"})) == [
        ["path", "request_id"]]
    assert locs(client.post("/api/v1/privacy-requests/abc/verify", json={"code": "12\x0034"})) == [["body", "code"]]
    assert locs(client.get("/api/v1/policy?x=%00")) == [["query", "x"]]
    # Nested values and keys are named too; tabs and line breaks stay allowed in multi-line text.
    r = client.post("/api/v1/minor-reports", json={"account_email": "kid@example.com",
                                                   "details": "Line one\n\tline two, says she is 12"})
    assert r.status_code == 202, r.text


def test_prompts_keep_line_breaks_but_not_other_controls(user_client: TestClient) -> None:
    ok = user_client.post("/api/v1/generations", json={"workflow": "txt2img",
                                                       "params": {"prompt": "a cat,\n\tsitting", **TINY}})
    assert ok.status_code == 202, ok.text
    bad = user_client.post("/api/v1/generations", json={"workflow": "txt2img",
                                                        "params": {"prompt": "a cat\x07", **TINY}})
    assert locs(bad) == [["body", "params", "prompt"]]
    bad = user_client.post("/api/v1/generations", json={"workflow": "txt2img",
                                                        "params": {"prompt\x00": "a cat", **TINY}})
    assert locs(bad) == [["body", "params", "prompt\x00"]]
    assert user_client.get("/api/v1/generations").json()["items"][0]["params"]["prompt"] == "a cat,\n\tsitting"


def test_single_line_fields_refuse_line_breaks(user_client: TestClient) -> None:
    assert locs(user_client.post("/api/v1/api-keys", json={"name": "laptop\nkey"})) == [["body", "name"]]
    assert user_client.post("/api/v1/api-keys", json={"name": "laptop key"}).status_code == 201


def test_integer_path_parameter_past_the_column_range_is_422(user_client: TestClient) -> None:
    assert user_client.get("/api/v1/workflows/txt2img/versions/1").status_code == 200
    assert user_client.get("/api/v1/workflows/txt2img/versions/99").status_code == 404
    assert locs(user_client.get(f"/api/v1/workflows/txt2img/versions/{2**31}")) == [["path", "version"]]
    assert locs(user_client.get(f"/api/v1/workflows/txt2img/versions/{10**30}")) == [["path", "version"]]


def cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


def test_list_cursor_must_be_one_the_api_made(user_client: TestClient) -> None:
    for _ in range(3):
        r = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {"prompt": "x", **TINY}})
        assert r.status_code == 202, r.text
    page = user_client.get("/api/v1/generations", params={"limit": 2}).json()
    rest = user_client.get("/api/v1/generations", params={"limit": 2, "cursor": page["next_cursor"]})
    assert rest.status_code == 200 and len(rest.json()["items"]) == 1
    gen_id = page["items"][0]["id"]
    for bad in (cursor(f"2026-01-01T00:00:00|{gen_id}"),  # no time zone
                cursor("2026-01-01T00:00:00+00:00|" + "\x00" * 32), cursor("2026-01-01T00:00:00+00:00|x"),
                "not base64 at all", cursor("no separator")):
        assert locs(user_client.get("/api/v1/generations", params={"cursor": bad})) == [["query", "cursor"]], bad


def test_fullwidth_lookalike_email_is_the_same_account(client: TestClient, new_client) -> None:
    signup(client, "ada@example.com")
    # Fullwidth letters (spelled as escapes: they look the same as the ASCII ones).
    twin = new_client().post("/api/v1/auth/signup", json=signup_payload("\uff41\uff44\uff41@example.com"))
    assert twin.status_code == 409, twin.text
    login = new_client().post("/api/v1/auth/login", json={"email": "\uff21\uff24\uff21@EXAMPLE.com",
                                                            "password": PASSWORD})
    assert login.status_code == 200 and login.json()["account"]["email"] == "ada@example.com"


# ---- failures of storage and database ---------------------------------------------------------------------------


def test_storage_failure_is_a_503_logged_with_its_cause(app: FastAPI, user_client: TestClient,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    def full() -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(app.state.services.blobs, "staging_dir", full)
    with caplog.at_level(logging.ERROR, logger="imagen.kit.surface"):
        r = user_client.post("/api/v1/assets", data={"kind": "reference_image"},
                             files={"file": ("a.png", b"x", "image/png")})
    assert r.status_code == 503 and r.json() == {"detail": "Storage unavailable; try again shortly"}
    assert int(r.headers["retry-after"]) > 0
    assert "No space left on device" in caplog.text and "POST /api/v1/assets" in caplog.text


def test_database_failure_is_a_503_logged_with_its_cause(user_client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def gone(*_args: Any, **_kwargs: Any) -> Any:
        raise sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(consent_service, "list_versions", gone)
    with caplog.at_level(logging.ERROR, logger="imagen.kit.surface"):
        r = user_client.get("/api/v1/policy")
    assert r.status_code == 503 and r.json() == {"detail": "Database unavailable; try again shortly"}
    assert "server closed the connection unexpectedly" in caplog.text


# ---- per-sender limits on the public forms ----------------------------------------------------------------------


def test_public_forms_are_limited_per_sender(app: FastAPI, client: TestClient) -> None:
    report = {"account_email": "kid@example.com", "details": "Says she is twelve in her bio."}
    for i in range(5):
        assert client.post("/api/v1/minor-reports", json=report).status_code == 202, i
    refused = client.post("/api/v1/minor-reports", json=report)
    assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 3600
    # The other form has its own count.
    r = client.post("/api/v1/privacy-requests", json={"email": "me@example.com", "kind": "access"})
    assert r.status_code == 201, r.text


def test_the_same_email_is_limited_from_any_address(settings: Settings, runtime: Runtime) -> None:
    """Behind a trusted proxy each sender has its own address; one email address still has one count."""
    app = create_app(settings.model_copy(update={"trusted_proxies": "testclient", "public_form_limit": 3}),
                     run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as c:
        def submit(ip: str, email: str) -> httpx.Response:
            return c.post("/api/v1/privacy-requests", json={"email": email, "kind": "access"},
                          headers={"X-Forwarded-For": ip})

        for i in range(3):
            assert submit(f"203.0.113.{i}", "me@example.com").status_code == 201
        refused = submit("203.0.113.99", "ME@example.com")  # the database's own limit is 5 a day
        assert refused.status_code == 429 and "retry-after" in refused.headers
        assert submit("203.0.113.99", "someone@example.com").status_code == 201


def test_sender_limiter_window() -> None:
    now = [0.0]
    limiter = SenderLimiter(2, 60, clock=lambda: now[0])
    assert limiter.hit("ip:a", "email:x") is None and limiter.hit("ip:a") is None
    assert limiter.hit("ip:a") == 60
    assert limiter.hit("ip:b", "email:x") is None
    assert limiter.hit("ip:c", "email:x") == 60  # refused: nothing counted for ip:c
    now[0] = 30.0
    assert limiter.hit("ip:a") == 30
    now[0] = 60.5
    assert limiter.hit("ip:a") is None
    small = SenderLimiter(1, 60, clock=lambda: now[0], max_keys=3)
    for key in ("k1", "k2", "k3", "k4"):
        assert small.hit(key) is None
    assert small.hit("k4") is not None and small.hit("k1") is None  # bounded: the least recently used went


# ---- headers, docs and the schema -------------------------------------------------------------------------------


def test_security_headers(app: FastAPI, client: TestClient) -> None:
    api = client.get("/api/v1/policy")
    assert api.headers["cache-control"] == "no-store" and api.headers["x-content-type-options"] == "nosniff"
    assert api.headers["strict-transport-security"].startswith("max-age=")
    page = client.get("/privacy")
    assert page.headers["x-content-type-options"] == "nosniff" and "strict-transport-security" in page.headers
    static = client.get("/static-docs/swagger-ui.css")
    assert static.headers["x-content-type-options"] == "nosniff" and "no-store" not in static.headers.get(
        "cache-control", "")
    plain = TestClient(app, base_url="http://testserver")
    assert "strict-transport-security" not in plain.get("/api/v1/policy").headers
    # X-Forwarded-Proto counts only from a trusted proxy (IMAGEN_TRUSTED_PROXIES; the test client is not one).
    assert "strict-transport-security" not in plain.get("/api/v1/policy",
                                                         headers={"X-Forwarded-Proto": "https"}).headers


def test_hsts_behind_a_trusted_proxy(settings: Settings, runtime: Runtime) -> None:
    app = create_app(settings.model_copy(update={"trusted_proxies": "testclient"}), run_migrations=False,
                     runtime=runtime)
    with TestClient(app, base_url="http://testserver") as c:
        assert "strict-transport-security" in c.get("/healthz", headers={"X-Forwarded-Proto": "https"}).headers
        assert "strict-transport-security" not in c.get("/healthz").headers


def test_api_docs_load_nothing_from_elsewhere(client: TestClient) -> None:
    for page, assets in (("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")), ("/redoc", ("redoc.standalone.js",))):
        html = client.get(page)
        assert html.status_code == 200
        assert "https://" not in html.text and "http://" not in html.text, page
        for asset in assets:
            assert f'"/static-docs/{asset}"' in html.text
            served = client.get(f"/static-docs/{asset}")
            assert served.status_code == 200 and len(served.content) > 100_000


def test_every_api_route_is_in_the_openapi_schema(app: FastAPI, client: TestClient) -> None:
    documented = {(method.upper(), path) for path, ops in client.get("/openapi.json").json()["paths"].items()
                  for method in ops}
    routes = {(method, ctx.path) for ctx in iter_route_contexts(app.router.routes)
              if isinstance(ctx.original_route, APIRoute) and ctx.path.startswith("/api/")
              for method in ctx.methods}
    assert routes and routes <= documented, sorted(routes - documented)
    assert ("POST", "/api/v1/admin/breaches") in documented  # one of the admin operations that were left out
    # Every operation declares the error answers it may give.
    for path, ops in client.get("/openapi.json").json()["paths"].items():
        if path.startswith("/api/"):
            for method, op in ops.items():
                assert {"401", "404", "413", "422", "503"} <= set(op["responses"]), (method, path)
