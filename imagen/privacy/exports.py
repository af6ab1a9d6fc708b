"""Export (GDPR Art. 15/20, policy §8): one ZIP with data.json (every data-map section) and the user's files.

Built from the data map in the background (`build_export`: takes an id, safe to run twice): rows are read in
keyset-paginated batches and written to data.json as they come, files are copied in chunks, the ZIP goes to a
temp file in the blob store's staging folder and then into the store. Memory stays flat however much the user has
(the ZIP's central directory, ~100 bytes per file, is the only part that grows).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Table, select, tuple_, update
from sqlalchemy.orm import Session

from imagen.kit.config import Settings
from imagen.kit.db import Database, run_after_commit, run_after_rollback, utcnow
from imagen.kit.errors import Conflict, ServiceError
from imagen.kit.scoped import get_owned, owned
from imagen.kit.tasks import TaskQueue, enqueue_after_commit
from imagen.mail.outbox import Outbox
from imagen.privacy.datamap import DATA_MAP, DataItem
from imagen.privacy.models import Export
from imagen.privacy.providers import configured_providers
from imagen.privacy.records.holdings import period_text
from imagen.storage import BlobNotFound, BlobStore

log = logging.getLogger(__name__)

FORMAT = "imagen-export/1"
BATCH = 500
CHUNK = 1 << 20
README = """IMAGEN data export

data.json  everything IMAGEN holds about your account, one section per data category of the data map
           (what it is, why it is held, the legal basis, how long it is kept, which providers receive it,
           and the records themselves). Rows that have a file name it in "file".
files/     your files: generated images (outputs), uploaded models, reference images, pending job inputs.
"""


class Gone(ServiceError):
    status_code = 410


def export_key(user_id: str, export_id: str) -> str:
    return f"exports/{user_id}/{export_id}.zip"


def download_url(export: Export) -> str:
    return download_url_for(export.id)


def download_url_for(export_id: str) -> str:
    return f"/api/v1/me/exports/{export_id}/download"


def _tables() -> dict[str, Table]:
    from imagen.kit.db import Base

    return dict(Base.metadata.tables)


class ExportService:
    def request(self, session: Session, *, user_id: str, requested_via: str = "self",
                tasks: TaskQueue | None = None) -> Export:
        """Queue an export (a pending one is returned instead of a second); built after the commit by
        `privacy.build_export` on `tasks` (without: by the server's scheduled pass)."""
        pending = session.scalars(owned(Export, user_id).where(Export.status == "pending")).first()
        if pending is not None:
            return pending
        export = Export(user_id=user_id, status="pending", requested_via=requested_via[:64])
        session.add(export)
        session.flush()
        enqueue_after_commit(session, tasks, "privacy.build_export", export.id)
        return export

    def get(self, session: Session, *, user_id: str, export_id: str) -> Export:
        return get_owned(session, Export, export_id, user_id, what="Export")

    def list(self, session: Session, *, user_id: str) -> list[Export]:
        return list(session.scalars(owned(Export, user_id).order_by(Export.created_at.desc(), Export.id.desc())))

    def status(self, export: Export, now: datetime | None = None) -> str:
        if export.status == "ready" and export.expires_at is not None and export.expires_at <= (now or utcnow()):
            return "expired"
        return export.status

    def open_download(self, session: Session, *, user_id: str, export_id: str,
                      blobs: BlobStore) -> tuple[Export, Iterator[bytes]]:
        export = self.get(session, user_id=user_id, export_id=export_id)
        state = self.status(export)
        if state == "expired":
            raise Gone(f"This export expired on {export.expires_at:%Y-%m-%d %H:%M} UTC; request a new one")
        if state != "ready" or not export.blob_key:
            raise Conflict(f"This export is {state}, not ready to download")
        try:
            return export, blobs.open_stream(export.blob_key)
        except BlobNotFound:
            raise Gone("This export's file is no longer available; request a new one") from None

    def pending_ids(self, session: Session, *, created_before: datetime | None = None) -> list[str]:
        query = select(Export.id).where(Export.status == "pending")
        if created_before is not None:
            query = query.where(Export.created_at <= created_before)
        return list(session.scalars(query.order_by(Export.created_at)))

    def purge_expired(self, session: Session, *, blobs: BlobStore, now: datetime | None = None) -> int:
        """Delete the ZIPs of expired exports (after commit); the record stays and answers "expired"."""
        now = now or utcnow()
        rows = session.execute(select(Export.id, Export.blob_key).where(
            Export.status == "ready", Export.expires_at <= now)).all()
        for export_id, key in rows:
            session.execute(update(Export).where(Export.id == export_id).values(status="expired", blob_key=None))
            if key:
                run_after_commit(session, blobs.delete, key)
        return len(rows)


export_service = ExportService()


# ---- building (background; takes ids; safe to run twice) ----

def build_export(db: Database, blobs: BlobStore, export_id: str, *, expiry_days: int = 7,
                 outbox: Outbox | None = None, settings: Settings | None = None) -> str:
    """Build one pending export; returns its status. A second run of a finished export does nothing. The owner is
    told in-app, and by email through a delivering `outbox`. With `settings`, each section states its periods as
    configured ("90 days") and only the providers this installation uses."""
    with db.transaction() as session:
        export = session.get(Export, export_id)
        if export is None or export.status != "pending":
            return export.status if export else "gone"
        user_id = export.user_id
    fd, tmp_name = tempfile.mkstemp(dir=blobs.staging_dir(), prefix="export-", suffix=".zip")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_zip(db, blobs, user_id, tmp, settings=settings)
        return _publish(db, blobs, export_id, user_id, tmp, expiry_days, outbox)
    except Exception as exc:
        log.exception("export %s failed", export_id)
        with db.transaction() as session:
            session.execute(update(Export).where(Export.id == export_id, Export.status == "pending").values(
                status="failed", error=f"The export could not be built ({type(exc).__name__}); request a new one",
                finished_at=utcnow()))
        return "failed"
    finally:
        tmp.unlink(missing_ok=True)


def _publish(db: Database, blobs: BlobStore, export_id: str, user_id: str, tmp: Path, expiry_days: int,
             outbox: Outbox | None = None) -> str:
    from imagen.notifications.service import notification_service
    from imagen.webhooks.service import webhook_service

    key, size = export_key(user_id, export_id), tmp.stat().st_size
    with db.transaction() as session:
        now = utcnow()
        expires = now + timedelta(days=expiry_days)
        blobs.put_file(key, tmp, "application/zip")
        run_after_rollback(session, blobs.delete, key)
        done = session.execute(update(Export).where(Export.id == export_id, Export.status == "pending").values(
            status="ready", blob_key=key, size_bytes=size, finished_at=now, expires_at=expires)).rowcount
        if not done:  # erased meanwhile (delete the file), or another run finished first (it is the same key)
            row = session.get(Export, export_id)
            if row is None or row.blob_key != key:
                run_after_commit(session, blobs.delete, key)
            return row.status if row else "gone"
        notification_service.notify(
            session, user_id=user_id, kind="export_ready", title="Your data export is ready",
            body=f"Download it before {expires:%Y-%m-%d %H:%M} UTC; after that, request a new one.",
            link=f"/api/v1/me/exports/{export_id}/download", outbox=outbox)
        webhook_service.emit(session, user_id=user_id, event="export.ready", data={
            "id": export_id, "url": download_url_for(export_id), "size_bytes": size,
            "expires_at": expires.isoformat()})
    return "ready"


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def archive_name(item: DataItem, user_id: str, key: str) -> str:
    marker = f"/{user_id}/"
    rest = key.split(marker, 1)[1] if marker in key else key
    return f"files/{item.name}/{rest}"


def iter_rows(db: Database, item: DataItem, user_id: str, email: str | None,
              columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The item's rows for one user, in batches of BATCH by primary key (keyset pagination)."""
    table = _tables().get(item.table or "")
    if table is None:
        return
    pk = list(table.primary_key.columns)
    cols = [table.c[c] for c in columns] if columns else list(table.c)
    cols += [c for c in pk if c not in cols]
    last: tuple[Any, ...] | None = None
    while True:
        query = select(*cols).where(item.rows_of(table, user_id, email))
        if last is not None:
            query = query.where(tuple_(*pk) > tuple_(*last) if len(pk) > 1 else pk[0] > last[0])
        with db.transaction() as session:
            batch = [dict(r._mapping) for r in session.execute(query.order_by(*pk).limit(BATCH))]
        yield from batch
        if len(batch) < BATCH:
            return
        last = tuple(batch[-1][c.name] for c in pk)


def _section_header(item: DataItem, present: bool, settings: Settings | None) -> dict[str, Any]:
    note = item.note
    if item.collected and item.table and not present:
        note = note or f"none held: this installation has no {item.table} table"
    retention, providers = item.retention, list(item.providers)
    if settings is not None:  # in words, as the privacy centre shows them
        configured = {p.id: p.name for p in configured_providers(settings)}
        retention = period_text(item.retention, settings)
        providers = [configured[p] for p in item.providers if p in configured]
    return {"category": item.category, "description": item.description, "source": item.source,
            "purpose": item.purpose, "legal_basis": item.legal_basis, "retention": retention,
            "providers": providers, "collected": item.collected and (present or not item.table),
            "note": note, "files_included": item.export_files, "withheld": item.withheld or None}


def _write_section(out: IO[str], db: Database, blobs: BlobStore, item: DataItem, user_id: str,
                   email: str | None, settings: Settings | None = None) -> None:
    tables = _tables()
    present = bool(item.table and item.table in tables)
    header = json.dumps(_section_header(item, present, settings), ensure_ascii=False)
    out.write(f"{json.dumps(item.name)}: {header[:-1]}, \"items\": [")
    count = 0
    rows: Iterator[dict[str, Any]] = iter(())
    if item.withheld:
        pass  # named in the header with the reason; its rows are not disclosed
    elif item.collected and present:
        keep = [c.name for c in tables[item.table].c if c.name not in item.export_exclude]  # type: ignore[index]
        rows = iter_rows(db, item, user_id, email, keep)
    elif item.collected and item.blob_prefix and not item.table:
        rows = ({"key": k} for k in blobs.keys(item.prefix_for(user_id) or ""))
    for row in rows:
        key = row.get(item.file_column) if item.file_column else row.get("key")
        if item.export_files and key:
            row["file"] = archive_name(item, user_id, key) if blobs.exists(key) else None
        out.write(("," if count else "") + "\n    " +
                  json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False))
        count += 1
    out.write(f"\n  ], \"count\": {count}}}")


def _files(db: Database, blobs: BlobStore, item: DataItem, user_id: str, email: str | None) -> Iterator[str]:
    if not (item.export_files and item.collected) or item.withheld:
        return
    if item.table and item.file_column:
        for row in iter_rows(db, item, user_id, email, [item.file_column]):
            if row[item.file_column]:
                yield row[item.file_column]
    elif item.blob_prefix:
        yield from blobs.keys(item.prefix_for(user_id) or "")


def _copy(zf: zipfile.ZipFile, blobs: BlobStore, key: str, name: str) -> bool:
    try:
        chunks = blobs.open_stream(key, CHUNK)
    except BlobNotFound:
        return False
    info = zipfile.ZipInfo(name, date_time=utcnow().timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED  # PNGs and weights don't shrink; storing costs no CPU
    with zf.open(info, "w", force_zip64=True) as dest:
        for chunk in chunks:
            dest.write(chunk)
    return True


def write_zip(db: Database, blobs: BlobStore, user_id: str, path: Path, *, settings: Settings | None = None) -> None:
    from imagen.accounts.models import User

    with db.transaction() as session:
        user = session.get(User, user_id)
        if user is None:
            raise LookupError("the account no longer exists")
        email = user.email.lower()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        zf.writestr("README.txt", README)
        with zf.open("data.json", "w", force_zip64=True) as raw, io.TextIOWrapper(raw, encoding="utf-8") as out:
            out.write("{" + f"\"format\": {json.dumps(FORMAT)}, \"generated_at\": "
                      f"{json.dumps(utcnow().isoformat())}, \"user_id\": {json.dumps(user_id)},\n\"sections\": {{")
            for index, item in enumerate(DATA_MAP):
                out.write(("," if index else "") + "\n  ")
                _write_section(out, db, blobs, item, user_id, email, settings)
            out.write("\n}}\n")
        for item in DATA_MAP:
            for key in _files(db, blobs, item, user_id, email):
                _copy(zf, blobs, key, archive_name(item, user_id, key))  # a file gone meanwhile is skipped
