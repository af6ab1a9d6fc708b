"""The server holds a crowd (issue 10): no freeze, no 5xx, /healthz quick meanwhile, a fast 503 when saturated.

Each test starts a real `imagen serve` (uvicorn) on 127.0.0.1 in a child process (tests/live_server.py) and talks to
it over HTTP from many concurrent asyncio clients (httpx). Everything is bounded: a fixed number of requests, each
with a timeout. /healthz is asked from a process of its own every 0.1 s while the crowd runs, so the clients' own
work does not delay it; the 1 s bound on it is the issue's.

Before the request path was fixed, 200 concurrent requests here stalled for 30 s and ended mostly in 500 (`QueuePool
limit ... reached`): requests holding a connection waited for a worker thread while every thread waited for a
connection.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from imagen.inference.runtime import Runtime
from imagen.kit.capacity import Busy, RequestGate
from tests.conftest import POLICY_VERSION
from tests.live_server import LiveServer, signup

CROWD = 200
REQUEST_TIMEOUT = 60.0  # a request that takes longer counts as a freeze
HEALTHZ_BOUND = 1.0  # seconds (issue 10)

# /healthz every 0.1 s from its own process until stdin closes; prints each latency (inf: no answer in 30 s).
PROBE = """
import http.client, select, sys, time
host, port = sys.argv[1], int(sys.argv[2])
while not select.select([sys.stdin], [], [], 0.1)[0]:
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection(host, port, timeout=30)
        c.request("GET", "/healthz")
        ok = c.getresponse().status == 200
        c.close()
    except OSError:
        ok = False
    print(time.monotonic() - t0 if ok else "inf", flush=True)
"""


class HealthProbe:
    def __init__(self, server: LiveServer) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", PROBE, "127.0.0.1", str(server.port)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def stop(self) -> list[float]:
        out, _ = self.process.communicate(input="stop\n", timeout=40)
        return [float(line) for line in out.split()]


@pytest.fixture
def serve(tmp_path: Path, database_url: str, models_dir: Path, runtime: Runtime) -> Iterator[Any]:
    """Start `imagen serve` on the test's database with extra IMAGEN_* settings; stopped after the test."""
    started: list[LiveServer] = []

    def start(**env: str) -> LiveServer:
        server = LiveServer(data_dir=tmp_path / "data", env={
            "IMAGEN_DATABASE_URL": database_url, "IMAGEN_MODELS_DIR": str(models_dir),
            "IMAGEN_POLICY_VERSION": POLICY_VERSION, "IMAGEN_WORKER_AUTOSTART": "false", **env})
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


async def crowd(base_url: str, requests: list[tuple[str, str, dict[str, str]]]) -> list[tuple[Any, float, Any]]:
    """All requests at once, each on its own connection: (status or exception name, seconds, response)."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT) as client:
        async def one(method: str, path: str, headers: dict[str, str]) -> tuple[Any, float, Any]:
            t0 = time.monotonic()
            try:
                r = await client.request(method, path, headers=headers)
                return r.status_code, time.monotonic() - t0, r
            except httpx.HTTPError as exc:
                return type(exc).__name__, time.monotonic() - t0, None

        return await asyncio.gather(*(one(*req) for req in requests))


def under_load(server: LiveServer, requests: list[tuple[str, str, dict[str, str]]]
               ) -> tuple[list[tuple[Any, float, Any]], list[float]]:
    probe = HealthProbe(server)
    try:
        results = asyncio.run(crowd(server.url, requests))
    finally:
        health = probe.stop()
    return results, health


def assert_healthz_quick(health: list[float]) -> None:
    assert health, "the /healthz probe got no answer at all"
    assert max(health) < HEALTHZ_BOUND, f"/healthz took {max(health):.2f} s under load ({len(health)} probes)"


def bearer(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['api_key']}"}


def test_200_concurrent_authenticated_lists_all_answer(serve):
    server = serve()
    user = signup(server.url, "crowd@example.com", POLICY_VERSION)
    results, health = under_load(server, [("GET", "/api/v1/generations", bearer(user))] * CROWD)
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: CROWD}, f"{statuses}; server log: {server.log_tail()}"
    assert all(r.json()["items"] == [] for _, _, r in results)
    assert_healthz_quick(health)


def test_200_concurrent_unauthenticated_requests_all_answer(serve):
    server = serve()
    paths = ["/api/v1/policy", "/", "/login", "/signup", "/privacy", "/api/v1/generations"]
    results, health = under_load(server, [("GET", paths[i % len(paths)], {}) for i in range(CROWD)])
    by_path = Counter((paths[i % len(paths)], status) for i, (status, _, _) in enumerate(results))
    assert set(by_path) == {(p, 200) for p in paths[:-1]} | {("/api/v1/generations", 401)}, (
        f"{by_path}; server log: {server.log_tail()}")
    assert_healthz_quick(health)


async def _open_streams(base_url: str, path: str, headers: dict[str, str], n: int, hold: asyncio.Event,
                        opened: asyncio.Queue) -> None:
    """n streams of `path`, each kept open after its first event until `hold` is set; reports (status, first)."""
    limits = httpx.Limits(max_connections=n + 5, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT) as client:
        async def one() -> None:
            try:
                async with client.stream("GET", path, headers=headers) as r:
                    if r.status_code != 200:
                        await opened.put((r.status_code, json.loads(await r.aread())))
                        return
                    lines = r.aiter_lines()  # kept: once collected, httpx closes the stream
                    async for line in lines:
                        if line.startswith("data: "):
                            await opened.put((200, json.loads(line[6:])))
                            break
                    await hold.wait()
            except httpx.HTTPError as exc:
                await opened.put((type(exc).__name__, None))

        await asyncio.gather(*(one() for _ in range(n)))


def test_100_open_streams_of_one_user_do_not_slow_others_and_the_cap_answers_429(serve):
    server = serve(IMAGEN_SSE_STREAMS_PER_USER="100")
    streamer = signup(server.url, "streamer@example.com", POLICY_VERSION)
    other = signup(server.url, "other@example.com", POLICY_VERSION)
    r = httpx.post(f"{server.url}/api/v1/generations", headers=bearer(streamer), timeout=30, json={
        "workflow": "txt2img", "params": {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64}})
    assert r.status_code == 202, r.text
    events = f"/api/v1/generations/{r.json()['id']}/events"  # queued (no worker runs), so its streams stay open

    async def scenario() -> dict[str, Any]:
        hold, opened = asyncio.Event(), asyncio.Queue()
        streams = asyncio.create_task(_open_streams(server.url, events, bearer(streamer), 100, hold, opened))
        firsts = [await asyncio.wait_for(opened.get(), REQUEST_TIMEOUT) for _ in range(100)]
        assert Counter(status for status, _ in firsts) == {200: 100}, (firsts[:3], server.log_tail())
        # The 101st of the same user is refused; its connection is not kept.
        async with httpx.AsyncClient(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
            over = await client.get(events, headers=bearer(streamer))
        probe = HealthProbe(server)
        try:
            others = await crowd(server.url, [("GET", "/api/v1/generations", bearer(other)),
                                              ("GET", "/api/v1/me", bearer(other)),
                                              ("GET", "/api/v1/policy", {})] * 30)
        finally:
            health = probe.stop()
        # Closed streams free their places (the server sees the disconnects as they come).
        hold.set()
        await asyncio.wait_for(streams, REQUEST_TIMEOUT)
        again = []
        async with httpx.AsyncClient(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
            for _ in range(50):
                async with client.stream("GET", events, headers=bearer(streamer)) as r:
                    again.append(r.status_code)
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.2)
        return {"firsts": firsts, "over": over, "others": others, "health": health, "again": again}

    out = asyncio.run(scenario())
    assert all(first["status"] == "queued" for _, first in out["firsts"])
    assert out["over"].status_code == 429
    assert "at most 100 per user" in out["over"].json()["detail"]
    statuses = Counter(status for status, _, _ in out["others"])
    assert statuses == {200: 90}, f"{statuses}; server log: {server.log_tail()}"
    slowest = max(seconds for _, seconds, _ in out["others"])
    assert slowest < 5.0, f"another user's request took {slowest:.1f} s beside 100 open streams"
    assert_healthz_quick(out["health"])
    assert out["again"][-1] == 200, out["again"]


def test_saturated_server_answers_503_with_retry_after_at_once(serve):
    # Two workers and room for ten waiting requests: most of a crowd of 200 is turned away, quickly and politely.
    server = serve(IMAGEN_WORKER_THREADS="2", IMAGEN_REQUEST_QUEUE_LIMIT="10")
    user = signup(server.url, "crowd@example.com", POLICY_VERSION)
    results, health = under_load(server, [("GET", "/api/v1/generations", bearer(user))] * CROWD)
    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) == {200, 503}, f"{statuses}; server log: {server.log_tail()}"
    refused = [(seconds, r) for status, seconds, r in results if status == 503]
    assert all(r.headers["Retry-After"].isdigit() and "busy" in r.json()["detail"] for _, r in refused)
    assert max(seconds for seconds, _ in refused) < 5.0, "a refusal waited instead of answering at once"
    assert_healthz_quick(health)
    # Once the crowd has gone, everything answers again.
    assert httpx.get(f"{server.url}/api/v1/generations", headers=bearer(user), timeout=30).status_code == 200


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(out, format="PNG")
    return out.getvalue()


class SlowUpload:
    """A reference-image upload over a raw socket that sends its headers and half its body, then waits."""

    BOUNDARY = "loadtestboundary"

    def __init__(self, server: LiveServer, user: dict[str, str], png: bytes) -> None:
        head = (f"--{self.BOUNDARY}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nreference_image\r\n"
                f"--{self.BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"noise.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + png
        self.body = head + f"\r\n--{self.BOUNDARY}--\r\n".encode()
        self.request = (f"POST /api/v1/assets HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                        f"Authorization: Bearer {user['api_key']}\r\nConnection: close\r\n"
                        f"Content-Type: multipart/form-data; boundary={self.BOUNDARY}\r\n"
                        f"Content-Length: {len(self.body)}\r\n\r\n").encode()
        self.port = server.port

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.request + self.body[: len(self.body) // 2])
        await self.writer.drain()

    async def finish(self) -> int:
        self.writer.write(self.body[len(self.body) // 2:])
        await self.writer.drain()
        status_line = await asyncio.wait_for(self.reader.readline(), REQUEST_TIMEOUT)
        self.writer.close()
        return int(status_line.split()[1])

    def abandon(self) -> None:
        self.writer.close()


def test_slow_uploads_do_not_hold_the_slots_of_everyone_else(serve):
    # Four slots, eight uploads whose clients stall halfway: the uploads wait on their clients outside the slots.
    server = serve(IMAGEN_WORKER_THREADS="4")
    uploader = signup(server.url, "uploader@example.com", POLICY_VERSION)
    other = signup(server.url, "other@example.com", POLICY_VERSION)
    png = _png()

    async def scenario() -> tuple[list[tuple[Any, float, Any]], int]:
        uploads = [SlowUpload(server, uploader, png) for _ in range(8)]
        for upload in uploads:
            await upload.start()
        await asyncio.sleep(1.0)  # every upload is in its endpoint, waiting for the rest of its body
        try:
            others = await crowd(server.url, [("GET", "/api/v1/generations", bearer(other))] * 20)
            finished = await uploads[0].finish()  # back into a slot, in turn, and stored
        finally:
            for upload in uploads[1:]:
                upload.abandon()
        return others, finished

    others, finished = asyncio.run(scenario())
    statuses = Counter(status for status, _, _ in others)
    assert statuses == {200: 20}, f"{statuses}; server log: {server.log_tail()}"
    slowest = max(seconds for _, seconds, _ in others)
    assert slowest < 5.0, f"a request took {slowest:.1f} s beside stalled uploads"
    assert finished == 201, server.log_tail()
    assets = httpx.get(f"{server.url}/api/v1/assets", headers=bearer(uploader), timeout=30).json()
    assert [a["filename"] for a in assets] == ["noise.png"]


def test_an_exhausted_pool_answers_503_with_retry_after_not_a_long_wait(settings, app):
    settings.db_pool_size, settings.db_pool_timeout_seconds = 2, 0.5
    with TestClient(app, base_url="https://testserver") as client:
        assert client.get("/api/v1/policy").status_code == 200
        held = [app.state.services.db.engine.connect() for _ in range(2)]  # every connection taken, as by stuck work
        try:
            t0 = time.monotonic()
            r = client.get("/api/v1/policy")
            waited = time.monotonic() - t0
            assert client.get("/healthz").status_code == 200  # touches no pool
        finally:
            for conn in held:
                conn.close()
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit(), r.text
        assert "unavailable" in r.json()["detail"]
        assert waited < 5.0, f"the refusal took {waited:.1f} s"
        assert client.get("/api/v1/policy").status_code == 200


# ---- the gate itself (no server) ----

def test_gate_admits_its_size_then_refuses_waiters_beyond_the_limit_and_the_wait():
    async def scenario() -> dict[str, Any]:
        gate = RequestGate(2, max_wait=0.2, max_waiting=1)
        inside, peak, release = 0, 0, asyncio.Event()

        async def hold() -> str:
            nonlocal inside, peak
            try:
                async with gate.slot():
                    inside += 1
                    peak = max(peak, inside)
                    await release.wait()
                    inside -= 1
                return "served"
            except Busy as busy:
                return f"busy: {busy.detail}"

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(hold())  # waits: the one place in the queue
        await asyncio.sleep(0.01)
        turned_away = await hold()  # the queue is full: refused without waiting
        timed_out = await waiter  # nobody left within max_wait
        # A stream's look (bounded=False) waits as long as it takes instead.
        patient = asyncio.create_task(hold_unbounded(gate))
        await asyncio.sleep(0.3)
        still_waiting = not patient.done()
        release.set()
        served = [await h for h in holders] + [await patient]
        return {"peak": peak, "turned_away": turned_away, "timed_out": timed_out, "still_waiting": still_waiting,
                "served": served, "left": (gate.holding, gate.waiting)}

    out = asyncio.run(scenario())
    assert out["peak"] == 2
    assert out["turned_away"].startswith("busy:") and "waiting" in out["turned_away"]
    assert out["timed_out"].startswith("busy:") and "0.2 s" in out["timed_out"]
    assert out["still_waiting"] and out["served"] == ["served"] * 3
    assert out["left"] == (0, 0)


async def hold_unbounded(gate: RequestGate) -> str:
    async with gate.slot(bounded=False):
        return "served"
