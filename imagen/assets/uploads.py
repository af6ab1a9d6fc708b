"""Streaming multipart uploads: the file goes straight to disk while it is hashed and measured.

Model files are gigabytes, so the request body is parsed as it arrives (python-multipart's streaming parser), never
held in memory nor spooled by Starlette first. The file part is written to a temp file in the blob store's staging
folder (so storing it later is a rename) and the upload is refused with 413 as soon as it passes the per-file limit
or the user's remaining quota. Parsing and hashing run in a worker thread, in batches, off the event loop. An
upload that sends nothing for the idle timeout is stopped (408); on any end but success, including the client
going away, the temp file is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from imagen.accounts.models import User
from imagen.assets.models import ASSET_KINDS, MODEL_KINDS
from imagen.assets.service import (
    StagedFile,
    UploadLimits,
    asset_service,
    check_model_name,
    clean_filename,
    human_bytes,
)
from imagen.kit.db import Database
from imagen.kit.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
    field_error,
)

BATCH_BYTES = 1 << 20  # hand the parser about 1 MiB at a time (one thread hop per batch)
FORM_SLACK_BYTES = 64 * 1024  # boundaries, part headers and the small fields around the file
FIELD_MAX_BYTES = 1024
MAX_PARTS = 8
FIELDS = ("kind", "public")
TRUE, FALSE = {"true", "1", "on", "yes"}, {"false", "0", "off", "no", ""}

_PARAM = re.compile(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


class UploadTimedOut(ServiceError):
    status_code = 408


@dataclass
class ReceivedUpload:
    kind: str
    public: bool
    staged: StagedFile


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")  # what browsers and HTTP clients send for non-ASCII file names
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_disposition(value: str) -> tuple[str, dict[str, str]]:
    """`form-data; name="file"; filename="x"` -> ("form-data", {...}).

    Unlike python-multipart's helper, Windows paths are not silently cut down: names with separators are refused.
    """
    disposition, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(";" + rest):
        val = m[2].strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            # Only \" and \\ are escapes (what HTTP clients write); browsers send other backslashes as they are.
            val = val[1:-1].replace("\\\\", "\\").replace('\\"', '"')
        params.setdefault(m[1].lower(), val)
    return disposition.strip().lower(), params


class _FormReceiver:
    """python-multipart callbacks: small fields into memory, the one file part into a staged temp file."""

    def __init__(self, *, staging: Path, limits: UploadLimits, used: int, may_publish: bool) -> None:
        self.staging, self.limits, self.used, self.may_publish = staging, limits, used, may_publish
        self.kind: str | None = None
        self.public = False
        self.seen: set[str] = set()
        self.filename: str | None = None
        self.path: Path | None = None
        self.file: BinaryIO | None = None
        self.file_done = False
        self.hasher = hashlib.sha256()
        self.size = 0
        self.parts = 0
        self.ended = False
        self._part: str | None = None
        self._headers: dict[str, bytes] = {}
        self._field, self._value, self._data = bytearray(), bytearray(), bytearray()

    def callbacks(self) -> Any:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_end": self.on_end}

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadRequest(f"Too many form parts; send kind, file and optionally public ({MAX_PARTS} at most)")
        self._part, self._headers = None, {}
        self._data.clear()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._field).decode("latin-1").strip().lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def on_headers_finished(self) -> None:
        disposition, params = parse_disposition(_decode(self._headers.get("content-disposition", b"")))
        name = params.get("name")
        if disposition != "form-data" or not name:
            raise BadRequest("Each form part needs a Content-Disposition: form-data header with a name")
        if name == "file":
            self._start_file(params.get("filename"))
        elif name in FIELDS:
            if name in self.seen:
                raise BadRequest(f"The field {name!r} is sent more than once")
            self.seen.add(name)
        else:
            raise field_error(name, "unknown field; send kind, file and optionally public")
        self._part = name

    def _start_file(self, filename: str | None) -> None:
        if self.path is not None:
            raise BadRequest("Send one file per upload")
        if filename is None:
            raise field_error("file", "the file part has no filename")
        self.filename = clean_filename(filename)  # refused before a byte of it is stored
        if self.kind in MODEL_KINDS:
            check_model_name(self.filename)
        fd, tmp = tempfile.mkstemp(dir=self.staging, prefix=".tmp-upload-")
        self.path, self.file = Path(tmp), os.fdopen(fd, "wb")

    def _check_size(self) -> None:
        limit, why = self.limits.allowed(self.kind, self.used)
        if self.size > limit:
            raise PayloadTooLarge(f"The file is larger than {why}; the upload was stopped.")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            assert self.file is not None
            chunk = data[start:end]
            self.size += len(chunk)
            self._check_size()
            self.hasher.update(chunk)
            self.file.write(chunk)
        else:
            self._data += data[start:end]
            if len(self._data) > FIELD_MAX_BYTES:
                raise field_error(self._part or "?", f"value is longer than {FIELD_MAX_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._part == "file":
            assert self.file is not None
            self.file.close()
            self.file, self.file_done = None, True
            return
        value = _decode(bytes(self._data)).strip()
        if self._part == "kind":
            if value not in ASSET_KINDS:
                raise field_error("kind", f"must be one of {', '.join(ASSET_KINDS)} (got {value[:40]!r})")
            self.kind = value
            if self.file_done:  # the kind came after the file: apply its own limits now
                self._check_size()
            if self.filename is not None and value in MODEL_KINDS:
                check_model_name(self.filename)
        elif self._part == "public":
            if value.lower() not in TRUE | FALSE:
                raise field_error("public", "must be true or false")
            self.public = value.lower() in TRUE
            if self.public and not self.may_publish:
                raise Forbidden("Only administrators can publish assets")

    def on_end(self) -> None:
        self.ended = True

    def finish(self) -> ReceivedUpload:
        if not self.ended or self.file is not None:
            raise BadRequest("The upload ended before the end of the multipart body")
        if self.kind is None:
            raise field_error("kind", f"Field required: one of {', '.join(ASSET_KINDS)}")
        if self.path is None or self.filename is None:
            raise field_error("file", "Field required: the file to upload")
        return ReceivedUpload(kind=self.kind, public=self.public, staged=StagedFile(
            path=self.path, filename=self.filename, size=self.size, sha256=self.hasher.hexdigest()))

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _used_bytes(db: Database, user_id: str) -> int:
    # A short transaction of its own: the request's transaction should not sit on locks during a long upload.
    with db.transaction() as session:
        return asset_service.used_bytes(session, user_id=user_id)


def _write(parser: MultipartParser, data: bytes) -> None:
    try:
        parser.write(data)
    except MultipartParseError as exc:
        raise BadRequest(f"The multipart body is malformed: {exc}") from None


async def receive_upload(request: Request, *, user: User, limits: UploadLimits, staging: Path,
                         idle_timeout: float = 60.0) -> ReceivedUpload:
    """Parse `multipart/form-data` (kind, file, public) from the request stream into a staged file."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("Send the upload as multipart/form-data with the fields kind and file")
    async with request.app.state.gate.slot():  # a short read in turn (the upload's own slot is stepped out)
        used = await run_in_threadpool(_used_bytes, request.app.state.services.db, user.id)
    most, why = limits.allowed(None, used)
    if most <= 0:
        raise PayloadTooLarge(f"No upload fits: {why}.")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Invalid Content-Length header")
        if int(declared) > most + FORM_SLACK_BYTES:
            raise PayloadTooLarge(f"The upload is {human_bytes(int(declared))}, more than {why}.")

    receiver = _FormReceiver(staging=staging, limits=limits, used=used, may_publish=user.is_admin)
    stream = request.stream()
    try:
        parser = MultipartParser(boundary, receiver.callbacks())
        batch: list[bytes] = []
        batched = total = 0
        while (chunk := await _next_chunk(stream, idle_timeout)) is not None:
            total += len(chunk)
            if total > most + FORM_SLACK_BYTES:  # no Content-Length (chunked), or a body beyond the file
                raise PayloadTooLarge(f"The upload is larger than {why}; the upload was stopped.")
            batch.append(chunk)
            batched += len(chunk)
            if batched >= BATCH_BYTES:
                await run_in_threadpool(_write, parser, b"".join(batch))
                batch, batched = [], 0
        if batch:
            await run_in_threadpool(_write, parser, b"".join(batch))
        parser.finalize()
        return receiver.finish()
    except BaseException:  # refused, timed out, or the client went away (ClientDisconnect): nothing stays
        receiver.discard()
        raise
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()


async def _next_chunk(stream: AsyncGenerator[bytes, None], idle_timeout: float) -> bytes | None:
    try:
        return await asyncio.wait_for(anext(stream), idle_timeout)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise UploadTimedOut(f"The upload sent nothing for {idle_timeout:g} s and was stopped; send it again.") \
            from None
