"""The safety checks called directly, without the app (docs/safety.md): what an upload, an inline input, a model
file, a prompt and a generation's outputs go through, what a match leaves behind (quarantined bytes, a case with
its evidence written after the request's rollback, a suspension), and the neutral answers. Written from the
mutation run of imagen/safety/checks.py (docs/privacy.md, "Mutation testing"); the API paths are covered by
test_safety_enforcement.py and test_safety_cases.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from datetime import date

import pytest
from PIL import Image
from sqlalchemy import select

from imagen.accounts.models import User
from imagen.kit.db import Database
from imagen.kit.errors import Unprocessable
from imagen.kit.http import REQUEST_IP
from imagen.safety import checks
from imagen.safety.banks import hash_bank_service
from imagen.safety.checks import (
    NEUTRAL_UPLOAD,
    Blocked,
    build_safety,
    screen_model_file,
    screen_outputs,
    screen_prompt,
    screen_reference_image,
)
from imagen.safety.models import Evidence, PromptRefusalRecord, SafetyCase
from imagen.storage.local import LocalBlobStore


@dataclasses.dataclass(frozen=True)
class Image_:
    png: bytes
    seed: int


@dataclasses.dataclass
class Gen:
    id: str
    user_id: str
    created_at: object
    params: dict


@pytest.fixture
def ctx(db, settings, tmp_path):
    context = build_safety(db, LocalBlobStore(tmp_path / "blobs"), settings)
    context.matcher.reload_seconds = 0
    return context


def png_of(color: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, fmt)
    return buf.getvalue()


def add_user(db: Database) -> str:
    with db.transaction() as s:
        user = User(email="ada@example.com", password_hash="!", date_of_birth=date(1990, 1, 1), country="GB")
        s.add(user)
        s.flush()
        return user.id


def bank(db: Database, hash_type: str, data: bytes) -> None:
    digest = hashlib.sha256(data) if hash_type == "sha256" else hashlib.md5(data)
    with db.transaction() as s:
        hash_bank_service.import_lines(s, name=f"{hash_type}-bank", hash_type=hash_type, lines=[digest.hexdigest()])


def refused_upload(ctx, db: Database, **kwargs) -> Blocked:
    """Screen in a request-like transaction (it has read the account), which the refusal rolls back."""
    with pytest.raises(Blocked) as refused, db.transaction() as s:
        s.get(User, kwargs["user_id"])
        screen_reference_image(ctx, s, **kwargs)
    return refused.value


def test_clean_files_pass_unchanged(db, ctx):
    uid = add_user(db)
    original, png = png_of((10, 20, 30), "BMP"), png_of((10, 20, 30))
    with db.transaction() as s:
        assert screen_reference_image(ctx, s, user_id=uid, original=original, png=png, filename="a.bmp") == png
        assert screen_model_file(ctx, s, user_id=uid, sha256="0" * 64, path=None, filename="m.safetensors") is None
        assert screen_prompt(ctx, s, user_id=uid, prompt="a lighthouse at dawn", negative_prompt="") is None
        images = [Image_(png, 1)]
        assert screen_outputs(ctx, s, gen=Gen("g" * 32, uid, None, {}), images=images) == images


@pytest.mark.parametrize("hash_type", ["sha256", "md5"])
def test_a_match_on_the_bytes_as_received_is_quarantined_recorded_and_suspends(db, ctx, hash_type):
    uid = add_user(db)
    original, png = png_of((200, 0, 0), "BMP"), png_of((200, 0, 0))
    bank(db, hash_type, original)
    token = REQUEST_IP.set("203.0.113.7")
    try:
        refused = refused_upload(ctx, db, user_id=uid, original=original, png=png, filename="x" * 400 + ".bmp")
    finally:
        REQUEST_IP.reset(token)
    assert (refused.status_code, refused.detail) == (422, NEUTRAL_UPLOAD) == (422, "This file cannot be accepted.")
    with db.transaction() as s:  # written after the rollback, in a transaction of its own
        (case,) = s.scalars(select(SafetyCase)).all()
        (evidence,) = s.scalars(select(Evidence)).all()
        assert (case.kind, case.user_id, case.subject_type, case.subject_id) == (
            "hash_match", uid, "reference_image", None)
        assert (evidence.source, evidence.filename, evidence.content_type, evidence.ip_address, evidence.pdq) == (
            "upload", ("x" * 400 + ".bmp")[:300], "application/octet-stream", "203.0.113.7", None)
        assert evidence.sha256 == hashlib.sha256(original).hexdigest()
        assert evidence.match["hash_type"] == hash_type
        assert ctx.quarantine.get(evidence.quarantine_blob_key) == original  # the file as received, encrypted
        assert s.get(User, uid).suspended_at is not None


def test_the_reencoded_image_is_checked_too_and_only_when_it_differs(db, ctx, monkeypatch):
    uid = add_user(db)
    original, png = png_of((0, 200, 0), "BMP"), png_of((0, 200, 0))
    bank(db, "sha256", png)
    refused_upload(ctx, db, user_id=uid, original=original, png=png, filename="b.bmp")
    with db.transaction() as s:
        (evidence,) = s.scalars(select(Evidence)).all()
        assert ctx.quarantine.get(evidence.quarantine_blob_key) == original
    seen = []
    real = ctx.matcher.match_image
    monkeypatch.setattr(ctx.matcher, "match_image", lambda data: seen.append(data) or real(data))
    clean = png_of((1, 2, 3))
    with db.transaction() as s:
        screen_reference_image(ctx, s, user_id=uid, original=clean, png=clean, filename="c.png")
    assert seen == [clean]  # the same bytes are not matched twice


def test_a_model_file_match_blocks_and_the_operators_own_is_not_suspended(db, ctx, tmp_path):
    uid = add_user(db)
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"weights")
    bank(db, "sha256", b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    with pytest.raises(Blocked), db.transaction() as s:
        s.get(User, uid)  # the request's own work, which the refusal rolls back
        screen_model_file(ctx, s, user_id=uid, sha256=sha, path=weights, filename="m" * 400, suspend=False)
    with db.transaction() as s:
        (case,) = s.scalars(select(SafetyCase)).all()
        (evidence,) = s.scalars(select(Evidence)).all()
        assert (case.subject_type, evidence.source, evidence.filename) == ("model_file", "model_upload", "m" * 300)
        assert ctx.quarantine.get(evidence.quarantine_blob_key) == b"weights"
        assert s.get(User, uid).suspended_at is None
    with pytest.raises(Blocked), db.transaction() as s:
        s.get(User, uid)
        screen_model_file(ctx, s, user_id=uid, sha256=sha, path=weights, filename="m")
    with db.transaction() as s:
        assert s.get(User, uid).suspended_at is not None


def test_a_refused_prompt_names_its_field_and_category_and_is_kept(db, ctx):
    uid = add_user(db)
    with pytest.raises(Unprocessable) as refused, db.transaction() as s:
        s.get(User, uid)
        screen_prompt(ctx, s, user_id=uid, prompt="nude child", negative_prompt="blurry")
    (problem,) = refused.value.detail
    with db.transaction() as s:
        (record,) = s.scalars(select(PromptRefusalRecord)).all()
    assert record.category.lower() in problem["msg"].lower()
    assert (problem["loc"], record.field) == (["body", "params", "prompt"], "prompt")
    assert (record.user_id, record.prompt, record.negative_prompt) == (uid, "nude child", "blurry")


def test_a_refusal_message_without_its_category_gets_it_added(db, ctx, monkeypatch):
    from imagen.safety import prompt_rules

    uid = add_user(db)
    refusal = prompt_rules.PromptRefusal(rule_id="r1", category="Weapons", field="prompt", message="Not allowed")

    class Rules:
        def check(self, prompt, negative_prompt):
            return refusal

    monkeypatch.setattr(checks, "prompt_rules", lambda settings: Rules())
    with pytest.raises(Unprocessable) as refused, db.transaction() as s:
        screen_prompt(ctx, s, user_id=uid, prompt="x", negative_prompt="")
    assert refused.value.detail[0]["msg"] == "Not allowed (category: Weapons)"
    refusal = dataclasses.replace(refusal, message="Weapons are not allowed")
    with pytest.raises(Unprocessable) as refused, db.transaction() as s:
        screen_prompt(ctx, s, user_id=uid, prompt="x", negative_prompt="")
    assert refused.value.detail[0]["msg"] == "Weapons are not allowed"


def test_a_matching_output_is_not_stored_and_its_case_is_in_the_workers_transaction(db, ctx):
    uid = add_user(db)
    bad, fine = png_of((0, 0, 200)), png_of((9, 9, 9))
    bank(db, "sha256", bad)
    from imagen.kit.db import utcnow

    gen = Gen("g" * 32, uid, utcnow(), {"prompt": "p", "negative_prompt": "n"})
    with db.transaction() as s:
        assert screen_outputs(ctx, s, gen=gen, images=[Image_(fine, 1), Image_(bad, 7)]) is None
    with db.transaction() as s:
        (case,) = s.scalars(select(SafetyCase)).all()
        (evidence,) = s.scalars(select(Evidence)).all()
        assert (case.subject_type, case.subject_id) == ("generation", gen.id)
        assert (evidence.source, evidence.generation_id, evidence.filename, evidence.content_type) == (
            "output", gen.id, f"{gen.id}-7.png", "image/png")
        assert (evidence.prompt, evidence.negative_prompt) == ("p", "n")
        assert ctx.quarantine.get(evidence.quarantine_blob_key) == bad


def test_the_nsfw_policy_blurs_or_blocks_what_is_stored(db, ctx, monkeypatch):
    uid = add_user(db)
    png = png_of((50, 60, 70))
    blurred = png_of((55, 55, 55))
    decisions = {"image": blurred}
    monkeypatch.setattr(checks, "_nsfw", lambda data, safety, scores=None: decisions["image"])
    with db.transaction() as s:
        assert screen_reference_image(ctx, s, user_id=uid, original=png, png=png, filename="a.png") == blurred
        (kept,) = screen_outputs(ctx, s, gen=Gen("g" * 32, uid, None, {}), images=[Image_(png, 3)])
        assert (kept.png, kept.seed) == (blurred, 3)
        decisions["image"] = png
        (same,) = screen_outputs(ctx, s, gen=Gen("g" * 32, uid, None, {}), images=[original := Image_(png, 3)])
        assert same is original
    decisions["image"] = None
    with pytest.raises(Blocked), db.transaction() as s:
        screen_reference_image(ctx, s, user_id=uid, original=png, png=png, filename="a.png")
    with db.transaction() as s:
        assert screen_outputs(ctx, s, gen=Gen("g" * 32, uid, None, {}), images=[Image_(png, 3)]) is None
        assert s.scalars(select(SafetyCase)).all() == []  # the NSFW policy opens no case


# --- from the survivors of the mutation run ---


def photo(seed: int = 3, size: int = 128) -> bytes:
    """An ordinary-looking picture (gradient under soft shapes), good enough for a PDQ hash."""
    import numpy as np
    from PIL import ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    t = (np.cos(seed) * x + np.sin(seed) * y)[..., None]
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = Image.fromarray((c0 * (1 - t) + c1 * t).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(size // 10, size // 2, 2))
        draw.ellipse((x0, y0, x0 + w, y0 + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    buf = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(1.5)).save(buf, "PNG")
    return buf.getvalue()


def pdq_bank(db: Database, data: bytes) -> str:
    from imagen.safety.matcher import pdq_hex

    value = pdq_hex(Image.open(io.BytesIO(data)))[0]
    with db.transaction() as s:
        hash_bank_service.import_lines(s, name="pdq-bank", hash_type="pdq", lines=[value])
    return value


def test_one_encrypted_copy_named_by_its_evidence_and_the_pdq_value_kept(db, ctx):
    from imagen.safety.quarantine import PREFIX, quarantine_key

    uid = add_user(db)
    image = photo()
    value = pdq_bank(db, image)
    refused_upload(ctx, db, user_id=uid, original=image, png=image, filename="p.png")
    with db.transaction() as s:
        (evidence,) = s.scalars(select(Evidence)).all()
        assert evidence.quarantine_blob_key == quarantine_key(evidence.id) and evidence.pdq == value
    assert list(ctx.quarantine.blobs.keys(PREFIX)) == [quarantine_key(evidence.id)]


def test_an_output_case_names_the_account_its_pdq_and_the_login_it_came_from(db, ctx):
    from datetime import timedelta

    from imagen.accounts.models import SecurityEvent
    from imagen.kit.db import utcnow

    uid = add_user(db)
    submitted = utcnow() - timedelta(hours=2)
    with db.transaction() as s:
        s.add(SecurityEvent(user_id=uid, kind="login", ip_address="198.51.100.1",
                            created_at=submitted - timedelta(hours=1)))
        s.add(SecurityEvent(user_id=uid, kind="login", ip_address="198.51.100.2",
                            created_at=submitted + timedelta(hours=1)))
    image = photo(4)
    value = pdq_bank(db, image)
    gen = Gen("g" * 32, uid, submitted, {"prompt": "p"})
    with db.transaction() as s:
        assert screen_outputs(ctx, s, gen=gen, images=[Image_(image, 1)]) is None
    with db.transaction() as s:
        (case,) = s.scalars(select(SafetyCase)).all()
        (evidence,) = s.scalars(select(Evidence)).all()
        assert (case.user_id, evidence.user_id, evidence.pdq) == (uid, uid, value)
        assert evidence.ip_address == "198.51.100.1"  # the login before the submit, not a later one


def test_exact_matches_record_no_pdq_and_model_files_their_type(db, ctx, tmp_path):
    uid = add_user(db)
    png = png_of((3, 3, 3))
    bank(db, "sha256", png)
    refused_upload(ctx, db, user_id=uid, original=png, png=png, filename="a.png")
    with db.transaction() as s:  # an output's case is written in the worker's own transaction
        assert screen_outputs(ctx, s, gen=Gen("g" * 32, uid, None, {}), images=[Image_(png, 1)]) is None
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(png)
    with pytest.raises(Blocked), db.transaction() as s:
        s.get(User, uid)
        screen_model_file(ctx, s, user_id=uid, sha256=hashlib.sha256(png).hexdigest(), path=weights, filename="w")
    with db.transaction() as s:
        evidence = s.scalars(select(Evidence)).all()
        assert [e.pdq for e in evidence] == [None] * len(evidence) and len(evidence) == 3
        assert {e.source: e.content_type for e in evidence}["model_upload"] == "application/octet-stream"


def configured(db, tmp_path, settings, **values):
    context = build_safety(db, LocalBlobStore(tmp_path / "blobs2"), settings.model_copy(update=values))
    context.matcher.reload_seconds = 0
    return context


def test_the_operators_nsfw_policy_is_the_one_applied(db, settings, tmp_path, monkeypatch):
    from imagen.safety import nsfw

    label = sorted(nsfw.LABELS)[0]
    seen = []

    def classify(self, png_bytes):
        seen.append(png_bytes)
        return [nsfw.Detection(label, 0.9, (2, 2, 8, 8))]

    monkeypatch.setattr(nsfw.NsfwClassifier, "classify", classify)
    uid = add_user(db)
    png = photo(size=32)  # not one flat colour, which a blur would leave as it is
    ctx = configured(db, tmp_path, settings, nsfw_policy=f'{{"{label}": "blur"}}', nsfw_blur_mode="image")
    with db.transaction() as s:
        blurred = screen_reference_image(ctx, s, user_id=uid, original=png, png=png, filename="a.png")
        scores: list[float] = []
        (kept,) = screen_outputs(ctx, s, gen=Gen("g" * 32, uid, None, {}), images=[Image_(png, 5)],
                                 nsfw_scores=scores)
    assert seen == [png, png] and blurred != png and kept.png == blurred
    assert scores == [0.9]  # the detector's score, for the consented insights record
    assert Image.open(io.BytesIO(blurred)).size == (32, 32)
    ctx = configured(db, tmp_path, settings, nsfw_policy=f'{{"{label}": "block"}}')
    with pytest.raises(Blocked), db.transaction() as s:
        screen_reference_image(ctx, s, user_id=uid, original=png, png=png, filename="a.png")
    with db.transaction() as s:
        assert screen_outputs(ctx, s, gen=Gen("g" * 32, uid, None, {}), images=[Image_(png, 5)]) is None


def test_the_operators_prompt_rules_apply_to_negative_prompts_when_they_say_so(db, settings, tmp_path):
    import json

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"id": "no-zebras", "category": "zebras",
                                            "applies_to": ["negative_prompt"], "any_of": ["zebra"]}]}))
    uid = add_user(db)
    ctx = configured(db, tmp_path, settings, prompt_rules_file=rules)
    with pytest.raises(Unprocessable) as refused, db.transaction() as s:
        s.get(User, uid)
        screen_prompt(ctx, s, user_id=uid, prompt="a field", negative_prompt="a zebra")
    assert refused.value.detail[0]["loc"] == ["body", "params", "negative_prompt"]
    assert "zebras" in refused.value.detail[0]["msg"]
