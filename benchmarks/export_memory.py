"""Does an export's memory stay flat as the user's data grows? Peak RSS at 1k and 10k generations, side by side.

    .venv/bin/python benchmarks/export_memory.py [--sizes 1000 10000] [--output-bytes 2048]

Design target (docs/architecture.md, issue 4): export and erasure stream, so memory stays flat however much a user
has; the ratio of peak memory at 10k generations to 1k should be about 1.0.

For each size, in a temporary data folder (SQLite, local blob store):
  1. fill (child process): one account; N generations and N outputs inserted directly in bulk (one output each,
     a realistic prompt, parameters and model record), and N small output blobs (--output-bytes each).
  2. export (a fresh child process, so nothing from the fill counts): `build_export` (the code the server's
     background runner calls) builds the ZIP. Measured in that process: RSS before the build, peak RSS (ru_maxrss)
     and the peak of Python allocations during the build (tracemalloc), seconds, ZIP size; the ZIP is then checked
     (N outputs in data.json, N PNG files).
Both columns come from the same machine in the same run; the ratios are 10k/1k. Nothing asserts on memory or time:
it prints and exits 0. tracemalloc slows the build; seconds are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
PROMPT = ("a lighthouse on a rocky coast at dusk, dramatic clouds, (oil painting:1.2), warm light, "
          "seagulls, crashing waves, highly detailed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000],
                    help="generations per run; default 1000 10000")
    ap.add_argument("--output-bytes", type=int, default=2048, help="size of each output blob; default 2048")
    ap.add_argument("--child", choices=("fill", "export"), help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("-n", type=int, default=0, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _settings(data_dir: Path) -> Any:
    from imagen.kit.config import Settings

    return Settings(env="test", data_dir=data_dir, secret_key="b" * 40, worker_autostart=False)


def fill(data_dir: Path, n: int, output_bytes: int) -> dict[str, Any]:
    from sqlalchemy import insert

    from imagen.accounts.service import account_service
    from imagen.consent.service import consent_service
    from imagen.generation.models import Generation, Output
    from imagen.generation.service import output_key
    from imagen.kit import migrate
    from imagen.kit.db import Database, new_id, utcnow
    from imagen.storage import make_blob_store

    settings = _settings(data_dir)
    settings.ensure_data_dir()
    migrate.upgrade(settings.resolved_database_url)
    db, blobs = Database(settings.resolved_database_url), make_blob_store(settings)
    with db.transaction() as s:
        consent_service.ensure_policy_version(s, version=settings.policy_version, text="policy")
        user = account_service.create_user(s, email="bench@example.com", password="Sturdy-passphrase-42",
                                           role="user", date_of_birth=date(1990, 1, 1), country="GB",
                                           policy_version=settings.policy_version)
        user_id = user.id
    payload = os.urandom(output_bytes)
    start = utcnow() - timedelta(days=365)
    for offset in range(0, n, 1000):
        gens, outs = [], []
        for i in range(offset, min(n, offset + 1000)):
            gen_id, stamp = new_id(), start + timedelta(seconds=i)
            gens.append(dict(
                id=gen_id, user_id=user_id, workflow="txt2img", workflow_version=2, pipeline="txt2img",
                params={"prompt": PROMPT, "negative_prompt": "blurry", "steps": 20, "seed": i, "width": 512,
                        "height": 512, "guidance": 7.0, "sampler": "euler", "checkpoint": "imagen-tiny"},
                checkpoint="imagen-tiny", checkpoint_sha256="0" * 64,
                models=[{"role": "checkpoint", "id": "imagen-tiny", "sha256": "0" * 64, "family": "sd15",
                         "blob_key": None}],
                consent_model_improvement=False, status="succeeded", progress=1.0, cancel_requested=False,
                signals={"inference_seconds": 1.0}, created_at=stamp, started_at=stamp, finished_at=stamp))
            key = output_key(user_id, gen_id, 0)
            blobs.put(key, payload, "image/png")
            outs.append(dict(id=new_id(), generation_id=gen_id, user_id=user_id, index=0, blob_key=key, width=512,
                             height=512, seed=i, size_bytes=output_bytes, created_at=stamp))
        with db.transaction() as s:
            s.execute(insert(Generation), gens)
            s.execute(insert(Output), outs)
    db.dispose()
    return {"user_id": user_id}


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def export(data_dir: Path, n: int) -> dict[str, Any]:
    from sqlalchemy import select

    from imagen.accounts.models import User
    from imagen.kit.db import Database
    from imagen.privacy.exports import build_export, export_service
    from imagen.privacy.models import Export
    from imagen.storage import make_blob_store

    settings = _settings(data_dir)
    db, blobs = Database(settings.resolved_database_url), make_blob_store(settings)
    with db.transaction() as s:
        user_id = s.scalars(select(User.id)).one()
        export_id = export_service.request(s, user_id=user_id).id
    rss_before = _rss_now()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    status = build_export(db, blobs, export_id)
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with db.transaction() as s:
        key, size = s.execute(select(Export.blob_key, Export.size_bytes).where(Export.id == export_id)).one()
    with zipfile.ZipFile(blobs.local_path(key)) as zf:
        data = json.loads(zf.read("data.json"))
        pngs = sum(1 for name in zf.namelist() if name.startswith("files/outputs/"))
    db.dispose()
    return {"status": status, "seconds": seconds, "rss_before": rss_before, "maxrss_before": maxrss_before,
            "peak_rss": peak, "traced_peak": traced_peak, "zip_bytes": size, "pngs": pngs,
            "outputs": data["sections"]["outputs"]["count"], "generations": data["sections"]["generations"]["count"]}


def _child(mode: str, data_dir: Path, n: int, output_bytes: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--data-dir", str(data_dir), "-n", str(n),
           "--output-bytes", str(output_bytes)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        fn = fill(args.data_dir, args.n, args.output_bytes) if args.child == "fill" else export(args.data_dir, args.n)
        print(json.dumps(fn))
        return 0
    console.print(f"[bold]export_memory[/]: Python {platform.python_version()}, {platform.machine()}, "
                  f"{os.cpu_count()} CPUs; SQLite, local blobs, {args.output_bytes}-byte outputs")
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="imagen-export-bench-") as tmp:
        for n in args.sizes:
            data_dir = Path(tmp) / f"n{n}"
            t0 = time.perf_counter()
            _child("fill", data_dir, n, args.output_bytes)
            console.print(f"  filled {n} generations in {time.perf_counter() - t0:.1f}s; exporting...")
            results[n] = _child("export", data_dir, n, args.output_bytes)
            ok = results[n]["outputs"] == results[n]["pngs"] == results[n]["generations"] == n
            if results[n]["status"] != "ready" or not ok:
                console.print(f"[red]export of {n} is incomplete: {results[n]}[/]")
    table = Table(title="Export: peak memory by account size")
    table.add_column("")
    for n in args.sizes:
        table.add_column(f"{n} generations", justify="right")
    first, last = args.sizes[0], args.sizes[-1]
    ratio_label = f"{last}/{first}"
    table.add_column(ratio_label, justify="right")
    rows = [("peak RSS (ru_maxrss)", "peak_rss", mib), ("RSS before the build", "rss_before", mib),
            ("peak - before", None, mib), ("Python allocations peak (tracemalloc)", "traced_peak", mib),
            ("ZIP size", "zip_bytes", mib), ("seconds (with tracemalloc)", "seconds", lambda v: f"{v:.1f}")]
    for label, key, fmt in rows:
        values = [r[key] if key else r["peak_rss"] - r["rss_before"] for r in (results[n] for n in args.sizes)]
        ratio = values[-1] / values[0] if values[0] else float("nan")
        table.add_row(label, *(fmt(v) for v in values), f"{ratio:.2f}")
    console.print(table)
    flat = results[last]["peak_rss"] / results[first]["peak_rss"]
    console.print(f"Peak RSS ratio {ratio_label}: [bold]{flat:.2f}[/] (flat ≈ 1.0) for "
                  f"{last / first:.0f}x the data.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
