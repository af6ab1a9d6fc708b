"""The AUTOMATIC1111-compatible API (`/sdapi/v1`), driven with request bodies as A1111 clients build them (the
payload of the `webuiapi` client library, A1111's own field names), on the tiny built-in models."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from tests.conftest import signup
from tests.test_byo_models import png_b64, tiny_files, upload  # noqa: F401  (the session fixture)

BASE = "/sdapi/v1"
TINY_MODEL = {"sd_model_checkpoint": "imagen-tiny"}  # the tiny sizes' model, whatever the default is


def txt2img_payload(prompt: str = "a fox in the snow", **overrides: Any) -> dict[str, Any]:
    """webuiapi's WebUIApi.txt2img() body (its defaults), at the tiny sizes."""
    payload = {
        "enable_hr": False, "denoising_strength": 0.7, "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2,
        "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, "prompt": prompt,
        "styles": [], "seed": 42, "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0,
        "seed_resize_from_w": 0, "sampler_name": None, "batch_size": 1, "n_iter": 1, "steps": 2, "cfg_scale": 7.0,
        "width": 64, "height": 64, "restore_faces": False, "tiling": False, "do_not_save_samples": False,
        "do_not_save_grid": False, "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0,
        "s_noise": 1, "override_settings": TINY_MODEL, "override_settings_restore_afterwards": True,
        "script_args": [], "sampler_index": "Euler a", "script_name": None, "send_images": True, "save_images": False,
        "alwayson_scripts": {}, "controlnet_units": [], "use_deprecated_controlnet": False,
    }
    payload.update(overrides)
    return payload


def img2img_payload(init: str, mask: str | None = None, **overrides: Any) -> dict[str, Any]:
    """webuiapi's WebUIApi.img2img() body."""
    payload = {
        "init_images": [init], "resize_mode": 0, "denoising_strength": 0.75, "image_cfg_scale": 1.5, "mask": mask,
        "mask_blur": 4, "inpainting_fill": 0, "inpaint_full_res": True, "inpaint_full_res_padding": 0,
        "inpainting_mask_invert": 0, "initial_noise_multiplier": 1, "prompt": "a red barn", "styles": [],
        "seed": 7, "subseed": -1, "subseed_strength": 0, "seed_resize_from_h": 0, "seed_resize_from_w": 0,
        "sampler_name": "Euler", "batch_size": 1, "n_iter": 1, "steps": 2, "cfg_scale": 7.0, "width": 64,
        "height": 64, "restore_faces": False, "tiling": False, "do_not_save_samples": False,
        "do_not_save_grid": False, "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0,
        "s_noise": 1, "override_settings": TINY_MODEL, "override_settings_restore_afterwards": True,
        "script_args": [], "sampler_index": "Euler", "include_init_images": False, "script_name": None,
        "send_images": True, "save_images": False, "alwayson_scripts": {},
    }
    payload.update(overrides)
    return payload


def api_key(client: TestClient) -> str:
    r = client.post("/api/v1/api-keys", json={"name": "a1111 client"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def basic(key: str, user: str = "webui") -> dict[str, str]:
    """What an A1111 client sends with --api-auth user:password (the API key as the password)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


@pytest.fixture
def sd(app, client) -> TestClient:
    """A user's A1111 client: HTTP Basic with their API key, no cookies."""
    signup(client, "painter@example.com")
    key = api_key(client)
    sd_client = TestClient(app, base_url="https://testserver", headers=basic(key))
    sd_client.key = key  # type: ignore[attr-defined]
    return sd_client


def decode(image: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(image)))


def test_txt2img_answers_in_a1111_shape_and_lands_in_the_gallery(sd, client):
    r = sd.post(f"{BASE}/txt2img", json=txt2img_payload(n_iter=2))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 2
    assert all(decode(i).size == (64, 64) and decode(i).format == "PNG" for i in body["images"])
    assert base64.b64decode(body["images"][0]) != base64.b64decode(body["images"][1])
    info = json.loads(body["info"])
    assert info["seed"] == 42 and info["all_seeds"] == [42, 43]
    assert info["sampler_name"] == "Euler a" and info["steps"] == 2 and info["cfg_scale"] == 7.0
    assert (info["width"], info["height"]) == (64, 64) and info["prompt"] == "a fox in the snow"
    assert info["sd_model_name"] == "imagen-tiny" and len(info["sd_model_hash"]) == 10
    assert body["parameters"]["prompt"] == "a fox in the snow" and body["parameters"]["n_iter"] == 2
    # The same generation service: the job is in the user's history with its outputs, the Bearer key works too.
    listed = sd.get("/api/v1/generations", headers={"Authorization": f"Bearer {sd.key}"}).json()["items"]
    assert [(g["workflow"], g["status"], len(g["outputs"])) for g in listed] == [("txt2img", "succeeded", 2)]
    assert listed[0]["params"]["scheduler"] == "euler_a" and listed[0]["params"]["batch_size"] == 2


def test_hires_fix_fields_run_the_hires_workflow(sd):
    r = sd.post(f"{BASE}/txt2img", json=txt2img_payload(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=1,
                                                         denoising_strength=0.5))
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]).size == (96, 96)
    gen = sd.get("/api/v1/generations").json()["items"][0]
    assert gen["workflow"] == "hires_fix"
    params = gen["params"]
    assert (params["hires_scale"], params["hires_steps"], params["hires_strength"]) == (1.5, 1, 0.5)


def test_authentication_is_the_api_key(app, sd):
    anonymous = TestClient(app, base_url="https://testserver")
    assert anonymous.get(f"{BASE}/sd-models").status_code == 401
    assert anonymous.post(f"{BASE}/txt2img", json=txt2img_payload()).status_code == 401
    assert anonymous.get(f"{BASE}/sd-models", headers=basic("not-a-key")).status_code == 401
    assert anonymous.get(f"{BASE}/sd-models", headers={"Authorization": "Basic %%%"}).status_code == 401
    assert anonymous.get(f"{BASE}/sd-models", headers={"Authorization": f"Bearer {sd.key}"}).status_code == 200


def test_img2img_and_inpaint(sd):
    init = png_b64((200, 40, 40))
    r = sd.post(f"{BASE}/img2img", json=img2img_payload(init))
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]).size == (64, 64)
    assert r.json()["parameters"]["init_images"] is None  # A1111 leaves them out unless include_init_images
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    r = sd.post(f"{BASE}/img2img", json=img2img_payload(init, "data:image/png;base64,"
                                                        + base64.b64encode(buf.getvalue()).decode(),
                                                        inpainting_mask_invert=1, denoising_strength=0.6))
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["is_using_inpainting_conditioning"] is True
    items = sd.get("/api/v1/generations").json()["items"]
    assert [(g["workflow"], g["params"]["strength"]) for g in items] == [("inpaint", 0.6), ("img2img", 0.75)]
    r = sd.post(f"{BASE}/img2img", json=img2img_payload(init, init_images=[]))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "init_images"]


def test_bad_values_are_4xx_naming_the_a1111_field(sd):
    r = sd.post(f"{BASE}/txt2img", json=txt2img_payload(cfg_scale=99))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "cfg_scale"]
    r = sd.post(f"{BASE}/txt2img", json=txt2img_payload(sampler_name="Heun"))
    assert r.status_code == 404 and "Sampler not found" in r.json()["detail"]
    r = sd.post(f"{BASE}/txt2img", json=txt2img_payload(batch_size=3, n_iter=2))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "n_iter"]
    assert sd.get("/api/v1/generations").json()["items"] == []  # nothing queued


def test_models_are_per_user_and_the_override_and_the_default_are_honoured(sd, app, tiny_files):  # noqa: F811
    owner = TestClient(app, base_url="https://testserver", headers={"Authorization": f"Bearer {sd.key}"})
    ckpt = upload(owner, tiny_files["sd15_checkpoint"], "checkpoint")
    models = sd.get(f"{BASE}/sd-models").json()
    titles = {m["title"]: m for m in models}
    mine = titles[f"tiny-sd15.safetensors [{ckpt['sha256'][:10]}]"]
    assert (mine["model_name"], mine["sha256"], mine["hash"]) == ("tiny-sd15", ckpt["sha256"], ckpt["sha256"][:10])
    assert {"imagen-tiny", "imagen-tiny-xl"} <= {m["model_name"] for m in models}

    other = TestClient(app, base_url="https://testserver")
    signup(other, "someone@example.com")
    other_sd = TestClient(app, base_url="https://testserver", headers=basic(api_key(other)))
    assert ckpt["sha256"] not in {m["sha256"] for m in other_sd.get(f"{BASE}/sd-models").json()}
    initial_default = other_sd.get(f"{BASE}/options").json()["sd_model_checkpoint"]
    assert initial_default == sd.get(f"{BASE}/options").json()["sd_model_checkpoint"] != mine["title"]
    r = other_sd.post(f"{BASE}/txt2img", json=txt2img_payload(override_settings={"sd_model_checkpoint": "tiny-sd15"}))
    assert r.status_code == 404  # another user's private checkpoint is not found

    r = sd.post(f"{BASE}/txt2img", json=txt2img_payload(override_settings={"sd_model_checkpoint": mine["title"]}))
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["sd_model_hash"] == ckpt["sha256"][:10]
    assert sd.get("/api/v1/generations").json()["items"][0]["checkpoint"] == ckpt["id"]

    # POST options: this user's default only.
    assert sd.post(f"{BASE}/options", json={"sd_model_checkpoint": "tiny-sd15", "jpeg_quality": 80}).status_code == 200
    assert sd.get(f"{BASE}/options").json()["sd_model_checkpoint"] == mine["title"]
    assert other_sd.get(f"{BASE}/options").json()["sd_model_checkpoint"] == initial_default
    r = sd.post(f"{BASE}/txt2img", json=txt2img_payload(override_settings={}))
    assert r.status_code == 200 and json.loads(r.json()["info"])["sd_model_name"] == "tiny-sd15"
    assert sd.post(f"{BASE}/options", json={"sd_model_checkpoint": "nope"}).status_code == 404


def test_lora_in_the_prompt_weight_zero_is_the_base_image(sd, app, tiny_files):  # noqa: F811
    owner = TestClient(app, base_url="https://testserver", headers={"Authorization": f"Bearer {sd.key}"})
    upload(owner, tiny_files["sd15_checkpoint"], "checkpoint")
    lora = upload(owner, tiny_files["sd15_lora"], "lora")
    assert [x["name"] for x in sd.get(f"{BASE}/loras").json()] == ["lora-sd15"]
    override = {"sd_model_checkpoint": "tiny-sd15"}

    def image(prompt: str) -> bytes:
        r = sd.post(f"{BASE}/txt2img", json=txt2img_payload(prompt, override_settings=override))
        assert r.status_code == 200, r.text
        return base64.b64decode(r.json()["images"][0])

    base = image("a fox")
    assert image("a fox <lora:lora-sd15:0>") == base
    assert image("a fox, <lora:lora-sd15:1>") != base
    gen = sd.get("/api/v1/generations").json()["items"][0]
    assert gen["params"]["prompt"] == "a fox" and gen["params"]["loras"] == [{"id": lora["id"], "weight": 1.0}]
    r = sd.post(f"{BASE}/txt2img", json=txt2img_payload("a fox <lora:missing:1>"))
    assert r.status_code == 422 and "LoRA not found" in r.text


def test_a_refused_prompt_gets_a_4xx(settings, runtime, tmp_path: Path):
    from imagen.app import create_app

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"id": "gore", "category": "graphic violence",
                                            "all_of": [["gore"], ["photo*", "realistic"]]}]}))
    app = create_app(settings.model_copy(update={"prompt_rules_file": rules}), run_migrations=False,
                     runtime=runtime)
    with TestClient(app, base_url="https://testserver") as client:
        signup(client)
        sd = TestClient(app, base_url="https://testserver", headers=basic(api_key(client)))
        r = sd.post(f"{BASE}/txt2img", json=txt2img_payload("photorealistic gore scene"))
        assert 400 <= r.status_code < 500 and "graphic violence" in r.text
        assert client.get("/api/v1/generations").json()["items"] == []


def test_progress_and_interrupt(settings, runtime):
    """With the worker held, a txt2img call waits; progress shows its job, interrupt ends it (no images)."""
    from imagen.app import create_app

    app = create_app(settings.model_copy(update={"worker_autostart": False}), run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as client:
        signup(client)
        sd = TestClient(app, base_url="https://testserver", headers=basic(api_key(client)))
        idle = sd.get(f"{BASE}/progress").json()
        assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
        # Without a worker in this server the call says so at once, leaving the job queued.
        r = sd.post(f"{BASE}/txt2img", json=txt2img_payload())
        assert r.status_code == 409 and "No worker" in r.json()["detail"]
        assert sd.post(f"{BASE}/interrupt").json() == {}
        app.state.services.run_executor = True  # as if a worker were running: the call now waits for its job
        answer: dict[str, Any] = {}
        waiting = threading.Thread(target=lambda: answer.update(r=sd.post(f"{BASE}/txt2img", json=txt2img_payload())))
        waiting.start()
        deadline, state = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            state = sd.get(f"{BASE}/progress").json()
            if state["state"]["job_count"]:
                break
            time.sleep(0.05)
        assert state["state"]["job_count"] == 1 and state["state"]["status"] == "queued"
        assert state["state"]["sampling_steps"] == 2 and state["progress"] == 0
        assert sd.post(f"{BASE}/interrupt").status_code == 200
        waiting.join(30)
        assert not waiting.is_alive()
        r = answer["r"]
        assert r.status_code == 200 and r.json()["images"] == [], r.text
        assert [g["status"] for g in client.get("/api/v1/generations").json()["items"]] == ["canceled", "canceled"]


def test_listings_and_png_info(sd):
    assert "Euler a" in [s["name"] for s in sd.get(f"{BASE}/samplers").json()]
    assert "karras" in [s["name"] for s in sd.get(f"{BASE}/schedulers").json()]
    assert "Lanczos" in [u["name"] for u in sd.get(f"{BASE}/upscalers").json()]
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
                                "Seed: 5, Size: 512x768, Model: x")
    meta.add_text("Software", "A1111")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=meta)
    r = sd.post(f"{BASE}/png-info", json={"image": base64.b64encode(buf.getvalue()).decode()})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["items"] == {"Software": "A1111"} and out["info"].startswith("a cat")
    assert out["parameters"]["Prompt"] == "a cat" and out["parameters"]["Negative prompt"] == "blurry"
    assert (out["parameters"]["Steps"], out["parameters"]["Seed"], out["parameters"]["Size-2"]) == ("20", "5", "768")
    assert sd.post(f"{BASE}/png-info", json={"image": "bm90IGFuIGltYWdl"}).status_code == 422
