"""The export one piece at a time, without the app (policy §8, GDPR Art. 15/20): one pending export at a time, its
states and the exact answers of a download that cannot happen, the build and its notice, a failed build, and what
the ZIP holds (every data-map section, excluded columns left out, rows found by email, withheld categories named
without rows, files under their section, many rows in batches). Written from the mutation run of
imagen/privacy/exports.py (docs/privacy.md, "Mutation testing"); test_privacy_core.py covers the API paths.
"""

from __future__ import annotations

import json
import zipfile
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from imagen.accounts.models import LoginSession, User
from imagen.generation.models import Generation, Output
from imagen.kit.db import Database, new_id, utcnow
from imagen.kit.errors import Conflict, NotFound
from imagen.kit.tasks import InProcessTasks
from imagen.notifications.models import Notification
from imagen.privacy import exports
from imagen.privacy.datamap import DATA_MAP
from imagen.privacy.exports import FORMAT, README, Gone, archive_name, build_export, export_service, iter_rows
from imagen.privacy.models import Export
from imagen.storage.local import LocalBlobStore

DAY = timedelta(days=1)


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


def test_sections_state_configured_periods_in_words_and_only_the_providers_in_use(db, blobs, settings):
    uid = add_user(db)
    with db.transaction() as s:
        export_id = export_service.request(s, user_id=uid).id
    with_r2 = settings.model_copy(update={
        "storage": "s3", "s3_bucket": "b", "s3_endpoint_url": "https://acc.r2.cloudflarestorage.com",
        "retention_login_failures_days": 3})
    assert build_export(db, blobs, export_id, settings=with_r2) == "ready"
    with db.transaction() as s:
        key = s.get(Export, export_id).blob_key
    _zf, data = read_zip(blobs, key)
    sections = data["sections"]
    assert sections["login_failures"]["retention"] == "3 days"
    assert all("retention_" not in sec["retention"] for sec in sections.values())  # no setting names
    named = {p for sec in sections.values() for p in sec["providers"]}
    assert "Cloudflare (R2)" in named  # the bucket this installation uses
    assert not named & {"RunPod", "Stripe", "PostHog", "Postmark", "runpod", "stripe", "posthog"}  # not in use


def test_a_failed_build_says_so_and_leaves_no_file(db, blobs, monkeypatch):
    uid = add_user(db)
    with db.transaction() as s:
        export_id = export_service.request(s, user_id=uid).id
    real = exports.write_zip

    def broken(db, blobs, user_id, path, settings=None):
        real(db, blobs, user_id, path)  # a ZIP half written in the staging folder
        raise OSError("disk full")

    monkeypatch.setattr(exports, "write_zip", broken)
    assert build_export(db, blobs, export_id) == "failed"
    with db.transaction() as s:
        export = s.get(Export, export_id)
        assert (export.status, export.blob_key) == ("failed", None) and export.finished_at is not None
        assert export.error == "The export could not be built (OSError); request a new one"
    assert list(blobs.keys("exports/")) == [] and list(blobs.staging_dir().iterdir()) == []
    with pytest.raises(LookupError) as gone:
        real(db, blobs, new_id(), Path(blobs.staging_dir()) / "x.zip")
    assert str(gone.value) == "the account no longer exists"


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
    assert "§" in zf.read("data.json").decode("utf-8")  # headers written as UTF-8, not \u escapes
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
    monkeypatch.setattr(exports, "BATCH", 3)  # 5 rows: a full batch, then the rest
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


# --- from the survivors of the mutation run ---


def test_a_request_is_built_after_the_commit_with_its_expiry(db, blobs, settings):
    services = SimpleNamespace(db=db, blobs=blobs, settings=settings.model_copy(update={"export_expiry_days": 2}),
                               outbox=None)
    tasks = InProcessTasks(services)
    tasks.start()
    uid = add_user(db)
    try:
        with db.transaction() as s:
            export_id = export_service.request(s, user_id=uid, tasks=tasks).id
            assert s.get(Export, export_id).status == "pending"  # not before the commit
        assert tasks.wait_idle()
    finally:
        tasks.stop()
    with db.transaction() as s:
        export = s.get(Export, export_id)
        assert export.status == "ready" and utcnow() + DAY < export.expires_at <= utcnow() + 2 * DAY


def test_a_build_touches_only_its_own_export_and_a_failed_publication_leaves_no_file(db, blobs, monkeypatch):
    from imagen.notifications.service import notification_service

    uid, other, third = add_user(db), add_user(db, "bob@example.com"), add_user(db, "cy@example.com")
    with db.transaction() as s:
        mine, theirs = export_service.request(s, user_id=uid).id, export_service.request(s, user_id=other).id
        waiting = export_service.request(s, user_id=third).id
    assert build_export(db, blobs, mine) == "ready"
    with db.transaction() as s:
        assert (s.get(Export, theirs).status, s.get(Export, theirs).blob_key) == ("pending", None)

    def refuse(*args, **kwargs):
        raise RuntimeError("notifications are down")

    monkeypatch.setattr(notification_service, "notify", refuse)
    assert build_export(db, blobs, theirs) == "failed"
    assert list(blobs.keys(f"exports/{other}/")) == []  # the ZIP went with the rolled-back publication
    with db.transaction() as s:
        assert s.get(Export, mine).status == "ready" and s.get(Export, theirs).status == "failed"
        assert s.get(Export, waiting).status == "pending"  # a failure marks only its own export


def test_a_build_that_loses_a_race_keeps_the_winners_file_and_an_erased_one_leaves_none(db, blobs, monkeypatch):
    uid = add_user(db)
    with db.transaction() as s:
        raced = export_service.request(s, user_id=uid).id
    real = exports.write_zip

    def another_run_finishes_first(db_, blobs_, user_id, path, settings=None):
        real(db_, blobs_, user_id, path)
        blobs.put(exports.export_key(uid, raced), b"the winner's zip")
        with db.transaction() as s:
            row = s.get(Export, raced)
            row.status, row.blob_key = "ready", exports.export_key(uid, raced)

    monkeypatch.setattr(exports, "write_zip", another_run_finishes_first)
    assert build_export(db, blobs, raced) == "ready"
    assert blobs.local_path(exports.export_key(uid, raced)).exists()
    with db.transaction() as s:
        assert s.scalars(select(Notification)).all() == []  # the winner notifies, not this run
        erased = Export(user_id=uid, status="pending")
        s.add(erased)

    def erased_meanwhile(db_, blobs_, user_id, path, settings=None):
        real(db_, blobs_, user_id, path)
        with db.transaction() as s:
            s.delete(s.get(Export, erased.id))

    monkeypatch.setattr(exports, "write_zip", erased_meanwhile)
    assert build_export(db, blobs, erased.id) == "gone"
    assert not blobs.exists(exports.export_key(uid, erased.id))


def test_the_zip_is_written_in_the_staging_folder_and_expires_after_a_week_by_default(db, blobs, monkeypatch):
    uid = add_user(db)
    with db.transaction() as s:
        export_id = export_service.request(s, user_id=uid).id
    where = []
    real = exports.write_zip
    monkeypatch.setattr(exports, "write_zip", lambda d, b, u, path, settings=None: where.append(path.parent)
                        or real(d, b, u, path))
    before = utcnow()
    assert build_export(db, blobs, export_id) == "ready"
    assert where == [blobs.staging_dir()]
    with db.transaction() as s:
        assert before + 7 * DAY <= s.get(Export, export_id).expires_at <= utcnow() + 7 * DAY


def test_section_headers_say_what_is_held_and_what_this_installation_has_not(db, blobs, monkeypatch):
    uid = add_user(db)
    other = add_user(db, "bob@example.com")
    blobs.put(f"outputs/{other}/g/0.png", b"not hers")
    blobs.put(f"outputs/{uid}/g/0.png", b"a file no row names")  # with no outputs table, no outputs listed
    blobs.put(f"exports/{uid}/older.zip", b"an earlier export")
    with db.transaction() as s:
        s.add(Export(user_id=uid, status="ready", blob_key=f"exports/{uid}/older.zip", expires_at=utcnow() + DAY))
        export_id = export_service.request(s, user_id=uid).id
    real = exports._tables()
    monkeypatch.setattr(exports, "_tables", lambda: {k: v for k, v in real.items() if k != "outputs"})
    assert build_export(db, blobs, export_id) == "ready"
    zf, data = read_zip(blobs, f"exports/{uid}/{export_id}.zip")
    keys = {"category", "description", "source", "purpose", "legal_basis", "retention", "providers", "collected",
            "note", "files_included", "withheld", "items", "count"}
    for item in DATA_MAP:
        section = data["sections"][item.name]
        assert set(section) == keys, item.name
        assert (section["description"], section["source"]) == (item.description, item.source)
    outputs = data["sections"]["outputs"]
    assert (outputs["collected"], outputs["items"]) == (False, [])
    assert outputs["note"] == "none held: this installation has no outputs table"
    for name in ("analytics_events", "insights"):  # not built: said so, nothing listed
        item = next(i for i in DATA_MAP if i.name == name)
        assert data["sections"][name]["collected"] is False and data["sections"][name]["items"] == []
        assert data["sections"][name]["note"] == item.note
    sessions = data["sections"]["login_sessions"]
    assert sessions["collected"] is True and sessions["note"] == next(
        i.note for i in DATA_MAP if i.name == "login_sessions")
    names = zf.namelist()
    assert b"not hers" not in [zf.read(n) for n in names if n.startswith("files/")]
    assert not any(n.endswith("older.zip") for n in names)  # an export does not include earlier exports
    assert zf.getinfo("data.json").compress_type == zipfile.ZIP_DEFLATED


def test_rows_found_by_email_and_text_beyond_ascii_are_exported_as_they_are(db, blobs):
    from imagen.models import Base

    uid = add_user(db)
    table = Base.metadata.tables["privacy_requests"]
    with db.transaction() as s:
        from sqlalchemy import insert

        values = {c.name: None for c in table.c}
        now = utcnow()
        values.update(id=new_id(), kind="access", status="received", email="ADA@example.com",
                      details="Café ☕ - please", channel="form", user_id=None, received_at=now, due_at=now,
                      code_attempts=0, codes_sent=0, created_at=now)
        s.execute(insert(table).values({k: v for k, v in values.items() if k in table.c}))
        export_id = export_service.request(s, user_id=uid).id
    assert build_export(db, blobs, export_id) == "ready"
    zf, data = read_zip(blobs, f"exports/{uid}/{export_id}.zip")
    (request,) = data["sections"]["privacy_requests"]["items"]
    assert request["details"] == "Café ☕ - please"
    assert "Café ☕" in zf.read("data.json").decode("utf-8")  # written as UTF-8, not \\u escapes


def test_files_keep_their_path_below_the_users_folder():
    uid = new_id()
    outputs = next(i for i in DATA_MAP if i.name == "outputs")
    assert archive_name(outputs, uid, f"outputs/{uid}/g/{uid}/0.png") == f"files/outputs/g/{uid}/0.png"


def test_listing_lookup_and_purge_edges(db, blobs):
    uid, now = add_user(db), utcnow()
    with db.transaction() as s:
        a = Export(id="a" * 32, user_id=uid, status="ready", created_at=now, expires_at=now)
        b = Export(id="b" * 32, user_id=uid, status="ready", created_at=now, expires_at=now + 2 * DAY)
        c = Export(id="c" * 32, user_id=uid, status="pending", created_at=now)
        done = Export(id="d" * 32, user_id=uid, status="expired", created_at=now - DAY, expires_at=now - DAY)
        s.add_all([a, b, c, done])
    with db.transaction() as s:
        assert [e.id for e in export_service.list(s, user_id=uid)] == ["c" * 32, "b" * 32, "a" * 32, "d" * 32]
        assert export_service.pending_ids(s, created_before=now) == ["c" * 32]
        with pytest.raises(NotFound) as missing:
            export_service.get(s, user_id=uid, export_id="x" * 32)
        assert missing.value.detail == "Export not found"
        assert export_service.purge_expired(s, blobs=blobs, now=now) == 1  # expires_at == now: expired
        assert export_service.purge_expired(s, blobs=blobs, now=now + 3 * DAY) == 1  # by the caller's clock
    with db.transaction() as s:
        assert s.get(Export, "b" * 32).status == "expired"
