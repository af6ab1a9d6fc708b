"""The gallery at 1,000 outputs: the first page's server time, and thumbnail sizes.

    .venv/bin/python benchmarks/gallery.py [--outputs 1000] [--rounds 30] [--database-url URL]

Design target (issue 12): with 1,000 outputs the first gallery page answers in under 200 ms of server time, and each
thumbnail is under 30 KB.

One process, one run (SQLite in a temporary folder unless --database-url; a local blob store):
  1. one account; N generations with one output each inserted in bulk, each output with a real PNG and the WebP
     thumbnail `store_thumbnail` makes when an output is stored (sizes 512, 768 and 1024 px; smooth, detailed and
     noise images, noise being the worst case for WebP);
  2. interleaved rounds of GET /api/v1/outputs (first page, 48), GET /gallery (the rendered page) and the same two on
     an account with 10 outputs, through the app in process (ASGI, no network: server time only);
  3. a walk over every page (the keyset cursor) to show that the last page costs what the first does.
Prints medians and p95s and the 1,000/10 ratio, then thumbnail sizes (max, median); nothing asserts, exits 0.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "a lighthouse on a rocky coast at dusk, dramatic clouds, (oil painting:1.2), warm light, seagulls {n}"


def sample_pngs() -> list[tuple[str, bytes]]:
    samples = []
    for side in (512, 768, 1024):
        smooth = Image.linear_gradient("L").resize((side, side)).convert("RGB")
        detail = Image.effect_mandelbrot((side, side), (-2.0, -1.2, 0.8, 1.2), 200).convert("RGB")
        draw = ImageDraw.Draw(detail)
        for i in range(0, side, 16):
            draw.line([(i, 0), (side - i, side)], fill=(i % 255, 80, 160))
        noise = Image.effect_noise((side, side), 64).convert("RGB").filter(ImageFilter.SMOOTH)
        for name, image in (("smooth", smooth), ("detailed", detail), ("noise", noise)):
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            samples.append((f"{name} {side}px", buffer.getvalue()))
    return samples


def fill(app, user_id: str, count: int, samples: list[tuple[str, bytes]]) -> dict[str, int]:
    from imagen.generation.gallery import store_thumbnail, thumb_key
    from imagen.generation.models import Generation, Output
    from imagen.kit.db import new_id, utcnow

    blobs, now, sizes = app.state.services.blobs, utcnow(), {}
    with app.state.services.db.transaction() as s:
        for n in range(count):
            name, png = samples[n % len(samples)]
            gen = Generation(id=new_id(), user_id=user_id, workflow="txt2img", workflow_version=1, pipeline="txt2img",
                             params={"prompt": PROMPT.format(n=n), "steps": 20, "seed": n}, checkpoint="imagen-tiny",
                             checkpoint_sha256="0" * 64, models=[], consent_model_improvement=False,
                             status="succeeded", progress=1.0, created_at=now - timedelta(seconds=n))
            key = f"outputs/{user_id}/{gen.id}/0.png"
            blobs.put(key, png, "image/png")
            store_thumbnail(s, blobs, user_id=user_id, generation_id=gen.id, index=0, png=png)
            if n < len(samples):
                sizes[name] = len(blobs.get(thumb_key(user_id, gen.id, 0)))
            s.add_all([gen, Output(id=new_id(), generation_id=gen.id, user_id=user_id, index=0, blob_key=key,
                                   width=512, height=512, seed=n, size_bytes=len(png),
                                   created_at=now - timedelta(seconds=n))])
    return sizes


def timed(client, url: str) -> float:
    start = time.perf_counter()
    r = client.get(url)
    elapsed = time.perf_counter() - start
    assert r.status_code == 200, r.text
    return elapsed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outputs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    args = ap.parse_args(argv)

    from fastapi.testclient import TestClient

    from imagen.app import create_app
    from imagen.kit.config import Settings
    from tests.conftest import signup

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(env="test", data_dir=Path(tmp) / "data", secret_key="b" * 40, worker_autostart=False,
                            **({"database_url": args.database_url} if args.database_url else {}))
        app = create_app(settings, run_migrations=True)
        with TestClient(app, base_url="https://testserver") as big, TestClient(app, base_url="https://testserver") \
                as small:
            samples = sample_pngs()
            ids = {}
            for client, email in ((big, "big@example.com"), (small, "small@example.com")):
                signup(client, email)
                ids[email] = client.get("/api/v1/me").json()["id"]
            start = time.perf_counter()
            sizes = fill(app, ids["big@example.com"], args.outputs, samples)
            fill_seconds = time.perf_counter() - start
            fill(app, ids["small@example.com"], 10, samples)

            urls = ("/api/v1/outputs", "/gallery")
            for client in (big, small):  # warm-up
                for url in urls:
                    timed(client, url)
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for who, client in (("1k", big), ("10", small)):
                    for url in urls:
                        times.setdefault((who, url), []).append(timed(client, url))

            pages, cursor, page_times = 0, None, []
            for _ in range(1000):
                url = "/api/v1/outputs?limit=48" + (f"&cursor={cursor}" if cursor else "")
                start = time.perf_counter()
                body = big.get(url).json()
                page_times.append(time.perf_counter() - start)
                pages, cursor = pages + 1, body["next_cursor"]
                if not cursor:
                    break

    def ms(values: list[float], q: float = 0.5) -> str:
        ordered = sorted(values)
        return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:7.1f}"

    print(f"Gallery benchmark: {args.outputs} outputs, {args.rounds} rounds, "
          f"{'SQLite' if not args.database_url else args.database_url.split('@')[-1]}")
    print(f"(filled in {fill_seconds:.1f} s, thumbnails made as at storage)\n")
    print(f"{'first page':28} {'median ms':>10} {'p95 ms':>8} {'10 outputs ms':>14} {'ratio':>6}")
    for url in urls:
        big_t, small_t = times[("1k", url)], times[("10", url)]
        print(f"{url:28} {ms(big_t):>10} {ms(big_t, 0.95):>8} {ms(small_t):>14} "
              f"{statistics.median(big_t) / statistics.median(small_t):6.2f}")
    print(f"\nwalk: {pages} pages of 48; first {page_times[0] * 1000:.1f} ms, "
          f"median {statistics.median(page_times) * 1000:.1f} ms, last {page_times[-1] * 1000:.1f} ms")
    print(f"\n{'thumbnail of':20} {'bytes':>8}  (target < {30 * 1024})")
    for name, size in sizes.items():
        print(f"{name:20} {size:>8}")
    print(f"{'max':20} {max(sizes.values()):>8}\n{'median':20} {int(statistics.median(sizes.values())):>8}")


if __name__ == "__main__":
    main()
