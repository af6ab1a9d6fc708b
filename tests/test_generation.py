"""Generations through the API: validation, reproducibility, fairness, cancel, restart recovery, SSE, isolation."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select, update

from imagen.app import create_app
from imagen.generation.models import Generation, Output
from imagen.generation.queue import FairQueue
from imagen.generation.service import generation_service
from tests.conftest import TINY, signup, wait_for


def submit(client: TestClient, workflow: str = "txt2img", **params):
    payload = {"workflow": workflow, "params": {"prompt": "a fox", **TINY, **params}}
    return client.post("/api/v1/generations", json=payload)


def test_generation_succeeds_and_stamps_what_made_it(user_client, runtime):
    r = submit(user_client, batch_size=2)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    body = wait_for(user_client, r.json()["id"])
    assert body["status"] == "succeeded" and body["progress"] == 1.0 and body["error"] is None
    assert body["workflow"] == "txt2img" and body["workflow_version"] == 3 and body["pipeline"] == "txt2img"
    assert body["checkpoint_sha256"] == runtime.checkpoints.get("imagen-tiny").sha256
    assert body["consent_model_improvement"] is False
    assert [o["seed"] for o in body["outputs"]] == [42, 43]
    for out in body["outputs"]:
        png = user_client.get(out["url"])
        assert png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (64, 64) == (out["width"], out["height"])
    assert {"load_seconds", "inference_seconds", "peak_memory_bytes"} <= set(body["signals"])


def test_consent_stamp_follows_the_users_choice(client):
    signup(client, consents={"model_improvement": True})
    body = wait_for(client, submit(client).json()["id"])
    assert body["consent_model_improvement"] is True


def test_same_seed_same_image_and_random_seed_is_recorded(user_client):
    a = wait_for(user_client, submit(user_client, seed=1234).json()["id"])
    b = wait_for(user_client, submit(user_client, seed=1234).json()["id"])
    c = wait_for(user_client, submit(user_client, seed=1235).json()["id"])
    png = [user_client.get(x["outputs"][0]["url"]).content for x in (a, b, c)]
    assert png[0] == png[1] and png[0] != png[2]
    r = wait_for(user_client, submit(user_client, seed=-1).json()["id"])
    assert r["params"]["seed"] >= 0 and r["outputs"][0]["seed"] == r["params"]["seed"]
    again = wait_for(user_client, submit(user_client, seed=r["params"]["seed"]).json()["id"])
    assert user_client.get(again["outputs"][0]["url"]).content == user_client.get(r["outputs"][0]["url"]).content


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"steps": 0}, "steps", "greater than or equal to 1"),
        ({"steps": 151}, "steps", "less than or equal to 150"),
        ({"steps": 2.5}, "steps", "valid integer"),
        ({"width": 100}, "width", "multiple of 8"),
        ({"height": 4096}, "height", "less than or equal to 2048"),
        ({"guidance": -1}, "guidance", "greater than or equal to 0"),
        ({"scheduler": "warp"}, "scheduler", "euler"),
        ({"batch_size": 9}, "batch_size", "less than or equal to 4"),
        ({"bogus": 1}, "bogus", "Extra inputs are not permitted"),
        ({"prompt": ""}, "prompt", "at least 1 character"),
        ({"checkpoint": "nope"}, "checkpoint", "unknown checkpoint"),
    ],
)
def test_bad_parameters_are_422_naming_field_and_reason(user_client, app, params, field, reason):
    r = submit(user_client, **params)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["loc"][-1] == field and reason in d["msg"] for d in detail), detail
    with app.state.services.db.transaction() as s:
        assert s.scalars(select(Generation)).first() is None


def test_unknown_workflow_and_missing_prompt(user_client):
    r = user_client.post("/api/v1/generations", json={"workflow": "nope", "params": {}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "workflow"]
    r = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "prompt"


def png_b64(color=(200, 30, 30), size=(64, 64)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_img2img_runs_and_its_transient_input_is_deleted(user_client, app):
    r = submit(user_client, "img2img", init_image=png_b64(), strength=0.5, steps=4)
    assert r.status_code == 202, r.text
    assert r.json()["params"]["init_image"].startswith("sha256:")  # the pixels are not kept in the record
    body = wait_for(user_client, r.json()["id"])
    assert body["status"] == "succeeded", body
    assert not list(app.state.services.blobs.keys("inputs/"))


@pytest.mark.parametrize(
    ("image", "reason"),
    [("!!!notbase64", "base64"), (base64.b64encode(b"GIF89a not really").decode(), "readable"),
     (base64.b64encode(b"hello").decode(), "readable")],
)
def test_img2img_refuses_bad_images(user_client, app, image, reason):
    r = submit(user_client, "img2img", init_image=image)
    assert r.status_code == 422 and reason in r.json()["detail"][0]["msg"]
    assert r.json()["detail"][0]["loc"] == ["body", "params", "init_image"]
    assert not list(app.state.services.blobs.keys("inputs/"))


class Jobs:
    """Which jobs the in-process executor started and finished, so a test waits for the end of a job instead of
    sleeping (it runs one job at a time; a job's files are written or deleted before it counts as finished)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from imagen.executors import local

        self.started: list[str] = []
        self.finished: list[str] = []
        self._cond = threading.Condition()
        real = local.execute_generation

        def run(db, runtime, blobs, generation_id, *args, **kwargs):
            with self._cond:
                self.started.append(generation_id)
            try:
                return real(db, runtime, blobs, generation_id, *args, **kwargs)
            finally:
                with self._cond:
                    self.finished.append(generation_id)
                    self._cond.notify_all()

        monkeypatch.setattr(local, "execute_generation", run)

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Until every job that started has finished."""
        with self._cond:
            assert self._cond.wait_for(lambda: set(self.started) <= set(self.finished), timeout), self.started


def inputs_of(app, gen_id: str) -> list[str]:
    return [k for k in app.state.services.blobs.keys("inputs/") if f"/{gen_id}/" in k]


def test_transient_input_goes_when_a_queued_job_is_canceled(paused_settings, app):
    """Policy §4.1: img2img/inpaint inputs are kept only until the job ends, and a cancel ends it."""
    with TestClient(app, base_url="https://testserver") as c:
        signup(c)
        gid = submit(c, "img2img", init_image=png_b64(), strength=0.5).json()["id"]
        assert len(inputs_of(app, gid)) == 1
        assert c.post(f"/api/v1/generations/{gid}/cancel").json()["status"] == "canceled"
        assert inputs_of(app, gid) == []  # deleted after the cancel committed, before the answer
        with app.state.services.db.transaction() as s:
            assert s.get(Generation, gid).input_blob_key is None


def test_transient_input_goes_when_the_running_job_is_canceled(user_client, app):
    gid = submit(user_client, "img2img", init_image=png_b64((10, 200, 10), (128, 128)), strength=0.9, steps=150,
                 width=128, height=128).json()["id"]
    wait_for(user_client, gid, ("running",))
    assert len(inputs_of(app, gid)) == 1
    assert user_client.post(f"/api/v1/generations/{gid}/cancel").status_code == 200
    assert wait_for(user_client, gid)["status"] == "canceled"
    assert inputs_of(app, gid) == []


def test_transient_input_goes_when_the_job_fails(user_client, app, runtime, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("the GPU fell over")

    monkeypatch.setattr(runtime, "run", broken)
    gid = submit(user_client, "img2img", init_image=png_b64(), strength=0.5).json()["id"]
    body = wait_for(user_client, gid)
    assert body["status"] == "failed" and "RuntimeError" in body["error"]
    assert inputs_of(app, gid) == []


def test_transient_input_goes_when_a_restart_fails_the_interrupted_job(paused_settings, runtime):
    first = create_app(paused_settings, run_migrations=False, runtime=runtime)
    with TestClient(first, base_url="https://testserver") as c:
        signup(c)
        gid = submit(c, "img2img", init_image=png_b64(), strength=0.5).json()["id"]
        with first.state.services.db.transaction() as s:  # as if the process died mid-job
            s.execute(update(Generation).where(Generation.id == gid).values(status="running"))
    assert len(inputs_of(first, gid)) == 1
    paused_settings.worker_autostart = True
    second = create_app(paused_settings, run_migrations=False, runtime=runtime)
    with TestClient(second, base_url="https://testserver"):  # the executor starts: interrupted jobs fail
        with second.state.services.db.transaction() as s:
            gen = s.get(Generation, gid)
            assert (gen.status, gen.input_blob_key) == ("failed", None)
        assert inputs_of(second, gid) == []


def test_workflows_and_models_are_listed(user_client, runtime):
    wfs = {w["name"]: w for w in user_client.get("/api/v1/workflows").json()}
    assert {"txt2img", "img2img"} <= set(wfs)
    steps = next(p for p in wfs["txt2img"]["parameters"] if p["name"] == "steps")
    assert steps["minimum"] == 1 and steps["maximum"] == 150 and steps["default"] == 20
    assert any(p["name"] == "init_image" for p in wfs["img2img"]["parameters"])
    models = user_client.get("/api/v1/models").json()
    tiny = next(m for m in models if m["name"] == "imagen-tiny")
    assert tiny["sha256"] == runtime.checkpoints.get("imagen-tiny").sha256


def test_diffusers_folder_dropped_in_models_dir_is_usable(user_client, runtime, models_dir):
    import shutil

    src = models_dir / "checkpoints" / "imagen-tiny"
    dst = models_dir / "checkpoints" / "my-copy"
    if not dst.exists():
        shutil.copytree(src, dst)
    assert "my-copy" in [m["name"] for m in user_client.get("/api/v1/models").json()]
    body = wait_for(user_client, submit(user_client, checkpoint="my-copy").json()["id"])
    assert body["status"] == "succeeded" and body["checkpoint"] == "my-copy"


# ---- fairness, cancel, restart ----

@pytest.fixture
def paused_settings(settings):
    settings.worker_autostart = False
    return settings


def test_round_robin_between_users(paused_settings, runtime, app):
    with TestClient(app, base_url="https://testserver") as a:
        signup(a, "a@example.com")
        b = TestClient(app, base_url="https://testserver")
        signup(b, "b@example.com")
        ids_a = [submit(a, seed=i).json()["id"] for i in range(3)]
        ids_b = [submit(b, seed=i).json()["id"] for i in range(2)]
        fair, order = FairQueue(), []
        while True:
            with app.state.services.db.transaction() as s:
                job = generation_service.claim_next(s, fair=fair)
                if job is None:
                    break
                order.append(job.id)
        # A queued three before B queued any, yet B's jobs interleave with A's.
        assert order == [ids_a[0], ids_b[0], ids_a[1], ids_b[1], ids_a[2]]


def test_fair_order_when_the_worker_runs(paused_settings, runtime, app):
    with TestClient(app, base_url="https://testserver") as a:
        signup(a, "a@example.com")
        b = TestClient(app, base_url="https://testserver")
        signup(b, "b@example.com")
        ids = [submit(a, seed=i).json()["id"] for i in range(3)] + [submit(b, seed=i).json()["id"] for i in range(3)]
        app.state.services.executor.start()
        done = [wait_for(a if i < 3 else b, gid) for i, gid in enumerate(ids)]
        assert all(d["status"] == "succeeded" for d in done)
        by_start = sorted(done, key=lambda d: d["started_at"])
        owners = ["a" if d["id"] in ids[:3] else "b" for d in by_start]
        assert owners == ["a", "b", "a", "b", "a", "b"]


def test_cancel_queued(paused_settings, app, monkeypatch):
    jobs = Jobs(monkeypatch)
    with TestClient(app, base_url="https://testserver") as c:
        signup(c)
        gid = submit(c).json()["id"]
        r = c.post(f"/api/v1/generations/{gid}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "canceled"
        assert c.post(f"/api/v1/generations/{gid}/cancel").status_code == 409
        later = submit(c, seed=7).json()["id"]
        app.state.services.executor.start()
        assert wait_for(c, later)["status"] == "succeeded"  # the worker went through the queue past it
        jobs.wait_idle()
        assert gid not in jobs.started and later in jobs.started
        assert c.get(f"/api/v1/generations/{gid}").json()["status"] == "canceled"


def test_cancel_running(user_client, app):
    gid = submit(user_client, steps=150, width=128, height=128).json()["id"]
    wait_for(user_client, gid, ("running",))
    deadline = time.monotonic() + 60
    while user_client.get(f"/api/v1/generations/{gid}").json()["progress"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    r = user_client.post(f"/api/v1/generations/{gid}/cancel")
    assert r.status_code == 200
    body = wait_for(user_client, gid)
    assert body["status"] == "canceled" and body["outputs"] == [] and 0 < body["progress"] < 1
    assert not list(app.state.services.blobs.keys("outputs/"))
    # The worker is free again.
    assert wait_for(user_client, submit(user_client).json()["id"])["status"] == "succeeded"


def test_restart_resumes_queued_and_fails_interrupted(paused_settings, runtime):
    first = create_app(paused_settings, run_migrations=False, runtime=runtime)
    with TestClient(first, base_url="https://testserver") as c:
        signup(c)
        interrupted = submit(c).json()["id"]
        queued = submit(c, seed=5).json()["id"]
        with first.state.services.db.transaction() as s:  # as if the process died mid-job
            s.execute(update(Generation).where(Generation.id == interrupted).values(status="running"))
        cookies, csrf = dict(c.cookies), c.headers["X-CSRF-Token"]

    paused_settings.worker_autostart = True
    second = create_app(paused_settings, run_migrations=False, runtime=runtime)
    with TestClient(second, base_url="https://testserver", cookies=cookies) as c:
        c.headers["X-CSRF-Token"] = csrf
        failed = c.get(f"/api/v1/generations/{interrupted}").json()
        assert failed["status"] == "failed" and "restart" in failed["error"]
        assert wait_for(c, queued)["status"] == "succeeded"


def test_shutdown_requeues_the_running_job(settings, runtime):
    app = create_app(settings, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as c:
        signup(c)
        gid = submit(c, steps=150, width=128, height=128).json()["id"]
        wait_for(c, gid, ("running",))
    with app.state.services.db.transaction() as s:
        assert s.get(Generation, gid).status == "queued"


# ---- progress events ----

def test_sse_streams_progress_then_done(user_client):
    gid = submit(user_client, steps=30, width=128, height=128).json()["id"]
    events = []
    with user_client.stream("GET", f"/api/v1/generations/{gid}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "done":
                    break
    progress = [d["progress"] for n, d in events if n == "progress"]
    assert progress == sorted(progress) and len(progress) >= 2
    assert any(0 < p < 1 for p in progress)
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["outputs"][0]["url"].startswith("/api/v1/outputs/")


# ---- isolation, listing, deletion ----

def test_another_users_objects_answer_404(user_client, new_client):
    body = wait_for(user_client, submit(user_client).json()["id"])
    gid, oid = body["id"], body["outputs"][0]["id"]
    other = new_client()
    signup(other, "mallory@example.com")
    for method, url in [("GET", f"/api/v1/generations/{gid}"), ("POST", f"/api/v1/generations/{gid}/cancel"),
                        ("DELETE", f"/api/v1/generations/{gid}"), ("GET", f"/api/v1/generations/{gid}/events"),
                        ("GET", f"/api/v1/outputs/{oid}")]:
        r = other.request(method, url)
        assert r.status_code == 404, (method, url, r.status_code)
        assert r.json()["detail"].endswith("not found")
    assert other.get("/api/v1/generations").json()["items"] == []
    anonymous = new_client()
    assert anonymous.get(f"/api/v1/outputs/{oid}").status_code == 401
    assert user_client.get(f"/api/v1/outputs/{oid}").status_code == 200


def test_list_is_paginated_newest_first(user_client):
    ids = [submit(user_client, seed=i).json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        page = user_client.get("/api/v1/generations", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200
        seen += [g["id"] for g in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    assert user_client.get("/api/v1/generations", params={"cursor": "garbage"}).status_code == 422
    for gid in ids:
        wait_for(user_client, gid)


def test_delete_removes_outputs_and_blobs(user_client, app):
    body = wait_for(user_client, submit(user_client, batch_size=2).json()["id"])
    keys = list(app.state.services.blobs.keys("outputs/"))
    assert len(keys) == 2
    assert user_client.delete(f"/api/v1/generations/{body['id']}").status_code == 204
    assert user_client.get(f"/api/v1/generations/{body['id']}").status_code == 404
    assert user_client.get(body["outputs"][0]["url"]).status_code == 404
    assert not list(app.state.services.blobs.keys("outputs/"))
    with app.state.services.db.transaction() as s:
        assert s.scalars(select(Output)).first() is None


def test_fair_queue_prefers_a_loaded_checkpoint_only_among_equally_fair_jobs():
    from datetime import UTC, datetime, timedelta

    from imagen.generation.queue import QueuedJob

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = [t0 + timedelta(seconds=i) for i in range(6)]
    fair = FairQueue()
    queued = [QueuedJob("a1", "a", at[0], "cold"), QueuedJob("a2", "a", at[1], "warm"),
              QueuedJob("b1", "b", at[2], "cold"), QueuedJob("c1", "c", at[3], "warm")]
    # Nobody served yet: all three users are tied, so the oldest warm job goes first.
    assert fair.choose(queued, {"warm"}).id == "a2"
    # Without a warm checkpoint, plain fairness: oldest job of the tied users.
    assert fair.choose(queued, set()).id == "a1"
    fair.served("a")
    fair.served("c")
    # b has waited longest; a warm job of a user who was just served doesn't jump ahead of b.
    assert fair.choose([j for j in queued if j.id != "c1"], {"warm"}).id == "b1"
    # Within one user's own jobs, the warm one goes first.
    fair.served("b")
    mine = [QueuedJob("a3", "a", at[4], "cold"), QueuedJob("a4", "a", at[5], "warm")]
    assert fair.choose(mine, {"warm"}).id == "a4"
