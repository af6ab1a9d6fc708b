"""Trust and safety, the remaining paths end to end: the operator's NSFW policy on uploads and outputs (the
detector's answer is stubbed: a test can't hold a nude image), a generated output that matches a PDQ bank,
automatic NCMEC reports when the operator turns confirmation off, and `imagen models add` against the banks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from imagen.assets.models import Asset
from imagen.cli import app as cli
from imagen.generation.models import Generation, Output
from imagen.inference import synthetic
from imagen.safety.matcher import pdq_hex
from imagen.safety.models import CaseAction, SafetyCase
from imagen.safety.nsfw import Detection, NsfwClassifier
from imagen.safety.tasks import report_case_automatically
from tests.conftest import PASSWORD, TINY, signup, wait_for
from tests.test_safety_cases import cases, encode, import_bank, photo, upload_image

NEUTRAL_UPLOAD = {"detail": "This file cannot be accepted."}
NEUTRAL_GENERATION = "This generation could not be completed."


class StubDetector(list):
    """What the stubbed nudenet detector reports for every image (the test fills it in), and how often it ran."""

    calls = 0


@pytest.fixture
def detector(monkeypatch: pytest.MonkeyPatch) -> StubDetector:
    found = StubDetector()

    def classify(self: NsfwClassifier, png: bytes) -> list[Detection]:
        found.calls += 1
        return list(found)

    monkeypatch.setattr(NsfwClassifier, "classify", classify)
    return found


def stored_assets(app) -> int:
    with app.state.services.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(Asset)) or 0


def pixels(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB")


def test_nsfw_policy_blocks_or_blurs_uploads_from_the_apps_settings(app, user_client, settings, detector):
    data = encode(photo())
    detector.append(Detection("FEMALE_BREAST_EXPOSED", 0.9, (40, 40, 60, 60)))
    # Allowed by default: the detector need not even run.
    assert upload_image(user_client, data, "a.png").status_code == 201
    assert detector.calls == 0
    user_client.delete(f"/api/v1/assets/{user_client.get('/api/v1/assets').json()[0]['id']}")

    settings.nsfw_policy = json.dumps({"breasts_exposed": "block"})
    r = upload_image(user_client, data, "b.png")
    assert r.status_code == 422 and r.json() == NEUTRAL_UPLOAD
    assert stored_assets(app) == 0 and not list(app.state.services.blobs.keys("assets/"))
    assert cases(app) == []  # adult content under the operator's policy is not a safety case
    assert client_still_works(user_client)

    settings.nsfw_policy = json.dumps({"breasts_exposed": "blur"})
    r = upload_image(user_client, data, "c.png")
    assert r.status_code == 201, r.text
    stored = user_client.get(f"/api/v1/assets/{r.json()['id']}/content").content
    assert r.json()["sha256"] == hashlib.sha256(stored).hexdigest()  # the record describes what is stored
    original, blurred = pixels(data), pixels(stored)
    box, outside = (40, 40, 100, 100), (150, 180, 250, 250)
    assert original.crop(box).tobytes() != blurred.crop(box).tobytes()  # the detected region is blurred
    assert original.crop(outside).tobytes() == blurred.crop(outside).tobytes()  # the rest is untouched

    detector.clear()  # nothing detected: stored unchanged (re-encoded only)
    r = upload_image(user_client, encode(photo(3)), "d.png")
    assert pixels(user_client.get(f"/api/v1/assets/{r.json()['id']}/content").content).tobytes() == \
        photo(3).convert("RGB").tobytes()


def client_still_works(client) -> bool:
    return client.get("/api/v1/assets").status_code == 200


def test_nsfw_policy_on_generated_outputs(app, user_client, settings, detector):
    params = {"prompt": "a lighthouse", **TINY}
    first = wait_for(user_client, user_client.post(
        "/api/v1/generations", json={"workflow": "txt2img", "params": params}).json()["id"])
    plain = user_client.get(first["outputs"][0]["url"]).content

    detector.append(Detection("MALE_GENITALIA_EXPOSED", 0.8, (0, 0, 64, 64)))
    settings.nsfw_policy, settings.nsfw_blur_mode = json.dumps({"genitalia_exposed": "blur"}), "image"
    blurred = wait_for(user_client, user_client.post(
        "/api/v1/generations", json={"workflow": "txt2img", "params": params}).json()["id"])
    assert blurred["status"] == "succeeded"
    delivered = user_client.get(blurred["outputs"][0]["url"]).content
    assert delivered != plain and pixels(delivered).size == pixels(plain).size

    settings.nsfw_policy = json.dumps({"genitalia_exposed": "block"})
    blocked = wait_for(user_client, user_client.post(
        "/api/v1/generations", json={"workflow": "txt2img", "params": params}).json()["id"])
    assert blocked["status"] == "failed" and blocked["error"] == NEUTRAL_GENERATION and blocked["outputs"] == []
    assert not any(blocked["id"] in key for key in app.state.services.blobs.keys("outputs/"))
    assert cases(app) == []


def test_generated_output_matching_a_pdq_bank_is_never_served(app, user_client, moderator, runtime, monkeypatch):
    """The runtime is made to return an ordinary photo, so the perceptual (PDQ) branch is the one tested."""
    real_run = runtime.run

    def run_returning_the_photo(spec, **kwargs):
        result = real_run(spec, **kwargs)
        result.images[:] = [dataclasses.replace(image, png=encode(photo())) for image in result.images]
        return result

    monkeypatch.setattr(runtime, "run", run_returning_the_photo)
    params = {"prompt": "a house by a hill", "negative_prompt": "blurry", **TINY}
    before = wait_for(user_client, user_client.post(
        "/api/v1/generations", json={"workflow": "txt2img", "params": params}).json()["id"])
    assert before["status"] == "succeeded"  # no bank yet: delivered

    value, quality = pdq_hex(photo().resize((512, 512)))  # the bank holds the hash of a larger copy
    assert quality >= 50
    import_bank(app, "pdq-bank", "pdq", [value])
    gen_id = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": params}).json()["id"]
    deadline = time.monotonic() + 120
    while True:  # the account is suspended by the match: read the job back directly
        with app.state.services.db.transaction() as s:
            status = s.get(Generation, gen_id).status
        if status not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    [case] = cases(app)
    assert (case.kind, case.subject_id) == ("hash_match", gen_id)
    [ev] = case.evidence
    assert ev.match["hash_type"] == "pdq" and ev.match["distance"] <= 31 and ev.pdq
    assert (ev.prompt, ev.negative_prompt) == ("a house by a hill", "blurry")
    assert app.state.services.safety.quarantine.get(ev.quarantine_blob_key) == encode(photo())

    # Restored by a moderator, the user sees the job failed neutrally with nothing to fetch.
    assert moderator.post(f"/api/v1/admin/cases/{case.id}/actions", json={"action": "restore"}).status_code == 200
    login = user_client.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 200, login.text
    user_client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    body = user_client.get(f"/api/v1/generations/{gen_id}").json()
    assert body["status"] == "failed" and body["error"] == NEUTRAL_GENERATION and body["outputs"] == []
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Output).where(Output.generation_id == gen_id)) == 0
    # An output that was delivered before, once a moderator removes it, answers 404 too.
    url = before["outputs"][0]["url"]
    assert user_client.get(url).status_code == 200
    report = user_client.post("/api/v1/reports", json={"output_id": before["outputs"][0]["id"], "reason": "x"})
    assert report.status_code == 201
    removed = moderator.post(f"/api/v1/admin/cases/{report.json()['id']}/actions", json={"action": "remove"})
    assert removed.status_code == 200 and removed.json()["status"] == "removed"
    assert user_client.get(url).status_code == 404


@pytest.fixture
def moderator(app, new_client):
    from tests.test_safety_cases import make_role

    mod = new_client()
    signup(mod, "mod@example.com")
    make_role(app, "mod@example.com", "moderator")
    return mod


def test_without_confirmation_a_match_is_reported_automatically_once(app, client, settings):
    from tests.fake_ncmec import FakeCyberTipline

    fake = FakeCyberTipline().start()
    try:
        settings.ncmec_base_url, settings.ncmec_username, settings.ncmec_password = \
            fake.base_url, fake.username, fake.password
        settings.ncmec_reporter_first_name, settings.ncmec_reporter_last_name = "Tess", "Safety"
        settings.ncmec_require_confirmation = False
        import_bank(app, "bank", "pdq", [pdq_hex(photo())[0]])
        signup(client, "eve@example.com")
        assert upload_image(client, encode(photo())).status_code == 422
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cases(app, status="reported"):
            time.sleep(0.05)
        [case] = cases(app)
        assert case.status == "reported" and case.ncmec_report_id
        assert fake.reports[case.ncmec_report_id].state == "finished"
        submitted = fake.operations().count("submit")
        # Safe to run twice: a reported case is not sent again.
        services = app.state.services
        assert report_case_automatically(services.db, services.safety.quarantine, settings, case.id) is None
        assert fake.operations().count("submit") == submitted == 1
    finally:
        fake.stop()
    with app.state.services.db.transaction() as s:
        [audit] = s.scalars(select(CaseAction).where(CaseAction.action == "report")).all()
    assert audit.actor_id is None and "automatic" in audit.note and "NCMEC report" in audit.result


def test_with_confirmation_on_nothing_is_sent_until_a_moderator_reports(app, client, settings):
    from tests.fake_ncmec import FakeCyberTipline

    fake = FakeCyberTipline().start()
    try:
        settings.ncmec_base_url, settings.ncmec_username, settings.ncmec_password = \
            fake.base_url, fake.username, fake.password
        import_bank(app, "bank", "pdq", [pdq_hex(photo())[0]])
        signup(client, "eve@example.com")
        assert upload_image(client, encode(photo())).status_code == 422
        # Synchronous, no fixed wait: drain the background tasks, so a (wrongly) queued report has run by now.
        assert app.state.services.tasks.wait_idle()
        [case] = cases(app)
        assert case.status == "open" and fake.operations().count("submit") == 0
    finally:
        fake.stop()


def test_models_add_checks_the_sha256_banks(cli_env: Path):
    runner = CliRunner()
    created = runner.invoke(cli, ["admin", "create-user", "root@example.com", "--admin",
                                  "--password", "Sturdy-passphrase-42"])
    assert created.exit_code == 0 and "Created admin root@example.com" in created.output, created.output
    lora = synthetic.build_tiny_lora("sd15", cli_env / "style.safetensors", seed=11)
    other = synthetic.build_tiny_lora("sd15", cli_env / "other.safetensors", seed=12)
    bank_file = cli_env / "files.txt"
    bank_file.write_text(hashlib.sha256(lora.read_bytes()).hexdigest() + "\n")
    imported = runner.invoke(cli, ["safety", "import-bank", "files", str(bank_file), "--type", "sha256"])
    assert imported.exit_code == 0 and "1 added" in imported.output, imported.output

    refused = runner.invoke(cli, ["models", "add", str(lora)])
    assert refused.exit_code == 1 and "This file cannot be accepted." in refused.output
    assert "bank" not in refused.output.lower()
    added = runner.invoke(cli, ["models", "add", str(other)])
    assert added.exit_code == 0 and "Added" in added.output and "other.safetensors" in added.output, added.output

    from imagen.accounts.models import User
    from imagen.kit.config import get_settings
    from imagen.kit.db import Database

    db = Database(get_settings().resolved_database_url)
    try:
        with db.transaction() as s:
            # The refused file was not stored (the demo LoRA is the first admin's, published when it was created).
            assert sorted(s.scalars(select(Asset.filename))) == ["imagen-demo-striped.safetensors", "other.safetensors"]
            [case] = s.scalars(select(SafetyCase)).all()
            assert case.kind == "hash_match" and case.evidence[0].source == "model_upload"
            # The operator's own command: a case, but the admin account it is filed under is not suspended.
            assert s.scalars(select(User)).one().suspended_at is None
    finally:
        db.dispose()


def test_evidence_records_the_uploads_own_address_and_the_report_carries_it(app, client, settings):
    from fastapi.testclient import TestClient

    import_bank(app, "bank", "pdq", [pdq_hex(photo())[0]])
    home = TestClient(app, base_url="https://testserver", client=("198.51.100.7", 4000))  # `client` runs the app
    signup(home, "eve@example.com")
    # The same session, later, from another address: the upload's address is the one preserved.
    travel = TestClient(app, base_url="https://testserver", client=("203.0.113.9", 5000),
                        cookies=dict(home.cookies), headers=dict(home.headers))
    assert upload_image(travel, encode(photo()), "beach.png").status_code == 422
    [case] = cases(app)
    [ev] = case.evidence
    assert ev.ip_address == "203.0.113.9" and ev.event_time is not None
    from imagen.safety.service import case_service

    report = case_service.build_report(case, settings, app.state.services.safety.quarantine)
    [event] = report.reported_person.ip_events
    assert (event.ip, event.event) == ("203.0.113.9", "Upload")


def test_scheduled_pass_retries_an_automatic_report_that_failed(app, client, settings):
    import socket
    from datetime import timedelta

    from imagen.kit.tasks import run_task
    from tests.fake_ncmec import FakeCyberTipline

    with socket.socket() as closed:  # a port nothing listens on: NCMEC "down" when the match happens
        closed.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{closed.getsockname()[1]}"
    fake = FakeCyberTipline().start()
    try:
        settings.ncmec_base_url, settings.ncmec_username, settings.ncmec_password = down, fake.username, fake.password
        settings.ncmec_reporter_first_name, settings.ncmec_reporter_last_name = "Tess", "Safety"
        settings.ncmec_require_confirmation, settings.ncmec_timeout_seconds = False, 2
        import_bank(app, "bank", "pdq", [pdq_hex(photo())[0]])
        signup(client, "eve@example.com")
        assert upload_image(client, encode(photo())).status_code == 422
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cases(app, status="report_failed"):
            time.sleep(0.05)
        [case] = cases(app)
        assert case.status == "report_failed" and case.ncmec_error and not case.ncmec_report_id

        settings.ncmec_base_url = fake.base_url  # NCMEC is back
        services = app.state.services
        assert run_task(services, "safety.retry_reports") == []  # failed just now: not yet due again
        with services.db.transaction() as s:
            s.get(SafetyCase, case.id).ncmec_retry_at -= timedelta(hours=2)  # the back-off is over
        assert len(run_task(services, "safety.retry_reports")) == 1
        assert run_task(services, "safety.retry_reports") == []  # reported once
        [case] = cases(app)
        assert case.status == "reported" and fake.reports[case.ncmec_report_id].state == "finished"
        assert fake.operations().count("submit") == 1
    finally:
        fake.stop()


def test_preserve_extends_the_hold_of_the_case_and_its_evidence(app, client, moderator, settings):
    from datetime import timedelta

    from imagen.kit.db import utcnow
    from imagen.privacy.retention import retention_service
    from imagen.safety.models import Evidence

    import_bank(app, "bank", "pdq", [pdq_hex(photo())[0]])
    signup(client, "eve@example.com")
    assert upload_image(client, encode(photo())).status_code == 422
    [case] = cases(app)
    url = f"/api/v1/admin/cases/{case.id}/actions"
    missing = moderator.post(url, json={"action": "preserve"})
    assert missing.status_code == 422 and "days" in missing.text
    r = moderator.post(url, json={"action": "preserve", "days": 500, "note": "preservation request 2703(f)"})
    assert r.status_code == 200 and r.json()["actions"][-1]["result"].startswith("held until")
    shorter = moderator.post(url, json={"action": "preserve", "days": 10})  # never shortens the hold
    assert shorter.json()["hold_until"] == r.json()["hold_until"]
    key = case.evidence[0].quarantine_blob_key

    def purge_at(days: int) -> None:
        with app.state.services.db.transaction() as s:
            retention_service.run(s, settings=settings, blobs=app.state.services.blobs,
                                  now=utcnow() + timedelta(days=days))

    purge_at(400)  # past the usual year, within the extension: case, evidence, audit and file all kept
    [kept] = cases(app)
    assert len(kept.evidence) == 1 and len(kept.actions) == 4 and app.state.services.blobs.exists(key)
    purge_at(501)
    assert cases(app) == [] and not app.state.services.blobs.exists(key)
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Evidence)) == 0
        assert s.scalar(select(func.count()).select_from(CaseAction)) == 0
