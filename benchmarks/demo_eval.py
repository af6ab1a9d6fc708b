"""How well does `imagen-demo` draw what it is asked? 200 held-out prompts, judged by program.

    .venv/bin/python benchmarks/demo_eval.py [--count 200] [--seed 777] [--folder DIR] [--steps 20] [--guidance 7]

Done-when of issue 13: background colour >= 90%, shape colour >= 80%, shape kind >= 70%, position >= 70%. Prompts are
full captions ("a small red star in the top left on a blue background") drawn from `shapes.random_scene` with a seed
no training run uses (training draws from "<seed>-plain"/"<seed>-striped" strings; this draws from the integer 777):
the scenes' jitter is new, though a caption may repeat one seen in training, since the world has 2,240 of them.
Each is generated through the runtime (txt2img, Euler, 64x64) with its own seed, and `shapes.judge` reads the picture
back: the border's commonest palette colour, the largest region far from it, its colour, the template (circle,
square, triangle, star) it overlaps most, and the named position nearest its centroid. `--folder` evaluates another
trained folder (e.g. a rerun of the training command) in place of the shipped weights. Prints the four accuracies.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from imagen.inference.demo import DEMO_NAME, DEMO_SIZE
from imagen.inference.demo.shapes import judge, random_scene
from imagen.inference.runtime import Runtime
from imagen.inference.spec import JobSpec, ModelRef

BAR = {"background": 0.90, "colour": 0.80, "shape": 0.70, "position": 0.70}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.0)
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
        rng = random.Random(args.seed)
        hits = dict.fromkeys(BAR, 0)
        t0 = time.perf_counter()
        for i in range(args.count):
            scene = random_scene(rng)
            params = {"prompt": scene.caption(), "negative_prompt": "", "steps": args.steps,
                      "guidance": args.guidance, "width": DEMO_SIZE, "height": DEMO_SIZE, "seed": 1000 + i,
                      "batch_size": 1, "scheduler": "euler"}
            png = runtime.run(JobSpec("txt2img", params, ref)).images[0].png
            for key, ok in judge(Image.open(io.BytesIO(png))).score(scene).items():
                hits[key] += ok
        print(f"imagen-demo {ckpt.sha256[:12]}: {args.count} held-out prompts (seed {args.seed}), {args.steps} steps, "
              f"guidance {args.guidance}, {time.perf_counter() - t0:.0f} s")
        passed = True
        for key, bar in BAR.items():
            share = hits[key] / args.count
            passed &= share >= bar
            print(f"  {key:<11} {share:6.1%}  (bar {bar:.0%})")
        print("bar met" if passed else "bar NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
