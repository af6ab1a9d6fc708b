"""The blob store interface: opaque keys to bytes. Backends: local folder (`local.py`), S3-compatible (`s3.py`)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path


class BlobNotFound(KeyError):
    pass


class BlobStore(ABC):
    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    @abstractmethod
    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        """Store a local file under `key` atomically; the file is moved in (it is gone from `path` afterwards).

        Large uploads are written to `staging_dir()` first, so a backend can move them without copying.
        """

    @abstractmethod
    def local_path(self, key: str) -> Path:
        """A local file holding the blob's bytes (a backend without local files downloads to a cache).

        Raises BlobNotFound. The caller must not modify or delete the file.
        """

    def staging_dir(self) -> Path:
        """Where to write temporary files meant for `put_file` (same filesystem as the store when possible)."""
        path = Path(tempfile.gettempdir()) / "imagen-staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clean_staging(self, older_than: float) -> int:
        """Delete staging files not written to for `older_than` seconds (uploads cut off by a crash); returns how
        many went. A live upload writes more often than that, or is stopped by its idle timeout."""
        return remove_unwritten(self.staging_dir(), older_than)

    @abstractmethod
    def open_stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the blob; deleting a missing blob is not an error (safe to run twice)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def keys(self, prefix: str = "") -> Iterator[str]: ...

    def presigned_url(self, key: str, expires_seconds: int, *, download_name: str | None = None) -> str | None:
        """A URL from which anyone holding it can GET the blob for `expires_seconds`, or None when the backend
        cannot make one (then the server streams the bytes itself). `download_name`: served as an attachment."""
        return None


def remove_unwritten(folder: Path, older_than: float) -> int:
    """Delete the files directly in `folder` not modified for `older_than` seconds; returns how many."""
    cutoff = time.time() - older_than
    removed = 0
    for stale in folder.iterdir():
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to delete
            if stale.is_file() and stale.stat().st_mtime < cutoff:
                stale.unlink()
                removed += 1
    return removed
