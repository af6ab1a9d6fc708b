"""The privacy core (issue 4): the data map, export, erasure and the residue scan, end to end through the API.

The core test gives a user data in every category, exports it (every data-map section present, files included),
erases the account and reads the stores back: the residue scan must find only declared legal holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select, update
from typer.testing import CliRunner

from imagen.accounts.models import User
from imagen.generation.models import Generation
from imagen.inference import synthetic
from imagen.kit.config import Settings, get_settings
from imagen.kit.db import utcnow
from imagen.kit.tasks import run_task
from imagen.models import Base
from imagen.notifications.service import notification_service
from imagen.privacy import datamap, exports
from imagen.privacy.datamap import DATA_MAP
from imagen.privacy.erasure import erase_due, erase_user, erasure_service
from imagen.privacy.models import Erasure, Export
from imagen.privacy.residue import residue, scan
from imagen.privacy.retention import retention_service
from tests.conftest import PASSWORD, TINY, signup, wait_for
from tests.test_generation import Jobs


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("privacy-tiny")
    pipe = synthetic.build_tiny_pipeline("sd15", seed=3)
    return {"checkpoint": synthetic.save_single_file(pipe, folder / "mine.safetensors"),
            "lora": synthetic.build_tiny_lora("sd15", folder / "style.safetensors", seed=5)}


def _upload(client: TestClient, name: str, data: bytes, kind: str) -> dict:
    r = client.post("/api/v1/assets", data={"kind": kind}, files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == 201, r.text
    return r.json()


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return buf.getvalue()


def _generate(client: TestClient, workflow: str = "txt2img", **params) -> dict:
    r = client.post("/api/v1/generations", json={"workflow": workflow, "params": {"prompt": "a fox", **TINY, **params}})
    assert r.status_code == 202, r.text
    body = wait_for(client, r.json()["id"])
    assert body["status"] == "succeeded", body
    return body


def _export(client: TestClient) -> tuple[dict, bytes]:
    r = client.post("/api/v1/me/exports")
    assert r.status_code == 202 and set(r.json()) >= {"id", "status"}, r.text
    export_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while (body := client.get(f"/api/v1/me/exports/{export_id}").json())["status"] == "pending":
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert body["status"] == "ready", body
    download = client.get(body["download_url"])
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    return body, download.content


def _wait_erased(app, user_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with app.state.services.db.transaction() as s:
            if s.get(User, user_id) is None and not s.scalars(select(Erasure).where(
                    Erasure.status.in_(("scheduled", "in_progress")))).first():
                return
        time.sleep(0.05)
    raise AssertionError("the erasure did not finish")


def _scan(app, settings: Settings, user_id: str, email: str):
    return scan(app.state.services.db.engine, app.state.services.blobs, user_id=user_id, email=email,
                secret=settings.resolved_secret_key(), settings=settings)


def test_data_map_declares_every_personal_table():
    assert datamap.undeclared_tables(Base.metadata) == [], "declare these tables in imagen/privacy/datamap.py"
    assert datamap.problems(Base.metadata, set(Settings.model_fields)) == []
    assert {"users", "generations", "outputs", "assets", "security_events", "exports", "erasures"} <= \
        datamap.personal_tables(Base.metadata)


def test_data_map_must_name_every_identifying_column(monkeypatch):
    """A table column that identifies a person by value (an IP address, a browser) must be gathered on erasure."""
    import dataclasses

    changed = [dataclasses.replace(i, identifiers=("ip_address",)) if i.name == "login_sessions" else i
               for i in DATA_MAP]
    monkeypatch.setattr(datamap, "DATA_MAP", changed)
    assert datamap.problems(Base.metadata, set(Settings.model_fields)) == [
        "login_sessions: login_sessions.user_agent identifies a person; name it in identifiers"]


def test_export_erase_and_residue_scan_end_to_end(app, client, new_client, settings, tiny_sd15, monkeypatch):
    monkeypatch.setattr(exports, "BATCH", 2)  # several keyset pages even for a small account
    me = signup(client, consents={"model_improvement": True, "marketing_emails": False})["account"]
    user_id, email = me["id"], me["email"]
    assert client.post("/api/v1/auth/logout").status_code == 204
    assert client.post("/api/v1/auth/login", json={"email": email, "password": "wrong-password-123"}).status_code == 401
    login = client.post("/api/v1/auth/login", json={"email": email.upper(), "password": PASSWORD})
    client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    api_key = client.post("/api/v1/api-keys", json={"name": "laptop"}).json()["key"]

    ckpt = _upload(client, "mine.safetensors", tiny_sd15["checkpoint"].read_bytes(), "checkpoint")
    lora = _upload(client, "style.safetensors", tiny_sd15["lora"].read_bytes(), "lora")
    ref = _upload(client, "ref.png", _png((200, 30, 30)), "reference_image")
    generations = [
        _generate(client, checkpoint=ckpt["id"], loras=[{"id": lora["id"], "weight": 0.8}]),
        _generate(client, "img2img", init_image=f"asset:{ref['id']}", strength=0.5),
        _generate(client, batch_size=2),
    ]
    assert client.post("/api/v1/presets", json={"name": "quick", "workflow": "txt2img",
                                                "params": {"steps": 4}}).status_code == 201
    with app.state.services.db.transaction() as s:
        notification_service.notify(s, user_id=user_id, kind="welcome", title="Welcome to IMAGEN")

    other = new_client()
    signup(other, "grace@example.com")
    theirs = _generate(other)

    # ---- export: every data-map category, the files, no secrets ----
    body, content = _export(client)
    zf = zipfile.ZipFile(io.BytesIO(content))
    data = json.loads(zf.read("data.json"))
    sections = data["sections"]
    assert list(sections) == [item.name for item in DATA_MAP]
    for name in ("account", "login_sessions", "api_keys", "security_events", "consents", "generations", "outputs",
                 "uploaded_models", "reference_images", "presets", "notifications", "exports"):
        assert sections[name]["count"] >= 1 and len(sections[name]["items"]) == sections[name]["count"], name
        assert sections[name]["purpose"] and sections[name]["legal_basis"] and sections[name]["retention"]
    for name in ("analytics_events", "insights", "privacy_requests"):
        assert sections[name]["items"] == []
    assert sections["analytics_events"]["collected"] is False and "no" in sections["analytics_events"]["note"]
    assert {e["kind"] for e in sections["security_events"]["items"]} >= {"signup", "login", "logout", "login_failed"}
    assert {(c["purpose"], c["granted"]) for c in sections["consents"]["items"]} >= {("model_improvement", True)}
    assert sections["account"]["items"][0]["email"] == email
    assert {g["id"] for g in sections["generations"]["items"]} == {g["id"] for g in generations}
    assert all(g["params"]["prompt"] == "a fox" for g in sections["generations"]["items"])
    names = set(zf.namelist())
    assert len(sections["outputs"]["items"]) == 4
    for row in sections["outputs"]["items"] + sections["uploaded_models"]["items"] + \
            sections["reference_images"]["items"]:
        assert row["file"] in names
    for asset in (ckpt, lora, ref):
        row = next(r for k in ("uploaded_models", "reference_images") for r in sections[k]["items"]
                   if r["id"] == asset["id"])
        assert hashlib.sha256(zf.read(row["file"])).hexdigest() == asset["sha256"]
    text = zf.read("data.json").decode()
    assert "password_hash" not in text and "key_hash" not in text and "token_hash" not in text
    assert api_key not in text and theirs["id"] not in text and "grace@example.com" not in text
    notes = client.get("/api/v1/me/notifications").json()
    assert any(n["kind"] == "export_ready" and n["link"] == body["download_url"] for n in notes)
    assert other.get(f"/api/v1/me/exports/{body['id']}").status_code == 404
    assert other.get(body["download_url"]).status_code == 404
    assert new_client().get(body["download_url"]).status_code == 401

    # ---- erasure: wrong password changes nothing; then the account stops working at once ----
    wrong = client.request("DELETE", "/api/v1/me", json={"password": "not-my-password-1"})
    assert wrong.status_code == 403 and "password" in wrong.json()["detail"]
    assert client.get("/api/v1/me").status_code == 200
    r = client.request("DELETE", "/api/v1/me", json={"password": PASSWORD})
    assert r.status_code == 202 and r.json()["status"] in ("in_progress", "completed"), r.text
    assert client.get("/api/v1/me").status_code == 401
    assert new_client().get("/api/v1/me", headers={"Authorization": f"Bearer {api_key}"}).status_code == 401
    _wait_erased(app, user_id)

    findings = _scan(app, settings, user_id, email)
    assert residue(findings) == [], [(f.where, f.needle, f.samples) for f in residue(findings)]
    assert any(f.where.startswith("erasures.") and f.needle.endswith("_hash") for f in findings)
    assert not [k for k in app.state.services.blobs.keys("") if user_id in k]
    # (A login attempt with the erased email is new data, a failed login in the security log, so it comes last.)
    assert new_client().post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code == 401
    with app.state.services.db.transaction() as s:
        record = s.scalars(select(Erasure)).one()
        assert record.status == "completed" and record.user_id is None and record.hold_until > utcnow()
        assert record.summary["generations"] == 3 and record.summary["outputs"] == 4
        assert erasure_service.find_by_subject(s, value=email.upper(), settings=settings) == [record]
    # The other user is untouched, and erasing again is harmless.
    assert other.get(f"/api/v1/generations/{theirs['id']}").json()["status"] == "succeeded"
    assert other.get(theirs["outputs"][0]["url"]).status_code == 200
    services = app.state.services
    assert erase_user(services.db, services.blobs, services.executor, user_id, settings=settings) == {}


def test_erasure_while_a_job_is_running_leaves_no_orphaned_blob(app, user_client, settings, monkeypatch):
    """The job finishes after the erasure: its output is written, its completion fails, the file is removed."""
    user_id = user_client.get("/api/v1/me").json()["id"]
    blobs, executor = app.state.services.blobs, app.state.services.executor
    real_put, erased = blobs.put, threading.Event()

    def put(key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if key.startswith(f"outputs/{user_id}/") and not erased.is_set():
            erase_user(app.state.services.db, blobs, executor, user_id, settings=settings)  # the job is still running
            erased.set()
        real_put(key, data, content_type)

    monkeypatch.setattr(blobs, "put", put)
    jobs = Jobs(monkeypatch)
    r = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {"prompt": "x", **TINY}})
    gen_id = r.json()["id"]
    assert erased.wait(120)
    jobs.wait_idle()  # the job has ended: whatever it wrote and removed is settled
    assert jobs.finished == [gen_id]
    assert [k for k in blobs.keys("") if user_id in k] == []
    with app.state.services.db.transaction() as s:
        assert s.get(Generation, gen_id) is None and s.get(User, user_id) is None
    assert residue(_scan(app, settings, user_id, "ada@example.com")) == []


def test_erasure_through_the_api_cancels_queued_and_running_jobs(app, user_client, settings, monkeypatch):
    jobs = Jobs(monkeypatch)
    user_id = user_client.get("/api/v1/me").json()["id"]
    ids = [user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {
        "prompt": "x", **TINY, "steps": 40, "width": 128, "height": 128}}).json()["id"] for _ in range(3)]
    wait_for(user_client, ids[0], ("running", "succeeded"))
    assert user_client.request("DELETE", "/api/v1/me", json={"password": PASSWORD}).status_code == 202
    _wait_erased(app, user_id)
    jobs.wait_idle()  # the running job was told to stop; the queued ones never start
    assert jobs.started and set(jobs.started) <= set(ids)
    assert [k for k in app.state.services.blobs.keys("") if user_id in k] == []
    assert residue(_scan(app, settings, user_id, "ada@example.com")) == []


def test_grace_period_schedules_cancels_and_erases_when_due(app, user_client, settings):
    settings.erasure_grace_days = 3
    user_id = user_client.get("/api/v1/me").json()["id"]
    assert user_client.post("/api/v1/me/erasure/cancel").status_code == 404
    r = user_client.request("DELETE", "/api/v1/me", json={"password": PASSWORD})
    assert r.status_code == 202 and r.json()["status"] == "scheduled" and r.json()["can_cancel"]
    assert user_client.get("/api/v1/me").status_code == 200  # still works during the grace period
    assert user_client.get("/api/v1/me/erasure").json()["id"] == r.json()["id"]
    assert user_client.post("/api/v1/me/erasure/cancel").json()["status"] == "canceled"
    assert user_client.get("/api/v1/me/erasure").status_code == 404
    again = user_client.request("DELETE", "/api/v1/me", json={"password": PASSWORD}).json()
    db, blobs = app.state.services.db, app.state.services.blobs
    assert erase_due(db, blobs, None, settings=settings) == []  # not due yet
    assert erase_due(db, blobs, None, settings=settings, now=utcnow() + timedelta(days=4)) == [user_id]
    assert user_client.get("/api/v1/me").status_code == 401
    with db.transaction() as s:
        rows = s.scalars(select(Erasure)).all()
        assert {(e.status, e.user_id) for e in rows} == {("canceled", None), ("completed", None)}
        assert {e.id for e in rows if e.status == "completed"} == {again["id"]}
        assert all(e.hold_until is not None for e in rows)
        # The legal hold ends: the retention run takes the records, and then nothing at all is left.
        purges = retention_service.run(s, settings=settings, blobs=blobs, now=utcnow() + timedelta(days=10000),
                                       dry_run=False)
        assert next(p.count for p in purges if p.category == "erasure log") == 2
    assert _scan(app, settings, user_id, "ada@example.com") == []


def test_export_link_expires_and_its_file_is_purged(app, user_client):
    body, _ = _export(user_client)
    with app.state.services.db.transaction() as s:
        key = s.get(Export, body["id"]).blob_key
        s.execute(update(Export).where(Export.id == body["id"]).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert user_client.get(f"/api/v1/me/exports/{body['id']}").json()["status"] == "expired"
    assert user_client.get(body["download_url"]).status_code == 410
    assert [e["id"] for e in user_client.get("/api/v1/me/exports").json()] == [body["id"]]
    tick = run_task(app.state.services, "privacy.tick")  # the scheduled pass
    assert tick == {"exports": 0, "erasures": 0, "expired_exports": 1}
    assert not app.state.services.blobs.exists(key)
    assert user_client.get(f"/api/v1/me/exports/{body['id']}").json()["status"] == "expired"
    # Safe to run twice.
    assert exports.build_export(app.state.services.db, app.state.services.blobs, body["id"]) == "expired"


@pytest.fixture
def cli_env(tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("IMAGEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMAGEN_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("IMAGEN_LEGAL_ENTITY", "Imagen Test Ltd")
    monkeypatch.delenv("IMAGEN_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_cli_residue_scan_erase_and_ropa(cli_env):
    from imagen.cli import app as cli

    runner = CliRunner()
    created = runner.invoke(cli, ["admin", "create-user", "op@example.com", "--password", "Sturdy-passphrase-42"])
    assert created.exit_code == 0, created.output
    before = runner.invoke(cli, ["privacy", "residue-scan", "op@example.com"])
    assert before.exit_code == 1 and "residue" in before.output and "users.email" in before.output
    erased = runner.invoke(cli, ["privacy", "erase", "op@example.com", "--yes"])
    assert erased.exit_code == 0, erased.output
    assert "Erased." in erased.output and "Verified: the residue scan found nothing" in erased.output
    after = runner.invoke(cli, ["privacy", "residue-scan", "op@example.com"])
    assert after.exit_code == 0 and "No residue" in after.output and "legal hold" in after.output, after.output
    assert "No erasure is due" in runner.invoke(cli, ["privacy", "erase-due"]).output

    md = runner.invoke(cli, ["privacy", "ropa"])
    assert md.exit_code == 0 and "Imagen Test Ltd" in md.output
    assert all(item.category in md.output for item in DATA_MAP)
    out = cli_env / "ropa.json"
    assert runner.invoke(cli, ["privacy", "ropa", "--format", "json", "-o", str(out)]).exit_code == 0
    record = json.loads(out.read_text())
    assert [a["name"] for a in record["activities"]] == [item.name for item in DATA_MAP]
    security = next(a for a in record["activities"] if a["name"] == "security_events")
    assert security["retention"]["configured"] == {"IMAGEN_RETENTION_SECURITY_LOG_DAYS": 365}
    assert security["erasure"]["emptied"] == ["user_id", "email", "ip_address", "user_agent"]
    assert {r["id"] for r in security["recipients"]} == {"hosting"}
    evidence = next(a for a in record["activities"] if a["name"] == "safety_evidence")
    assert any("NCMEC" in r["name"] for r in evidence["recipients"])  # policy §4.3: reported cases go to NCMEC
    assert "NCMEC's CyberTipline" in md.output


# ---- every identifier, and holds that end (issue 19) ----

ADA_IP, ADA_UA = "203.0.113.77", "Mozilla/5.0 (X11; Linux) AdaBrowser/7.1"


def _ada(app) -> TestClient:
    """A browser with its own address and user agent, so the security log has something to identify her by."""
    return TestClient(app, base_url="https://testserver", client=(ADA_IP, 50000), headers={"User-Agent": ADA_UA})


def _admin(app, new_client) -> TestClient:
    admin = new_client()
    signup(admin, "root@example.com")
    with app.state.services.db.transaction() as s:
        s.execute(update(User).where(User.email == "root@example.com").values(role="admin"))
    return admin


def _give_ada_held_data(app, ada: TestClient, admin: TestClient) -> str:
    """Security events with her IP and browser, a closed privacy request with its emails, an image she reported
    (a safety case with evidence). Returns her id."""
    from imagen.kit.db import new_id

    user_id = signup(ada)["account"]["id"]
    assert ada.post("/api/v1/auth/logout").status_code == 204
    assert ada.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": "wrong-pass-1234"}
                    ).status_code == 401
    login = ada.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    ada.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    req = ada.post("/api/v1/privacy-requests", json={"email": "ada@example.com", "kind": "objection",
                                                      "details": "stop profiling me"})
    assert req.status_code == 201 and req.json()["status"] == "pending", req.text
    done = admin.post(f"/api/v1/admin/privacy-requests/{req.json()['id']}/transition",
                      json={"status": "completed", "note": "Stopped."})
    assert done.status_code == 200, done.text
    with app.state.services.db.transaction() as s:
        gen = Generation(id=new_id(), user_id=user_id, workflow="txt2img", workflow_version=1, pipeline="txt2img",
                         params={"prompt": "a fox"}, checkpoint="imagen-tiny", checkpoint_sha256="0" * 64,
                         models=[], consent_model_improvement=False, status="succeeded")
        s.add(gen)
    assert ada.post("/api/v1/reports", json={"generation_id": gen.id, "reason": "not what I asked"}
                    ).status_code == 201
    return user_id


def test_erasure_gathers_every_identifier_and_holds_end_with_their_period(app, client, new_client, settings):
    from imagen.accounts.models import SecurityEvent
    from imagen.mail.models import OutboundEmail
    from imagen.privacy.residue import gather
    from imagen.safety.models import UserReport

    admin = _admin(app, new_client)
    user_id = _give_ada_held_data(app, _ada(app), admin)
    db, blobs, secret = app.state.services.db, app.state.services.blobs, settings.resolved_secret_key()
    with db.transaction() as s:
        found = gather(s, user_id=user_id, secret=secret)
    kinds = found.kinds()
    assert kinds["ip_address"] == [ADA_IP] and kinds["user_agent"] == [ADA_UA.lower()]
    assert kinds["id"] == [user_id] and kinds["email"] == ["ada@example.com"] and len(kinds["email_hash"]) == 1

    summary = erase_user(db, blobs, app.state.services.executor, user_id, settings=settings, verify=True)
    assert summary["residue"] == 0 and summary["findings"] == []
    with db.transaction() as s:
        assert s.scalars(select(Erasure)).one().summary["residue"] == 0  # the record says it was checked
        events = s.scalars(select(SecurityEvent).where(SecurityEvent.user_id.is_(None))).all()
        assert {e.kind for e in events} >= {"signup", "login", "logout", "login_failed"}
        assert {(e.email, e.ip_address, e.user_agent) for e in events} == {(None, None, None)}
        assert [r.reporter_id for r in s.scalars(select(UserReport))] == [None]
        assert {m.to_address for m in s.scalars(select(OutboundEmail))} >= {"ada@example.com"}  # a hold, for now

    findings = scan(db.engine, blobs, needles=found, settings=settings)
    assert residue(findings) == [], [(f.where, f.needle, f.reason) for f in residue(findings)]
    held = {(f.where, f.needle) for f in findings}
    assert {("outbound_emails.to_address", "email"), ("privacy_requests.email", "email"),
            ("safety_evidence.ip_address", "ip_address"), ("safety_cases.user_id", "id")} <= held

    # Past every period, without a retention run: each hold that kept her is residue now.
    later = utcnow() + timedelta(days=10000)
    ended = {(f.where, f.needle): f.reason for f in residue(scan(db.engine, blobs, needles=found,
                                                                  settings=settings, now=later))}
    assert ended[("outbound_emails.to_address", "email")].startswith("legal hold ended (privacy_request_emails)")
    assert {("privacy_requests.email", "email"), ("safety_evidence.ip_address", "ip_address"),
            ("erasures.subject_id_hash", "id_hash")} <= set(ended)
    # The retention run purges them: then nothing at all identifies her.
    with db.transaction() as s:
        retention_service.run(s, settings=settings, blobs=blobs, now=later)
    assert scan(db.engine, blobs, needles=found, settings=settings, now=later) == []

    # A leftover IP address in a row of nobody's is found; the same address in someone else's row is theirs.
    with db.transaction() as s:
        s.add(SecurityEvent(user_id=None, kind="login_failed", ip_address=ADA_IP))
        other = s.scalars(select(User.id).where(User.email == "root@example.com")).one()
        s.add(SecurityEvent(user_id=other, kind="login", ip_address=ADA_IP, user_agent=ADA_UA))
    left = residue(scan(db.engine, blobs, needles=found, settings=settings))
    assert [(f.where, f.needle, f.count) for f in left] == [("security_events.ip_address", "ip_address", 1)]


def test_a_privacy_request_mail_does_not_outlive_its_hold(app, client, new_client, settings):
    """The issue's case: after erasure and a retention run past every period, the address is gone from the mail."""
    from imagen.mail.models import OutboundEmail

    admin = _admin(app, new_client)
    user_id = _give_ada_held_data(app, _ada(app), admin)
    erase_user(app.state.services.db, app.state.services.blobs, app.state.services.executor, user_id, settings=settings)
    days = settings.retention_outbound_emails_days
    with app.state.services.db.transaction() as s:  # within the hold: kept, without the account's id
        retention_service.run(s, settings=settings, blobs=app.state.services.blobs,
                              now=utcnow() + timedelta(days=days - 1))
        kept = s.scalars(select(OutboundEmail).where(OutboundEmail.to_address == "ada@example.com")).all()
        assert kept and {m.user_id for m in kept} == {None}
    with app.state.services.db.transaction() as s:
        purges = retention_service.run(s, settings=settings, blobs=app.state.services.blobs,
                                       now=utcnow() + timedelta(days=days + 1))
        assert next(p.count for p in purges if p.name == "privacy_request_emails") == len(kept)
        assert s.scalars(select(OutboundEmail).where(OutboundEmail.to_address == "ada@example.com")).all() == []
    assert not any(f.where.startswith("outbound_emails.") for f in _scan(app, settings, user_id, "ada@example.com"))


def test_withheld_categories_are_named_in_the_export_without_their_rows(app, client, new_client, settings):
    """Legal requests that named the user and safety cases about them (policy §8.2, GDPR Art. 23) are named in
    the export with the reason, and none of their rows or ids are in it."""
    admin = _admin(app, new_client)
    ada = _ada(app)
    user_id = _give_ada_held_data(app, ada, admin)
    legal = admin.post("/api/v1/admin/legal-requests", json={
        "received_at": utcnow().isoformat(), "authority": "Metropolitan Police", "instrument": "production order",
        "reference": "MP/2026/99", "scope": "account data of one user", "user_ids": [user_id]})
    assert legal.status_code == 201, legal.text
    from imagen.safety.models import SafetyCase

    with app.state.services.db.transaction() as s:
        [case_id] = s.scalars(select(SafetyCase.id).where(SafetyCase.user_id == user_id)).all()
    _, content = _export(ada)
    text = zipfile.ZipFile(io.BytesIO(content)).read("data.json").decode()
    sections = json.loads(text)["sections"]
    for name in ("legal_request_subjects", "safety_cases", "safety_evidence"):
        assert sections[name]["items"] == [] and sections[name]["count"] == 0, name
        assert sections[name]["withheld"] == next(i.withheld for i in DATA_MAP if i.name == name)
    assert legal.json()["id"] not in text and case_id not in text and "MP/2026/99" not in text
    assert sections["user_reports"]["count"] == 1  # what she provided herself is hers to see


def test_cli_erase_reports_what_it_left(cli_env):
    """`imagen privacy erase` verifies itself: a trace the data map does not know of fails it, named by column."""
    from imagen.cli import app as cli
    from imagen.kit.db import Database
    from imagen.notifications.models import Notification

    runner = CliRunner()
    for email in ("op@example.com", "u@example.com"):
        assert runner.invoke(cli, ["admin", "create-user", email, "--password", "Sturdy-passphrase-42"]
                             ).exit_code == 0
    db = Database(get_settings().resolved_database_url)
    try:
        with db.transaction() as s:
            other = s.scalars(select(User.id).where(User.email == "u@example.com")).one()
            s.add(Notification(user_id=other, kind="note", title="hi", body="Op@Example.com mentioned you"))
    finally:
        db.dispose()
    erased = runner.invoke(cli, ["privacy", "erase", "op@example.com", "--yes"])
    assert erased.exit_code == 1, erased.output
    assert "notifications.body" in erased.output and "1 finding(s) are not legal holds in force" in erased.output
