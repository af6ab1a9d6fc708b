"""Bring your own models, end to end through the API: upload single-file checkpoints and LoRAs, generate with
them, and check what is refused before anything is queued."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from imagen.generation.models import Generation
from imagen.inference import synthetic
from tests.conftest import TINY, signup, wait_for


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny SD 1.x and SDXL models in the original single-file layout, built once per run."""
    folder = tmp_path_factory.mktemp("tiny-files")
    files = {}
    for family in ("sd15", "sdxl"):
        pipe = synthetic.build_tiny_pipeline(family, seed=3)
        files[f"{family}_checkpoint"] = synthetic.save_single_file(pipe, folder / f"tiny-{family}.safetensors")
        files[f"{family}_lora"] = synthetic.build_tiny_lora(family, folder / f"lora-{family}.safetensors", seed=5)
        files[f"{family}_lora_b"] = synthetic.build_tiny_lora(
            family, folder / f"lora-{family}-b.safetensors", seed=6, layout="diffusers")
    inpaint = synthetic.build_tiny_pipeline("sd15", inpaint=True, seed=4)
    files["sd15_inpaint"] = synthetic.save_single_file(inpaint, folder / "tiny-sd15-inpaint.safetensors")
    return files


def upload(client: TestClient, path: Path, kind: str) -> dict:
    with path.open("rb") as f:
        r = client.post("/api/v1/assets", data={"kind": kind},
                        files={"file": (path.name, f, "application/octet-stream")})
    assert r.status_code in (200, 201), r.text
    return r.json()


def upload_image(client: TestClient, image: Image.Image, name: str = "ref.png") -> dict:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    r = client.post("/api/v1/assets", data={"kind": "reference_image"},
                    files={"file": (name, buf.getvalue(), "image/png")})
    assert r.status_code == 201, r.text
    return r.json()


def generate(client: TestClient, workflow: str = "txt2img", **params) -> dict:
    r = client.post("/api/v1/generations", json={"workflow": workflow, "params": {"prompt": "a fox", **TINY, **params}})
    assert r.status_code == 202, r.text
    body = wait_for(client, r.json()["id"])
    assert body["status"] == "succeeded", body
    return body


def image_bytes(client: TestClient, body: dict) -> bytes:
    return client.get(body["outputs"][0]["url"]).content


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_uploaded_checkpoint_and_lora_weight_zero_is_the_base_image(user_client, tiny_files, family):
    ckpt = upload(user_client, tiny_files[f"{family}_checkpoint"], "checkpoint")
    lora = upload(user_client, tiny_files[f"{family}_lora"], "lora")
    assert (ckpt["family"], lora["family"]) == (family, family)
    listed = {m["id"]: m for m in user_client.get("/api/v1/models").json()}
    assert listed[ckpt["id"]]["kind"] == "checkpoint" and listed[lora["id"]]["kind"] == "lora"

    base = generate(user_client, checkpoint=ckpt["id"])
    zero = generate(user_client, checkpoint=ckpt["id"], loras=[{"id": lora["id"], "weight": 0.0}])
    full = generate(user_client, checkpoint=ckpt["id"], loras=[{"id": lora["id"], "weight": 1.0}])
    assert image_bytes(user_client, zero) == image_bytes(user_client, base)
    assert image_bytes(user_client, full) != image_bytes(user_client, base)
    # The record names every model file by content hash, so the image can be made again.
    assert {(m["role"], m["sha256"]) for m in full["models"]} == {
        ("checkpoint", ckpt["sha256"]), ("lora", lora["sha256"])}
    assert full["checkpoint_sha256"] == ckpt["sha256"] and full["workflow_version"] == 3
    assert all("blob_key" not in m for m in full["models"])


def test_switching_lora_does_not_reload_the_checkpoint(user_client, tiny_files, runtime):
    ckpt = upload(user_client, tiny_files["sd15_checkpoint"], "checkpoint")
    lora_a = upload(user_client, tiny_files["sd15_lora"], "lora")
    lora_b = upload(user_client, tiny_files["sd15_lora_b"], "lora")
    runtime.cache.clear()  # the runtime is shared by the whole run: start this test cold
    first = generate(user_client, checkpoint=ckpt["id"], loras=[{"id": lora_a["id"], "weight": 0.8}])
    assert first["signals"]["checkpoint_loaded_now"] is True
    assert first["signals"]["loras_loaded_now"] == [lora_a["sha256"]]
    second = generate(user_client, checkpoint=ckpt["id"], loras=[{"id": lora_b["id"], "weight": 0.8}])
    assert second["signals"]["checkpoint_loaded_now"] is False
    assert second["signals"]["loras_loaded_now"] == [lora_b["sha256"]]
    stacked = generate(user_client, checkpoint=ckpt["id"],
                       loras=[{"id": lora_a["id"], "weight": 0.8}, {"id": lora_b["id"], "weight": 0.5}])
    assert stacked["signals"]["checkpoint_loaded_now"] is False and stacked["signals"]["loras_loaded_now"] == []


def test_lora_for_another_family_is_refused_before_queueing(user_client, tiny_files, app):
    ckpt = upload(user_client, tiny_files["sd15_checkpoint"], "checkpoint")
    xl_lora = upload(user_client, tiny_files["sdxl_lora"], "lora")
    r = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {
        "prompt": "a fox", **TINY, "checkpoint": ckpt["id"], "loras": [{"id": xl_lora["id"], "weight": 1}]}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "params", "loras", "0", "id"]
    assert "SDXL" in r.json()["detail"][0]["msg"] and "SD 1.x" in r.json()["detail"][0]["msg"]
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Generation)) == 0


def test_another_users_assets_answer_404_when_named_in_a_generation(client, new_client, tiny_files, app):
    signup(client, "owner@example.com")
    ckpt = upload(client, tiny_files["sd15_checkpoint"], "checkpoint")
    lora = upload(client, tiny_files["sd15_lora"], "lora")
    ref = upload_image(client, Image.new("RGB", (64, 64), (10, 200, 10)))
    other = new_client()
    signup(other, "other@example.com")
    for params, what in (({"checkpoint": ckpt["id"]}, "Checkpoint"),
                         ({"loras": [{"id": lora["id"], "weight": 1}]}, "LoRA")):
        r = other.post("/api/v1/generations", json={"workflow": "txt2img", "params": {"prompt": "x", **params}})
        assert r.status_code == 404 and what in r.json()["detail"]
    r = other.post("/api/v1/generations", json={"workflow": "img2img", "params": {
        "prompt": "x", "init_image": f"asset:{ref['id']}"}})
    assert r.status_code == 404 and "Reference image" in r.json()["detail"]
    assert other.get(f"/api/v1/assets/{ckpt['id']}").status_code == 404
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Generation)) == 0


def test_inpainting_checkpoint_with_reference_image_and_mask_assets(user_client, tiny_files, app):
    ckpt = upload(user_client, tiny_files["sd15_inpaint"], "checkpoint")
    assert ckpt["details"]["in_channels"] == 9
    init = upload_image(user_client, Image.new("RGB", (64, 64), (200, 30, 30)), "init.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask_asset = upload_image(user_client, mask.convert("RGB"), "mask.png")
    r = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {
        "prompt": "x", **TINY, "checkpoint": ckpt["id"]}})
    assert r.status_code == 422 and "inpaint" in r.json()["detail"][0]["msg"]
    body = generate(user_client, "inpaint", checkpoint=ckpt["id"], init_image=f"asset:{init['id']}",
                    mask_image=f"asset:{mask_asset['id']}", strength=1.0)
    out = Image.open(io.BytesIO(image_bytes(user_client, body)))
    assert out.size == (64, 64)
    assert body["params"]["init_image"] == f"asset:{init['id']}"
    assert not list(app.state.services.blobs.keys("inputs/"))  # transient copies are gone; the assets stay
    assert user_client.get(f"/api/v1/assets/{init['id']}").status_code == 200


def png_b64(color=(120, 80, 200), size=(64, 64), mode="RGB") -> str:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("checkpoint", ["imagen-tiny", "imagen-tiny-xl"])
def test_every_workflow_runs_on_the_built_in_tiny_models(user_client, checkpoint):
    workflows = {w["name"]: w for w in user_client.get("/api/v1/workflows").json()}
    assert {"txt2img", "img2img", "inpaint", "hires_fix"} <= set(workflows)
    images = {"init_image": png_b64(), "mask_image": png_b64(255, mode="L")}
    for name, wf in sorted(workflows.items()):
        names = {p["name"] for p in wf["parameters"]}
        extra = {k: v for k, v in images.items() if k in names}
        if "hires_steps" in names:
            extra |= {"hires_steps": 2, "hires_scale": 1.5}
        body = generate(user_client, name, checkpoint=checkpoint, **extra)
        expected = 96 if name == "hires_fix" else 64
        assert (body["outputs"][0]["width"], body["pipeline"]) == (expected, wf["pipeline"]), name


def test_generate_page_form_follows_the_workflow_schemas(user_client, tiny_files):
    lora = upload(user_client, tiny_files["sd15_lora"], "lora")
    for wf in user_client.get("/api/v1/workflows").json():
        page = user_client.get(f"/generate?workflow={wf['name']}")
        assert page.status_code == 200
        for p in wf["parameters"]:
            assert f'id="param-{p["name"]}"' in page.text, (wf["name"], p["name"])
    page = user_client.get("/generate?workflow=txt2img")
    assert lora["id"] in page.text and "imagen-tiny-xl" in page.text and "DPM++ 2M Karras" in page.text
