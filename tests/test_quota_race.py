"""Limits that hold under concurrency, against the real server on 127.0.0.1 (uvicorn in a thread), SQLite and
PostgreSQL: simultaneous uploads never pass the storage quota, simultaneous submits never pass the per-user job limit.
Upload temp files go when the client disconnects, when it stays silent past the idle timeout, and at start."""

from __future__ import annotations

import io
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from imagen.app import create_app
from imagen.assets.models import Asset
from imagen.generation.models import Generation
from imagen.inference.runtime import Runtime
from imagen.kit.config import Settings
from tests.conftest import TINY, signup_payload

CLIENTS = 8
BOUND = 60.0  # seconds; generous: nothing here should take more than a few


@pytest.fixture
def live(settings: Settings, runtime: Runtime) -> Iterator[tuple[FastAPI, str]]:
    """The app on a free 127.0.0.1 port, served by uvicorn in a background thread."""
    settings.cookie_secure = False  # plain http on 127.0.0.1
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(settings, run_migrations=False, runtime=runtime)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-quota-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + BOUND
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield app, base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def login(base_url: str, email: str = "ada@example.com") -> dict[str, str]:
    """Sign up; the headers (cookie and CSRF token) that authenticate later requests from any client."""
    with httpx.Client(base_url=base_url, timeout=BOUND) as c:  # a loaded machine hashes passwords slowly
        r = c.post("/api/v1/auth/signup", json=signup_payload(email))
        assert r.status_code == 201, r.text
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
        return {"Cookie": cookie, "X-CSRF-Token": r.json()["csrf_token"]}


def noise_png(seed: int, size: int = 96) -> bytes:
    """Random pixels: incompressible, so every upload stores about the same number of bytes."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def at_once(n: int, send) -> list[httpx.Response]:
    """`send(i, client)` from n threads, each with its own connection, released together."""
    barrier = threading.Barrier(n)
    results: list[httpx.Response | BaseException | None] = [None] * n

    def run(i: int) -> None:
        with httpx.Client(timeout=BOUND) as client:
            barrier.wait(BOUND)
            try:
                results[i] = send(i, client)
            except BaseException as exc:  # reported below
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert all(isinstance(r, httpx.Response) for r in results), results
    return results  # type: ignore[return-value]


def staging_files(settings: Settings) -> list[Path]:
    folder = settings.blobs_dir / ".staging"
    return [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []


def test_simultaneous_uploads_never_pass_the_quota(live, settings):
    app, base = live
    auth = login(base)
    images = [noise_png(i) for i in range(CLIENTS)]
    biggest = max(len(p) for p in images)
    settings.user_storage_quota_bytes = 3 * biggest + biggest // 2  # room for three, never four

    def upload(i: int, client: httpx.Client) -> httpx.Response:
        return client.post(f"{base}/api/v1/assets", headers=auth, data={"kind": "reference_image"},
                           files={"file": (f"noise-{i}.png", images[i], "image/png")})

    answers = at_once(CLIENTS, upload)
    codes = sorted(r.status_code for r in answers)
    assert set(codes) <= {201, 413}, [(r.status_code, r.text) for r in answers]
    refused = [r.json()["detail"] for r in answers if r.status_code == 413]
    assert refused and all("quota" in d for d in refused), refused
    with app.state.services.db.transaction() as s:
        rows, used = s.execute(select(func.count(), func.coalesce(func.sum(Asset.size_bytes), 0))).one()
    assert rows == codes.count(201) >= 1
    assert used <= settings.user_storage_quota_bytes
    stored = [k for k in app.state.services.blobs.keys("assets/")]
    assert len(stored) == rows and staging_files(settings) == []  # refused uploads left nothing behind


def test_simultaneous_submits_never_pass_the_per_user_job_limit(live, settings):
    app, base = live
    app.state.services.executor.stop()  # the jobs stay queued: only the limit decides
    settings.max_queued_per_user = 3
    auth = login(base)

    def submit(i: int, client: httpx.Client) -> httpx.Response:
        return client.post(f"{base}/api/v1/generations", headers=auth,
                           json={"workflow": "txt2img", "params": {"prompt": "a fox", **TINY, "seed": i}})

    answers = at_once(CLIENTS, submit)
    codes = sorted(r.status_code for r in answers)
    assert codes == [202] * 3 + [429] * (CLIENTS - 3), [(r.status_code, r.text) for r in answers]
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Generation)) == 3


# ---- upload temp files ----

def _start_upload(base: str, auth: dict[str, str], size: int, sent: int) -> socket.socket:
    """A multipart upload announced as `size` bytes of which only `sent` are sent, on a raw socket."""
    host, port = base.removeprefix("http://").split(":")
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\nreference_image\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    request = (f"POST /api/v1/assets HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(head) + size}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in auth.items()) + "\r\n").encode()
    sock = socket.create_connection((host, int(port)), timeout=BOUND)
    sock.sendall(request + head + os.urandom(sent))
    return sock


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _read_response(sock: socket.socket) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536) or b"\r\n\r\n"
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_upload_temp_file_goes_when_the_client_disconnects(live, settings):
    _app, base = live
    sock = _start_upload(base, login(base), size=2 << 20, sent=1200 << 10)  # past the first 1 MiB batch
    _wait(lambda: any(p.stat().st_size > 0 for p in staging_files(settings)), "the upload never reached disk")
    sock.close()  # the client goes away mid-upload
    _wait(lambda: staging_files(settings) == [], "the temp file of a cut-off upload stayed")


def test_an_idle_upload_is_stopped_and_its_temp_file_deleted(live, settings):
    settings.upload_idle_timeout_seconds = 1.0
    _app, base = live
    sock = _start_upload(base, login(base), size=2 << 20, sent=1200 << 10)
    _wait(lambda: any(p.stat().st_size > 0 for p in staging_files(settings)), "the upload never reached disk")
    # ... and then sends nothing: the server answers and stops reading.
    answer = _read_response(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"The upload sent nothing for 1 s and was stopped" in answer
    _wait(lambda: staging_files(settings) == [], "the temp file of a timed-out upload stayed")


def test_stale_staging_files_are_removed_at_start(settings, runtime):
    staging = settings.blobs_dir / ".staging"
    staging.mkdir(parents=True)
    stale, live_upload = staging / ".tmp-upload-crashed", staging / ".tmp-upload-live"
    stale.write_bytes(b"x" * 100)
    live_upload.write_bytes(b"y" * 100)
    ten_minutes_ago = time.time() - 600  # past the idle timeout (60 s), not yet the hourly sweep's age
    os.utime(stale, (ten_minutes_ago, ten_minutes_ago))
    with TestClient(create_app(settings, run_migrations=False, runtime=runtime), base_url="https://testserver"):
        assert not stale.exists()
        assert live_upload.exists()  # written within the idle timeout: maybe another process's upload
