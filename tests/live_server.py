"""A real `imagen serve` (uvicorn) in a child process on 127.0.0.1, for the load tests and benchmarks/load.py.

A child process rather than a thread: the server gets its own interpreter lock, so what the clients do in the test
process doesn't slow the server down, and its memory can be read on its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

PASSWORD = "a-Long-enough-passphrase-7"
REPO = Path(__file__).resolve().parent.parent  # `python -m imagen.cli` runs this checkout's code


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """`imagen serve` with IMAGEN_* settings from `env` (the child sees only those and PATH/HOME)."""

    def __init__(self, *, data_dir: Path, env: dict[str, str], log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or data_dir.parent / "server.log"
        self.env = {
            "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
            "IMAGEN_ENV": "test", "IMAGEN_DATA_DIR": str(data_dir), "IMAGEN_SECRET_KEY": "x" * 40,
            "IMAGEN_COOKIE_SECURE": "false", "IMAGEN_BASE_URL": self.url,
            "IMAGEN_LEGAL_ENTITY": "Imagen Test Ltd", "IMAGEN_POSTAL_ADDRESS": "1 Test Street, Testville",
            "IMAGEN_CONTACT_EMAIL": "privacy@imagen.test", "IMAGEN_SITE_DOMAIN": "imagen.test",
            # One torch thread: the model isn't what is measured, and the cores are shared.
            "OMP_NUM_THREADS": "1",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> LiveServer:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imagen.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"imagen serve exited ({self.process.returncode}): {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"imagen serve did not answer within {timeout} s: {self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn's graceful stop: the lifespan closes the pool
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def rss_bytes(self) -> int | None:
        """The server's resident memory now (Linux /proc), None where unknown."""
        return self._status_kib("VmRSS")

    def peak_rss_bytes(self) -> int | None:
        """The most it has been resident since it started."""
        return self._status_kib("VmHWM")

    def _status_kib(self, field: str) -> int | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
        except (OSError, AttributeError):
            pass
        return None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def signup(base_url: str, email: str, policy_version: str) -> dict[str, str]:
    """A new account; returns its session cookie, CSRF token and an API key."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        r = client.post("/api/v1/auth/signup", json={
            "email": email, "password": PASSWORD, "date_of_birth": "1990-05-17", "country": "GB",
            "accept_policy_version": policy_version, "consents": {"model_improvement": False,
                                                                   "marketing_emails": False}})
        r.raise_for_status()
        csrf = r.json()["csrf_token"]
        key = client.post("/api/v1/api-keys", json={"name": "load"}, headers={"X-CSRF-Token": csrf})
        key.raise_for_status()
        return {"cookie": client.cookies.get("imagen_session"), "csrf": csrf, "api_key": key.json()["key"]}
