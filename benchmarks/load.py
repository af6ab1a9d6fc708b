"""Does the server hold a crowd? Many concurrent clients against a real `imagen serve` on 127.0.0.1.

    .venv/bin/python benchmarks/load.py [--clients 500] [--duration 60] [--database-url URL] [--processes N]

Design target (docs/architecture.md "Under load", issue 10): hundreds of concurrent clients get answers, never a
freeze: zero errors at 500 clients for 60 s, /healthz quick throughout.

What runs: `imagen serve` in a child process (tests/live_server.py) on a fresh data folder (SQLite, or the
PostgreSQL database given, which must exist and may be empty), with its in-process worker running the built-in tiny
model on CPU. Accounts are made first (--users), each with an API key and a browser login, and one job each is run
to completion (warming the model). Then --clients clients, split over --processes client processes (asyncio +
httpx, one keep-alive connection each), loop until --duration has passed, each picking an action by weight:

  public   GET /, /login, /signup, /privacy, /api/v1/policy, unauthenticated
  pages    GET /generate, /gallery with the browser login
  list     GET /api/v1/generations, /api/v1/me, /api/v1/workflows, /api/v1/assets with an API key
  submit   POST /api/v1/generations (txt2img, 64x64, 1 step)
  stream   GET /api/v1/generations/{id}/events of the user's latest job, read until `done` or --stream-hold s
  healthz  GET /healthz

and waits --think s on average (uniform 0 to 2x) before the next. Bounded: each request has a --timeout; no new
request starts after --duration; at most --max-requests in all.

An error is any answer other than the action's success status (200; 202 for submit; a stream that ends before
`done` or its hold time counts too), a timeout or a connection error; a 429 from a user's own limits is an error
here as well (the defaults leave room for this mix). Latency: the whole answer, or the first event of a stream.
Memory: the server's resident set, sampled every 0.5 s (start, peak sampled, end, and the kernel's high-water mark).
Nothing asserts: it prints and exits 0 (1 when there were errors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live_server import LiveServer, signup

POLICY_VERSION = "2026-04-29"
PUBLIC = ["/", "/login", "/signup", "/privacy", "/api/v1/policy"]
PAGES = ["/generate", "/gallery"]
LISTS = ["/api/v1/generations", "/api/v1/me", "/api/v1/workflows", "/api/v1/assets"]
JOB = {"workflow": "txt2img", "params": {"prompt": "a lighthouse at dusk", "steps": 1, "width": 64, "height": 64}}
WEIGHTS = {"public": 25, "pages": 10, "list": 40, "submit": 3, "stream": 12, "healthz": 10}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=500, help="concurrent clients; default 500")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load; default 60, at most 600")
    ap.add_argument("--users", type=int, default=50, help="accounts the clients share; default 50")
    ap.add_argument("--think", type=float, default=1.0, help="mean pause between a client's requests; default 1 s")
    ap.add_argument("--stream-hold", type=float, default=5.0, help="longest a stream is read; default 5 s")
    ap.add_argument("--timeout", type=float, default=30.0, help="per request; default 30 s")
    ap.add_argument("--max-requests", type=int, default=500_000, help="stop after this many in all")
    ap.add_argument("--processes", type=int, default=max(1, min(4, (os.cpu_count() or 2) // 2)),
                    help="client processes; default half the CPUs, at most 4")
    ap.add_argument("--database-url", help="an existing (empty or migrated) database; default a fresh SQLite file")
    ap.add_argument("--models-dir", type=Path, help="models folder to reuse (the tiny model is built otherwise)")
    ap.add_argument("--env", action="append", default=[], metavar="IMAGEN_X=V", help="extra server setting")
    args = ap.parse_args(argv)
    args.duration = min(args.duration, 600.0)
    args.clients = max(1, min(args.clients, 5000))
    args.processes = max(1, min(args.processes, args.clients))
    return args


# ---- client side (runs in each client process) ----

class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.count = 0

    def add(self, kind: str, seconds: float, error: str | None = None) -> None:
        self.count += 1
        self.latency[kind].append(seconds)
        if error is not None:
            self.errors[f"{kind}: {error}"] += 1


async def _stream(client: httpx.AsyncClient, user: dict[str, Any], hold: float, rec: Recorder) -> None:
    t0 = time.monotonic()
    first, error = None, None
    try:
        async with client.stream("GET", f"/api/v1/generations/{user['latest']}/events",
                                 headers=user["bearer"]) as r:
            if r.status_code != 200:
                error = str(r.status_code)
            else:
                lines = r.aiter_lines()
                async with asyncio.timeout(hold):
                    async for line in lines:
                        if first is None and line.startswith("data: "):
                            first = time.monotonic() - t0
                        if line == "event: done":
                            break
                    else:
                        error = "ended before done"
    except TimeoutError:
        pass  # held as long as allowed: the client leaves, as a browser tab closes
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    if first is None and error is None:
        error = "no event"
    rec.add("stream", first if first is not None else time.monotonic() - t0, error)


async def _action(client: httpx.AsyncClient, kind: str, user: dict[str, Any], rng: random.Random,
                  args: argparse.Namespace, rec: Recorder) -> None:
    if kind == "stream":
        return await _stream(client, user, args.stream_hold, rec)
    method, expect, body = "GET", 200, None
    headers: dict[str, str] = {}
    if kind == "public":
        path = rng.choice(PUBLIC)
    elif kind == "pages":
        path, headers = rng.choice(PAGES), {"Cookie": f"imagen_session={user['cookie']}"}
    elif kind == "list":
        path, headers = rng.choice(LISTS), user["bearer"]
    elif kind == "submit":
        method, path, expect, body, headers = "POST", "/api/v1/generations", 202, JOB, user["bearer"]
    else:
        path = "/healthz"
    t0 = time.monotonic()
    try:
        r = await client.request(method, path, headers=headers, json=body)
        error = None if r.status_code == expect else str(r.status_code)
        if kind == "submit" and error is None:
            user["latest"] = r.json()["id"]
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    rec.add(kind, time.monotonic() - t0, error)


async def _clients(url: str, users: list[dict[str, Any]], n: int, seed: int, args: argparse.Namespace,
                   deadline_wall: float, budget: int) -> Recorder:
    rec = Recorder()
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    # Each client has its own connection, as a browser would: one shared pool of hundreds of connections costs
    # httpx more CPU per request than the server spends answering it. Idle connections are dropped before the
    # server's keep-alive timeout (5 s), so a request never races the server closing its connection.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=2.0)
    tls = ssl.create_default_context()  # unused over http://, but httpx builds one per client unless given

    async def one(i: int) -> None:
        rng = random.Random(seed * 100_003 + i)
        user = users[(seed * 7919 + i) % len(users)]
        # No cookie jar: each request says who it is (API key or session cookie header), or nobody.
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=args.timeout, verify=tls,
                                     cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))) as client:
            await asyncio.sleep(rng.uniform(0, max(args.think, 0.5)))  # arrive over the first moment, not at once
            while time.time() < deadline_wall and rec.count < budget:
                await _action(client, rng.choices(kinds, weights)[0], user, rng, args, rec)
                await asyncio.sleep(rng.uniform(0, 2 * args.think))

    await asyncio.gather(*(one(i) for i in range(n)))
    return rec


def _client_process(url: str, users: list[dict[str, Any]], n: int, seed: int, args: argparse.Namespace,
                    deadline_wall: float, budget: int, out: Any) -> None:
    rec = asyncio.run(_clients(url, users, n, seed, args, deadline_wall, budget))
    out.put((dict(rec.latency), dict(rec.errors), time.process_time()))


# ---- the run ----

def _prepare(server: LiveServer, n_users: int) -> list[dict[str, Any]]:
    tag = os.urandom(3).hex()
    users = []
    for i in range(n_users):
        user: dict[str, Any] = signup(server.url, f"load-{tag}-{i}@example.com", POLICY_VERSION)
        user["bearer"] = {"Authorization": f"Bearer {user['api_key']}"}
        users.append(user)
    with httpx.Client(base_url=server.url, timeout=300) as client:
        for user in users:  # one job each, so every user has a stream to follow; the first builds the model
            r = client.post("/api/v1/generations", headers=user["bearer"], json=JOB)
            r.raise_for_status()
            user["latest"] = r.json()["id"]
        deadline = time.monotonic() + 600
        for user in users:
            while client.get(f"/api/v1/generations/{user['latest']}", headers=user["bearer"]
                             ).json()["status"] not in ("succeeded", "failed", "canceled"):
                if time.monotonic() > deadline:
                    raise SystemExit("the warm-up jobs did not finish within 10 minutes")
                time.sleep(0.2)
    return users


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc); 0 where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="imagen-load-"))
    env = {"IMAGEN_POLICY_VERSION": POLICY_VERSION}
    if args.database_url:
        env["IMAGEN_DATABASE_URL"] = args.database_url
    if args.models_dir:
        env["IMAGEN_MODELS_DIR"] = str(args.models_dir.resolve())
    env.update(kv.split("=", 1) for kv in args.env)
    with LiveServer(data_dir=tmp / "data", env=env, log=tmp / "server.log") as server:
        print(f"server {server.url} (log {server.log_path}); preparing {args.users} users ...", flush=True)
        users = _prepare(server, args.users)
        rss_start = server.rss_bytes() or 0
        cpu_start = _cpu_seconds(server.process.pid)
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                samples.append(server.rss_bytes() or 0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        print(f"{args.clients} clients in {args.processes} processes for {args.duration:g} s ...", flush=True)
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        started = time.time()
        deadline = started + args.duration
        shares = [args.clients // args.processes + (i < args.clients % args.processes) for i in range(args.processes)]
        procs = [ctx.Process(target=_client_process, args=(server.url, users, n, i, args, deadline,
                                                          args.max_requests // args.processes, out))
                 for i, n in enumerate(shares)]
        for p in procs:
            p.start()
        results = [out.get(timeout=args.duration + args.timeout + args.stream_hold + 120) for _ in procs]
        for p in procs:
            p.join(30)
        elapsed = time.time() - started
        stop.set()
        sampler.join(2)
        rss_end, rss_hwm = server.rss_bytes() or 0, server.peak_rss_bytes() or 0
        server_cpu = _cpu_seconds(server.process.pid) - cpu_start
        with httpx.Client(base_url=server.url, timeout=30) as client:
            t0 = time.monotonic()
            after = client.get("/healthz").status_code
            after_s = time.monotonic() - t0

    latency: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    client_cpu = sum(cpu for _, _, cpu in results)
    for lat, err, _ in results:
        for kind, values in lat.items():
            latency[kind].extend(values)
        errors.update(err)
    every = [v for values in latency.values() for v in values]
    mib = 1024 * 1024
    db = "postgresql" if args.database_url and args.database_url.startswith("postgres") else "sqlite"
    print(f"\n{platform.node()} · {os.cpu_count()} CPUs · {db} · {args.clients} clients · {args.users} users · "
          f"think {args.think:g} s · {elapsed:.0f} s")
    print(f"{'action':<8} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind in [*WEIGHTS, "all"]:
        values = every if kind == "all" else latency.get(kind, [])
        errs = sum(errors.values()) if kind == "all" else sum(c for k, c in errors.items() if k.startswith(kind + ":"))
        print(f"{kind:<8} {len(values):>9} {errs:>7} {_pct(values, 0.5) * 1000:>8.0f} "
              f"{_pct(values, 0.99) * 1000:>8.0f} {max(values, default=float('nan')) * 1000:>8.0f}")
    print(f"throughput {len(every) / elapsed:.0f} requests/s; "
          f"/healthz after the run: {after} in {after_s * 1000:.0f} ms")
    print(f"server memory (RSS): start {rss_start / mib:.0f} MiB, peak sampled {max(samples, default=0) / mib:.0f} "
          f"MiB, end {rss_end / mib:.0f} MiB, high-water mark {rss_hwm / mib:.0f} MiB")
    print(f"CPU seconds per wall second: server {server_cpu / elapsed:.2f}, clients {client_cpu / elapsed:.2f}")
    if errors:
        print("errors: " + json.dumps(dict(errors.most_common(20))))
    else:
        print("errors: none")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
