"""Quarantine: matched bytes, encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256) under `quarantine/`.

The key is `IMAGEN_QUARANTINE_KEY`, or one generated once into `<data>/quarantine.key`; it is not the secret key,
and only the moderation service (cases, the NCMEC report) reads it. Keys carry no user id, so nothing in
quarantine is found, swept or served as a user's file; the retention run deletes a case's files with the case.
"""

from __future__ import annotations

from cryptography.fernet import Fernet

from imagen.kit.config import Settings
from imagen.storage import BlobStore

PREFIX = "quarantine/"


def quarantine_key(evidence_id: str) -> str:
    return f"{PREFIX}{evidence_id}.bin"


class Quarantine:
    def __init__(self, blobs: BlobStore, key: bytes) -> None:
        self.blobs = blobs
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, blobs: BlobStore, settings: Settings) -> Quarantine:
        return cls(blobs, settings.resolved_quarantine_key())

    def put(self, evidence_id: str, data: bytes) -> str:
        key = quarantine_key(evidence_id)
        self.blobs.put(key, self._fernet.encrypt(data), "application/octet-stream")
        return key

    def get(self, key: str) -> bytes:
        return self._fernet.decrypt(self.blobs.get(key))

    def delete(self, key: str) -> None:
        self.blobs.delete(key)
