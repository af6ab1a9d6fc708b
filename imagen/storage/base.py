"""The blob store interface: opaque keys to bytes. Backends: local folder (S3-compatible later)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator


class BlobNotFound(KeyError):
    pass


class BlobStore(ABC):
    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

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
