"""Model files, identified by content hash: diffusers-format folders under <models>/checkpoints/ (the built-in ones and
any an operator drops there) and single `.safetensors` files (uploads, read from the blob store)."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from imagen.inference.spec import Family
from imagen.inference.tiny import BUILTINS, ensure_builtin


@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: Path
    sha256: str
    builtin: bool
    family: Family = "sd15"
    in_channels: int = 4  # 9 for inpainting checkpoints


class CheckpointNotFound(LookupError):
    pass


_hash_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_hash_lock = threading.Lock()


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _cached_digest(key: tuple[str, tuple[tuple[str, int, int], ...]], files: list[tuple[Path, bytes]]) -> str:
    """SHA-256 over (prefix, bytes) of each file, remembered under `key` (path, size, mtime_ns of every file), so an
    unchanged file is read once per process and a changed one (new size or mtime) is read again."""
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = hashlib.sha256()
    for path, prefix in files:
        digest.update(prefix)
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def folder_sha256(folder: Path) -> str:
    """SHA-256 over every file's relative path and bytes; cached by (path, size, mtime)."""
    files = _weight_files(folder)
    stamp = tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _cached_digest(
        (str(folder.resolve()), stamp), [(p, p.relative_to(folder).as_posix().encode() + b"\0") for p in files]
    )


def file_sha256(path: Path) -> str:
    """Plain SHA-256 of one file's bytes (what `sha256sum` prints); cached by (path, size, mtime) like folders."""
    st = path.stat()
    return _cached_digest((str(path.resolve()), (("", st.st_size, st.st_mtime_ns),)), [(path, b"")])


def folder_family(folder: Path) -> Family:
    """sd15 or sdxl, from the pipeline class diffusers wrote in model_index.json."""
    class_name = json.loads((folder / "model_index.json").read_text()).get("_class_name", "")
    return "sdxl" if "StableDiffusionXL" in class_name else "sd15"


def folder_in_channels(folder: Path) -> int:
    config = folder / "unet" / "config.json"
    return int(json.loads(config.read_text()).get("in_channels", 4)) if config.is_file() else 4


class CheckpointRegistry:
    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.root = models_dir / "checkpoints"

    def _checkpoint(self, folder: Path) -> Checkpoint:
        return Checkpoint(folder.name, folder, folder_sha256(folder), folder.name in BUILTINS, folder_family(folder),
                          folder_in_channels(folder))

    def list(self) -> list[Checkpoint]:
        for name in BUILTINS:
            ensure_builtin(self.models_dir, name)
        found = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not (folder / "model_index.json").is_file():
                continue
            found.append(self._checkpoint(folder))
        return found

    def get(self, name: str) -> Checkpoint:
        if name in BUILTINS:
            ensure_builtin(self.models_dir, name)
        folder = self.root / name
        if "/" in name or name.startswith(".") or not (folder / "model_index.json").is_file():
            raise CheckpointNotFound(name)
        return self._checkpoint(folder)
