"""What the platform adds on top of the model: one run, side by side, ratios printed.

Design target: through API, queue, executor, runtime and storage, a generation takes at most 1.10x a direct
diffusers call, and a saturated worker spends >= 95% of its wall time inside the model.

    .venv/bin/python benchmarks/overhead.py [--size 256 --steps 20 -n 7 --queue 20]
                                            [--wait sse|poll] [--database-url postgresql+psycopg://...]

(a) direct:     StableDiffusionPipeline.from_pretrained(<models>/checkpoints/imagen-tiny), same scheduler, dtype and
                device, called in a persistent child process (see DirectProcess for why; --direct-in thread runs it
                in this process's main thread instead).
(b) end to end: POST /api/v1/generations over real HTTP to a uvicorn server in a background thread, wait for it,
                then download the PNG from outputs[0].url. By default it waits on the SSE stream
                (GET /api/v1/generations/{id}/events), as the web page does: its notification delay is the
                platform's own. --wait poll polls GET /api/v1/generations/{id} every --poll-interval (10 ms) instead;
                on a small CPU machine those ~100 requests/s compete with the model for the same cores and slow the
                diffusers call itself, so that mode measures the client as much as the platform.
(a) and (b) are interleaved (a, b, a, b, ...) after one warm-up each; the ratio is taken pairwise per round.
(c) busy fraction: a queue of jobs submitted back to back; sum(signals.inference_seconds) over the wall time
    (server: first started_at -> last finished_at; client: first submit -> last completion seen).

(a) and (b) only ever run one at a time.
Nothing here asserts on time: it prints numbers, and exits 0.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# Quiet the libraries before they are imported (progress bars, torchvision/accelerate notices).
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import httpx
import numpy as np
import uvicorn
from PIL import Image
from rich.console import Console
from rich.table import Table

from imagen.app import create_app
from imagen.inference.runtime import pick_device, quiet_libraries
from imagen.inference.tiny import TINY_NAME, ensure_tiny_checkpoint
from imagen.kit.config import Settings

TARGET_RATIO = 1.10
TARGET_BUSY = 0.95
PASSWORD = "a-Long-enough-passphrase-7"
FINAL = ("succeeded", "failed", "canceled")

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="width and height (multiple of 8); default 256")
    ap.add_argument("--steps", type=int, default=20, help="inference steps; default 20")
    ap.add_argument("-n", "--rounds", type=int, default=7, help="interleaved (a, b) rounds after warm-up; default 7")
    ap.add_argument("--queue", type=int, default=20, help="jobs in the busy-fraction queue (0 skips it); default 20")
    ap.add_argument("--prompt", default="a lighthouse at dusk, oil painting")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--wait", choices=("sse", "poll"), default="sse",
                    help="how (b) and (c) wait: the SSE stream the web page uses (default) or polling GET")
    ap.add_argument("--poll-interval", type=float, default=0.010,
                    help="with --wait poll: seconds between polls; default 0.010")
    ap.add_argument("--direct-in", choices=("process", "thread"), default="process",
                    help="where (a) runs: a child process (default; the server process then runs torch in its "
                         "executor thread only, as in production) or this process's main thread")
    ap.add_argument("--database-url", default=None,
                    help="default: SQLite in the temporary data dir; e.g. "
                         "postgresql+psycopg://postgres@127.0.0.1:5432/imagen_bench (created when missing)")
    ap.add_argument("--models-dir", type=Path, default=None,
                    help="reuse a models folder (imagen-tiny is built there when missing); default: temporary")
    args = ap.parse_args(argv)
    if args.size % 8 or args.size < 64:
        ap.error("--size must be a multiple of 8, at least 64")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    return args


# ---------------------------------------------------------------------------------------------------------------
# The server: create_app(settings) under uvicorn in a background thread, on a free port of 127.0.0.1.


class BackgroundServer:
    def __init__(self, app: Any) -> None:
        # IPPROTO_TCP explicitly: asyncio turns on TCP_NODELAY only for sockets whose proto is TCP, and a socket made
        # with proto 0 would add a 40 ms Nagle/delayed-ACK stall to every keep-alive response (not the platform's).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="bench-uvicorn", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start (see the log above)")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


def ensure_postgres_database(url: str) -> None:
    """Create the database named in a PostgreSQL URL when it does not exist (best effort)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if not u.get_backend_name().startswith("postgresql") or not u.database:
        return
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": u.database}).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{u.database}"'))
    finally:
        admin.dispose()


def api_client(base_url: str, settings: Settings) -> httpx.Client:
    """Sign up a fresh user, create an API key, and return a cookie-less client that sends it as Bearer."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    with httpx.Client(base_url=base_url, timeout=60) as browser:
        r = browser.post("/api/v1/auth/signup", json={
            "email": email, "password": PASSWORD, "date_of_birth": "1990-05-17", "country": "GB",
            "accept_policy_version": settings.policy_version,
            "consents": {"model_improvement": False, "marketing_emails": False},
        })
        r.raise_for_status()
        csrf = r.json()["csrf_token"]
        r = browser.post("/api/v1/api-keys", json={"name": "overhead-benchmark"}, headers={"X-CSRF-Token": csrf})
        r.raise_for_status()
        key = r.json()["key"]
    return httpx.Client(base_url=base_url, timeout=120, headers={"Authorization": f"Bearer {key}"})


# ---------------------------------------------------------------------------------------------------------------
# (a) direct diffusers


class Direct:
    """The same pipeline folder, scheduler, dtype and device the service's runtime uses, called directly."""

    def __init__(self, checkpoint: Path, device: str) -> None:
        import torch
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        self.torch, self.device = torch, device
        dtype = torch.float16 if device == "cuda" else torch.float32
        pipe = StableDiffusionPipeline.from_pretrained(
            checkpoint, local_files_only=True, use_safetensors=True, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # 'euler'
        self.pipe = pipe.to(device)

    def __call__(self, prompt: str, seed: int, steps: int, size: int) -> tuple[float, Image.Image]:
        t0 = time.perf_counter()
        image = self.pipe(prompt, num_inference_steps=steps, width=size, height=size, guidance_scale=7.0,
                          generator=self.torch.Generator(self.device).manual_seed(seed)).images[0]
        return time.perf_counter() - t0, image


def _direct_child(conn: Any, models_dir: Path, device: str) -> None:
    """(a) in its own process: builds imagen-tiny when missing, loads it, then answers calls until told to stop."""
    quiet_libraries()
    t = time.perf_counter()
    checkpoint = ensure_tiny_checkpoint(models_dir)
    built = time.perf_counter() - t
    direct = Direct(checkpoint, device)
    conn.send(("ready", str(checkpoint), built))
    while (call := conn.recv()) is not None:
        seconds, image = direct(*call)
        conn.send((seconds, image.mode, image.size, image.tobytes()))


class DirectProcess:
    """(a) run in a child process, so that this process (the server) has one torch thread only, as in production.

    Measured on a 2-core machine: once a second long-lived thread of the process has run torch (the benchmark's own,
    next to the executor's), *both* pipelines ran about 2x slower (1.0 s -> 1.7-2.5 s at 256x256/20 steps), and stayed
    so while both threads lived; a thread that ran torch and exited left no trace. The likely mechanism: torch on CPU
    uses OpenMP (libgomp), each such thread gets its own worker team, and once a process manages more OpenMP threads
    than CPUs libgomp throttles its spin-waiting between parallel regions (OMP_WAIT_POLICY=PASSIVE gives the same ~2x).
    Either way neither number would describe the service or plain diffusers.
    """

    def __init__(self, models_dir: Path, device: str) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_direct_child, args=(child, models_dir, device), name="bench-direct",
                                daemon=True)
        self.proc.start()
        child.close()
        _, checkpoint, self.build_seconds = self._recv()
        self.checkpoint = Path(checkpoint)

    def _recv(self) -> Any:
        try:
            return self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the direct process exited ({self.proc.exitcode}); see its error above") from None

    def __call__(self, prompt: str, seed: int, steps: int, size: int) -> tuple[float, Image.Image]:
        self.conn.send((prompt, seed, steps, size))
        seconds, mode, image_size, data = self._recv()
        return seconds, Image.frombytes(mode, image_size, data)

    def close(self) -> None:
        if self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(30)
        self.conn.close()


class DirectThread(Direct):
    """(a) in this process's main thread, next to the server's executor thread (--direct-in thread)."""

    def __init__(self, models_dir: Path, device: str) -> None:
        t = time.perf_counter()
        self.checkpoint = ensure_tiny_checkpoint(models_dir)
        self.build_seconds = time.perf_counter() - t
        super().__init__(self.checkpoint, device)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------------
# (b) end to end


def stamp(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else float("nan")


@dataclass
class E2E:
    seconds: float  # submit -> PNG downloaded, client clock
    image: Image.Image
    body: dict[str, Any]
    submit_s: float  # POST round trip
    seen_s: float  # client wall time when completion was seen
    download_s: float
    polls: int
    t0_wall: float  # client wall time just before the POST

    @property
    def signals(self) -> dict[str, Any]:
        return self.body.get("signals") or {}

    def parts(self) -> dict[str, float]:
        """Where the end-to-end time went, in seconds (server stamps and client wall clock: one machine)."""
        b, s = self.body, self.signals
        created, started, finished = stamp(b["created_at"]), stamp(b["started_at"]), stamp(b["finished_at"])
        total, inference = s.get("total_seconds", 0.0), s.get("inference_seconds", 0.0)
        encode, load = s.get("encode_seconds", 0.0), s.get("load_seconds", 0.0)
        return {
            "POST until row created": created - self.t0_wall,
            "created -> started (commit, wake, claim)": started - created,
            "worker outside runtime.run (spec, complete+commit)": (finished - started) - total,
            "runtime.run before/after the diffusers call": total - inference - encode - load,
            "checkpoint lookup + cache hit (load_seconds)": load,
            "diffusers call incl. step callbacks (inference_seconds)": inference,
            "PNG encode (encode_seconds)": encode,
            "finished -> client sees it": self.seen_s - finished,
            "download PNG": self.download_s,
        }


def wait_poll(client: httpx.Client, gen_id: str, interval: float) -> tuple[dict[str, Any], int]:
    polls = 0
    while True:
        polls += 1
        body = client.get(f"/api/v1/generations/{gen_id}").json()
        if body["status"] in FINAL:
            return body, polls
        time.sleep(interval)


def wait_sse(client: httpx.Client, gen_id: str) -> tuple[dict[str, Any], int]:
    import json

    events, event = 0, None
    with client.stream("GET", f"/api/v1/generations/{gen_id}/events") as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                events += 1
            elif line.startswith("data: ") and event == "done":
                return json.loads(line[6:]), events
    raise RuntimeError(f"SSE stream for {gen_id} ended without a done event")


def wait_for(client: httpx.Client, gen_id: str, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    if args.wait == "sse":
        return wait_sse(client, gen_id)
    return wait_poll(client, gen_id, args.poll_interval)


def params(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {"prompt": args.prompt, "seed": seed, "steps": args.steps, "width": args.size, "height": args.size,
            "scheduler": "euler", "guidance": 7.0, "batch_size": 1, "checkpoint": TINY_NAME}


def submit(client: httpx.Client, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    r = client.post("/api/v1/generations", json={"workflow": "txt2img", "params": params(args, seed)})
    if r.status_code != 202:
        raise RuntimeError(f"submit answered {r.status_code}: {r.text}")
    return r.json()


def end_to_end(client: httpx.Client, args: argparse.Namespace, seed: int) -> E2E:
    t0_wall, t0 = time.time(), time.perf_counter()
    gen_id = submit(client, args, seed)["id"]
    t_sub = time.perf_counter()
    body, polls = wait_for(client, gen_id, args)
    seen_wall, t_seen = time.time(), time.perf_counter()
    if body["status"] != "succeeded":
        raise RuntimeError(f"generation {gen_id} ended {body['status']}: {body.get('error')}")
    png = client.get(body["outputs"][0]["url"])
    png.raise_for_status()
    t_end = time.perf_counter()
    image = Image.open(io.BytesIO(png.content))
    image.load()
    return E2E(t_end - t0, image, body, t_sub - t0, seen_wall, t_end - t_seen, polls, t0_wall)


def same_pixels(a: Image.Image, b: Image.Image) -> tuple[bool, str]:
    x, y = np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))
    if x.shape != y.shape:
        return False, f"shapes differ {x.shape} vs {y.shape}"
    diff = np.abs(x.astype(np.int16) - y.astype(np.int16))
    return bool(diff.max() == 0), f"max |diff| {int(diff.max())}, differing pixels {int((diff.any(-1)).sum())}"


# ---------------------------------------------------------------------------------------------------------------
# (c) busy fraction


@dataclass
class Busy:
    jobs: int
    inference_sum: float
    total_sum: float
    server_wall: float
    client_wall: float
    gaps: list[float] = field(default_factory=list)  # previous finished_at -> next started_at
    outside_inference: list[float] = field(default_factory=list)  # finished_at - started_at - inference_seconds
    submit_wall: float = 0.0

    @property
    def server_fraction(self) -> float:
        return self.inference_sum / self.server_wall

    @property
    def client_fraction(self) -> float:
        return self.inference_sum / self.client_wall


def busy_fraction(client: httpx.Client, args: argparse.Namespace) -> Busy:
    t0 = time.perf_counter()
    ids = [submit(client, args, args.seed + 1000 + i)["id"] for i in range(args.queue)]
    t_submitted = time.perf_counter()
    bodies = []
    for gen_id in ids:  # one user, so the fair queue serves them in submission order
        body, _ = wait_for(client, gen_id, args)
        if body["status"] != "succeeded":
            raise RuntimeError(f"queued generation {gen_id} ended {body['status']}: {body.get('error')}")
        bodies.append(body)
    t_end = time.perf_counter()
    bodies.sort(key=lambda b: stamp(b["started_at"]))
    started = [stamp(b["started_at"]) for b in bodies]
    finished = [stamp(b["finished_at"]) for b in bodies]
    inference = [b["signals"]["inference_seconds"] for b in bodies]
    return Busy(
        jobs=len(bodies), inference_sum=sum(inference), total_sum=sum(b["signals"]["total_seconds"] for b in bodies),
        server_wall=max(finished) - min(started), client_wall=t_end - t0,
        gaps=[s - f for f, s in zip(finished, started[1:], strict=False)],
        outside_inference=[f - s - i for s, f, i in zip(started, finished, inference, strict=True)],
        submit_wall=t_submitted - t0,
    )


# ---------------------------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_info(device: str, db_url: str, args: argparse.Namespace) -> list[tuple[str, str]]:
    import diffusers
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return [
        ("machine", f"{platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs"),
        ("python / torch / diffusers", f"{platform.python_version()} / {torch.__version__} / {diffusers.__version__}"),
        ("device", f"{device} ({torch.get_num_threads()} torch threads)"),
        ("(a) runs in", "a child process" if args.direct_in == "process"
         else "the main thread of the server's process (2 torch-running threads)"),
        ("database", db_url.split("://", 1)[0] + ("" if db_url.startswith("sqlite") else " " + db_url.split("@")[-1])),
        ("workload", f"{TINY_NAME}, {args.size}x{args.size}, {args.steps} steps, euler, cfg 7.0, batch 1"),
        ("rounds / queue", f"{args.rounds} interleaved (a, b) after 1 warm-up / {args.queue} jobs"),
        ("(b) waits by", f"polling GET every {args.poll_interval * 1000:g} ms" if args.wait == "poll"
         else "SSE stream (/events; woken on each change, DB re-read every 0.25 s as fallback)"),
        ("load average at start", " ".join(f"{x:.2f}" for x in load)),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    tmp = tempfile.TemporaryDirectory(prefix="imagen-bench-")
    data_dir = Path(tmp.name) / "data"
    models_dir = (args.models_dir or Path(tmp.name) / "models").resolve()
    if args.database_url:
        try:
            ensure_postgres_database(args.database_url)
        except Exception as exc:  # optional convenience; migrations will say what is wrong
            console.print(f"[yellow]could not create the database: {exc}[/yellow]")
    settings = Settings(env="test", data_dir=data_dir, database_url=args.database_url, models_dir=models_dir,
                        secret_key="x" * 40, cookie_secure=False)
    device = pick_device(settings.device)

    direct: DirectProcess | DirectThread | None = None
    try:
        # (a) builds imagen-tiny when missing (the service would build it on first use) and loads it.
        direct = DirectProcess(models_dir, device) if args.direct_in == "process" else DirectThread(models_dir, device)
        console.print(f"imagen-tiny at {direct.checkpoint} (built in {direct.build_seconds:.1f} s); (a) loaded")
        with BackgroundServer(create_app(settings)) as server, api_client(server.base_url, settings) as client:
            console.print(f"server on {server.base_url}, data in {data_dir}")
            info = machine_info(device, settings.resolved_database_url, args)

            # Warm-up: one of each (the service's runtime loads its pipeline on its first job).
            warm_a, _ = direct(args.prompt, args.seed, args.steps, args.size)
            warm_b = end_to_end(client, args, args.seed)
            console.print(f"warm-up: direct {ms(warm_a)} ms, end to end {ms(warm_b.seconds)} ms "
                          f"(pipeline loaded now: {warm_b.signals.get('checkpoint_loaded_now')}, "
                          f"load {ms(warm_b.signals.get('load_seconds', 0))} ms)")

            rounds: list[tuple[float, E2E, bool, str]] = []
            for i in range(args.rounds):
                a, image_a = direct(args.prompt, args.seed, args.steps, args.size)
                b = end_to_end(client, args, args.seed)
                match, detail = same_pixels(image_a, b.image)
                rounds.append((a, b, match, detail))
                console.print(f"round {i + 1}/{args.rounds}: direct {ms(a)} ms, end to end {ms(b.seconds)} ms, "
                              f"ratio {b.seconds / a:.3f}, pixels {'identical' if match else 'DIFFER: ' + detail}")

            busy = busy_fraction(client, args) if args.queue > 0 else None
    finally:
        if direct is not None:
            direct.close()
        tmp.cleanup()

    print_report(args, info, rounds, busy)
    return 0


def print_report(args: argparse.Namespace, info: list[tuple[str, str]],
                 rounds: list[tuple[float, E2E, bool, str]], busy: Busy | None) -> None:
    direct = [a for a, *_ in rounds]
    e2e = [b.seconds for _, b, *_ in rounds]
    ratios = [b.seconds / a for a, b, *_ in rounds]
    added = [b.seconds - a for a, b, *_ in rounds]
    matches = sum(1 for *_, m, _ in rounds if m)

    machine = Table(title="Machine", show_header=False)
    for k, v in info:
        machine.add_row(k, v)
    console.print(machine)

    results = Table(title="Overhead: (b) end to end vs (a) direct diffusers")
    results.add_column("measure")
    results.add_column("value", justify="right")
    results.add_column("target", justify="right")
    results.add_row("median direct (a) ms", ms(median(direct)), "")
    results.add_row("median end to end (b) ms", ms(median(e2e)), "")
    results.add_row("median ratio b/a (pairwise per round)", f"{median(ratios):.3f}", f"<= {TARGET_RATIO:.2f}")
    results.add_row("  min / max ratio", f"{min(ratios):.3f} / {max(ratios):.3f}", "")
    results.add_row("median added ms (b - a)", ms(median(added)), "")
    mismatch = next((detail for *_, m, detail in rounds if not m), "")
    results.add_row("same pixels (a) vs (b), same seed",
                    f"{matches}/{len(rounds)} identical" + (f" ({mismatch})" if mismatch else ""), "all")
    if busy is not None:
        results.add_row(f"busy fraction, server ({busy.jobs} jobs: first started -> last finished)",
                        f"{busy.server_fraction:.3f}", f">= {TARGET_BUSY:.2f}")
        results.add_row("busy fraction, client (first submit -> last completion seen)",
                        f"{busy.client_fraction:.3f}", "")
        results.add_row("  for reference: jobs x median direct (a) / server wall",
                        f"{busy.jobs * median(direct) / busy.server_wall:.3f}", "")
    console.print(results)

    parts_table = Table(title="Where (b)'s time goes (median per round, ms)")
    parts_table.add_column("part")
    parts_table.add_column("ms", justify="right")
    names = list(rounds[0][1].parts())
    for name in names:
        parts_table.add_row(name, ms(median([b.parts()[name] for _, b, *_ in rounds])))
    parts_table.add_row("POST round trip (client)", ms(median([b.submit_s for _, b, *_ in rounds])))
    parts_table.add_row("diffusers call minus direct (a), same round",
                        ms(median([b.signals["inference_seconds"] - a for a, b, *_ in rounds])))
    parts_table.add_row(f"{'polls' if args.wait == 'poll' else 'SSE events'} per generation (median)",
                        f"{median([b.polls for _, b, *_ in rounds]):g}")
    console.print(parts_table)

    if busy is not None:
        q = Table(title=f"Saturated worker ({busy.jobs} jobs)", show_header=False)
        q.add_row("submitting all jobs took", f"{ms(busy.submit_wall)} ms")
        q.add_row("server wall (first started -> last finished)", f"{ms(busy.server_wall)} ms")
        q.add_row("client wall (first submit -> last seen)", f"{ms(busy.client_wall)} ms")
        q.add_row("sum inference_seconds / sum total_seconds", f"{ms(busy.inference_sum)} / {ms(busy.total_sum)} ms")
        q.add_row("per job outside the diffusers call (median / max)",
                  f"{ms(median(busy.outside_inference))} / {ms(max(busy.outside_inference))} ms")
        if busy.gaps:
            q.add_row("gap finished -> next started (median / max)",
                      f"{ms(median(busy.gaps))} / {ms(max(busy.gaps))} ms")
        console.print(q)

    verdict = []
    if median(ratios) > TARGET_RATIO:
        verdict.append(f"ratio {median(ratios):.3f} above {TARGET_RATIO}")
    if busy is not None and busy.server_fraction < TARGET_BUSY:
        verdict.append(f"busy fraction {busy.server_fraction:.3f} below {TARGET_BUSY}")
    if matches != len(rounds):
        verdict.append("images differ between (a) and (b)")
    console.print("within the design target" if not verdict else "outside the design target: " + "; ".join(verdict))


if __name__ == "__main__":
    sys.exit(main())
