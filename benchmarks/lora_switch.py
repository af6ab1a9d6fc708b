"""What switching LoRAs costs next to loading a checkpoint: one run, side by side, ratio printed.

    .venv/bin/python benchmarks/lora_switch.py [--family sd15|sdxl] [--device cpu|cuda] [-n 5] [--size 64 --steps 4]

Models: a tiny single-file checkpoint and two tiny Kohya LoRAs of the family, built from code (`synthetic.py`) into a
temporary folder that stands in for the blob store; the runtime reads them through `blob_path`, as uploads are read.

Each round, on one `Runtime`:
  1. cold:         model cache and hash cache cleared, job with LoRA A. `load_seconds` = hash + single-file load of
                   the checkpoint; `lora_seconds` = A read from its file and injected.
  2. switch (new): job with LoRA B. B is read and injected next to A, the active set switches to B.
  3. switch:       job with LoRA A again. Both are loaded: only the active set and weights change (`set_adapters`).
  4. no switch:    job with LoRA A again, the same set as the job before.
  5. no LoRA:      job without LoRAs: every LoRA layer disabled.
Every number comes from the runtime's own signals (`load_seconds`, `lora_seconds`, `inference_seconds`,
`total_seconds`); the table shows medians over the rounds. Jobs 3-5 also check that the images equal those of
earlier jobs with the same set (switching back and forth must not drift). Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from rich.console import Console
from rich.table import Table

from imagen.inference import checkpoints
from imagen.inference.checkpoints import file_sha256
from imagen.inference.runtime import Runtime, pick_device, quiet_libraries
from imagen.inference.spec import JobSpec, ModelRef

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

STEPS = ("cold", "switch (new)", "switch", "no switch", "no LoRA")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...; default: cuda when available")
    ap.add_argument("-n", "--rounds", type=int, default=5, help="rounds of the five jobs; default 5")
    ap.add_argument("--size", type=int, default=64, help="width and height (multiple of 8); default 64")
    ap.add_argument("--steps", type=int, default=4, help="inference steps; default 4")
    ap.add_argument("--rank", type=int, default=4, help="LoRA rank; default 4")
    args = ap.parse_args(argv)
    if args.size % 8 or args.size < 64:
        ap.error("--size must be a multiple of 8, at least 64")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    return args


def build_models(folder: Path, family: str, rank: int) -> dict[str, Path]:
    from imagen.inference.synthetic import build_tiny_lora, build_tiny_pipeline, save_single_file

    return {
        "checkpoint": save_single_file(build_tiny_pipeline(family, seed=3), folder / "checkpoint.safetensors"),
        "A": build_tiny_lora(family, folder / "lora-a.safetensors", layout="kohya", seed=1, rank=rank),
        "B": build_tiny_lora(family, folder / "lora-b.safetensors", layout="kohya", seed=2, rank=rank),
    }


def ref(path: Path, family: Any, kind: Any = "checkpoint") -> ModelRef:
    return ModelRef(path.stem, file_sha256(path), family, kind=kind, blob_key=path.name)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    import diffusers
    import torch

    device = pick_device(args.device)
    with tempfile.TemporaryDirectory(prefix="imagen-lora-bench-") as tmp:
        root = Path(tmp)
        blobs = root / "blobs"
        blobs.mkdir()
        paths = build_models(blobs, args.family, args.rank)
        sizes = {key: f"{path.stat().st_size / 1024**2:.1f} MiB" for key, path in paths.items()}
        ckpt = ref(paths["checkpoint"], args.family)
        lora_a, lora_b = ref(paths["A"], args.family, "lora"), ref(paths["B"], args.family, "lora")
        runtime = Runtime(root / "models", device=device, blob_path=lambda key: blobs / key)
        params = {"prompt": "a lighthouse at dusk, (oil painting:1.2)", "negative_prompt": "blurry",
                  "steps": args.steps, "guidance": 7.0, "width": args.size, "height": args.size, "seed": 1234,
                  "batch_size": 1, "scheduler": "euler"}
        sets = {"cold": (lora_a,), "switch (new)": (lora_b,), "switch": (lora_a,), "no switch": (lora_a,),
                "no LoRA": ()}

        def job(loras: tuple[ModelRef, ...]) -> Any:
            return runtime.run(JobSpec("txt2img", params, ckpt, loras))

        job(())  # warm-up: imports, kernels, allocator (then thrown away with the cache)
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in STEPS}
        drift = []
        for i in range(args.rounds):
            runtime.cache.clear()
            with checkpoints._hash_lock:
                checkpoints._hash_cache.clear()
            images: dict[str, bytes] = {}
            for name in STEPS:
                result = job(sets[name])
                rows[name].append(result.signals)
                images[name] = result.images[0].png
            if not (images["switch"] == images["no switch"] == images["cold"]):
                drift.append(f"round {i + 1}: LoRA A's image changed after switching")
            s = {name: rows[name][-1] for name in STEPS}
            console.print(
                f"round {i + 1}/{args.rounds}: cold load {ms(s['cold']['load_seconds'])} ms, "
                f"switch (new) {ms(s['switch (new)']['lora_seconds'])} ms, "
                f"switch {ms(s['switch']['lora_seconds'])} ms, no switch {ms(s['no switch']['lora_seconds'])} ms")

        checks = [
            rows["cold"][0]["checkpoint_loaded_now"] is True,
            all(not r["checkpoint_loaded_now"] for name in STEPS[1:] for r in rows[name]),
            all(r["loras_loaded_now"] == [lora_b.sha256] for r in rows["switch (new)"]),
            all(r["loras_loaded_now"] == [] for name in ("switch", "no switch", "no LoRA") for r in rows[name]),
        ]

    info = Table(title="Machine", show_header=False)
    info.add_row("machine", f"{platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs")
    info.add_row("python / torch / diffusers", f"{platform.python_version()} / {torch.__version__} / "
                 f"{diffusers.__version__}")
    gpu = f" ({torch.cuda.get_device_name(0)})" if device.startswith("cuda") else ""
    info.add_row("device", f"{device}{gpu}, {torch.get_num_threads()} torch threads")
    info.add_row("workload", f"tiny {args.family} single file ({sizes['checkpoint']}), 2 Kohya LoRAs "
                 f"rank {args.rank} ({sizes['A']} each), {args.size}x{args.size}, {args.steps} steps")
    info.add_row("rounds", f"{args.rounds} (after 1 warm-up job)")
    console.print(info)

    table = Table(title="Medians per job (ms), from the runtime's signals")
    for col in ("job", "checkpoint load", "LoRA (switch)", "inference", "total"):
        table.add_column(col, justify="left" if col == "job" else "right")
    for name in STEPS:
        r = rows[name]
        table.add_row(name, ms(median([x["load_seconds"] for x in r])), ms(median([x["lora_seconds"] for x in r])),
                      ms(median([x["inference_seconds"] for x in r])), ms(median([x["total_seconds"] for x in r])))
    console.print(table)

    cold = median([x["load_seconds"] for x in rows["cold"]])
    ratios = Table(title="Checkpoint load vs LoRA switch", show_header=False)
    for name in ("switch (new)", "switch"):
        switch = median([x["lora_seconds"] for x in rows[name]])
        ratios.add_row(f"cold load / {name}", f"{cold / switch:,.1f}x" if switch > 0 else "n/a")
    same = median([x["lora_seconds"] for x in rows["no switch"]])
    ratios.add_row("no switch (same set as the job before)", f"{ms(same)} ms")
    console.print(ratios)
    console.print("signals as expected (loaded once, B read once per round, nothing else read)"
                  if all(checks) else f"[red]unexpected signals: {checks}[/red]")
    console.print("images stable across switches" if not drift else "[red]" + "; ".join(drift) + "[/red]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
