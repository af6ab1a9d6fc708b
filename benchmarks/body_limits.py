"""How fast does a too-large body get its 413, and do other requests keep answering meanwhile?

    .venv/bin/python benchmarks/body_limits.py [--rounds 5]

Done-when of issue 10: a 3 MB JSON body and a 100 MB body get 413 within a second while other requests keep
answering. The app (SQLite in a temporary data folder, no worker) runs under uvicorn on 127.0.0.1; each round sends
to POST /api/v1/auth/login, each over its own connection, writing the body as fast as the server takes it:
  - 3 MB JSON with its Content-Length, 100 MB with its Content-Length, 100 MB chunked (no length);
while a client asks GET /healthz in a loop. Printed: seconds from the request's first byte to the 413 (max over the
rounds), bytes the client managed to send before it, /healthz answers and their slowest latency, the server
process's peak RSS. Nothing asserts: it prints and exits 0 (tests/test_input_bounds.py checks the behaviour).
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

MiB = 1024**2


def serve(data_dir: Path) -> tuple[uvicorn.Server, str]:
    from imagen.app import create_app
    from imagen.kit.config import Settings

    settings = Settings(env="test", data_dir=data_dir, secret_key="x" * 40, worker_autostart=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"127.0.0.1:{sock.getsockname()[1]}"


def body(total: int, chunked: bool, size: int = 64 * 1024) -> Iterator[bytes]:
    for _ in range(total // size):
        yield (f"{size:x}\r\n".encode() + b" " * size + b"\r\n") if chunked else b" " * size


def send(address: str, total: int, chunked: bool) -> tuple[float, int, bytes]:
    host, port = address.split(":")
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = f"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
    sent, stop = 0, threading.Event()
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        started = time.monotonic()
        conn.sendall(head.encode())

        def feed() -> None:
            nonlocal sent
            for chunk in body(total, chunked):
                if stop.is_set():
                    return
                try:
                    conn.sendall(chunk)
                except OSError:
                    return
                sent += len(chunk)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = conn.recv(65536)
            if not data:
                break
            answer += data
        seconds = time.monotonic() - started
        stop.set()
        feeder.join(timeout=30)
    return seconds, sent, answer.split(b"\r\n", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, address = serve(Path(tmp))
        latencies: list[float] = []
        statuses: list[int] = []
        done = threading.Event()

        def healthz() -> None:
            with httpx.Client(base_url=f"http://{address}", timeout=10) as c:
                while not done.is_set():
                    t = time.monotonic()
                    statuses.append(c.get("/healthz").status_code)
                    latencies.append(time.monotonic() - t)

        other = threading.Thread(target=healthz, daemon=True)
        other.start()
        cases = {"3 MB JSON, Content-Length": (3 * MiB, False), "100 MB, Content-Length": (100 * MiB, False),
                 "100 MB, chunked": (100 * MiB, True)}
        print(f"python {sys.version.split()[0]}, {args.rounds} rounds, server on {address}")
        for name, (total, chunked) in cases.items():
            results = [send(address, total, chunked) for _ in range(args.rounds)]
            worst = max(r[0] for r in results)
            print(f"{name:28} answer {results[0][2].decode():40} max {worst:.3f} s, "
                  f"client sent at most {max(r[1] for r in results) / MiB:.1f} MiB")
        done.set()
        other.join(timeout=30)
        print(f"/healthz meanwhile: {len(statuses)} answers, {sum(s != 200 for s in statuses)} not 200, "
              f"slowest {max(latencies):.3f} s")
        print(f"peak RSS of this process (server and clients): "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        server.should_exit = True


if __name__ == "__main__":
    main()
