"""How well does `imagen-demo` draw what it is asked? 200 held-out prompts, judged by program.

    .venv/bin/python benchmarks/demo_eval.py [--count 200] [--seed 777] [--folder DIR] [--steps N] [--guidance G]
                                             [--sweep]

Done-when of issue 13: background colour >= 90%, shape colour >= 80%, shape kind >= 70%, position >= 70%. Prompts are
full captions ("a small red star in the top left on a blue background") drawn from `shapes.random_scene` with a seed
no training run uses (training draws from "<seed>-plain"/"<seed>-striped" strings; this draws from the integer 777):
the scenes' jitter is new, though a caption may repeat one seen in training, since the world has 2,240 of them.
Each is generated through the runtime (txt2img, Euler, 64x64) with its own seed, and `shapes.judge` reads the picture
back: the border's commonest palette colour, the largest region far from it, its colour, the template (circle,
square, triangle, star) it overlaps most, and the named position nearest its centroid. `--folder` evaluates another
trained folder (e.g. a rerun of the training command) in place of the shipped weights. Steps and guidance default to
the txt2img workflow's (what a user gets); `--sweep` adds guidance 1, 3, 5 and 7 side by side. Prints the four
accuracies per guidance.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

from imagen.inference.demo import DEMO_NAME, DEMO_SIZE
from imagen.inference.demo.shapes import judge, random_scene
from imagen.inference.runtime import Runtime
from imagen.inference.spec import JobSpec, ModelRef
from imagen.workflows.library import library

BAR = {"background": 0.90, "colour": 0.80, "shape": 0.70, "position": 0.70}


def evaluate(runtime: Runtime, ref: ModelRef, args: argparse.Namespace, guidance: float) -> dict[str, float]:
    """The share of the held-out prompts each field of the judge reads right, at one guidance."""
    rng = random.Random(args.seed)
    hits = dict.fromkeys(BAR, 0)
    for i in range(args.count):
        scene = random_scene(rng)
        params = {"prompt": scene.caption(), "negative_prompt": "", "steps": args.steps, "guidance": guidance,
                  "width": DEMO_SIZE, "height": DEMO_SIZE, "seed": 1000 + i, "batch_size": 1, "scheduler": "euler"}
        png = runtime.run(JobSpec("txt2img", params, ref)).images[0].png
        for key, ok in judge(Image.open(io.BytesIO(png))).score(scene).items():
            hits[key] += ok
    return {key: hits[key] / args.count for key in BAR}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=777)
    # What a user gets: the txt2img workflow's own defaults.
    defaults = {p.name: p.default for p in library.get("txt2img").parameters}
    parser.add_argument("--steps", type=int, default=defaults["steps"])
    parser.add_argument("--guidance", type=float, default=defaults["guidance"])
    parser.add_argument("--sweep", action="store_true", help="also print guidance 1, 3, 5 and 7 side by side")
    parser.add_argument("--folder", type=Path, help="a trained imagen-demo folder to evaluate, not the shipped one")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        if args.folder:
            shutil.copytree(args.folder, models / "checkpoints" / DEMO_NAME)
        runtime = Runtime(models, device="cpu")
        ckpt = runtime.checkpoints.get(DEMO_NAME)
        ref = ModelRef(ckpt.name, ckpt.sha256, ckpt.family)
        guidances = [args.guidance] + ([g for g in (1.0, 3.0, 5.0, 7.0) if g != args.guidance] if args.sweep else [])
        results = {g: evaluate(runtime, ref, args, g) for g in guidances}
        print(f"imagen-demo {ckpt.sha256[:12]}: {args.count} held-out prompts (seed {args.seed}), {args.steps} steps, "
              f"Euler, {DEMO_SIZE}x{DEMO_SIZE}; the first column is the workflow default")
        print("  " + " " * 11 + "".join(f"{'guidance ' + format(g, 'g'):>14}" for g in guidances) + "     bar")
        for key, bar in BAR.items():
            print(f"  {key:<11}" + "".join(f"{results[g][key]:14.1%}" for g in guidances) + f"  {bar:6.0%}")
        passed = all(results[args.guidance][key] >= bar for key, bar in BAR.items())
        print(f"bar met at guidance {args.guidance:g}" if passed else f"bar NOT met at guidance {args.guidance:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
