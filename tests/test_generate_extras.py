"""The generate page's extras on the API side: live previews while a job denoises (SSE and A1111 `current_image`),
never stored; and the PNG drop's `POST /api/v1/png-info`, which turns A1111 `parameters` text into form fields."""

from __future__ import annotations

import base64
import io
import json
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from imagen.app import create_app
from imagen.generation.models import Generation
from imagen.inference.preview import PREVIEW_MAX_SIDE, due, latents_to_preview
from tests.conftest import TINY, signup, wait_for
from tests.test_a1111 import api_key, basic

JPEG_PREFIX = "data:image/jpeg;base64,"


def submit(client: TestClient, **params: Any) -> str:
    r = client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {"prompt": "a fox", **TINY,
                                                                                    **params}})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def hold_first_preview(app, timeout: float = 20.0) -> tuple[threading.Event, threading.Event]:
    """The worker pauses right after its first preview (until `release`, at most `timeout`), so a reader sees it
    whatever the machine's speed. Returns (seen, release)."""
    signals = app.state.services.signals
    seen, release = threading.Event(), threading.Event()
    original = signals.set_preview

    def set_preview(generation_id: str, jpeg: bytes) -> None:
        original(generation_id, jpeg)
        if not seen.is_set():
            seen.set()
            release.wait(timeout)

    signals.set_preview = set_preview
    return seen, release


def stream_events(client: TestClient, gid: str, on_event=lambda name, data: None) -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = []
    with client.stream("GET", f"/api/v1/generations/{gid}/events") as r:
        assert r.status_code == 200
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                events.append((name, data))
                on_event(name, data)
                if name == "done" or len(events) > 500:
                    break
    return events


# ---- previews: the runtime's approximation ----

def test_preview_is_a_small_jpeg_of_at_most_128_px():
    import torch

    for family, shape in (("sd15", (1, 4, 64, 48)), ("sdxl", (2, 4, 128, 128)), ("sd15", (1, 4, 8, 8))):
        jpeg = latents_to_preview(torch.randn(*shape), family)
        image = Image.open(io.BytesIO(jpeg))
        assert image.format == "JPEG" and max(image.size) <= PREVIEW_MAX_SIDE
        assert len(jpeg) < 16 * 1024
    assert [step for step in range(1, 13) if due(step, 12, 5)] == [5, 10]
    assert not any(due(step, 12, 0) for step in range(1, 13))
    assert not due(10, 10, 5)  # none after the last step: the image itself comes then


# ---- previews: in the progress stream ----

def test_sse_progress_carries_a_preview_while_running_and_none_is_stored(user_client, app):
    seen, release = hold_first_preview(app)
    gid = submit(user_client, steps=12, width=64, height=64)

    def on_event(name: str, data: dict) -> None:
        if "preview" in data:
            release.set()

    events = stream_events(user_client, gid, on_event)
    release.set()
    assert seen.is_set()
    previews = [d["preview"] for n, d in events if n == "progress" and "preview" in d]
    assert previews, events
    jpeg = base64.b64decode(previews[0].removeprefix(JPEG_PREFIX))
    assert previews[0].startswith(JPEG_PREFIX) and len(jpeg) < 16 * 1024
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    assert "preview" not in events[-1][1]
    # Transient: gone from memory once the job ended, and nowhere in the stored row or the blob store.
    services = app.state.services
    assert services.signals.preview(gid) is None
    with services.db.transaction() as s:
        gen = s.get(Generation, gid)
        assert "preview" not in json.dumps(gen.signals or {}) and "preview" not in json.dumps(gen.params)
    stored = [p.read_bytes()[:3] for p in services.blobs.root.rglob("*") if p.is_file()]
    assert stored and b"\xff\xd8\xff" not in stored  # outputs (PNG) and thumbnails (WebP); no JPEG preview


def test_no_preview_when_off(settings, runtime):
    app = create_app(settings.model_copy(update={"preview_every_steps": 0}), run_migrations=False, runtime=runtime)
    try:
        with TestClient(app, base_url="https://testserver") as client:
            signup(client)
            calls: list[str] = []
            original = app.state.services.signals.set_preview
            app.state.services.signals.set_preview = lambda gid, jpeg: (calls.append(gid), original(gid, jpeg))
            gid = submit(client, steps=12)
            events = stream_events(client, gid)
            assert events[-1][1]["status"] == "succeeded"
            assert not any("preview" in d for _n, d in events) and calls == []
    finally:
        runtime.preview_every = 5  # the shared runtime is re-pointed by every app; leave it at the default


# ---- previews: A1111's /progress ----

def test_a1111_progress_current_image_is_the_running_jobs_preview(app, user_client):
    sd = TestClient(app, base_url="https://testserver", headers=basic(api_key(user_client)))
    seen, release = hold_first_preview(app)
    try:
        gid = submit(user_client, steps=12)
        assert seen.wait(60), "no preview was made"
        state = sd.get("/sdapi/v1/progress").json()
        assert state["state"]["status"] == "running" and state["current_image"]
        image = Image.open(io.BytesIO(base64.b64decode(state["current_image"])))
        assert image.format == "JPEG" and max(image.size) <= PREVIEW_MAX_SIDE
        skipped = sd.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()
        assert skipped["current_image"] is None
    finally:
        release.set()
    assert wait_for(user_client, gid)["status"] == "succeeded"
    assert sd.get("/sdapi/v1/progress").json()["current_image"] is None


# ---- the PNG drop ----

def png_with(parameters: str | None, fmt: str = "PNG") -> bytes:
    meta = PngImagePlugin.PngInfo()
    if parameters is not None:
        meta.add_text("parameters", parameters)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format=fmt, **({"pnginfo": meta} if fmt == "PNG" else {}))
    return buf.getvalue()


def test_png_info_turns_a1111_parameters_into_form_fields(user_client):
    text = ("a cat, <lora:x:0.5>\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, "
            "CFG scale: 6.5, Seed: 1234, Size: 512x768, Model hash: abc, Model: imagen-tiny")
    r = user_client.post("/api/v1/png-info", content=png_with(text), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["fields"] == {"prompt": "a cat, <lora:x:0.5>", "negative_prompt": "blurry", "steps": 20,
                                  "guidance": 6.5, "seed": 1234, "width": 512, "height": 768,
                                  "scheduler": "dpmpp_2m_karras"}
    # an unknown sampler or a bad number is left out, the rest still fills the form
    r = user_client.post("/api/v1/png-info", content=png_with("a dog\nSteps: many, Sampler: Nope, CFG scale: 7, "
                                                                        "Seed: 3"))
    assert r.status_code == 200 and r.json()["fields"] == {"prompt": "a dog", "negative_prompt": "", "guidance": 7.0,
                                                           "seed": 3}


@pytest.mark.parametrize(("body", "says"), [
    (b"", "send the image file"),
    (b"not an image at all", "not a readable image"),
    ("png-without", "carries no generation parameters"),
    ("jpeg", "carries no generation parameters"),
])
def test_png_info_refuses_bad_input_with_a_clear_422(user_client, body, says):
    content = {"png-without": png_with(None), "jpeg": png_with(None, "JPEG")}.get(body, body)
    r = user_client.post("/api/v1/png-info", content=content, headers={"Content-Type": "image/png"})
    assert r.status_code == 422 and says in r.text, r.text


def test_png_info_needs_a_signed_in_user(client):
    r = client.post("/api/v1/png-info", content=png_with("a cat\nSteps: 2, Sampler: Euler, Seed: 1"))
    assert r.status_code == 401


def test_fleet_previews_cross_through_redis_and_expire():
    """A fleet worker's preview reaches the web process's streams through a Redis key with a short expiry, and is
    deleted when the job ends."""
    redis = pytest.importorskip("redis")
    import os

    from imagen.generation.signals import PREVIEW_KEY, PREVIEW_TTL_SECONDS, RedisGenerationSignals

    url = os.environ.get("IMAGEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {url}")
    worker, web = RedisGenerationSignals(url), RedisGenerationSignals(url)
    try:
        worker.set_preview("gen-preview-test", b"\xff\xd8\xffjpeg")
        assert web.preview("gen-preview-test") == JPEG_PREFIX + base64.b64encode(b"\xff\xd8\xffjpeg").decode()
        assert 0 < web.redis.ttl(PREVIEW_KEY + "gen-preview-test") <= PREVIEW_TTL_SECONDS
        worker.drop_preview("gen-preview-test")
        assert web.preview("gen-preview-test") is None and worker.preview("gen-preview-test") is None
    finally:
        worker.stop()
        web.stop()
