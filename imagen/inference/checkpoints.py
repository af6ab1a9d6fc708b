"""Checkpoint discovery: diffusers-format folders under <models>/checkpoints/, identified by content hash."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from imagen.inference.tiny import TINY_NAME, ensure_tiny_checkpoint


@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: Path
    sha256: str
    builtin: bool


class CheckpointNotFound(LookupError):
    pass


_hash_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_hash_lock = threading.Lock()


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def folder_sha256(folder: Path) -> str:
    """SHA-256 over every file's relative path and bytes; cached by (path, size, mtime)."""
    files = _weight_files(folder)
    stamp = tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(folder.resolve()), stamp)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.relative_to(folder).as_posix().encode() + b"\0")
        with p.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


class CheckpointRegistry:
    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.root = models_dir / "checkpoints"

    def list(self) -> list[Checkpoint]:
        ensure_tiny_checkpoint(self.models_dir)
        found = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not (folder / "model_index.json").is_file():
                continue
            found.append(Checkpoint(folder.name, folder, folder_sha256(folder), folder.name == TINY_NAME))
        return found

    def get(self, name: str) -> Checkpoint:
        if name == TINY_NAME:
            ensure_tiny_checkpoint(self.models_dir)
        folder = self.root / name
        if "/" in name or name.startswith(".") or not (folder / "model_index.json").is_file():
            raise CheckpointNotFound(name)
        return Checkpoint(name, folder, folder_sha256(folder), name == TINY_NAME)
