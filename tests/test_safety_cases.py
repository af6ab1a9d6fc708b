"""Trust and safety, end to end (issue 5): a hash match blocks, quarantines, preserves, suspends and opens a case;
generated outputs are checked before they are stored; evidence outlives erasure and ends with its hold; the
moderation queue, its actions and audit; user reports; repeated prompt refusals; reporting to (a fake) NCMEC.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFilter
from sqlalchemy import func, select

from imagen.accounts.models import User
from imagen.assets.images import clean_png
from imagen.assets.models import Asset
from imagen.generation.models import Generation, Output
from imagen.inference import synthetic
from imagen.kit.db import utcnow
from imagen.privacy.erasure import erase_user
from imagen.privacy.residue import residue, scan
from imagen.privacy.retention import retention_service
from imagen.safety.banks import hash_bank_service
from imagen.safety.matcher import pdq_hex
from imagen.safety.models import CaseAction, Evidence, PromptRefusalRecord, SafetyCase
from tests.conftest import PASSWORD, TINY, signup, wait_for


def photo(seed: int = 1) -> Image.Image:
    """A natural-looking stand-in photo: sky and ground gradients, a sun, hills, a house, a little blur."""
    image = Image.new("RGB", (256, 256))
    px = image.load()
    for y in range(256):
        for x in range(256):
            px[x, y] = ((40 + y // 3 + seed * 7) % 256, (90 + y // 2) % 256, 200 - y // 2) if y < 150 else \
                (60 + (x * seed) % 40, 110 + (y - 150), 40 + x // 8)
    draw = ImageDraw.Draw(image)
    draw.ellipse((170 + seed, 20, 220 + seed, 70), fill=(250, 220, 90))
    draw.polygon([(0, 160), (70 + 10 * seed, 90), (150, 160)], fill=(70, 100 + seed * 5, 60))
    draw.rectangle((120, 140, 190, 200), fill=(180, 60, 50))
    draw.polygon([(112, 140), (155, 105), (198, 140)], fill=(90, 40, 30))
    draw.rectangle((145, 165, 165, 200), fill=(60, 40, 20))
    return image.filter(ImageFilter.GaussianBlur(1.2))


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def import_bank(app, name: str, hash_type: str, values: list[str]) -> None:
    with app.state.services.db.transaction() as s:
        hash_bank_service.import_lines(s, name=name, hash_type=hash_type, lines=values)
    app.state.services.safety.matcher.refresh(force=True)


def upload_image(client: TestClient, data: bytes, name: str = "holiday.png", content_type: str = "image/png"):
    return client.post("/api/v1/assets", data={"kind": "reference_image"}, files={"file": (name, data, content_type)})


def cases(app, **where) -> list[SafetyCase]:
    with app.state.services.db.transaction() as s:
        query = select(SafetyCase).order_by(SafetyCase.created_at)
        for key, value in where.items():
            query = query.where(getattr(SafetyCase, key) == value)
        found = list(s.scalars(query))
        for case in found:
            _ = case.evidence, case.actions
        return found


def make_role(app, email: str, role: str) -> None:
    with app.state.services.db.transaction() as s:
        s.scalars(select(User).where(User.email == email)).one().role = role


@pytest.fixture
def moderator(app, new_client) -> TestClient:
    mod = new_client()
    signup(mod, "mod@example.com")
    make_role(app, "mod@example.com", "moderator")
    return mod


def test_matching_upload_is_blocked_quarantined_preserved_and_suspends(app, client, new_client, settings):
    original = photo()
    value, quality = pdq_hex(original)
    assert quality >= 50
    import_bank(app, "test-bank", "pdq", [value])

    signup(client, "eve@example.com")
    r = upload_image(client, encode(original), "beach.png")
    assert r.status_code == 422 and r.json() == {"detail": "This file cannot be accepted."}, r.text
    assert "bank" not in r.text.lower()
    # The account is suspended at once: its session no longer works, nor does a fresh login.
    assert client.get("/api/v1/assets").status_code == 401
    again = new_client().post("/api/v1/auth/login", json={"email": "eve@example.com",
                                                          "password": "a-Long-enough-passphrase-7"})
    assert again.status_code in (401, 403), again.text

    [case] = cases(app)
    assert (case.kind, case.status, case.user_email) == ("hash_match", "open", "eve@example.com")
    [ev] = case.evidence
    assert ev.user_email == "eve@example.com" and ev.ip_address == "testclient" and ev.event_time is not None
    assert ev.filename == "beach.png" and ev.match["hash_type"] == "pdq" and ev.match["bank_name"] == "test-bank"
    assert ev.sha256 and ev.md5 and ev.quarantine_blob_key
    stored = app.state.services.blobs.get(ev.quarantine_blob_key)  # encrypted at rest, decrypted only by the quarantine
    assert encode(original) not in stored and b"PNG" not in stored[:16]
    assert app.state.services.safety.quarantine.get(ev.quarantine_blob_key) == encode(original)
    with app.state.services.db.transaction() as s:
        assert s.scalars(select(User).where(User.email == "eve@example.com")).one().suspended_at is not None
        assert s.scalar(select(func.count()).select_from(Evidence)) == 1
    # Nothing stored for delivery.
    assert not any(k.startswith("assets/") for k in app.state.services.blobs.keys(prefix=""))
    assert (settings.data_dir / "quarantine.key").exists()

    # A resized, JPEG re-encoded copy is caught too; an unrelated image passes.
    other = new_client()
    signup(other, "mallory@example.com")
    assert upload_image(other, encode(photo(5).resize((200, 200)), "PNG"), "ok.png").status_code == 201
    copy = encode(original.resize((180, 180), Image.Resampling.LANCZOS), "JPEG", quality=70)
    r = upload_image(other, copy, "copy.jpg", "image/jpeg")
    assert r.status_code == 422 and r.json()["detail"] == "This file cannot be accepted."
    assert len(cases(app, kind="hash_match")) == 2


def test_model_file_in_a_sha256_bank_is_refused(app, user_client, tmp_path: Path):
    lora = synthetic.build_tiny_lora("sd15", tmp_path / "lora.safetensors", seed=5)
    import_bank(app, "files", "sha256", [hashlib.sha256(lora.read_bytes()).hexdigest()])
    with lora.open("rb") as f:
        r = user_client.post("/api/v1/assets", data={"kind": "lora"},
                             files={"file": ("style.safetensors", f, "application/octet-stream")})
    assert r.status_code == 422 and r.json()["detail"] == "This file cannot be accepted."
    [case] = cases(app)
    assert case.evidence[0].source == "model_upload" and case.evidence[0].match["hash_type"] == "sha256"


def test_matching_output_is_never_served_and_opens_a_case(app, user_client):
    params = {"prompt": "a lighthouse", **TINY}
    first = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": params}).json()
    done = wait_for(user_client, first["id"])
    assert done["status"] == "succeeded"
    png = user_client.get(done["outputs"][0]["url"]).content
    with Image.open(io.BytesIO(png)) as image:
        value, quality = pdq_hex(image)
    if quality >= 50:  # the perceptual hash, as for uploads
        import_bank(app, "outputs", "pdq", [value])
    else:  # a flat 64x64 tiny output may be below PDQ's quality floor: an exact bank covers the same bytes
        import_bank(app, "outputs-exact", "sha256", [hashlib.sha256(png).hexdigest()])

    second = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": params}).json()
    deadline = time.monotonic() + 120  # the account is suspended on the match: read the job back directly
    while True:
        with app.state.services.db.transaction() as s:
            gen = s.get(Generation, second["id"])
            status, error = gen.status, gen.error
            outputs = list(s.scalars(select(Output.id).where(Output.generation_id == second["id"])))
        if status not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == "failed" and error == "This generation could not be completed."
    assert outputs == [] and not any(second["id"] in k for k in app.state.services.blobs.keys("outputs/"))
    [case] = cases(app)
    assert case.kind == "hash_match" and case.subject_id == second["id"]
    [ev] = case.evidence
    assert ev.source == "output" and ev.prompt == "a lighthouse" and ev.generation_id == second["id"]
    assert app.state.services.safety.quarantine.get(ev.quarantine_blob_key) == png
    assert ev.match["hash_type"] == ("pdq" if quality >= 50 else "sha256")
    assert user_client.get("/api/v1/generations").status_code == 401  # suspended


def refused_like_an_upload(app, r, email: str, data: bytes, hash_type: str, subject: str) -> None:
    """One refusal, checked as an upload hit is: the neutral 422, the bytes as sent in quarantine, the evidence,
    the case, the suspension."""
    assert r.status_code == 422 and r.json() == {"detail": "This file cannot be accepted."}, (subject, r.text)
    [case] = cases(app, user_email=email)
    assert (case.kind, case.status, case.subject_type) == ("hash_match", "open", "reference_image")
    assert [a.action for a in case.actions] == ["open", "suspend"]
    [ev] = case.evidence
    assert ev.source == "upload" and ev.filename == subject and ev.ip_address == "testclient"
    assert (ev.match["hash_type"], ev.match["bank_name"]) == (hash_type, f"{hash_type}-bank")
    assert (ev.md5, ev.sha256) == (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())
    # What was sent, not the re-encoding.
    assert app.state.services.safety.quarantine.get(ev.quarantine_blob_key) == data
    with app.state.services.db.transaction() as s:
        assert s.scalars(select(User).where(User.email == email)).one().suspended_at is not None


@pytest.mark.parametrize("hash_type", ["md5", "sha256"])
def test_inline_inputs_are_hashed_as_received_like_uploads(app, client, new_client, hash_type):
    """An exact-hash bank lists the bytes that circulate; IMAGEN re-encodes images, so the check must see the bytes
    as they arrived, whether uploaded as an asset or sent inline as an img2img/inpaint input."""
    data = encode(photo(), "JPEG", quality=90)  # a JPEG as a camera writes it
    assert clean_png(data) != data  # the re-encoded PNG has other hashes: only the bytes as sent can match
    digest = hashlib.md5(data).hexdigest() if hash_type == "md5" else hashlib.sha256(data).hexdigest()
    import_bank(app, f"{hash_type}-bank", hash_type, [digest])
    sent = base64.b64encode(data).decode()
    clean = base64.b64encode(encode(photo(4))).decode()  # an ordinary image, for the other field

    signup(client, "uploader@example.com")
    r = upload_image(client, data, "holiday.jpg", "image/jpeg")
    refused_like_an_upload(app, r, "uploader@example.com", data, hash_type, "holiday.jpg")

    img2img = new_client()
    signup(img2img, "img2img@example.com")
    r = img2img.post("/api/v1/generations", json={"workflow": "img2img", "params": {
        "prompt": "a house", "init_image": sent, **TINY}})
    refused_like_an_upload(app, r, "img2img@example.com", data, hash_type, "init_image")

    inpaint = new_client()
    signup(inpaint, "inpaint@example.com")
    r = inpaint.post("/api/v1/generations", json={"workflow": "inpaint", "params": {
        "prompt": "a house", "init_image": clean, "mask_image": f"data:image/jpeg;base64,{sent}", **TINY}})
    refused_like_an_upload(app, r, "inpaint@example.com", data, hash_type, "mask_image")

    # Nothing half-stored: no job, no asset, and the init_image written before the mask was refused is gone.
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Generation)) == 0
        assert s.scalar(select(func.count()).select_from(Asset)) == 0
    assert list(app.state.services.blobs.keys("inputs/")) == [] and list(app.state.services.blobs.keys("assets/")) == []
    assert len(cases(app)) == 3


def test_output_evidence_carries_the_address_of_the_login_before_submit(app, client, runtime, monkeypatch):
    """A generated image has no request of its own in the worker: its evidence takes the address of the latest
    login before the job was submitted, not a later one (docs/safety.md, "On a hash match" 3)."""
    from fastapi.testclient import TestClient

    released, started = threading.Event(), threading.Event()
    real_run = runtime.run

    def run_when_released(spec, **kwargs):
        started.set()
        assert released.wait(60), "the test never released the job"
        result = real_run(spec, **kwargs)
        result.images[:] = [replace(image, png=encode(photo())) for image in result.images]
        return result

    monkeypatch.setattr(runtime, "run", run_when_released)
    import_bank(app, "outputs", "sha256", [hashlib.sha256(encode(photo())).hexdigest()])

    def browser(ip: str) -> TestClient:
        return TestClient(app, base_url="https://testserver", client=(ip, 4000))

    signup(browser("198.51.100.1"), "eve@example.com")  # signed up from one address
    office = browser("192.0.2.10")  # logged in again from another, and submitted from there
    login = office.post("/api/v1/auth/login", json={"email": "eve@example.com", "password": PASSWORD})
    assert login.status_code == 200, login.text
    office.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    gen_id = office.post("/api/v1/generations", json={"workflow": "txt2img", "params": {
        "prompt": "a lighthouse", **TINY}}).json()["id"]
    assert started.wait(60)
    later = browser("203.0.113.9").post("/api/v1/auth/login", json={"email": "eve@example.com",
                                                                      "password": PASSWORD})
    assert later.status_code == 200  # a login after the submit, while the job runs
    released.set()
    deadline = time.monotonic() + 120
    while not cases(app) and time.monotonic() < deadline:
        time.sleep(0.05)
    [case] = cases(app)
    [ev] = case.evidence
    assert (case.subject_id, ev.source, ev.match["hash_type"]) == (gen_id, "output", "sha256")
    assert ev.ip_address == "192.0.2.10"
    with app.state.services.db.transaction() as s:
        submitted = s.get(Generation, gen_id).created_at
    assert ev.event_time is not None and ev.event_time <= submitted


def test_evidence_survives_erasure_and_is_purged_when_the_hold_ends(app, client, settings):
    import_bank(app, "bank", "pdq", [pdq_hex(photo())[0]])
    user_id = signup(client, "eve@example.com")["account"]["id"]
    assert upload_image(client, encode(photo())).status_code == 422
    erase_user(app.state.services.db, app.state.services.blobs, app.state.services.executor, user_id, settings=settings)
    with app.state.services.db.transaction() as s:
        assert s.get(User, user_id) is None
    [case] = cases(app)
    assert case.user_id == user_id and case.evidence[0].user_email == "eve@example.com"
    findings = scan(app.state.services.db.engine, app.state.services.blobs, user_id=user_id, email="eve@example.com",
                    secret=settings.resolved_secret_key(), settings=settings)
    assert residue(findings) == [], [(f.where, f.needle) for f in residue(findings)]
    assert {f.where.split(".")[0] for f in findings if f.allowed} >= {"safety_cases", "safety_evidence"}

    key = case.evidence[0].quarantine_blob_key
    with app.state.services.db.transaction() as s:  # within the hold: kept
        retention_service.run(s, settings=settings, blobs=app.state.services.blobs, now=utcnow() + timedelta(days=300))
    assert len(cases(app)) == 1 and app.state.services.blobs.exists(key)
    with app.state.services.db.transaction() as s:
        purges = retention_service.run(s, settings=settings, blobs=app.state.services.blobs,
                                       now=utcnow() + timedelta(days=366))
    assert next(p for p in purges if p.category == "safety cases").count == 1
    assert cases(app) == [] and not app.state.services.blobs.exists(key)
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Evidence)) == 0


def test_cases_api_permissions_actions_audit_and_user_reports(app, user_client, moderator, new_client):
    gen = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {"prompt": "a cat", **TINY}})
    body = wait_for(user_client, gen.json()["id"])
    output = body["outputs"][0]
    r = user_client.post("/api/v1/reports", json={"output_id": output["id"], "reason": "this looks wrong"})
    assert r.status_code == 201, r.text
    assert user_client.get("/api/v1/admin/cases").status_code == 403

    listed = moderator.get("/api/v1/admin/cases")
    assert listed.status_code == 200
    [item] = listed.json()
    assert item["kind"] == "user_report" and item["status"] == "open" and item["user_email"] == "ada@example.com"
    detail = moderator.get(f"/api/v1/admin/cases/{item['id']}").json()
    assert detail["evidence"][0]["prompt"] == "a cat" and detail["actions"][0]["action"] == "open"

    act = lambda action, note="": moderator.post(  # noqa: E731
        f"/api/v1/admin/cases/{item['id']}/actions", json={"action": action, "note": note})
    assert act("suspend", "checking").json()["status"] == "suspended"
    assert user_client.get("/api/v1/generations").status_code == 401
    assert act("restore", "fine after all").json()["status"] == "restored"
    assert user_client.get("/api/v1/generations").status_code == 200
    removed = act("remove", "take it down").json()
    assert removed["status"] == "removed" and removed["evidence"][-1]["quarantined"]
    assert user_client.get(output["url"]).status_code == 404
    assert act("bogus").status_code == 422
    final = act("dismiss", "done").json()
    assert [a["action"] for a in final["actions"]] == ["open", "suspend", "restore", "remove", "dismiss"]
    assert all(a["actor_email"] == "mod@example.com" for a in final["actions"][1:])
    assert [a["note"] for a in final["actions"][1:]] == ["checking", "fine after all", "take it down", "done"]

    # Roles: only admins set them; a user made moderator can read the queue.
    other = new_client()
    other_id = signup(other, "bob@example.com")["account"]["id"]
    assert moderator.put(f"/api/v1/admin/users/{other_id}/role", json={"role": "moderator"}).status_code == 403
    make_role(app, "mod@example.com", "admin")
    assert moderator.put(f"/api/v1/admin/users/{other_id}/role", json={"role": "moderator"}).status_code == 200
    assert other.get("/api/v1/admin/cases").status_code == 200


def test_prompt_refusals_answer_422_and_repeated_ones_raise_a_flag(app, user_client, settings):
    bad = {"workflow": "txt2img", "params": {"prompt": "nude child", **TINY}}
    for _ in range(settings.prompt_refusals_flag):
        r = user_client.post("/api/v1/generations", json=bad)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "params", "prompt"]
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(PromptRefusalRecord)) == settings.prompt_refusals_flag
    [case] = cases(app, kind="prompt_flag")
    assert case.user_email == "ada@example.com" and case.evidence[0].prompt == "nude child"
    ok = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {"prompt": "a dog", **TINY}})
    assert ok.status_code == 202


def test_repeated_refusals_keep_one_open_flag_per_account(app, user_client, new_client, moderator, settings):
    """Crossing the threshold again (and again) adds no case while the account's flag is open; another account
    gets its own; once a moderator closes the flag, the next refusal may open a new one."""
    flag = settings.prompt_refusals_flag

    def refuse(client, times: int, prompt: str = "nude child") -> None:
        for _ in range(times):
            r = client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {"prompt": prompt, **TINY}})
            assert r.status_code == 422, r.text

    refuse(user_client, 2 * flag + 1)
    [first] = cases(app, kind="prompt_flag")
    assert first.user_email == "ada@example.com" and len(first.evidence) == flag  # the refusals that raised it
    other = new_client()
    signup(other, "bob@example.com")
    refuse(other, flag)
    assert sorted(c.user_email for c in cases(app, kind="prompt_flag", status="open")) == \
        ["ada@example.com", "bob@example.com"]

    done = moderator.post(f"/api/v1/admin/cases/{first.id}/actions", json={"action": "dismiss"})
    assert done.status_code == 200, done.text
    refuse(user_client, 1, "loli hentai")
    ada = cases(app, kind="prompt_flag", user_email="ada@example.com")
    assert [c.status for c in ada] == ["dismissed", "open"]
    assert "loli hentai" in [e.prompt for e in ada[1].evidence]
    refuse(user_client, flag)
    assert len(cases(app, kind="prompt_flag", user_email="ada@example.com")) == 2


def test_report_action_submits_to_ncmec(app, client, moderator, settings):
    from tests.fake_ncmec import FakeCyberTipline

    fake = FakeCyberTipline().start()
    try:
        settings.ncmec_base_url, settings.ncmec_username, settings.ncmec_password = \
            fake.base_url, fake.username, fake.password
        settings.ncmec_reporter_first_name, settings.ncmec_reporter_last_name = "Tess", "Safety"
        import_bank(app, "bank", "pdq", [pdq_hex(photo())[0]])
        signup(client, "eve@example.com")
        assert upload_image(client, encode(photo())).status_code == 422
        [case] = cases(app)
        r = moderator.post(f"/api/v1/admin/cases/{case.id}/actions", json={"action": "report", "note": "CSAM"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "reported" and body["ncmec_report_id"], body
        assert fake.operations()[-3:] == ["upload", "fileinfo", "finish"]
        assert fake.reports[body["ncmec_report_id"]].state == "finished"
        again = moderator.post(f"/api/v1/admin/cases/{case.id}/actions", json={"action": "report"})
        assert again.status_code == 409
    finally:
        fake.stop()
    with app.state.services.db.transaction() as s:
        audit = s.scalars(select(CaseAction).where(CaseAction.action == "report")).all()
    assert len(audit) == 1 and "NCMEC report" in audit[0].result
