"""The insights pipeline (issue 16, policy §3, DESIGN invariant 4): a generation made without the model-improvement
consent yields no row; one made with it yields a row with none of the user's id, email, prompt, address, image or
upload hash; a withdrawal applies from the next generation; the derivation never reaches the blob store nor fails a
job; the residue scan after erasure finds nothing in the insights table. Aggregates: tests/test_insights_release.py."""

from __future__ import annotations

import io
from datetime import date, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sqlalchemy import inspect, select

from imagen.accounts.models import User
from imagen.generation.models import Generation
from imagen.insights import tasks as insights_tasks
from imagen.insights.embedding import DIMENSIONS, EXAMPLE_PHRASES, embed, kmeans, nearest_phrases
from imagen.insights.models import InsightRecord
from imagen.insights.service import failure_category, insights_service
from imagen.insights.stats import image_stats
from imagen.kit.db import new_id, utcnow
from imagen.privacy.datamap import NOT_PERSONAL, undeclared_tables
from imagen.privacy.erasure import erase_user
from imagen.privacy.residue import residue, scan
from tests.conftest import TINY, signup, wait_for

PROMPT = "a violet lighthouse on basalt cliffs"
FORBIDDEN_COLUMNS = {"user_id", "email", "prompt", "negative_prompt", "ip_address", "user_agent", "generation_id",
                     "blob_key", "sha256", "checkpoint", "checkpoint_sha256", "seed", "created_at", "finished_at"}


def generate(client, prompt: str = PROMPT, **params) -> dict:
    r = client.post("/api/v1/generations", json={"workflow": "txt2img",
                                                  "params": {"prompt": prompt, **TINY, "batch_size": 2, **params}})
    assert r.status_code == 202, r.text
    return wait_for(client, r.json()["id"])


def settle(app) -> None:
    assert app.state.services.tasks.wait_idle(60)  # the derivation runs after the job's end, as a task


def records(app) -> list[InsightRecord]:
    with app.state.services.db.transaction() as s:
        rows = list(s.scalars(select(InsightRecord)))
        s.expunge_all()
        return rows


def test_consent_decides_and_the_row_holds_nothing_of_the_person(client, new_client, app):
    off = signup(client, "off@example.com")
    generate(client, prompt="a private prompt of the refuser")
    settle(app)
    assert records(app) == []  # consent off: no row, and none later either
    on_client = new_client()
    on = signup(on_client, "on@example.com", consents={"model_improvement": True, "marketing_emails": False})
    body = generate(on_client)
    settle(app)
    (row,) = records(app)
    with app.state.services.db.transaction() as s:
        gens = {g.id: g for g in s.scalars(select(Generation))}
        assert all(g.insights_derived for g in gens.values())  # both looked at once
        gen = gens[body["id"]]
        checkpoint_hash, output_keys = gen.checkpoint_sha256, [o.blob_key for o in gen.outputs]
        output_bytes = [app.state.services.blobs.get(k) for k in output_keys]

    # The table's columns: nothing that names a person, a generation, a file or a time of day.
    columns = {c["name"] for c in inspect(app.state.services.db.engine).get_columns("insight_records")}
    assert not columns & FORBIDDEN_COLUMNS
    assert not [fk for fk in inspect(app.state.services.db.engine).get_foreign_keys("insight_records")]
    # Its values: none of the person's id, email, prompt (or a word of it), address, image or upload hash.
    values = {c: getattr(row, c) for c in columns}
    text = repr(values).lower()
    for needle in (on["account"]["id"], "on@example.com", off["account"]["id"], body["id"], checkpoint_hash,
                   "testclient", *[w for w in PROMPT.split() if len(w) > 3], *output_keys):
        assert needle.lower() not in text, needle
    assert not any(png[:64] in repr(values).encode() for png in output_bytes)
    # What it does hold: the parameters, coarse timings, image statistics, the day, the prompt's hashed vector.
    assert (row.status, row.failure_reason, row.workflow, row.pipeline, row.sampler, row.steps, row.width,
            row.height, row.batch_size) == ("succeeded", None, "txt2img", "txt2img", "euler", 2, 64, 64, 2)
    assert (row.model_family, row.checkpoint_source, row.lora_count) == ("sd15", "builtin", 0)
    assert row.day == utcnow().date() and isinstance(row.day, date)
    assert row.sharpness is not None and row.sharpness >= 0 and row.colourfulness is not None
    assert row.inference_seconds is not None and row.queue_wait_seconds is not None
    assert len(row.embedding) == DIMENSIONS and row.embedding == [round(x, 3) for x in embed(PROMPT)]


def test_a_withdrawal_applies_from_the_next_generation(user_client, app):
    assert user_client.put("/api/v1/me/consents", json={"model_improvement": True}).status_code == 200
    first = generate(user_client)
    assert user_client.put("/api/v1/me/consents", json={"model_improvement": False}).status_code == 200
    generate(user_client)
    settle(app)
    assert len(records(app)) == 1  # only the generation made while the user agreed
    with app.state.services.db.transaction() as s:
        stamped = {g.id: g.consent_model_improvement for g in s.scalars(select(Generation))}
    assert stamped[first["id"]] is True and sorted(stamped.values()) == [False, True]


def test_after_erasure_the_residue_scan_finds_nothing_in_the_insights_table(client, app, settings):
    me = signup(client, "erase@example.com", consents={"model_improvement": True, "marketing_emails": False})
    generate(client)
    settle(app)
    assert len(records(app)) == 1
    services = app.state.services
    uid = me["account"]["id"]
    summary = erase_user(services.db, services.blobs, None, uid, settings=settings, verify=True)
    assert summary["residue"] == 0
    findings = scan(services.db.engine, services.blobs, user_id=uid, email="erase@example.com", settings=settings)
    assert [f for f in findings if f.where.startswith("insight_records")] == []
    assert residue(findings) == []
    (row,) = records(app)  # the anonymous record stays: nothing in it was the person's
    assert row.status == "succeeded"


def test_the_insights_table_is_declared_anonymous(app):
    from imagen.models import Base

    assert "insight_records" in {n.table for n in NOT_PERSONAL}
    assert undeclared_tables(Base.metadata) == []


# ---- the derivation alone (no app): once, only ended and consented, never the blob store ----

class NoBlobStore:
    """Fails the test on any use: the insights code must not reach stored files (uploads included)."""

    def __init__(self) -> None:
        self.touched: list[str] = []

    def __getattr__(self, name: str):
        self.touched.append(name)
        raise AssertionError(f"the insights code used the blob store ({name})")


def add_generation(s, *, consent: bool, status: str = "succeeded", error: str | None = None,
                   models: list | None = None, **params) -> str:
    user = User(email=f"{new_id()}@example.com", password_hash="x", date_of_birth=date(1990, 1, 1), country="GB")
    s.add(user)
    s.flush()
    now = utcnow()
    gen = Generation(id=new_id(), user_id=user.id, workflow="txt2img", workflow_version=2, pipeline="txt2img",
                     params={"prompt": PROMPT, "scheduler": "ddim", "steps": 9, "guidance": 6.5, "width": 512,
                             "height": 768, "batch_size": 1, **params},
                     checkpoint="mine", checkpoint_sha256="f" * 64,
                     models=models or [{"role": "checkpoint", "id": "imagen-tiny", "sha256": "f" * 64,
                                        "family": "sd15", "blob_key": None}],
                     consent_model_improvement=consent, status=status, error=error,
                     created_at=now - timedelta(seconds=12.345), started_at=now - timedelta(seconds=2),
                     finished_at=now,
                     signals={"load_seconds": 0.123456, "inference_seconds": 1.23456, "checkpoint_loaded_now": False,
                              "image_stats": {"sharpness": 12.5, "colourfulness": 30.25}})
    s.add(gen)
    s.flush()
    return gen.id


def test_the_task_derives_once_from_the_row_alone_and_never_touches_the_blob_store(db):
    with db.transaction() as s:
        consented = add_generation(s, consent=True)
        refused = add_generation(s, consent=False)
        running = add_generation(s, consent=True, status="running")
    blobs = NoBlobStore()
    services = SimpleNamespace(db=db, blobs=blobs)
    assert insights_tasks.derive(services, consented) is True
    assert insights_tasks.derive(services, consented) is False  # twice: still one row
    assert insights_tasks.derive(services, refused) is False
    assert insights_tasks.derive(services, running) is False  # not ended: nothing, and not marked
    assert insights_tasks.derive(services, "no-such-generation") is False
    assert blobs.touched == []
    with db.transaction() as s:
        (row,) = s.scalars(select(InsightRecord)).all()
        assert (row.sampler, row.steps, row.guidance, row.width, row.height) == ("ddim", 9, 6.5, 512, 768)
        # Timings to two significant figures; the cache hit from the runtime's signal; the worker's image stats.
        assert (row.queue_wait_seconds, row.load_seconds, row.inference_seconds) == (10.0, 0.12, 1.2)
        assert (row.cache_hit, row.sharpness, row.colourfulness) == (True, 12.5, 30.25)
        assert s.get(Generation, running).insights_derived is False
        assert s.get(Generation, refused).insights_derived is True
        s.get(Generation, running).status = "failed"
        s.get(Generation, running).error = "LoRA my-secret-lora.safetensors is for sdxl but the checkpoint is sd15"
    # The periodic sweep picks up what no task derived (here: the job that has since ended).
    assert insights_tasks.sweep(services) == 1 and insights_tasks.sweep(services) == 0
    with db.transaction() as s:
        reasons = sorted((r.status, r.failure_reason or "") for r in s.scalars(select(InsightRecord)))
        assert reasons == [("failed", "model_load"), ("succeeded", "")]
        assert "my-secret-lora" not in repr([vars(r) for r in s.scalars(select(InsightRecord))])
    assert blobs.touched == []


def test_a_private_upload_is_only_called_private(db):
    with db.transaction() as s:
        gen_id = add_generation(s, consent=True, models=[
            {"role": "checkpoint", "id": "asset-id-of-someone", "sha256": "e" * 64, "family": "sdxl",
             "blob_key": "assets/someone/model.safetensors"},
            {"role": "lora", "id": "lora-id", "sha256": "d" * 64, "family": "sdxl", "blob_key": "assets/x/l",
             "weight": 0.5}])
        row = insights_service.derive(s, generation_id=gen_id)
        assert (row.model_family, row.checkpoint_source, row.lora_count) == ("sdxl", "private", 1)
        assert "asset-id-of-someone" not in repr(vars(row)) and "e" * 64 not in repr(vars(row))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_failure_reasons_are_fixed_categories_never_the_text(database_url):
    assert failure_category("succeeded", None) is None and failure_category("canceled", None) is None
    cases = {"Timed out after 60 s (the server's limit per job)": "timeout",
             "This generation could not be completed.": "safety_block",
             "The input image is no longer available": "input_missing",
             "A model file this job uses was deleted before it ran": "model_load",
             "Could not store the outputs (No space left on device); submit it again later": "storage",
             "Could not start the job: the database was unavailable; submit it again": "database",
             "The workers running this job stopped reporting 3 times; submit it again": "worker_lost",
             "Generation failed: RuntimeError": "runtime_error", "something new": "other", None: "other"}
    for error, category in cases.items():
        assert failure_category("failed", error) == category, error


# ---- statistics and embeddings ----

def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_image_statistics_measure_sharpness_and_colourfulness(database_url):
    board = Image.fromarray((np.indices((128, 128)).sum(axis=0) // 8 % 2 * 255).astype("uint8")).convert("RGB")
    blurred = board.filter(ImageFilter.GaussianBlur(4))
    sharp, soft = image_stats([png(board)]), image_stats([png(blurred)])
    assert sharp["sharpness"] > 10 * soft["sharpness"] > 0
    assert sharp["colourfulness"] == 0.0  # grey has no colour
    colourful = Image.new("RGB", (64, 64), (255, 0, 0))
    colourful.paste((0, 0, 255), (0, 0, 32, 64))
    assert image_stats([png(colourful)])["colourfulness"] > 100
    assert image_stats([]) == {}
    huge = image_stats([png(Image.new("RGB", (3000, 2000), (10, 200, 30)))])  # reduced first: bounded cost
    assert huge["sharpness"] == 0.0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_embeddings_are_deterministic_and_topics_are_built_in_phrases(database_url):
    assert embed("A Cat!") == embed("a cat") and len(embed("x")) == DIMENSIONS
    assert embed("   ") == [0.0] * DIMENSIONS
    assert np.dot(embed("a cat on a sofa"), embed("cat sleeping on sofa")) > np.dot(
        embed("a cat on a sofa"), embed("mountains at dawn"))
    cats = [embed(f"a fluffy cat number {i}") for i in range(10)]
    hills = [embed(f"snowy mountains over a lake {i}") for i in range(10)]
    centres, labels = kmeans(np.array(cats + hills), 2)
    assert len(set(labels[:10])) == 1 and len(set(labels[10:])) == 1 and labels[0] != labels[10]
    assert kmeans(np.array(cats), 5)[0].shape[0] == 5 and kmeans(np.array(cats[:2]), 5)[0].shape[0] == 2
    for centre in centres:
        assert set(nearest_phrases(centre)) <= set(EXAMPLE_PHRASES)
    assert "cat" in nearest_phrases(centres[labels[0]])


def test_a_failing_derivation_hook_never_fails_the_job_and_the_sweep_catches_up(settings, runtime):
    from fastapi.testclient import TestClient

    from imagen.app import create_app

    settings.worker_autostart = False
    app = create_app(settings, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as client:
        signup(client, consents={"model_improvement": True, "marketing_emails": False})
        services = app.state.services

        def broken(_generation_id: str) -> None:
            raise RuntimeError("the task backend is down")

        services.executor.on_end = broken
        services.executor.start()
        assert generate(client)["status"] == "succeeded"
        assert records(app) == []
        assert insights_tasks.sweep(services) == 1
        (row,) = records(app)
        assert row.status == "succeeded" and row.sharpness is not None


def test_the_nsfw_score_is_recorded_when_the_detector_runs(settings, runtime, monkeypatch):
    from fastapi.testclient import TestClient

    from imagen.app import create_app
    from imagen.safety import nsfw

    label = sorted(nsfw.LABELS)[0]
    monkeypatch.setattr(nsfw.NsfwClassifier, "classify",
                        lambda self, png: [nsfw.Detection(label, 0.42, (0, 0, 4, 4))])  # under the threshold
    app = create_app(settings.model_copy(update={"nsfw_policy": f'{{"{label}": "block"}}'}),
                     run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as client:
        signup(client, consents={"model_improvement": True, "marketing_emails": False})
        assert generate(client)["status"] == "succeeded"
        settle(app)
        [record] = records(app)
    assert record.nsfw_score == 0.42
