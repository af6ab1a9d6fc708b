"""RunPod serverless: the worker handler runs behind the runpod SDK's local test API server (`--rp_serve_api`, a
subprocess on 127.0.0.1) and `RunPodRuntime` talks to it over HTTP, as it would to api.runpod.ai.

The local server differs from RunPod in ways the tests keep in mind: it runs a job inside the first `/status` call
(so no progress is seen while it runs), and it has no `/cancel`. What it cannot show (queueing, progress, cancelling
a running job, RunPod's own ends) is tested against a scripted endpoint (`httpx.MockTransport`) speaking the same
API, and cancelling inside the worker is tested on the handler itself, as the SDK cancels it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import http.server
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imagen.app import create_app
from imagen.executors import runpod_handler
from imagen.executors.runpod import (
    NO_MODEL_URL,
    UNREACHABLE,
    RunPodError,
    RunPodRuntime,
    WireError,
    decode_spec,
    encode_spec,
)
from imagen.executors.runpod_handler import ModelFiles, make_handler, run_job
from imagen.generation.models import Generation
from imagen.inference.checkpoints import file_sha256
from imagen.inference.runtime import Runtime
from imagen.inference.spec import CheckpointMismatch, JobCanceled, JobSpec, ModelLoadError, ModelRef
from imagen.inference.synthetic import build_tiny_lora
from imagen.inference.tiny import TINY_NAME
from tests.conftest import signup, wait_for
from tests.test_generation import submit

SECRET_PROMPT = "a lighthouse named Quillon-7f3a"  # must never reach the worker's log
PARAMS = {"prompt": SECRET_PROMPT, "negative_prompt": "", "steps": 3, "guidance": 7.0, "width": 64, "height": 64,
          "seed": 11, "batch_size": 1, "scheduler": "euler", "strength": 0.6}
START_SECONDS = 180.0  # bound on the worker subprocess coming up (it imports torch and diffusers)
JOB_SECONDS = 300.0  # bound on one call: the local server runs the whole job inside a /status call


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    image = Image.new("RGB", (64, 64), color)
    image.paste((20, 40, 220), (32, 0, 64, 64))
    image.save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_ref(runtime: Runtime) -> ModelRef:
    ckpt = runtime.checkpoints.get(TINY_NAME)
    return ModelRef(ckpt.name, ckpt.sha256, ckpt.family)


def spec_for(runtime: Runtime, pipeline: str = "txt2img", **params: Any) -> JobSpec:
    init = png((200, 30, 30)) if pipeline in ("img2img", "inpaint") else None
    return JobSpec(pipeline, {**PARAMS, **params}, tiny_ref(runtime), init_image=init)


# ---- the worker behind the SDK's local test server ----

@dataclasses.dataclass
class Worker:
    url: str
    log: Path
    files: Path
    process: subprocess.Popen

    def client(self, **kwargs: Any) -> RunPodRuntime:
        kwargs.setdefault("request_timeout_seconds", JOB_SECONDS)
        kwargs.setdefault("poll_seconds", 0.05)
        return RunPodRuntime(endpoint_url=self.url, api_key="test-key", models_dir=kwargs.pop("models_dir"), **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, runtime: Runtime) -> Iterator[Worker]:
    """`python -m imagen.executors.runpod_handler --rp_serve_api` on 127.0.0.1 and a free port, with the tests'
    models (built already by the `runtime` fixture, so the two processes never build them at once)."""
    root = tmp_path_factory.mktemp("runpod-worker")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEN_", "RUNPOD_"))}
    env.update(IMAGEN_DATA_DIR=str(root / "data"), IMAGEN_MODELS_DIR=str(models_dir), IMAGEN_DEVICE="cpu",
               IMAGEN_RUNPOD_FILE_CACHE=str(root / "files"), UVICORN_LOG_LEVEL="warning")
    log = root / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "imagen.executors.runpod_handler", "--rp_serve_api",
             "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert process.poll() is None, f"the worker exited: {log.read_text(errors='replace')[-3000:]}"
            try:
                if httpx.get(f"{url}/", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the worker did not come up: {log.read_text()[-3000:]}"
            time.sleep(0.25)
        yield Worker(url, log, root / "files", process)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


@pytest.fixture(scope="module")
def local(models_dir: Path, runtime: Runtime) -> Runtime:
    """The local executor as a fresh worker process has it: the same models, no earlier jobs. (The session's shared
    runtime once gave other bytes for txt2img in a parallel run, after files that vary with the distribution.)"""
    return Runtime(models_dir, device="cpu")


@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Stands in for the bucket's presigned URLs: files of a folder over HTTP on 127.0.0.1."""
    root = tmp_path_factory.mktemp("bucket")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("pipeline", ["txt2img", "img2img"])
def test_a_job_through_runpod_gives_the_same_image_as_the_local_runtime(worker, runtime, local, models_dir,
                                                                       pipeline):
    spec = spec_for(runtime, pipeline, batch_size=2)
    remote = worker.client(models_dir=models_dir).run(spec)
    here = local.run(spec)
    assert [i.png for i in remote.images] == [i.png for i in here.images]
    assert [(i.width, i.height, i.seed) for i in remote.images] == [(64, 64, 11), (64, 64, 12)]
    assert remote.signals["executor"] == "runpod" and remote.signals["pipeline"] == pipeline
    assert remote.signals["steps"] == here.signals["steps"]
    log = worker.log_text()
    assert "Started." in log and SECRET_PROMPT not in log  # the worker logs jobs, never what is in them
    assert "iVBORw0KGgo" not in log  # nor their images (base64 PNG): the SDK logs outputs at DEBUG, kept off


def test_uploaded_lora_is_downloaded_checked_and_cached_by_hash(worker, runtime, local, models_dir, file_server,
                                                                monkeypatch):
    base, bucket = file_server
    lora_file = build_tiny_lora("sd15", bucket / "assets-u1-lora.safetensors", seed=5)
    lora = ModelRef("lora-asset-1", file_sha256(lora_file), "sd15", kind="lora",
                    blob_key="assets-u1-lora.safetensors", weight=0.8)
    spec = dataclasses.replace(spec_for(runtime), loras=(lora,))
    urls: list[str] = []

    def model_url(key: str) -> str:
        urls.append(key)
        return f"{base}/{key}"

    remote = worker.client(models_dir=models_dir, model_url=model_url).run(spec)
    monkeypatch.setattr(local, "blob_path", lambda key: bucket / key)
    here = local.run(spec)
    without = local.run(spec_for(runtime))
    assert remote.images[0].png == here.images[0].png != without.images[0].png  # the LoRA applied, identically
    assert urls == ["assets-u1-lora.safetensors"]
    cached = worker.files / f"{lora.sha256}.safetensors"
    assert cached.read_bytes() == lora_file.read_bytes()
    assert [p.name for p in worker.files.iterdir() if not p.name.startswith(".")] == [cached.name]

    # The worker keeps it by hash: a link that no longer works does not matter, the same file is not fetched again.
    lora_file.unlink()
    again = worker.client(models_dir=models_dir, model_url=model_url).run(spec)
    assert again.images[0].png == remote.images[0].png


def test_a_download_with_another_hash_is_refused_and_not_kept(worker, runtime, models_dir, file_server):
    base, bucket = file_server
    good = build_tiny_lora("sd15", bucket / "good.safetensors", seed=6)
    build_tiny_lora("sd15", bucket / "swapped.safetensors", seed=7)
    lora = ModelRef("lora-asset-2", file_sha256(good), "sd15", kind="lora", blob_key="swapped.safetensors")
    spec = dataclasses.replace(spec_for(runtime), loras=(lora,))
    with pytest.raises(CheckpointMismatch, match="lora 'lora-asset-2' changed since the job was submitted"):
        worker.client(models_dir=models_dir, model_url=lambda key: f"{base}/{key}").run(spec)
    assert not (worker.files / f"{lora.sha256}.safetensors").exists()
    assert not [p for p in worker.files.iterdir() if p.name.startswith(".download-")]

    gone = dataclasses.replace(lora, blob_key="no-such-file.safetensors", sha256="ab" * 32)
    with pytest.raises(ModelLoadError, match=r"the lora file could not be downloaded \(HTTP 404"):
        worker.client(models_dir=models_dir, model_url=lambda key: f"{base}/{key}").run(
            dataclasses.replace(spec, loras=(gone,)))


@pytest.mark.parametrize(("ref", "error", "message"), [
    (ModelRef(TINY_NAME, "0" * 64, "sd15"), CheckpointMismatch,
     "checkpoint 'imagen-tiny' changed on disk since the job was submitted"),
    (ModelRef("not-installed", "1" * 64, "sd15"), ModelLoadError, "checkpoint 'not-installed' is not installed"),
])
def test_worker_errors_arrive_as_the_errors_the_worker_raised(worker, runtime, models_dir, ref, error, message):
    spec = dataclasses.replace(spec_for(runtime), checkpoint=ref)
    with pytest.raises(error) as raised:
        worker.client(models_dir=models_dir).run(spec)
    assert str(raised.value) == message and type(raised.value) is error


def test_an_unexpected_worker_error_is_a_generic_failure_that_shows_and_logs_nothing_of_the_job(
        worker, runtime, models_dir):
    spec = spec_for(runtime)
    broken = dataclasses.replace(spec, params={k: v for k, v in spec.params.items() if k != "width"})
    with pytest.raises(RunPodError) as raised:
        worker.client(models_dir=models_dir).run(broken)
    assert str(raised.value) == "Generation failed on the GPU service"
    log = worker.log_text()
    assert "failed: KeyError" in log and SECRET_PROMPT not in log


def test_a_malformed_job_is_refused_saying_what_is_wrong(worker):
    r = httpx.post(f"{worker.url}/run", json={"input": {"version": 1, "pipeline": "txt2img", "params": {},
                                                       "checkpoint": {"name": "x", "sha256": "../../etc/passwd",
                                                                      "family": "sd15"}}})
    status = httpx.post(f"{worker.url}/status/{r.json()['id']}", timeout=JOB_SECONDS).json()
    assert status["status"] == "FAILED"
    assert json.loads(status["error"]) == {
        "imagen_error": "bad_input",
        "message": "The GPU worker refused the job: checkpoint.sha256 is not 64 lowercase hex digits"}


def test_cancel_before_the_worker_ran_it(worker, runtime, models_dir):
    """The local server has no /cancel (404) and runs a job only when its status is asked: the runtime still stops
    following the job and raises JobCanceled, without asking for its status."""
    asked = iter([False, True])  # before submitting: go on; at the first look after: stop
    with pytest.raises(JobCanceled):
        worker.client(models_dir=models_dir).run(spec_for(runtime), should_cancel=lambda: next(asked))


def test_an_unreachable_endpoint_is_a_clear_failure(tmp_path, models_dir, runtime):
    client = RunPodRuntime(endpoint_url=f"http://127.0.0.1:{free_port()}", api_key="k", models_dir=models_dir,
                           submit_retry_delays=(0.01, 0.01))
    with pytest.raises(RunPodError) as raised:
        client.run(spec_for(runtime))
    assert str(raised.value) == UNREACHABLE == "The GPU service could not be reached; submit it again later"


# ---- through the job code: what the user reads ----

@pytest.fixture
def through_runpod(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Callable[[RunPodRuntime], None]:
    """The app's executor calls this RunPod runtime instead of the local one."""
    return lambda remote: monkeypatch.setattr(runtime, "run", remote.run)


def test_generation_through_runpod_succeeds_and_failures_are_clear(user_client, runtime, models_dir, worker,
                                                                   through_runpod):
    through_runpod(worker.client(models_dir=models_dir))
    body = wait_for(user_client, submit(user_client, prompt=SECRET_PROMPT).json()["id"], timeout=JOB_SECONDS)
    assert body["status"] == "succeeded" and body["progress"] == 1.0 and len(body["outputs"]) == 1

    through_runpod(RunPodRuntime(endpoint_url=f"http://127.0.0.1:{free_port()}", api_key="k", models_dir=models_dir,
                                 submit_retry_delays=(0.01,)))
    body = wait_for(user_client, submit(user_client).json()["id"], timeout=60)
    assert body["status"] == "failed" and body["error"] == UNREACHABLE


def test_imagen_executor_runpod_runs_the_apps_jobs_on_the_endpoint_with_the_local_bytes(settings, runtime, local,
                                                                                      worker):
    """IMAGEN_EXECUTOR=runpod: the composition root gives the app a RunPodRuntime (no local model loaded), and a job
    submitted through the API comes back from the worker with the bytes the local runtime makes for it."""
    remote = settings.model_copy(update={"executor": "runpod", "runpod_endpoint_id": "ep", "runpod_api_key": "k",
                                         "runpod_base_url": "https://api.runpod.invalid/v2"})
    app = create_app(remote, run_migrations=False)  # no runtime passed: the wiring builds it from the settings
    with TestClient(app, base_url="https://testserver") as client:
        signup(client)
        services = app.state.services
        assert isinstance(services.runtime, RunPodRuntime)
        assert str(services.runtime.http.base_url).rstrip("/") == "https://api.runpod.invalid/v2/ep"
        assert services.runtime.http.headers["authorization"] == "Bearer k"
        # The SDK's local server answers at its root, not at /v2/<endpoint id>: point the same runtime there.
        services.runtime.http.base_url = worker.url
        services.runtime.http.timeout = httpx.Timeout(JOB_SECONDS)
        body = wait_for(client, submit(client, prompt="a lighthouse", steps=3, seed=5).json()["id"],
                        timeout=JOB_SECONDS)
        assert body["status"] == "succeeded", body
        with services.db.transaction() as s:
            gen = s.get(Generation, body["id"])
            spec = JobSpec(gen.pipeline, dict(gen.params), tiny_ref(runtime))
        served = client.get(body["outputs"][0]["url"]).content
    assert served == local.run(spec).images[0].png


# ---- what the local server cannot show: a scripted endpoint speaking RunPod's API ----

class Endpoint:
    """Answers /run, /status/{id} and /cancel/{id} from a script of status answers; records every request."""

    def __init__(self, statuses: list[Any], *, cancel_status: int = 200) -> None:
        self.statuses, self.cancel_status = list(statuses), cancel_status
        self.requests: list[tuple[str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        assert request.headers["authorization"] == "Bearer test-key"
        if request.url.path == "/v2/ep/run":
            return httpx.Response(200, json={"id": "job-1", "status": "IN_QUEUE"})
        if request.url.path == "/v2/ep/cancel/job-1":
            return httpx.Response(self.cancel_status, json={"id": "job-1", "status": "CANCELLED"})
        assert request.url.path == "/v2/ep/status/job-1"
        answer = self.statuses.pop(0)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json={"id": "job-1", **answer})

    def paths(self) -> list[str]:
        return [path.removeprefix("/v2/ep") for _, path, _ in self.requests]

    def runtime(self, models_dir: Path, **kwargs: Any) -> RunPodRuntime:
        return RunPodRuntime(endpoint_url="https://api.test/v2/ep", api_key="test-key", models_dir=models_dir,
                             poll_seconds=0.01, poll_retry_delays=(0.01, 0.01), transport=httpx.MockTransport(self),
                             **kwargs)


def result_output(runtime: Runtime) -> dict[str, Any]:
    from imagen.executors.runpod import encode_result

    return encode_result(runtime.run(spec_for(runtime)))


def test_queue_progress_and_result_are_followed(models_dir, runtime):
    output = result_output(runtime)
    endpoint = Endpoint([{"status": "IN_QUEUE"}, {"status": "IN_PROGRESS"},
                         {"status": "IN_PROGRESS", "output": {"step": 1, "total": 3}},
                         {"status": "IN_PROGRESS", "output": {"step": 3, "total": 3}},
                         {"status": "COMPLETED", "output": output, "delayTime": 1200, "executionTime": 800}])
    progress: list[tuple[int, int]] = []
    result = endpoint.runtime(models_dir, execution_timeout_seconds=900).run(
        spec_for(runtime), on_progress=lambda s, t: progress.append((s, t)))
    assert progress == [(0, 3), (0, 3), (0, 3), (1, 3), (3, 3)]
    assert result.images[0].png == runtime.run(spec_for(runtime)).images[0].png
    assert result.signals["runpod_delay_ms"] == 1200 and result.signals["runpod_execution_ms"] == 800
    method, path, body = endpoint.requests[0]
    assert (method, path) == ("POST", "/v2/ep/run")
    assert body["policy"] == {"executionTimeout": 900_000}
    assert decode_spec(body["input"])[0] == spec_for(runtime)  # the endpoint receives the JobSpec, nothing else
    assert endpoint.paths()[1:] == ["/status/job-1"] * 5


def test_cancel_while_running_calls_cancel_and_stops(models_dir, runtime):
    endpoint = Endpoint([{"status": "IN_PROGRESS", "output": {"step": 1, "total": 3}}] * 50)
    seen: list[int] = []
    with pytest.raises(JobCanceled):
        endpoint.runtime(models_dir).run(spec_for(runtime), on_progress=lambda s, t: seen.append(s),
                                         should_cancel=lambda: len(seen) >= 2)
    assert endpoint.paths() == ["/run", "/status/job-1", "/cancel/job-1"]


@pytest.mark.parametrize(("answer", "error", "message"), [
    ({"status": "CANCELLED"}, RunPodError, "The GPU service canceled the job"),
    ({"status": "TIMED_OUT"}, RunPodError, "The GPU service stopped the job at its time limit"),
    ({"status": "FAILED", "error": json.dumps({"error_type": "<class 'KeyError'>", "error_message": SECRET_PROMPT,
                                               "error_traceback": "Traceback ..."})},
     RunPodError, "Generation failed on the GPU service"),
    ({"status": "FAILED", "error": json.dumps({"imagen_error": "mismatch", "message": "lora 'x' changed"})},
     CheckpointMismatch, "lora 'x' changed"),
    ({"status": "COMPLETED", "output": {"images": [{"png": "bm90IGEgcG5n", "width": 64, "height": 64,
                                                     "seed": 1}]}},
     RunPodError, "The GPU service gave an answer this server cannot read"),
    (httpx.Response(404), RunPodError, "The GPU service no longer knows the job"),
])
def test_remote_ends_are_clear_failures(models_dir, runtime, answer, error, message, caplog):
    endpoint = Endpoint([answer])
    with pytest.raises(error) as raised, caplog.at_level(logging.INFO, logger="imagen.executors.runpod"):
        endpoint.runtime(models_dir).run(spec_for(runtime))
    assert str(raised.value) == message and type(raised.value) is error
    assert SECRET_PROMPT not in str(raised.value) and SECRET_PROMPT not in caplog.text and "job-1" in caplog.text


def test_status_polls_are_retried_then_the_job_is_given_up_and_canceled(models_dir, runtime):
    output = result_output(runtime)
    flaky = Endpoint([httpx.Response(502), httpx.Response(429), {"status": "COMPLETED", "output": output}])
    assert len(flaky.runtime(models_dir).run(spec_for(runtime)).images) == 1

    down = Endpoint([httpx.Response(503)] * 3)
    with pytest.raises(RunPodError, match=r"^The GPU service is unavailable \(HTTP 503\); submit it again later$"):
        down.runtime(models_dir).run(spec_for(runtime))
    assert down.paths() == ["/run"] + ["/status/job-1"] * 3 + ["/cancel/job-1"]


@pytest.mark.parametrize(("code", "message"), [
    (401, "The GPU service refused this server's credentials (HTTP 401)"),
    (404, "The GPU service has no such endpoint (HTTP 404)"),
    (400, "The GPU service refused the job (HTTP 400)"),
])
def test_a_refused_submission_is_a_clear_failure(models_dir, runtime, code, message):
    calls = []
    transport = httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(code))
    client = RunPodRuntime(endpoint_url="https://api.test/v2/ep", api_key="k", models_dir=models_dir,
                           transport=transport)
    with pytest.raises(RunPodError) as raised:
        client.run(spec_for(runtime))
    assert str(raised.value) == message and len(calls) == 1  # not retried


def test_uploaded_models_need_a_store_with_urls(models_dir, runtime):
    """Local storage has no URL for the worker to download from: the job is refused before anything is sent."""
    endpoint = Endpoint([])
    lora = ModelRef("asset", "ab" * 32, "sd15", kind="lora", blob_key="assets/u/lora.safetensors")
    spec = dataclasses.replace(spec_for(runtime), loras=(lora,))
    for model_url in (None, lambda key: None):
        with pytest.raises(RunPodError) as raised:
            endpoint.runtime(models_dir, model_url=model_url).run(spec)
        assert str(raised.value) == NO_MODEL_URL and "IMAGEN_STORAGE=s3" in NO_MODEL_URL
    assert endpoint.requests == []

    class LocalStore:  # no presigned_url, as the local blob store
        pass

    class Settings:
        runpod_base_url, runpod_endpoint_id, runpod_api_key = "https://api.test/v2/", "ep", "k"
        runpod_poll_seconds, runpod_request_timeout_seconds, job_timeout_seconds = 1.0, 30.0, 900.0
        resolved_models_dir = models_dir

    from_settings = RunPodRuntime.from_settings(Settings, LocalStore())
    assert from_settings.model_url is None and str(from_settings.http.base_url).rstrip("/") == "https://api.test/v2/ep"


# ---- the wire format and the handler in this process ----

def test_wire_format_round_trips_and_names_what_is_wrong(runtime):
    lora = ModelRef("asset", "ab" * 32, "sd15", kind="lora", blob_key="assets/u/lora.safetensors", weight=0.5)
    spec = dataclasses.replace(spec_for(runtime, "img2img"), loras=(lora,))
    wire = json.loads(json.dumps(encode_spec(spec, lambda key: f"https://bucket.test/{key}?sig=1")))
    assert set(wire) == {"version", "pipeline", "params", "checkpoint", "loras", "init_image", "mask_image"}
    assert "blob_key" not in wire["loras"][0]
    decoded, urls = decode_spec(wire)
    assert decoded == dataclasses.replace(spec, loras=(dataclasses.replace(lora, blob_key=lora.sha256),))
    assert urls == {lora.sha256: "https://bucket.test/assets/u/lora.safetensors?sig=1"}
    for broken, what in [({**wire, "version": 2}, "wire format version 1"),
                         ({**wire, "pipeline": "upscale"}, "pipeline is not one of"),
                         ({**wire, "init_image": "***"}, "init_image is not base64"),
                         ({**wire, "loras": [{**wire["loras"][0], "url": "file:///etc/passwd"}]}, "loras[0].url"),
                         ({**wire, "loras": [{**wire["loras"][0], "kind": "checkpoint"}]}, "loras[0].kind")]:
        with pytest.raises(WireError, match=what.replace("[", r"\[").replace("]", r"\]")):
            decode_spec(broken)


def test_handler_reports_progress_and_a_cancel_from_runpod_stops_the_job(runtime, tmp_path, monkeypatch):
    monkeypatch.setattr(runpod_handler, "PROGRESS_INTERVAL", 0.0)
    files = ModelFiles(tmp_path / "files")
    reports: list[dict[str, int]] = []
    job = {"id": "job-1", "input": encode_spec(spec_for(runtime, steps=3), None)}
    output = run_job(runtime, files, job, threading.Event(), lambda j, p: reports.append(p))
    assert reports == [{"step": s, "total": 3} for s in (1, 2, 3)] and len(output["images"]) == 1

    # RunPod stops a job by cancelling the handler's task: the runtime stops at its next step.
    started = threading.Event()
    steps: list[int] = []

    def progress(_job: dict, report: dict[str, int]) -> None:
        steps.append(report["step"])
        started.set()

    async def cancel_after_first_step() -> None:
        task = asyncio.ensure_future(make_handler(runtime, files, progress)(
            {"id": "job-2", "input": encode_spec(spec_for(runtime, steps=200), None)}))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(cancel_after_first_step(), 120))
    assert runtime._run_lock.acquire(timeout=60)  # the run ended (it holds the lock while it runs)
    runtime._run_lock.release()
    assert 1 <= len(steps) < 200


def test_model_files_evict_least_recently_used_beyond_their_bound(tmp_path, file_server):
    base, bucket = file_server
    refs = []
    for i in range(3):
        data = bytes([i]) * 1000
        (bucket / f"f{i}").write_bytes(data)
        refs.append(ModelRef(f"f{i}", hashlib.sha256(data).hexdigest(), "sd15", kind="lora", blob_key=f"f{i}"))
    files = ModelFiles(tmp_path / "files", max_bytes=2500)
    for ref in refs[:2]:
        files.fetch(ref, f"{base}/{ref.blob_key}")
    time.sleep(0.01)
    files.fetch(refs[0], f"{base}/gone")  # a hit: fetched from nothing, and now the most recently used
    files.fetch(refs[2], f"{base}/{refs[2].blob_key}")
    assert sorted(p.stem for p in (tmp_path / "files").glob("*.safetensors")) == sorted(
        [refs[0].sha256, refs[2].sha256])
    with pytest.raises(ModelLoadError, match="named by something other than its sha256"):
        files.path("../" + "a" * 61)
