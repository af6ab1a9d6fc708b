"""Every job reaches a final state: a failing blob store (full, read-only), a database that goes away mid-job, a
worker gone silent, a job past its time limit. The job ends failed (saying why) or succeeded within a minute, its
progress stream ends, its transient input goes, the user's limit is freed and cancel still works. Per-user cost limits
are refused at submit."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from imagen.app import create_app
from imagen.generation import tasks
from imagen.generation.limits import job_cost
from imagen.generation.models import Generation, Output
from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.storage.local import LocalBlobStore
from tests.conftest import TINY, signup, wait_for
from tests.test_generation import png_b64, submit

END = 60.0  # the bound: every job ends within a minute


# ---- faults ----

class FaultyBlobs(LocalBlobStore):
    """The real local store; while `fail_with` is set, writes under outputs/ fail as a full disk would."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fail_with: int | None = None
        self.failed_puts = 0
        self.failing = threading.Event()  # set at the first refused write

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.fail_with is not None and key.startswith("outputs/"):
            self.failed_puts += 1
            self.failing.set()
            raise OSError(self.fail_with, os.strerror(self.fail_with), str(self.root / key))
        super().put(key, data, content_type)


@pytest.fixture
def blobs(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> FaultyBlobs:
    store = FaultyBlobs(settings.blobs_dir)
    monkeypatch.setattr("imagen.services.make_blob_store", lambda _settings: store)
    return store


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> tuple[float, ...]:
    delays = (0.05, 0.05, 0.05)
    monkeypatch.setattr(tasks, "FINISH_RETRY_DELAYS", delays)
    return delays


class DatabaseOutage:
    """Every statement on the engine fails while active, as when the database server goes away."""

    def __init__(self, engine: Engine) -> None:
        self.active = threading.Event()
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._check)

    def _check(self, *_args: Any) -> None:
        if self.active.is_set():
            raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection unexpectedly"))

    def begin(self, seconds: float) -> None:
        self.timer = threading.Timer(seconds, self.active.clear)
        self.timer.start()
        self.active.set()

    def wait_over(self) -> None:
        self.timer.join(END)
        assert not self.active.is_set()

    def remove(self) -> None:
        self.active.clear()
        event.remove(self.engine, "before_cursor_execute", self._check)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """The folder refuses writes: by its mode for a normal user; root ignores modes, so the immutable flag then."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    immutable = False
    if _writable(folder) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        if _writable(folder):
            pytest.skip("this machine cannot make a folder read-only (root without chattr)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").mkdir()
    except OSError:
        return False
    (folder / ".probe").rmdir()
    return True


# ---- helpers ----

def events_until_done(client: TestClient, gen_id: str) -> list[tuple[str, dict]]:
    """The progress stream, read in a thread: it must end (with `done`) within the bound."""
    events: list[tuple[str, dict]] = []

    def read() -> None:
        with client.stream("GET", f"/api/v1/generations/{gen_id}/events") as r:
            name = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name or "", json.loads(line[6:])))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(END)
    assert not reader.is_alive(), f"the progress stream of {gen_id} did not end; events: {events}"
    assert events and events[-1][0] == "done", events
    return events


def inputs_of(app: FastAPI, gen_id: str) -> list[str]:
    return [k for k in app.state.services.blobs.keys("inputs/") if f"/{gen_id}/" in k]


def assert_freed_and_usable(client: TestClient, app: FastAPI, gen_id: str) -> None:
    """The job holds nothing: no outputs, no input, the user's only slot is free again, cancel says it ended."""
    body = client.get(f"/api/v1/generations/{gen_id}").json()
    assert body["outputs"] == [] and inputs_of(app, gen_id) == []
    assert not [k for k in app.state.services.blobs.keys("outputs/") if f"/{gen_id}/" in k]
    with app.state.services.db.transaction() as s:
        assert s.scalars(select(Output).where(Output.generation_id == gen_id)).all() == []
    r = client.post(f"/api/v1/generations/{gen_id}/cancel")
    assert r.status_code == 409 and body["status"] in r.json()["detail"]
    again = submit(client)  # max_queued_per_user is 1 in these tests
    assert again.status_code == 202, again.text
    assert wait_for(client, again.json()["id"], timeout=END)["status"] == "succeeded"


@pytest.fixture
def one_slot(settings: Settings) -> Settings:
    settings.max_queued_per_user = 1
    return settings


# ---- the blob store fails ----

def test_full_blob_store_fails_the_job_after_retries_saying_why(one_slot, blobs, quick_retries, user_client, app):
    blobs.fail_with = errno.ENOSPC
    gid = submit(user_client, "img2img", init_image=png_b64(), strength=0.5).json()["id"]
    events = events_until_done(user_client, gid)
    done = events[-1][1]
    assert done["status"] == "failed"
    assert done["error"] == "Could not store the outputs (No space left on device); submit it again later"
    assert blobs.failed_puts == 1 + len(quick_retries)  # tried again, a bounded number of times
    blobs.fail_with = None
    assert_freed_and_usable(user_client, app, gid)


def test_read_only_blob_folder_fails_the_job_saying_why(one_slot, quick_retries, user_client, app, settings):
    with read_only(settings.blobs_dir / "outputs"):
        gid = submit(user_client, "img2img", init_image=png_b64(), strength=0.5).json()["id"]
        body = wait_for(user_client, gid, timeout=END)
    assert body["status"] == "failed" and body["error"].startswith("Could not store the outputs (")
    assert body["error"].split("(")[1].split(")")[0] in (
        "Permission denied", "Operation not permitted", "Read-only file system")
    assert str(settings.data_dir) not in body["error"]  # the cause, never a server path
    assert_freed_and_usable(user_client, app, gid)


def test_cancel_while_the_outputs_cannot_be_stored(one_slot, blobs, user_client, app, monkeypatch):
    monkeypatch.setattr(tasks, "FINISH_RETRY_DELAYS", (0.25,) * 40)  # ten seconds of retries, unless canceled
    blobs.fail_with = errno.ENOSPC
    gid = submit(user_client, "img2img", init_image=png_b64(), strength=0.5).json()["id"]
    assert blobs.failing.wait(END)
    assert user_client.post(f"/api/v1/generations/{gid}/cancel").status_code == 200
    assert events_until_done(user_client, gid)[-1][1]["status"] == "canceled"
    assert blobs.failed_puts < 41  # the retries stopped at the cancel
    blobs.fail_with = None
    assert_freed_and_usable(user_client, app, gid)


# ---- the database goes away ----

def test_database_gone_while_recording_the_end(one_slot, quick_retries, user_client, app, runtime, monkeypatch):
    outage = DatabaseOutage(app.state.services.db.engine)
    real_run = runtime.run

    def run_then_lose_the_database(spec, **kwargs):
        result = real_run(spec, **kwargs)
        outage.begin(2.0)  # longer than the worker's retries: the end is written when the database is back
        return result

    monkeypatch.setattr(runtime, "run", run_then_lose_the_database)
    try:
        gid = submit(user_client, "img2img", init_image=png_b64(), strength=0.5).json()["id"]
        _wait_for_outage(outage)
        outage.wait_over()
        monkeypatch.setattr(runtime, "run", real_run)
        body = wait_for(user_client, gid, timeout=END)
        assert body["status"] == "failed"
        assert body["error"] == "Could not store the outputs: the database was unavailable; submit it again"
        assert events_until_done(user_client, gid)[-1][1]["status"] == "failed"
        assert_freed_and_usable(user_client, app, gid)
    finally:
        outage.remove()


def _wait_for_outage(outage: DatabaseOutage) -> None:
    deadline = time.monotonic() + END
    while not outage.active.wait(0.02):
        assert time.monotonic() < deadline, "the job never got that far"


def test_database_gone_between_steps_loses_only_progress(one_slot, user_client, app, runtime, monkeypatch):
    outage = DatabaseOutage(app.state.services.db.engine)
    real_run = runtime.run

    def run_losing_the_database_at_step_one(spec, on_progress=None, should_cancel=None):
        def progress(step: int, total: int) -> None:
            if step == 1:
                outage.begin(1.0)
            on_progress(step, total)
        return real_run(spec, on_progress=progress, should_cancel=should_cancel)

    monkeypatch.setattr(runtime, "run", run_losing_the_database_at_step_one)
    try:
        gid = submit(user_client, steps=8).json()["id"]
        _wait_for_outage(outage)
        outage.wait_over()
        body = wait_for(user_client, gid, timeout=END)
        assert body["status"] == "succeeded" and len(body["outputs"]) == 1
    finally:
        outage.remove()


# ---- the watchdog and the time limit ----

@pytest.fixture
def hung_runtime(runtime, monkeypatch):
    """The runtime hangs inside a step (never checks for cancel) until released."""
    entered, release = threading.Event(), threading.Event()
    real_run = runtime.run

    def hung(spec, **kwargs):
        entered.set()
        release.wait(END)
        return real_run(spec, **kwargs)

    monkeypatch.setattr(runtime, "run", hung)
    yield entered, release
    release.set()


def test_watchdog_ends_jobs_whose_worker_went_silent(settings, hung_runtime, runtime):
    settings.job_stale_seconds = 1.0
    entered, release = hung_runtime
    app = create_app(settings, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as c:
        signup(c)
        busy = submit(c).json()["id"]
        assert entered.wait(END)
        orphan, asked = submit(c, seed=1).json()["id"], submit(c, seed=2).json()["id"]
        long_ago = utcnow() - timedelta(seconds=30)  # silent far longer than 1 s, well within the time limit
        with app.state.services.db.transaction() as s:  # claimed by a worker (another process) that then died
            s.execute(update(Generation).where(Generation.id.in_([orphan, asked])).values(
                status="running", started_at=long_ago, heartbeat_at=long_ago))
            s.execute(update(Generation).where(Generation.id == asked).values(cancel_requested=True))
        done = events_until_done(c, orphan)[-1][1]
        assert done["status"] == "failed"
        assert done["error"] == "The worker running this job stopped reporting; submit it again"
        assert wait_for(c, asked, timeout=END)["status"] == "canceled"
        # This process's own job reports while it runs, however long a step takes: let several stale periods pass.
        with app.state.services.db.transaction() as s:
            started = s.get(Generation, busy).started_at
        while utcnow() < started + timedelta(seconds=4):
            time.sleep(0.1)
        with app.state.services.db.transaction() as s:
            gen = s.get(Generation, busy)
            assert gen.status == "running" and gen.heartbeat_at > started + timedelta(seconds=2)
        release.set()
        assert wait_for(c, busy, timeout=END)["status"] == "succeeded"


def test_job_timeout_stops_a_long_job(settings, runtime, monkeypatch):
    settings.job_timeout_seconds = 2
    real_run = runtime.run

    def slow_run(spec, on_progress=None, should_cancel=None):
        def progress(step: int, total: int) -> None:
            threading.Event().wait(0.2)  # a big image: each step takes a while
            on_progress(step, total)
        return real_run(spec, on_progress=progress, should_cancel=should_cancel)

    monkeypatch.setattr(runtime, "run", slow_run)
    app = create_app(settings, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as c:
        signup(c)
        gid = submit(c, steps=150).json()["id"]  # 30 s of steps
        body = wait_for(c, gid, timeout=20)
        assert body["status"] == "failed" and body["error"] == "Timed out after 2 s (the server's limit per job)"
        assert body["progress"] < 1 and body["outputs"] == []
        monkeypatch.setattr(runtime, "run", real_run)
        # However loaded this machine, the next job may take its time.
        app.state.services.executor.job_timeout_seconds = 0
        assert wait_for(c, submit(c).json()["id"], timeout=END)["status"] == "succeeded"  # the worker is free


def test_watchdog_ends_a_job_stuck_inside_a_step_past_the_time_limit(settings, hung_runtime, runtime):
    settings.job_timeout_seconds, settings.job_stale_seconds = 2, 1.0
    entered, release = hung_runtime
    app = create_app(settings, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as c:
        signup(c)
        gid = submit(c).json()["id"]
        assert entered.wait(END)
        done = events_until_done(c, gid)[-1][1]
        assert done["status"] == "failed" and done["error"] == "Timed out after 2 s (the server's limit per job)"
        release.set()  # the step returns at last: the job stays failed, and the worker takes the next one
        app.state.services.executor.job_timeout_seconds = 0
        assert wait_for(c, submit(c).json()["id"], timeout=END)["status"] == "succeeded"
        assert c.get(f"/api/v1/generations/{gid}").json()["status"] == "failed"


# ---- transient inputs, crash recovery ----

def test_restart_removes_inputs_of_jobs_that_ended_before_the_crash(settings, runtime):
    settings.worker_autostart = False
    first = create_app(settings, run_migrations=False, runtime=runtime)
    with TestClient(first, base_url="https://testserver") as c:
        signup(c)
        gid = submit(c, "img2img", init_image=png_b64(), strength=0.5).json()["id"]
        with first.state.services.db.transaction() as s:  # its end committed, then the process died before the delete
            s.execute(update(Generation).where(Generation.id == gid).values(
                status="failed", error="x", input_blob_key=None, finished_at=utcnow()))
    assert len(inputs_of(first, gid)) == 1
    settings.worker_autostart = True
    second = create_app(settings, run_migrations=False, runtime=runtime)
    with TestClient(second, base_url="https://testserver"):
        assert inputs_of(second, gid) == []


# ---- cost limits at submit ----

def test_job_cost_counts_pixels_steps_images_and_every_pass():
    assert job_cost("txt2img", {"width": 64, "height": 128, "steps": 3, "batch_size": 2}) == 64 * 128 * 3 * 2
    assert job_cost("hires_fix", {"width": 64, "height": 64, "steps": 2, "batch_size": 1, "hires_scale": 1.5,
                                  "hires_steps": 4}) == 64 * 64 * 2 + 96 * 96 * 4


def test_a_job_over_the_cost_limit_is_refused_saying_why(user_client, settings):
    settings.max_job_cost = job_cost("txt2img", TINY)
    assert submit(user_client).status_code == 202
    r = submit(user_client, steps=3)
    assert r.status_code == 422
    assert r.json()["detail"] == (
        "This job's cost is 12,288 (pixels x steps x images), more than the server's limit per job of 8,192 "
        "(IMAGEN_MAX_JOB_COST); use a smaller size, fewer steps or fewer images.")


def test_queued_cost_per_user_is_refused_saying_why_and_freed_by_a_cancel(settings, runtime):
    settings.worker_autostart = False
    settings.max_queued_cost_per_user = 2 * job_cost("txt2img", TINY)
    app = create_app(settings, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as c:
        signup(c)
        first = submit(c).json()["id"]
        assert submit(c, seed=1).status_code == 202
        r = submit(c, seed=2)
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "Your queued and running jobs cost 16,384 (pixels x steps x images)" in detail
        assert "IMAGEN_MAX_QUEUED_COST_PER_USER" in detail
        other = TestClient(app, base_url="https://testserver")
        signup(other, "other@example.com")
        assert submit(other).status_code == 202  # the limit is per user
        assert c.post(f"/api/v1/generations/{first}/cancel").status_code == 200
        assert submit(c, seed=2).status_code == 202
