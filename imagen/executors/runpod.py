"""Jobs on a RunPod serverless endpoint: `RunPodRuntime` is what the executor calls instead of the in-process `Runtime`.

It sends the job spec (`encode_spec`: the JobSpec's fields as plain JSON, uploaded model files as presigned URLs of the
blob store) to the endpoint's `/run`, polls `/status/{id}` for progress and the result, and calls `/cancel/{id}` when
the job is to stop. The worker on the other side is `imagen/executors/runpod_handler.py`, running the same `Runtime`.

Every failure becomes an exception the job code already turns into a clear failed status: `CheckpointMismatch` or
`ModelLoadError` from the worker as they were raised there, and `RunPodError` (a `ModelLoadError`, so its message is
shown to the user) for the endpoint being unreachable, refusing the request, timing out or failing otherwise. Nothing
of the user's is logged here: job ids and HTTP statuses only (prompts are personal data).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from imagen.inference.checkpoints import CheckpointRegistry
from imagen.inference.pipelines import plan_for
from imagen.inference.spec import (
    BlobPathFn,
    CancelFn,
    CheckpointMismatch,
    ImageResult,
    JobCanceled,
    JobResult,
    JobSpec,
    ModelLoadError,
    ModelRef,
    ProgressFn,
)

log = logging.getLogger(__name__)

WIRE_VERSION = 1
PIPELINES = ("txt2img", "img2img", "inpaint", "hires_fix")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MODEL_URL_SECONDS = 3600  # a presigned model URL must outlive the job's wait in RunPod's queue
SUBMIT_RETRY_DELAYS = (0.5, 1.0, 2.0)  # only when the request surely did not create a job
POLL_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # a status poll that fails is tried again; the job runs on meanwhile
CANCEL_CHECK_SECONDS = 0.1

NO_MODEL_URL = ("Uploaded models cannot be sent to the GPU service from this server (RunPod needs IMAGEN_STORAGE=s3, "
                "so that its worker can download them)")
UNREACHABLE = "The GPU service could not be reached; submit it again later"
NOT_ANSWERING = "The GPU service did not answer in time; submit it again later"
UNREADABLE = "The GPU service gave an answer this server cannot read"
FAILED_REMOTELY = "Generation failed on the GPU service"


class RunPodError(ModelLoadError):
    """The RunPod endpoint failed the job or could not be used; the message is safe to show the user."""


class WireError(ValueError):
    """A job or result that is not in the wire format (the message names what is wrong, never its values)."""


# -- the wire format: what the endpoint receives and answers ---------------------------------------------------------


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise WireError(f"{what} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise WireError(f"{what} is not base64 text") from None


def encode_spec(spec: JobSpec, model_url: Callable[[str], str | None] | None) -> dict[str, Any]:
    """The job as plain JSON: exactly the JobSpec's fields, except that an uploaded model's blob key is replaced by a
    URL the worker downloads it from (it keeps files by their sha256, so it needs no key)."""

    def ref(r: ModelRef) -> dict[str, Any]:
        url = None
        if r.blob_key is not None:
            url = model_url(r.blob_key) if model_url is not None else None
            if not url:
                raise RunPodError(NO_MODEL_URL)
        return {"name": r.name, "sha256": r.sha256.lower(), "family": r.family, "kind": r.kind,
                "weight": r.weight, "url": url}

    return {
        "version": WIRE_VERSION, "pipeline": spec.pipeline, "params": spec.params,
        "checkpoint": ref(spec.checkpoint), "loras": [ref(lora) for lora in spec.loras],
        "init_image": _b64(spec.init_image), "mask_image": _b64(spec.mask_image),
    }


def _decode_ref(data: Any, what: str, kind: str) -> tuple[ModelRef, str | None]:
    if not isinstance(data, dict):
        raise WireError(f"{what} is not an object")
    name, sha, family, url = data.get("name"), data.get("sha256"), data.get("family"), data.get("url")
    if not isinstance(name, str) or not name:
        raise WireError(f"{what}.name is missing")
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise WireError(f"{what}.sha256 is not 64 lowercase hex digits")
    if family not in ("sd15", "sdxl"):
        raise WireError(f"{what}.family is not sd15 or sdxl")
    if data.get("kind", kind) != kind:
        raise WireError(f"{what}.kind is not {kind}")
    weight = data.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise WireError(f"{what}.weight is not a number")
    if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))):
        raise WireError(f"{what}.url is not an http(s) URL")
    # An uploaded file is addressed by its content hash in the worker's file cache.
    return ModelRef(name, sha, family, kind=kind, blob_key=sha if url else None, weight=float(weight)), url


def decode_spec(data: Any) -> tuple[JobSpec, dict[str, str]]:
    """The worker's side of `encode_spec`: the JobSpec, and sha256 -> URL of each model file to download."""
    if not isinstance(data, dict):
        raise WireError("the job input is not an object")
    if data.get("version") != WIRE_VERSION:
        raise WireError(f"the job is not in wire format version {WIRE_VERSION}")
    if data.get("pipeline") not in PIPELINES:
        raise WireError("pipeline is not one of " + ", ".join(PIPELINES))
    if not isinstance(data.get("params"), dict):
        raise WireError("params is not an object")
    loras = data.get("loras", [])
    if not isinstance(loras, list):
        raise WireError("loras is not a list")
    checkpoint, url = _decode_ref(data.get("checkpoint"), "checkpoint", "checkpoint")
    urls = {checkpoint.sha256: url} if url else {}
    refs = []
    for i, item in enumerate(loras):
        lora, url = _decode_ref(item, f"loras[{i}]", "lora")
        refs.append(lora)
        if url:
            urls[lora.sha256] = url
    images = {key: _unb64(data[key], key) if data.get(key) is not None else None
              for key in ("init_image", "mask_image")}
    spec = JobSpec(data["pipeline"], dict(data["params"]), checkpoint, tuple(refs), **images)
    return spec, urls


def encode_result(result: JobResult) -> dict[str, Any]:
    return {"images": [{"png": _b64(i.png), "width": i.width, "height": i.height, "seed": i.seed}
                       for i in result.images],
            "signals": result.signals}


def decode_result(output: Any) -> JobResult:
    if not isinstance(output, dict) or not isinstance(output.get("images"), list):
        raise WireError("the result has no images")
    images = []
    for i, item in enumerate(output["images"]):
        if not isinstance(item, dict):
            raise WireError(f"images[{i}] is not an object")
        png = _unb64(item.get("png"), f"images[{i}].png")
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise WireError(f"images[{i}].png is not a PNG")
        numbers = [item.get(k) for k in ("width", "height", "seed")]
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            raise WireError(f"images[{i}] has no integer width, height and seed")
        images.append(ImageResult(png, *numbers))
    signals = output.get("signals")
    return JobResult(images, dict(signals) if isinstance(signals, dict) else {})


def error_payload(kind: str, message: str) -> str:
    """What the worker reports as a job's error: its kind and a message that is safe to show the user."""
    return json.dumps({"imagen_error": kind, "message": message})


def error_from_payload(error: Any) -> Exception:
    """The exception for a FAILED job's error: the worker's own kinds as they were raised there; anything else (the
    SDK's captured exception, with a traceback) becomes a generic message, never shown as it is."""
    try:
        payload = json.loads(error) if isinstance(error, str) else error
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("message"), str):
        return RunPodError(FAILED_REMOTELY)
    kind, message = payload.get("imagen_error"), payload["message"]
    if kind == "mismatch":
        return CheckpointMismatch(message)
    if kind in ("model_load", "bad_input"):
        return ModelLoadError(message)
    if kind == "canceled":
        return RunPodError("The GPU service stopped the job")
    return RunPodError(FAILED_REMOTELY)


# -- the client -------------------------------------------------------------------------------------------------------


class _Retry(Exception):
    def __init__(self, error: RunPodError) -> None:
        super().__init__(str(error))
        self.error = error


class RunPodRuntime:
    """Runs job specs on a RunPod serverless endpoint; the interface the executor uses from `Runtime`.

    `endpoint_url` is the endpoint's root (`<IMAGEN_RUNPOD_BASE_URL>/<endpoint id>`). `model_url(blob_key)` gives a
    URL the worker can download an uploaded model from (a presigned URL of the blob store), or None where the store
    has none (local storage): such a job is refused before it is sent. `checkpoints` lists this server's built-in and
    operator-installed folders, which the worker image must hold too (the worker checks every hash again).
    """

    def __init__(self, *, endpoint_url: str, api_key: str, models_dir: Path,
                 model_url: Callable[[str], str | None] | None = None, poll_seconds: float = 1.0,
                 request_timeout_seconds: float = 30.0, execution_timeout_seconds: float = 0.0,
                 submit_retry_delays: tuple[float, ...] = SUBMIT_RETRY_DELAYS,
                 poll_retry_delays: tuple[float, ...] = POLL_RETRY_DELAYS,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.checkpoints = CheckpointRegistry(models_dir)
        self.model_url = model_url
        self.blob_path: BlobPathFn | None = None  # set by the wiring like the local runtime's; the worker downloads
        self.poll_seconds = poll_seconds
        self.execution_timeout_seconds = execution_timeout_seconds
        self.submit_retry_delays, self.poll_retry_delays = submit_retry_delays, poll_retry_delays
        self.http = httpx.Client(base_url=endpoint_url.rstrip("/"), timeout=request_timeout_seconds,
                                 headers={"Authorization": f"Bearer {api_key}"}, transport=transport)

    @classmethod
    def from_settings(cls, settings: Any, blobs: Any) -> RunPodRuntime:
        presign = getattr(blobs, "presigned_url", None)  # None from local storage: uploaded models are refused
        seconds = max(MODEL_URL_SECONDS, int(settings.job_timeout_seconds))
        return cls(
            endpoint_url=f"{settings.runpod_base_url.rstrip('/')}/{settings.runpod_endpoint_id.strip()}",
            api_key=settings.runpod_api_key or "", models_dir=settings.resolved_models_dir,
            model_url=(lambda key: presign(key, seconds)) if presign is not None else None,
            poll_seconds=settings.runpod_poll_seconds,
            request_timeout_seconds=settings.runpod_request_timeout_seconds,
            execution_timeout_seconds=settings.job_timeout_seconds)

    def close(self) -> None:
        self.http.close()

    def loaded_checkpoints(self) -> set[str]:
        """Nothing is loaded here (the queue's preference for loaded checkpoints has nothing to prefer)."""
        return set()

    def run(self, spec: JobSpec, on_progress: ProgressFn | None = None,
            should_cancel: CancelFn | None = None) -> JobResult:
        total = plan_for(spec).total_steps  # progress before the worker reports any
        body: dict[str, Any] = {"input": encode_spec(spec, self.model_url)}
        if self.execution_timeout_seconds > 0:  # RunPod's own limit: at least 5 s, in milliseconds
            body["policy"] = {"executionTimeout": max(5000, int(self.execution_timeout_seconds * 1000))}
        if should_cancel is not None and should_cancel():
            raise JobCanceled()
        answer = self._call("/run", body, self.submit_retry_delays, submit=True)
        job_id = answer.get("id")
        if not isinstance(job_id, str) or not job_id or "/" in job_id:
            raise RunPodError(UNREADABLE)
        log.info("RunPod job %s submitted", job_id)
        step = 0
        while True:
            status = answer.get("status")
            if status == "COMPLETED":
                return self._result(job_id, answer)
            if status == "FAILED":
                log.warning("RunPod job %s failed", job_id)
                raise error_from_payload(answer.get("error"))
            if status == "CANCELLED":
                raise RunPodError("The GPU service canceled the job")
            if status == "TIMED_OUT":
                raise RunPodError("The GPU service stopped the job at its time limit")
            if status == "IN_PROGRESS":
                step = _reported_step(answer.get("output"), step, total)
            # IN_QUEUE, IN_PROGRESS (and any state RunPod adds): report, so the job code can tell it to stop.
            if on_progress is not None:
                on_progress(step, total)
            if self._wait(should_cancel):
                self._cancel(job_id)
                raise JobCanceled()
            try:
                answer = self._call(f"/status/{job_id}", None, self.poll_retry_delays)
            except RunPodError:
                self._cancel(job_id)  # followed no longer: do not let it run on at the operator's cost
                raise

    # -- internals ----------------------------------------------------------------------------------------------------

    def _result(self, job_id: str, answer: dict[str, Any]) -> JobResult:
        try:
            result = decode_result(answer.get("output"))
        except WireError:
            log.warning("RunPod job %s: unreadable result", job_id)
            raise RunPodError(UNREADABLE) from None
        for key, signal in (("delayTime", "runpod_delay_ms"), ("executionTime", "runpod_execution_ms")):
            if isinstance(answer.get(key), int | float):
                result.signals[signal] = answer[key]
        result.signals["executor"] = "runpod"
        return result

    def _wait(self, should_cancel: CancelFn | None) -> bool:
        """Sleep one poll interval; True as soon as the job is to stop."""
        deadline = time.monotonic() + self.poll_seconds
        while True:
            if should_cancel is not None and should_cancel():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(CANCEL_CHECK_SECONDS, left))

    def _cancel(self, job_id: str) -> None:
        """Best effort: the job is abandoned here whatever RunPod answers."""
        try:
            response = self.http.post(f"/cancel/{job_id}")
        except httpx.HTTPError as exc:
            log.warning("RunPod job %s: cancel not sent (%s)", job_id, type(exc).__name__)
            return
        if response.status_code >= 400:
            log.warning("RunPod job %s: cancel answered HTTP %d", job_id, response.status_code)
        else:
            log.info("RunPod job %s canceled", job_id)

    def _call(self, path: str, body: dict[str, Any] | None, delays: tuple[float, ...],
              *, submit: bool = False) -> dict[str, Any]:
        error: RunPodError | None = None
        for delay in (0.0, *delays):
            time.sleep(delay)
            try:
                return self._call_once(path, body, submit=submit)
            except _Retry as retry:
                error = retry.error
        assert error is not None
        raise error

    def _call_once(self, path: str, body: dict[str, Any] | None, *, submit: bool) -> dict[str, Any]:
        try:
            response = self.http.post(path, json=body)
        except httpx.ConnectError:
            log.warning("RunPod %s: endpoint unreachable", path.split("/")[1])
            raise _Retry(RunPodError(UNREACHABLE)) from None
        except httpx.TimeoutException:
            log.warning("RunPod %s: no answer in time", path.split("/")[1])
            if submit:  # the job may exist: sending it again could run it twice
                raise RunPodError(NOT_ANSWERING) from None
            raise _Retry(RunPodError(NOT_ANSWERING)) from None
        except httpx.HTTPError:  # the connection broke after the request went out
            if submit:
                raise RunPodError(UNREACHABLE) from None
            raise _Retry(RunPodError(UNREACHABLE)) from None
        code = response.status_code
        if code == 429 or code >= 500:
            log.warning("RunPod %s: HTTP %d", path.split("/")[1], code)
            raise _Retry(RunPodError(f"The GPU service is unavailable (HTTP {code}); submit it again later"))
        if code in (401, 403):
            log.error("RunPod refused the API key (HTTP %d): check IMAGEN_RUNPOD_API_KEY", code)
            raise RunPodError(f"The GPU service refused this server's credentials (HTTP {code})")
        if code == 404 and submit:
            log.error("RunPod has no such endpoint (HTTP 404): check IMAGEN_RUNPOD_ENDPOINT_ID")
            raise RunPodError("The GPU service has no such endpoint (HTTP 404)")
        if code == 404:
            raise RunPodError("The GPU service no longer knows the job")
        if code >= 400:
            log.error("RunPod %s: HTTP %d", path.split("/")[1], code)
            raise RunPodError(f"The GPU service refused the job (HTTP {code})")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise RunPodError(UNREADABLE)
        return answer


def _reported_step(output: Any, last: int, total: int) -> int:
    """The worker's progress report ({"step": n, "total": m}) while the job is IN_PROGRESS; never backwards."""
    if isinstance(output, dict) and isinstance(output.get("step"), int) and not isinstance(output["step"], bool):
        return max(last, min(output["step"], total))
    return last
