"""Model affinity in the Celery fleet: checkpoint loads and throughput, affinity vs plain round-robin, one run.

    .venv/bin/python benchmarks/fleet.py [-n 24] [--steps 8] [--size 64] [--redis redis://127.0.0.1:6379/12]
                                         [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/imagen_bench_fleet]

Each mode starts the real stack: `imagen serve` and two `imagen worker` processes (IMAGEN_EXECUTOR=celery, Redis as
the broker, PostgreSQL), every process with a model cache that holds one checkpoint (IMAGEN_MODEL_CACHE_BYTES=1), as a
GPU holds one big model. One user submits `n` jobs alternating between the two built-in tiny checkpoints
(`imagen-tiny`, SD 1.x, and `imagen-tiny-xl`, SDXL; built from code, no download), all at once, then waits for all.

- affinity (IMAGEN_FLEET_AFFINITY=true, the default): a ticket goes to an idle worker that has the job's checkpoint
  loaded when there is one, and a worker claims, among equally fair jobs, one for a checkpoint it has loaded;
- round-robin (IMAGEN_FLEET_AFFINITY=false): every ticket goes to the shared queue and a worker claims the oldest job.

Printed per mode: checkpoint loads (jobs whose `signals.checkpoint_loaded_now` is true), the seconds spent loading
(`load_seconds`), wall time from the first submit to the last end, jobs per second; then the ratios. The two modes run
one after the other on the same machine in this one run. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.live_server import REPO, LiveServer, signup

POLICY_VERSION = "2026-04-29"
CHECKPOINTS = ("imagen-tiny", "imagen-tiny-xl")
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=24, help="jobs per mode")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/12", help="flushed at each start")
    ap.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/imagen_bench_fleet",
                    help="dropped and created at each start")
    return ap.parse_args(argv)


def fresh_database(url: str) -> None:
    server, _, name = url.rpartition("/")
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def run_mode(affinity: bool, args: argparse.Namespace, root: Path, models: Path) -> dict[str, Any]:
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    fresh_database(args.postgres)
    env = {"IMAGEN_DATABASE_URL": args.postgres, "IMAGEN_MODELS_DIR": str(models),
           "IMAGEN_POLICY_VERSION": POLICY_VERSION, "IMAGEN_EXECUTOR": "celery", "IMAGEN_BROKER_URL": args.redis,
           "IMAGEN_FLEET_AFFINITY": str(affinity).lower(), "IMAGEN_MODEL_CACHE_BYTES": "1",
           "IMAGEN_MAX_QUEUED_PER_USER": str(args.n + 1)}
    data = root / ("affinity" if affinity else "round-robin")
    server = LiveServer(data_dir=data, env=env, log=root / f"{data.name}-serve.log").start(timeout=300)
    workers = []
    try:
        for name in ("bench-a", "bench-b"):
            log = (root / f"{data.name}-{name}.log").open("wb")
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "imagen.cli", "worker", "--name", name, "--queues", "gpu"],
                env=server.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))
        wait_for_workers(args.redis, 2)
        key = signup(server.url, "bench@example.com", POLICY_VERSION)["api_key"]
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            warm = [submit(client, CHECKPOINTS[i % 2], args, seed=1000 + i) for i in range(2)]  # load, not timed
            wait_all(client, warm)
            started = time.monotonic()
            ids = [submit(client, CHECKPOINTS[i % 2], args, seed=i) for i in range(args.n)]
            bodies = wait_all(client, ids)
            wall = time.monotonic() - started
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        server.stop()
    failed = [b for b in bodies if b["status"] != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} jobs did not succeed: {failed[0]['status']} {failed[0]['error']}")
    signals = [b["signals"] for b in bodies]
    return {"loads": sum(bool(s.get("checkpoint_loaded_now")) for s in signals),
            "load_seconds": sum(float(s.get("load_seconds") or 0) for s in signals if s.get("checkpoint_loaded_now")),
            "wall": wall, "throughput": len(bodies) / wall}


def wait_for_workers(redis_url: str, count: int, timeout: float = 180.0) -> None:
    from imagen.fleet.registry import WorkerRegistry

    registry = WorkerRegistry(redis_url, ttl_seconds=30)
    deadline = time.monotonic() + timeout
    while len(registry.workers()) < count:
        if time.monotonic() > deadline:
            raise SystemExit("the workers did not start (see the logs)")
        time.sleep(0.2)


def submit(client: httpx.Client, checkpoint: str, args: argparse.Namespace, *, seed: int) -> str:
    r = client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {
        "prompt": "a lighthouse", "checkpoint": checkpoint, "steps": args.steps, "width": args.size,
        "height": args.size, "seed": seed}})
    r.raise_for_status()
    return r.json()["id"]


def wait_all(client: httpx.Client, ids: list[str], timeout: float = 900.0) -> list[dict[str, Any]]:
    deadline, bodies = time.monotonic() + timeout, {}
    while len(bodies) < len(ids):
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(bodies)} of {len(ids)} jobs ended within {timeout} s")
        for gid in ids:
            if gid not in bodies:
                body = client.get(f"/api/v1/generations/{gid}").json()
                if body["status"] in ("succeeded", "failed", "canceled"):
                    bodies[gid] = body
        time.sleep(0.1)
    return [bodies[gid] for gid in ids]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="imagen-fleet-bench-") as tmp:
        root = Path(tmp)
        models = root / "models"
        from imagen.inference.runtime import Runtime

        Runtime(models, device="cpu").checkpoints.list()  # build the tiny models once, before any process reads them
        results = {"affinity": run_mode(True, args, root, models),
                   "round-robin": run_mode(False, args, root, models)}
    table = Table(title=f"{args.n} jobs alternating {' / '.join(CHECKPOINTS)}, two workers, one model each in memory")
    for column in ("mode", "checkpoint loads", "seconds loading", "wall s", "jobs/s"):
        table.add_column(column, justify="right")
    for mode, r in results.items():
        table.add_row(mode, str(r["loads"]), f"{r['load_seconds']:.2f}", f"{r['wall']:.2f}",
                      f"{r['throughput']:.2f}")
    console.print(table)
    a, rr = results["affinity"], results["round-robin"]
    console.print(f"loads: affinity {a['loads']} vs round-robin {rr['loads']}; "
                  f"throughput ratio (affinity / round-robin): {a['throughput'] / rr['throughput']:.2f}x")


if __name__ == "__main__":
    main()
