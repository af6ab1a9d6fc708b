"""The gallery: a user's outputs in keyset pages (no cap), WebP thumbnails, favourites, filters, prompt search,
deleting one image or many, and ZIP archives of a selection."""

from __future__ import annotations

import base64
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from PIL import Image
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.generation.models import ACTIVE_STATUSES, Generation, Output
from imagen.kit.db import run_after_commit, run_after_rollback
from imagen.kit.errors import NotFound, field_error
from imagen.kit.scoped import get_owned
from imagen.storage import BlobNotFound, BlobStore

THUMB_SIDE = 256  # the longest side, in pixels
THUMB_MAX_BYTES = 30 * 1024
THUMB_QUALITIES = (75, 60, 45, 30)  # tried in order until one fits THUMB_MAX_BYTES
MAX_SELECTION = 100  # outputs in one ZIP or one bulk delete
ID = re.compile(r"[0-9a-f]{32}")


def thumb_key(user_id: str, generation_id: str, index: int) -> str:
    # Its own prefix, so the data map declares it on its own (exported, erased) and a listing of outputs/ stays PNGs.
    return f"thumbs/{user_id}/{generation_id}/{index}.webp"


def output_thumb_key(output: Output) -> str:
    return thumb_key(output.user_id, output.generation_id, output.index)


def make_thumbnail(png: bytes) -> bytes:
    """A WebP of at most THUMB_SIDE pixels a side and THUMB_MAX_BYTES (lower quality until it fits)."""
    with Image.open(io.BytesIO(png)) as image:
        image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
        image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
        data = b""
        for quality in THUMB_QUALITIES:
            buffer = io.BytesIO()
            image.save(buffer, "WEBP", quality=quality, method=4)
            data = buffer.getvalue()
            if len(data) <= THUMB_MAX_BYTES:
                break
        return data


def store_thumbnail(session: Session, blobs: BlobStore, *, user_id: str, generation_id: str, index: int,
                    png: bytes) -> None:
    """Called where the output itself is stored (generation_service.complete), in the same transaction."""
    key = thumb_key(user_id, generation_id, index)
    blobs.put(key, make_thumbnail(png), "image/webp")
    run_after_rollback(session, blobs.delete, key)


@dataclass(frozen=True)
class GalleryFilter:
    workflow: str | None = None
    model: str | None = None  # a checkpoint's name or content hash
    since: date | None = None  # inclusive, UTC days
    until: date | None = None  # inclusive
    q: str | None = None  # words of the prompt
    favorites: bool = False


def encode_output_cursor(output: Output) -> str:
    return base64.urlsafe_b64encode(f"{output.created_at.isoformat()}|{output.id}".encode()).decode()


def decode_output_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, output_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        when = datetime.fromisoformat(stamp)
    except Exception:
        raise field_error("cursor", "invalid cursor", where="query") from None
    if when.tzinfo is None or not ID.fullmatch(output_id):
        raise field_error("cursor", "invalid cursor", where="query")
    return when, output_id


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


class GalleryService:
    def page(self, session: Session, *, user: User, limit: int, cursor: str | None = None,
             filters: GalleryFilter = GalleryFilter()) -> tuple[list[tuple[Output, Generation]], str | None]:
        """Newest first, `limit` at a time; the cursor is the last (created_at, id) seen, so a page costs the same
        however deep it is and nothing is skipped or repeated when outputs are added or deleted meanwhile."""
        query = (select(Output, Generation).join(Generation, Generation.id == Output.generation_id)
                 .where(Output.user_id == user.id)
                 .order_by(Output.created_at.desc(), Output.id.desc()))
        if filters.workflow:
            query = query.where(Generation.workflow == filters.workflow)
        if filters.model:
            query = query.where(or_(Generation.checkpoint == filters.model,
                                    Generation.checkpoint_sha256 == filters.model.lower()))
        if filters.since:
            query = query.where(Output.created_at >= _day_start(filters.since))
        if filters.until:
            query = query.where(Output.created_at < _day_start(filters.until + timedelta(days=1)))
        if filters.favorites:
            query = query.where(Output.favorite.is_(True))
        for word in (filters.q or "").split()[:8]:
            query = query.where(func.lower(Generation.params["prompt"].as_string()).like(_like(word.lower()),
                                                                                         escape="\\"))
        if cursor:
            stamp, output_id = decode_output_cursor(cursor)
            query = query.where(or_(Output.created_at < stamp,
                                    and_(Output.created_at == stamp, Output.id < output_id)))
        rows = [(o, g) for o, g in session.execute(query.limit(limit + 1)).tuples()]
        next_cursor = encode_output_cursor(rows[limit - 1][0]) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def facets(self, session: Session, *, user: User) -> tuple[list[str], list[str]]:
        """The workflows and checkpoints the user's outputs came from (the filter's choices)."""
        base = select(Generation).where(Generation.user_id == user.id, Generation.status == "succeeded")
        workflows = session.scalars(base.with_only_columns(Generation.workflow).distinct()
                                    .order_by(Generation.workflow))
        models = session.scalars(base.with_only_columns(Generation.checkpoint).distinct()
                                 .order_by(Generation.checkpoint))
        return list(workflows), list(models)

    def get(self, session: Session, *, user: User, output_id: str) -> Output:
        return get_owned(session, Output, output_id, user.id, what="Output")

    def set_favorite(self, session: Session, *, user: User, output_id: str, favorite: bool) -> Output:
        output = self.get(session, user=user, output_id=output_id)
        output.favorite = favorite
        return output

    def thumbnail(self, session: Session, *, user: User, output_id: str, blobs: BlobStore) -> bytes:
        """The stored thumbnail; outputs stored before thumbnails existed get theirs made (and kept) now."""
        output = self.get(session, user=user, output_id=output_id)
        key = output_thumb_key(output)
        try:
            return blobs.get(key)
        except BlobNotFound:
            pass
        try:
            data = make_thumbnail(blobs.get(output.blob_key))
        except BlobNotFound:
            raise NotFound("Output not found") from None
        blobs.put(key, data, "image/webp")
        return data

    def delete(self, session: Session, *, user: User, output_ids: list[str], blobs: BlobStore) -> int:
        """Delete these images only (not their batch). A finished generation left with no image goes too: with
        nothing to show, the gallery has no way to reach it."""
        outputs = self._owned(session, user=user, output_ids=output_ids)
        generations = {o.generation_id: o.generation for o in outputs}
        for output in outputs:
            for key in (output.blob_key, output_thumb_key(output)):
                run_after_commit(session, blobs.delete, key)
            output.generation.outputs.remove(output)  # delete-orphan: the row goes at the flush
        for gen in generations.values():
            if not gen.outputs and gen.status not in ACTIVE_STATUSES:
                session.delete(gen)
        session.flush()
        return len(outputs)

    def archive(self, session: Session, *, user: User, output_ids: list[str], blobs: BlobStore) -> Iterator[bytes]:
        """A ZIP of the selected PNGs (stored, not deflated: PNGs don't shrink), written one file at a time."""
        outputs = self._owned(session, user=user, output_ids=output_ids)
        files = [(f"imagen-{o.id}.png", o.blob_key) for o in outputs]
        for _, key in files:  # every file exists before the first byte is sent (a 404 can still be answered)
            if not blobs.exists(key):
                raise NotFound("Output not found")
        return _zip_stream(files, blobs)

    def _owned(self, session: Session, *, user: User, output_ids: list[str]) -> list[Output]:
        ids = list(dict.fromkeys(output_ids))
        if not ids:
            raise field_error("ids", "choose at least one image", where="query")
        if len(ids) > MAX_SELECTION:
            raise field_error("ids", f"at most {MAX_SELECTION} images at once", where="query")
        if bad := [i for i in ids if not ID.fullmatch(i)]:
            raise field_error("ids", f"not an image id: {bad[0][:40]!r}", where="query")
        found = {o.id: o for o in session.scalars(
            select(Output).where(Output.user_id == user.id, Output.id.in_(ids)))}
        if len(found) != len(ids):  # another user's image is as unknown as a missing one
            raise NotFound("Output not found")
        return [found[i] for i in ids]


class _Sink(io.RawIOBase):
    """Collects what ZipFile writes, handed out chunk by chunk."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.chunks.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def _zip_stream(files: list[tuple[str, str]], blobs: BlobStore) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, key in files:
            with archive.open(name, "w", force_zip64=True) as entry:
                for chunk in blobs.open_stream(key):
                    entry.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


gallery_service = GalleryService()
