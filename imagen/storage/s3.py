"""Blobs in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, ...) through boto3.

Credentials come from boto3's own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role);
IMAGEN has no setting for them. Files the runtime must read locally (model files) are downloaded into a bounded
local cache (`cache.py`); uploads are staged in a local folder and then streamed to the bucket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from imagen.storage.base import BlobNotFound, BlobStore, remove_unwritten
from imagen.storage.cache import BlobCache
from imagen.storage.local import STALE_STAGING_SECONDS

if TYPE_CHECKING:
    from imagen.kit.config import Settings

log = logging.getLogger(__name__)
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
CHUNK = 1 << 20


class StorageUnavailable(RuntimeError):
    """The configured bucket cannot be used (missing, no access, unreachable); the message names the setting."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _check_key(key: str) -> str:
    # The same keys the local store accepts: relative, no "..", so both backends hold the same names.
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"invalid blob key: {key!r}")
    return key


class S3BlobStore(BlobStore):
    list_page = 1000  # keys per list request (S3's most)
    # A multipart upload never completed (its process died) holds its parts, invisible to listing, until aborted.
    # None legitimate runs a day; uploads of other live processes are younger.
    stale_multipart_seconds = 24 * 3600

    def __init__(self, client: Any, bucket: str, *, staging: Path, cache: BlobCache,
                 transfer: TransferConfig | None = None, cdn_base_url: str = "") -> None:
        self.client, self.bucket = client, bucket
        self.staging = staging
        self.cache = cache
        # Managed transfer: multipart above the threshold, the file read in chunks (never whole in memory).
        self.transfer = transfer or TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20,
                                                   max_concurrency=4)
        self.cdn_base_url = cdn_base_url.rstrip("/")

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(Bucket=self.bucket, Key=_check_key(key), Body=data, ContentType=content_type)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        self.client.upload_file(str(path), self.bucket, _check_key(key), ExtraArgs={"ContentType": content_type},
                                Config=self.transfer)
        path.unlink(missing_ok=True)

    def local_path(self, key: str) -> Path:
        """The blob in the local cache, downloaded first when this version of it is not there.

        One HEAD request per call finds the object's current ETag, so a replaced object is never served from an
        older copy; the download asks for that exact ETag (If-Match) and starts over if the object changed between.
        """
        for _attempt in range(3):
            head = self._head(key)
            if head is None:
                raise BlobNotFound(key)
            etag = head["ETag"]

            def download(f: BinaryIO, etag: str = etag) -> None:
                body = self.client.get_object(Bucket=self.bucket, Key=key, IfMatch=etag)["Body"]
                try:
                    for chunk in body.iter_chunks(CHUNK):
                        f.write(chunk)
                finally:
                    body.close()

            try:
                return self.cache.get_or_fill(key, etag, head["LastModified"].timestamp(), download)
            except ClientError as exc:
                if _code(exc) in MISSING_CODES:
                    raise BlobNotFound(key) from None
                if _code(exc) not in ("412", "PreconditionFailed"):
                    raise
        raise RuntimeError(f"blob {key!r} kept changing while it was downloaded")

    def staging_dir(self) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        remove_unwritten(self.staging, STALE_STAGING_SECONDS)  # as the local store does: crashes leave files
        return self.staging

    def clean_staging(self, older_than: float) -> int:
        """The local staging files, and the bucket's multipart uploads abandoned for a day; returns how many."""
        removed = super().clean_staging(older_than)
        cutoff = time.time() - self.stale_multipart_seconds
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket):
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"].timestamp() < cutoff:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        removed += 1
        except ClientError as exc:  # credentials without s3:ListBucketMultipartUploads: a lifecycle rule must do it
            log.warning("abandoned multipart uploads in bucket %s not cleaned (%s); add a lifecycle rule that "
                        "aborts incomplete multipart uploads", self.bucket, _code(exc))
        return removed

    def open_stream(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        try:  # fetched now, so a missing blob raises here rather than half-way through a response
            body = self.client.get_object(Bucket=self.bucket, Key=_check_key(key))["Body"]
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                raise BlobNotFound(key) from None
            raise

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

        return chunks()

    def get(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=_check_key(key))["Body"]
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                raise BlobNotFound(key) from None
            raise
        try:
            return body.read()
        finally:
            body.close()

    def delete(self, key: str) -> None:
        """S3 answers a delete of a missing key with success, so running it twice is harmless. The local cached
        copies go too (an erased user's model files must not stay on this machine)."""
        self.client.delete_object(Bucket=self.bucket, Key=_check_key(key))
        self.cache.forget(key)

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix` in the bucket's order, a page (up to 1000) at a time."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.list_page})
        for page in pages:
            for item in page.get("Contents", ()):
                yield item["Key"]

    def presigned_url(self, key: str, expires_seconds: int, *, download_name: str | None = None) -> str:
        """A time-limited GET URL signed for the bucket's endpoint. With a CDN base URL, only the scheme and host
        (plus the base's path, in front) change: the CDN must forward path and query string unchanged to the
        host the URL was signed for, and the storage service, not the CDN, checks the signature and expiry."""
        # No shared cache (a CDN) may keep the bytes: the object can be erased while a URL is still out.
        params = {"Bucket": self.bucket, "Key": _check_key(key), "ResponseCacheControl": "private, no-store"}
        if download_name:
            params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
        url = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)
        if not self.cdn_base_url:
            return url
        signed, cdn = urlsplit(url), urlsplit(self.cdn_base_url)
        return urlunsplit((cdn.scheme, cdn.netloc, cdn.path + signed.path, signed.query, ""))

    def _head(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=_check_key(key))
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                return None
            raise


def make_s3_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4", s3={"addressing_style": settings.s3_addressing_style},
        retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60,
        # Every worker thread may stream an output or an upload at once; more would wait for a connection.
        max_pool_connections=settings.worker_threads + 10,
    )
    return boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url or None,
                                          region_name=settings.s3_region or None, config=config)


def check_bucket(client: Any, settings: Settings) -> None:
    """Fail at start, naming the setting at fault, when the bucket cannot be used."""
    bucket, where = settings.s3_bucket, settings.s3_endpoint_url or "AWS S3"
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise StorageUnavailable(
            "IMAGEN_STORAGE=s3: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
            "AWS_PROFILE, or run with an instance role)") from None
    except EndpointConnectionError as exc:
        raise StorageUnavailable(f"IMAGEN_S3_ENDPOINT_URL={where}: cannot connect ({exc})") from None
    except ClientError as exc:
        code = _code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageUnavailable(f"IMAGEN_S3_BUCKET={bucket}: no such bucket at {where}") from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StorageUnavailable(
                f"IMAGEN_S3_BUCKET={bucket}: access denied at {where} ({code}); check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY and that they may read and write this bucket") from None
        if code in ("301", "400", "PermanentRedirect", "AuthorizationHeaderMalformed"):
            raise StorageUnavailable(
                f"IMAGEN_S3_BUCKET={bucket}: refused at {where} ({code}); is IMAGEN_S3_REGION "
                f"({settings.s3_region or 'unset'}) the bucket's region?") from None
        raise StorageUnavailable(f"IMAGEN_S3_BUCKET={bucket} at {where}: {exc}") from None
    except BotoCoreError as exc:
        raise StorageUnavailable(f"IMAGEN_STORAGE=s3 (bucket {bucket} at {where}): {exc}") from None


def make_s3_blob_store(settings: Settings, client: Any = None) -> S3BlobStore:
    client = client or make_s3_client(settings)
    check_bucket(client, settings)
    return S3BlobStore(client, settings.s3_bucket, staging=settings.data_dir.resolve() / "staging",
                       cache=BlobCache(settings.resolved_blob_cache_dir, settings.blob_cache_bytes),
                       cdn_base_url=settings.cdn_base_url)
