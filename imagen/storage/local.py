from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from imagen.storage.base import BlobNotFound, BlobStore, remove_unwritten

STAGING = ".staging"
STALE_STAGING_SECONDS = 3600  # nothing legitimate stays in staging an hour unwritten


class LocalBlobStore(BlobStore):
    """Blobs as files under one folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"invalid blob key: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, dest)  # same filesystem (the staging folder is inside the root): a rename
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                shutil.copyfileobj(src, out, 8 << 20)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        path.unlink(missing_ok=True)

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(key)
        return path

    def staging_dir(self) -> Path:
        path = self.root / STAGING
        path.mkdir(exist_ok=True)
        # Uploads cut off by a crash leave temp files behind (the server's start removes them sooner).
        remove_unwritten(path, STALE_STAGING_SECONDS)
        return path

    def open_stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(key)

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(chunk_size):
                    yield chunk

        return chunks()

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(key)
        return path.read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, in order, walking only the prefix's own folder (an export or an erasure lists one
        user's files; it must not list, or hold, the whole store)."""
        base = self.root / prefix if prefix.endswith("/") or not prefix else (self.root / prefix).parent
        if not base.resolve().is_relative_to(self.root):
            raise ValueError(f"invalid blob prefix: {prefix!r}")
        for dirpath, dirnames, filenames in os.walk(base):
            # Staging and temp files are not blobs yet.
            dirnames[:] = sorted(d for d in dirnames if not (dirpath == str(self.root) and d == STAGING))
            for name in sorted(filenames):
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if not name.startswith(".tmp-") and key.startswith(prefix):
                    yield key
