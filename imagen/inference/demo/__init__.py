"""`imagen-demo`: a small SD 1.x-architecture model trained by `train.py` on procedurally drawn shapes, shipped in the
package (weights/imagen-demo/, a diffusers folder) with its striped-style LoRA (weights/loras/); the default checkpoint
of the workflows. MODEL_CARD.md has its data, training, figures, limits and hashes.

`install_demo` copies the shipped folder into <models>/checkpoints/imagen-demo on first use, the way `imagen-tiny` is
built there, so it is found, hashed and loaded like any operator-installed diffusers folder.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

DEMO_NAME = "imagen-demo"
DEMO_SIZE = 64  # what it was trained at: the workflows' default width and height
WEIGHTS = Path(__file__).parent / "weights"
LORA_FILE = WEIGHTS / "loras" / "imagen-demo-striped.safetensors"


def shipped() -> bool:
    return (WEIGHTS / DEMO_NAME / "model_index.json").is_file()


def install_demo(target: Path) -> Path:
    """Copy the shipped weights to `target` atomically (a staging copy renamed into place)."""
    if not shipped():
        raise FileNotFoundError(f"the {DEMO_NAME} weights are missing from {WEIGHTS}; reinstall imagen")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        copy = staging / "pipeline"
        shutil.copytree(WEIGHTS / DEMO_NAME, copy)
        if not target.exists():  # another process may have won the race; keep theirs
            copy.rename(target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
