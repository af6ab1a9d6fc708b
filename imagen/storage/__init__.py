from imagen.kit.config import Settings
from imagen.storage.base import BlobNotFound, BlobStore


def make_blob_store(settings: Settings) -> BlobStore:
    """The configured store; S3 checks its bucket first (StorageUnavailable names the setting at fault)."""
    if settings.storage == "s3":
        from imagen.storage.s3 import make_s3_blob_store

        return make_s3_blob_store(settings)
    from imagen.storage.local import LocalBlobStore

    return LocalBlobStore(settings.blobs_dir)


__all__ = ["BlobNotFound", "BlobStore", "make_blob_store"]
