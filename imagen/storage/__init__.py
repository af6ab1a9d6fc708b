from imagen.kit.config import Settings
from imagen.storage.base import BlobNotFound, BlobStore


def make_blob_store(settings: Settings) -> BlobStore:
    from imagen.storage.local import LocalBlobStore

    if settings.storage != "local":
        raise ValueError(f"IMAGEN_STORAGE={settings.storage} is not available in this build; use local")
    return LocalBlobStore(settings.blobs_dir)


__all__ = ["BlobNotFound", "BlobStore", "make_blob_store"]
