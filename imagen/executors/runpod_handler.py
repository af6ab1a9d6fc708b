"""The RunPod serverless worker: `python -m imagen.executors.runpod_handler` (see docs/runpod.md for the image).

Each job's input is a job spec in the wire format of `imagen/executors/runpod.py`. Uploaded model files arrive as URLs
(presigned URLs of the operator's bucket) and are kept in a content-addressed file cache: a file is named by its
sha256, checked after every download and again before it is loaded. The job runs on the same `Runtime` as everywhere
else, in a thread, so the SDK's event loop stays free to hear that RunPod stopped the job (then the runtime stops at
its next step). The result is the images as base64 PNG with their size and seed, and the runtime's signals.

Errors: a changed or missing model (`CheckpointMismatch`, `ModelLoadError`) and a malformed job are reported with
their own message, which is safe to show the user; anything else with a generic one. Nothing of the user's is logged:
job ids, timings and exception types only (prompts are personal data), and the SDK's own log is kept at INFO or
above, because at DEBUG it prints every job's output.

Worker environment (besides the usual IMAGEN_MODELS_DIR, IMAGEN_DEVICE, IMAGEN_MODEL_CACHE_BYTES):
IMAGEN_RUNPOD_FILE_CACHE (default: /runpod-volume/imagen/model-files on a network volume, else
<IMAGEN_DATA_DIR>/runpod-model-files) and IMAGEN_RUNPOD_FILE_CACHE_BYTES (default 50 GiB; 0: unbounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import httpx

from imagen.executors.runpod import WireError, decode_spec, encode_result, error_payload
from imagen.inference.checkpoints import file_sha256
from imagen.inference.runtime import Runtime
from imagen.inference.spec import CheckpointMismatch, JobCanceled, ModelLoadError, ModelRef

log = logging.getLogger("imagen.runpod_worker")

PROGRESS_INTERVAL = 0.5  # seconds between progress reports (each one is an HTTP call to RunPod)
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, read=120.0)
SDK_QUIET_LEVELS = ("NOTSET", "TRACE", "DEBUG")  # the SDK logs each job's output at DEBUG

SendProgress = Callable[[dict[str, Any], Any], None]


class ModelFiles:
    """Downloaded model files by sha256: `<root>/<sha256>.safetensors`, least recently used ones evicted past
    `max_bytes` (0: never)."""

    def __init__(self, root: Path, max_bytes: int = 0, *, transport: httpx.BaseTransport | None = None) -> None:
        self.root, self.max_bytes, self.transport = root, max_bytes, transport
        root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ModelLoadError("a model file is named by something other than its sha256")
        return self.root / f"{sha256}.safetensors"

    def fetch(self, ref: ModelRef, url: str, *, keep: Collection[str] = ()) -> Path:
        """The file of `ref`, downloaded from `url` unless a good copy is here; its hash checked either way."""
        sha = ref.sha256.lower()
        target = self.path(sha)
        with self._guard:
            lock = self._locks.setdefault(sha, threading.Lock())
        with lock:
            if target.is_file():
                if file_sha256(target) == sha:
                    os.utime(target)  # recently used
                    return target
                target.unlink(missing_ok=True)  # damaged on disk: fetch it again
            self._download(ref, url, target)
        self._evict({*keep, sha})
        return target

    def _download(self, ref: ModelRef, url: str, target: Path) -> None:
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".download-")
        tmp = Path(tmp_name)
        try:
            with (os.fdopen(fd, "wb") as out,
                  httpx.Client(timeout=DOWNLOAD_TIMEOUT, transport=self.transport, follow_redirects=True) as client,
                  client.stream("GET", url) as response):
                if response.status_code != 200:
                    raise ModelLoadError(f"the {ref.kind} file could not be downloaded (HTTP "
                                         f"{response.status_code}; its link may have expired)")
                for chunk in response.iter_bytes(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != ref.sha256.lower():
                raise CheckpointMismatch(f"{ref.kind} {ref.name!r} changed since the job was submitted (the "
                                         "downloaded file has another hash)")
            os.replace(tmp, target)
        except httpx.HTTPError as exc:
            raise ModelLoadError(f"the {ref.kind} file could not be downloaded ({type(exc).__name__})") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _evict(self, keep: set[str]) -> None:
        if self.max_bytes <= 0:
            return
        files = []
        for path in self.root.glob("*.safetensors"):
            with contextlib.suppress(OSError):
                files.append((path.stat().st_mtime, path.stat().st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if path.stem not in keep:
                path.unlink(missing_ok=True)
                total -= size


def run_job(runtime: Runtime, files: ModelFiles, job: dict[str, Any], cancel: threading.Event,
            send_progress: SendProgress | None = None) -> dict[str, Any]:
    """One job, start to end, in the calling thread: the result, or {"error": payload}."""
    job_id = str(job.get("id", "?"))
    started = time.monotonic()
    last_sent = 0.0

    def on_progress(step: int, total: int) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if send_progress is not None and (now - last_sent >= PROGRESS_INTERVAL or step == total):
            last_sent = now
            send_progress(job, {"step": step, "total": total})

    try:
        spec, urls = decode_spec(job.get("input"))
        refs = [spec.checkpoint, *spec.loras]
        for ref in refs:
            if ref.sha256 in urls:
                files.fetch(ref, urls[ref.sha256], keep={r.sha256 for r in refs})
        result = runtime.run(spec, on_progress=on_progress, should_cancel=cancel.is_set)
    except WireError as exc:
        log.warning("job %s refused: %s", job_id, exc)
        return {"error": error_payload("bad_input", f"The GPU worker refused the job: {exc}")}
    except JobCanceled:
        log.info("job %s stopped", job_id)
        return {"error": error_payload("canceled", "stopped")}
    except CheckpointMismatch as exc:
        log.warning("job %s: a model file is not the one submitted", job_id)
        return {"error": error_payload("mismatch", str(exc))}
    except ModelLoadError as exc:
        log.warning("job %s: %s", job_id, type(exc).__name__)
        return {"error": error_payload("model_load", str(exc))}
    except Exception as exc:  # its message may quote the job: the type and where, never the text
        where = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)[-4:]))
        log.error("job %s failed: %s\n%s", job_id, type(exc).__name__, where)
        return {"error": error_payload("internal", "Generation failed on the GPU worker")}
    log.info("job %s done in %.2f s", job_id, time.monotonic() - started)
    return encode_result(result)


def make_handler(runtime: Runtime, files: ModelFiles,
                 send_progress: SendProgress | None = None) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """The handler for `runpod.serverless.start`. Async, with the work in a thread: RunPod stops a job by cancelling
    the handler's task, which sets the flag the runtime checks at every step."""

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(run_job, runtime, files, job, cancel, send_progress)
        except asyncio.CancelledError:
            cancel.set()
            raise

    return handler


def default_file_cache(data_dir: Path) -> Path:
    volume = Path("/runpod-volume")  # a network volume, when the endpoint has one, outlives the worker
    return volume / "imagen" / "model-files" if volume.is_dir() else data_dir / "runpod-model-files"


def _quiet_sdk_log() -> None:
    """Read by the SDK at import: keep it from printing jobs' outputs (DEBUG is its default)."""
    level = os.environ.get("RUNPOD_LOG_LEVEL", os.environ.get("RUNPOD_DEBUG_LEVEL", "DEBUG")).upper()
    if level in SDK_QUIET_LEVELS or (level.isdigit() and int(level) < 3):
        os.environ["RUNPOD_LOG_LEVEL"] = "INFO"
    for i, arg in enumerate(sys.argv):
        value = arg.split("=", 1)[1] if arg.startswith("--rp_log_level=") else (
            sys.argv[i + 1] if arg == "--rp_log_level" and i + 1 < len(sys.argv) else None)
        if value is not None and value.upper() in SDK_QUIET_LEVELS:
            raise SystemExit("--rp_log_level below INFO would log every job's output (personal data): refused")


def main() -> None:
    from imagen.kit.config import Settings

    _quiet_sdk_log()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    cache_dir = os.environ.get("IMAGEN_RUNPOD_FILE_CACHE")
    files = ModelFiles(Path(cache_dir) if cache_dir else default_file_cache(settings.data_dir),
                       int(os.environ.get("IMAGEN_RUNPOD_FILE_CACHE_BYTES", str(50 * 1024**3))))
    runtime = Runtime(settings.resolved_models_dir, device=settings.device, cache_bytes=settings.model_cache_bytes,
                      blob_path=files.path)

    import runpod

    # Progress goes to RunPod's job API, which only a deployed worker has (the local test server has none).
    on_runpod = bool(os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"))
    runpod.serverless.start({"handler": make_handler(
        runtime, files, runpod.serverless.progress_update if on_runpod else None)})


if __name__ == "__main__":
    main()
