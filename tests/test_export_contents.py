"""The export one piece at a time, without the app (policy §8, GDPR Art. 15/20): one pending export at a time, its
states and the exact answers of a download that cannot happen, the build and its notice, a failed build, and what
the ZIP holds (every data-map section, excluded columns left out, rows found by email, withheld categories named
without rows, files under their section, many rows in batches). Written from the mutation run of
imagen/privacy/exports.py (docs/privacy.md, "Mutation testing"); test_privacy_core.py covers the API paths.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from imagen.accounts.models import LoginSession, User
from imagen.generation.models import Generation, Output
from imagen.kit.db import Database, new_id, utcnow
from imagen.kit.errors import Conflict, NotFound
from imagen.notifications.models import Notification
from imagen.privacy import exports
from imagen.privacy.datamap import DATA_MAP
from imagen.privacy.exports import FORMAT, README, Gone, archive_name, build_export, export_service, iter_rows
from imagen.privacy.models import Export
from imagen.storage.local import LocalBlobStore

DAY = timedelta(days=1)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def blobs(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def add_user(db: Database, email: str = "ada@example.com") -> str:
    with db.transaction() as s:
        user = User(email=email, password_hash="$argon2id$secret", date_of_birth=date(1990, 5, 17), country="GB")
        s.add(user)
        s.flush()
        return user.id


def read_zip(blobs: LocalBlobStore, key: str) -> tuple[zipfile.ZipFile, dict]:
    zf = zipfile.ZipFile(blobs.local_path(key))
    return zf, json.loads(zf.read("data.json"))


# --- the service ---


def test_one_pending_export_at_a_time_and_only_the_owner_sees_it(db):
    uid, other = add_user(db), add_user(db, "bob@example.com")
    with db.transaction() as s:
        first = export_service.request(s, user_id=uid, requested_via="privacy-request:" + "x" * 80)
        assert (first.status, first.requested_via) == ("pending", ("privacy-request:" + "x" * 80)[:64])
        assert export_service.request(s, user_id=uid) is first
        assert export_service.request(s, user_id=other) is not first
        with pytest.raises(NotFound):
            export_service.get(s, user_id=other, export_id=first.id)
        first.status = "ready"
        s.flush()
        second = export_service.request(s, user_id=uid)
        assert second.id != first.id and second.requested_via == "self"
        assert next(e.id for e in export_service.list(s, user_id=uid)) == second.id
        assert len(export_service.list(s, user_id=uid)) == 2


def test_states_and_the_answers_of_a_download_that_cannot_happen(db, blobs):
    uid, now = add_user(db), utcnow()
    with db.transaction() as s:
        pending = Export(user_id=uid, status="pending")
        no_file = Export(user_id=uid, status="ready", blob_key=None, expires_at=now + DAY)
        lost = Export(user_id=uid, status="ready", blob_key=f"exports/{uid}/lost.zip", expires_at=now + DAY)
        expired = Export(user_id=uid, status="ready", blob_key=f"exports/{uid}/old.zip",
                         expires_at=now.replace(year=2026, month=3, day=4, hour=5, minute=6))
        ready = Export(user_id=uid, status="ready", blob_key=f"exports/{uid}/ok.zip", expires_at=now + DAY)
        s.add_all([pending, no_file, lost, expired, ready])
    blobs.put(ready.blob_key, b"zip-bytes")
    assert export_service.status(expired, now) == "expired"
    assert export_service.status(ready, now) == "ready" and export_service.status(pending, now) == "pending"
    assert export_service.status(ready, ready.expires_at) == "expired"  # the link ends at expires_at itself
    assert export_service.status(Export(status="ready", expires_at=None), now) == "ready"
    with db.transaction() as s:
        with pytest.raises(Gone) as gone:
            export_service.open_download(s, user_id=uid, export_id=expired.id, blobs=blobs)
        assert gone.value.status_code == 410
        assert gone.value.detail == "This export expired on 2026-03-04 05:06 UTC; request a new one"
        with pytest.raises(Conflict, match=r"^This export is pending, not ready to download$"):
            export_service.open_download(s, user_id=uid, export_id=pending.id, blobs=blobs)
        with pytest.raises(Conflict, match=r"^This export is ready, not ready to download$"):
            export_service.open_download(s, user_id=uid, export_id=no_file.id, blobs=blobs)
        with pytest.raises(Gone, match=r"^This export's file is no longer available; request a new one$"):
            export_service.open_download(s, user_id=uid, export_id=lost.id, blobs=blobs)
        row, stream = export_service.open_download(s, user_id=uid, export_id=ready.id, blobs=blobs)
        assert row.id == ready.id and b"".join(stream) == b"zip-bytes"


def test_pending_exports_oldest_first_and_by_age(db):
    uid, now = add_user(db), utcnow()
    with db.transaction() as s:
        new = Export(user_id=uid, status="pending", created_at=now)
        old = Export(user_id=uid, status="pending", created_at=now - DAY)
        s.add_all([new, old, Export(user_id=uid, status="ready", created_at=now - 2 * DAY)])
    with db.transaction() as s:
        assert export_service.pending_ids(s) == [old.id, new.id]
        assert export_service.pending_ids(s, created_before=now - DAY / 2) == [old.id]


def test_purging_expired_files_keeps_the_record(db, blobs):
    uid, now = add_user(db), utcnow()
    with db.transaction() as s:
        gone = Export(user_id=uid, status="ready", blob_key=f"exports/{uid}/a.zip", expires_at=now - DAY)
        keep = Export(user_id=uid, status="ready", blob_key=f"exports/{uid}/b.zip", expires_at=now + DAY)
        s.add_all([gone, keep])
    blobs.put(gone.blob_key, b"zip")
    blobs.put(keep.blob_key, b"zip")
    with db.transaction() as s:
        assert export_service.purge_expired(s, blobs=blobs, now=now) == 1
        assert blobs.exists(gone.blob_key), "files go only after the commit"
    assert not blobs.exists(gone.blob_key) and blobs.exists(keep.blob_key)
    with db.transaction() as s:
        assert (s.get(Export, gone.id).status, s.get(Export, gone.id).blob_key) == ("expired", None)
        assert s.get(Export, keep.id).status == "ready"


# --- building ---


def test_a_build_publishes_the_zip_notifies_once_and_a_second_run_does_nothing(db, blobs):
    uid = add_user(db)
    with db.transaction() as s:
        export_id = export_service.request(s, user_id=uid).id
    before = utcnow()
    assert build_export(db, blobs, export_id, expiry_days=3) == "ready"
    with db.transaction() as s:
        export = s.get(Export, export_id)
        assert (export.status, export.blob_key) == ("ready", f"exports/{uid}/{export_id}.zip")
        assert export.size_bytes == blobs.local_path(export.blob_key).stat().st_size > 0
        assert before + 3 * DAY <= export.expires_at <= utcnow() + 3 * DAY and export.finished_at >= before
        (note,) = s.scalars(select(Notification)).all()
        assert (note.user_id, note.kind, note.title, note.link) == (
            uid, "export_ready", "Your data export is ready", f"/api/v1/me/exports/{export_id}/download")
        assert note.body == f"Download it before {export.expires_at:%Y-%m-%d %H:%M} UTC; after that, request a new one."
    assert build_export(db, blobs, export_id) == "ready"
    assert build_export(db, blobs, new_id()) == "gone"
    assert list(blobs.staging_dir().iterdir()) == []
    with db.transaction() as s:
        assert len(s.scalars(select(Notification)).all()) == 1


def test_a_failed_build_says_so_and_leaves_no_file(db, blobs, monkeypatch):
    uid = add_user(db)
    with db.transaction() as s:
        export_id = export_service.request(s, user_id=uid).id
    real = exports.write_zip

    def broken(db, blobs, user_id, path):
        real(db, blobs, user_id, path)  # a ZIP half written in the staging folder
        raise OSError("disk full")

    monkeypatch.setattr(exports, "write_zip", broken)
    assert build_export(db, blobs, export_id) == "failed"
    with db.transaction() as s:
        export = s.get(Export, export_id)
        assert (export.status, export.blob_key) == ("failed", None) and export.finished_at is not None
        assert export.error == "The export could not be built (OSError); request a new one"
    assert list(blobs.keys("exports/")) == [] and list(blobs.staging_dir().iterdir()) == []
    with pytest.raises(LookupError, match="the account no longer exists"):
        real(db, blobs, new_id(), Path(blobs.staging_dir()) / "x.zip")


def test_the_zip_holds_every_section_without_secrets_and_with_the_files(db, blobs):
    uid = add_user(db, "Ada@Example.com".lower())
    with db.transaction() as s:
        s.add(LoginSession(user_id=uid, token_hash="t" * 64, csrf_token="c" * 20, expires_at=utcnow() + DAY,
                           ip_address="203.0.113.9"))
        gen = Generation(id=new_id(), user_id=uid, workflow="txt2img", workflow_version=1, pipeline="txt2img",
                         params={"prompt": "a lighthouse"}, checkpoint="imagen-tiny", checkpoint_sha256="0" * 64,
                         models=[], consent_model_improvement=False, status="succeeded")
        s.add(gen)
        s.flush()
        kept, lost = f"outputs/{uid}/{gen.id}/0.png", f"outputs/{uid}/{gen.id}/1.png"
        for i, key in enumerate((kept, lost)):
            s.add(Output(generation_id=gen.id, user_id=uid, index=i, blob_key=key, width=8, height=8, seed=i,
                         size_bytes=3))
        export_id = export_service.request(s, user_id=uid).id
    blobs.put(kept, b"png-bytes")
    blobs.put(f"inputs/{uid}/{gen.id}/init_image.png", b"input")
    assert build_export(db, blobs, export_id) == "ready"
    zf, data = read_zip(blobs, f"exports/{uid}/{export_id}.zip")
    assert zf.read("README.txt").decode() == README
    assert (data["format"], data["user_id"]) == (FORMAT, uid) and data["generated_at"][:4].isdigit()
    assert list(data["sections"]) == [i.name for i in DATA_MAP]
    for item in DATA_MAP:
        section = data["sections"][item.name]
        assert (section["category"], section["purpose"], section["legal_basis"], section["retention"],
                section["files_included"], section["providers"]) == (
            item.category, item.purpose, item.legal_basis, item.retention, item.export_files, list(item.providers))
        assert section["count"] == len(section["items"])
        if item.withheld:
            assert section["withheld"] == item.withheld and section["items"] == []
        else:
            assert section["withheld"] is None
    (user_row,) = next(data["sections"][i.name]["items"] for i in DATA_MAP if i.table == "users")
    assert "password_hash" not in user_row and user_row["date_of_birth"] == "1990-05-17"
    (login,) = data["sections"]["login_sessions"]["items"]
    assert "token_hash" not in login and "csrf_token" not in login and login["ip_address"] == "203.0.113.9"
    outputs = {o["index"]: o for o in data["sections"]["outputs"]["items"]}
    assert outputs[0]["file"] == f"files/outputs/{gen.id}/0.png" and outputs[1]["file"] is None
    assert data["sections"]["transient_inputs"]["items"] == [
        {"key": f"inputs/{uid}/{gen.id}/init_image.png", "file": f"files/transient_inputs/{gen.id}/init_image.png"}]
    assert zf.read(f"files/outputs/{gen.id}/0.png") == b"png-bytes"
    assert zf.read(f"files/transient_inputs/{gen.id}/init_image.png") == b"input"
    assert zf.getinfo(f"files/outputs/{gen.id}/0.png").compress_type == zipfile.ZIP_STORED
    assert f"files/outputs/{gen.id}/1.png" not in zf.namelist()


def test_rows_come_in_batches_once_each_and_file_names_drop_the_user_folder(db, monkeypatch):
    monkeypatch.setattr(exports, "BATCH", 2)
    uid = add_user(db)
    other = add_user(db, "bob@example.com")
    with db.transaction() as s:
        for n in range(5):
            s.add(LoginSession(user_id=uid, token_hash=f"{n}" * 64, csrf_token="c", expires_at=utcnow() + DAY))
        s.add(LoginSession(user_id=other, token_hash="z" * 64, csrf_token="c", expires_at=utcnow() + DAY))
    sessions = next(i for i in DATA_MAP if i.name == "login_sessions")
    rows = list(iter_rows(db, sessions, uid, None, ["token_hash"]))
    assert sorted(r["token_hash"][0] for r in rows) == ["0", "1", "2", "3", "4"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows) and set(rows[0]) == {"token_hash", "id"}
    outputs = next(i for i in DATA_MAP if i.name == "outputs")
    assert archive_name(outputs, uid, f"outputs/{uid}/g/0.png") == "files/outputs/g/0.png"
    assert archive_name(outputs, uid, "elsewhere/0.png") == "files/outputs/elsewhere/0.png"
