"""A local disk cache of remote blobs, bounded by bytes, least recently used first out.

A remote store (S3) hands the runtime local files through it: model files are read from local disk, not downloaded
again for every job. Each cached copy is named by its blob key and the version tag the store reports (for S3 the
object's ETag), so a replaced object gets a new file and the old copy is never served for it. That address is not
a hash of the bytes: it is exactly as good as the store's version tag.

Several processes may share one cache folder: a download is written to a temp file and renamed into place (a
reader sees a whole file or none), and two processes fetching the same blob at once both download it, harmlessly.
Recency is the file's access time, set explicitly on every hit; the modification time is the blob's own (so a
caller asking how old a blob is gets the stored object's age, not the download's).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 3600  # a download left unwritten this long was cut off by a crash


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class BlobCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def path_for(self, key: str, version: str) -> Path:
        # The key's digest comes first so that every version of one key can be found (and forgotten) by prefix.
        return self.root / f"{_digest(key)}-{_digest(version)[:32]}"

    def get_or_fill(self, key: str, version: str, mtime: float, download: Callable[[BinaryIO], None]) -> Path:
        """The cached copy of (key, version), downloading it with `download(file)` when missing."""
        path = self.path_for(key, version)
        if self._touch(path):
            return path
        with self._lock(path.name):  # one download per blob in this process; other processes may race, harmlessly
            if self._touch(path):
                return path
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=TMP_PREFIX)
            try:
                with os.fdopen(fd, "wb") as f:
                    download(f)
                os.utime(tmp, (time.time(), mtime))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self.evict(keep=path)
        return path

    def forget(self, key: str) -> int:
        """Remove every cached version of `key` (the blob was deleted); returns how many files went."""
        removed = 0
        for path in self.root.glob(f"{_digest(key)}-*"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def evict(self, keep: Path | None = None) -> int:
        """Remove least recently used copies until the cache holds at most `max_bytes`; returns how many went.

        `keep` (the copy just handed out) stays even when it alone is over the budget.
        """
        entries, total, now = [], 0, time.time()
        for entry in os.scandir(self.root):
            with contextlib.suppress(FileNotFoundError):  # another process evicted it meanwhile
                st = entry.stat()
                if entry.name.startswith(TMP_PREFIX):
                    if st.st_mtime < now - STALE_TMP_SECONDS:
                        os.unlink(entry.path)
                    continue
                total += st.st_size
                entries.append((st.st_atime, st.st_size, entry.path))
        removed = 0
        for _atime, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if keep is not None and path == str(keep):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
            total -= size
        return removed

    def _touch(self, path: Path) -> bool:
        """Mark `path` as just used (access time; the modification time stays the blob's); False when absent."""
        try:
            os.utime(path, (time.time(), path.stat().st_mtime))
            return True
        except FileNotFoundError:
            return False

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            if len(self._locks) > 10_000:  # bounded: idle locks are dropped (a held one is only ever re-created)
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault(name, threading.Lock())
