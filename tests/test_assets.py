"""Assets: streamed uploads of checkpoints, LoRAs and reference images; checks, dedupe, quota, isolation, CLI.

Every refusal is checked from the outside in: the status and message, then the database and the blob folder
(nothing half-stored). Model files are built from code with tiny tensors in the real key layouts.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, ImageCms
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from imagen.accounts.models import User
from imagen.assets.models import Asset
from imagen.assets.service import asset_service
from imagen.kit.config import Settings
from imagen.kit.errors import NotFound
from tests.conftest import signup
from tests.test_modelfiles import KOHYA_SD15, KOHYA_SDXL, Shapes, _save, sd15_checkpoint, sdxl_checkpoint

BOUNDARY = "imagen-test-boundary"


def model_bytes(tmp_path: Path, shapes: Shapes, name: str = "m.safetensors") -> bytes:
    return _save(tmp_path / name, shapes).read_bytes()


def upload(client: TestClient, kind: str | None, name: str, data: bytes, **fields: str) -> Any:
    form = ({"kind": kind} if kind else {}) | fields
    return client.post("/api/v1/assets", data=form, files={"file": (name, data, "application/octet-stream")})


def multipart(*parts: tuple[str, str | None, bytes], end: bool = True) -> tuple[bytes, dict[str, str]]:
    """A hand-built body: any part order, any file name bytes (HTTP clients would escape some)."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode() if end else b""
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def stored(app: FastAPI, settings: Settings) -> tuple[int, list[str]]:
    """(rows in assets, files anywhere under the blob folder, staging included)."""
    with app.state.services.db.transaction() as s:
        rows = s.scalar(select(func.count()).select_from(Asset))
    return rows, sorted(p.relative_to(settings.blobs_dir).as_posix()
                        for p in settings.blobs_dir.rglob("*") if p.is_file())


def assert_nothing_stored(app: FastAPI, settings: Settings) -> None:
    assert stored(app, settings) == (0, [])


def make_admin(app: FastAPI, email: str) -> None:
    with app.state.services.db.transaction() as s:
        s.execute(update(User).where(User.email == email).values(role="admin"))


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return chunks


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares a huge canvas (a decompression bomb): one zlib-compressed empty row."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def jpeg_with_metadata() -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS Secret"
    exif.get_ifd(0x8825).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})  # GPS
    out = io.BytesIO()
    Image.new("RGB", (40, 24), (200, 30, 30)).save(out, "JPEG", exif=exif.tobytes(), comment=b"private note")
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Accepted uploads


def test_checkpoint_upload_is_stored_with_its_details(user_client, app, settings, tmp_path):
    data = model_bytes(tmp_path, sd15_checkpoint())
    r = upload(user_client, "checkpoint", "my model.safetensors", data)
    assert r.status_code == 201, r.text
    body = r.json()
    sha = hashlib.sha256(data).hexdigest()
    header_bytes = struct.unpack("<Q", data[:8])[0]
    assert body | {"id": None, "created_at": None} == {
        "id": None, "kind": "checkpoint", "family": "sd15", "description": "SD 1.x checkpoint",
        "filename": "my model.safetensors", "sha256": sha, "short_hash": sha[:10], "size_bytes": len(data),
        "public": False, "width": None, "height": None, "owned": True, "created_at": None,
        "details": {"in_channels": 4, "context_dim": 8, "tensors": len(sd15_checkpoint()),
                    "header_bytes": header_bytes}}
    user_id = user_client.get("/api/v1/me").json()["id"]
    assert stored(app, settings) == (1, [f"assets/{user_id}/{sha}.safetensors"])
    content = user_client.get(f"/api/v1/assets/{body['id']}/content")
    assert content.status_code == 200 and content.content == data
    assert content.headers["content-type"] == "application/octet-stream"
    assert "my%20model.safetensors" in content.headers["content-disposition"]
    assert [a["id"] for a in user_client.get("/api/v1/assets").json()] == [body["id"]]
    assert user_client.get("/api/v1/assets?kind=lora").json() == []
    assert user_client.get(f"/api/v1/assets/{body['id']}").json() == body


def test_same_file_twice_returns_the_stored_one(user_client, app, settings, tmp_path):
    data = model_bytes(tmp_path, KOHYA_SDXL)
    first = upload(user_client, "lora", "style.safetensors", data)
    assert first.status_code == 201 and first.json()["family"] == "sdxl"
    assert "LoRA for SDXL" in first.json()["description"]
    again = upload(user_client, "lora", "renamed.safetensors", data)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.json()["filename"] == "style.safetensors"
    assert stored(app, settings)[0] == 1 and len(stored(app, settings)[1]) == 1


def test_concurrent_duplicate_is_answered_with_the_winner(user_client, app, settings, tmp_path, monkeypatch):
    data = model_bytes(tmp_path, KOHYA_SD15)
    first = upload(user_client, "lora", "a.safetensors", data).json()
    real_find, calls = asset_service._find, []

    def find_missing_once(*args: Any) -> Any:  # the other request had not committed when this one looked
        calls.append(args)
        return None if len(calls) == 1 else real_find(*args)

    monkeypatch.setattr(asset_service, "_find", find_missing_once)
    r = upload(user_client, "lora", "a.safetensors", data)
    assert r.status_code == 200 and r.json()["id"] == first["id"] and len(calls) == 2
    assert stored(app, settings)[0] == 1
    assert user_client.get(f"/api/v1/assets/{first['id']}/content").content == data


def test_kind_may_come_after_the_file(user_client, tmp_path):
    data = model_bytes(tmp_path, sdxl_checkpoint())
    body, headers = multipart(("file", "xl.safetensors", data), ("kind", None, b"checkpoint"))
    r = user_client.post("/api/v1/assets", content=body, headers=headers)
    assert r.status_code == 201, r.text
    assert (r.json()["kind"], r.json()["family"]) == ("checkpoint", "sdxl")


def test_reference_image_is_reencoded_without_metadata(user_client, app, settings):
    raw = jpeg_with_metadata()
    assert Image.open(io.BytesIO(raw)).getexif().get_ifd(0x8825)[1] == "N"  # the fixture really carries GPS
    r = upload(user_client, "reference_image", "holiday.jpg", raw)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["kind"], body["family"], body["width"], body["height"]) == ("reference_image", None, 40, 24)
    assert body["filename"] == "holiday.png"
    png = user_client.get(f"/api/v1/assets/{body['id']}/content")
    assert png.headers["content-type"] == "image/png"
    assert body["sha256"] == hashlib.sha256(png.content).hexdigest() and body["size_bytes"] == len(png.content)
    img = Image.open(io.BytesIO(png.content))
    assert img.format == "PNG" and not img.getexif() and img.info == {}
    assert set(png_chunks(png.content)) == {b"IHDR", b"IDAT", b"IEND"}  # no tEXt/iTXt/zTXt/eXIf/iCCP
    assert b"Canon" not in png.content and b"private note" not in png.content
    assert upload(user_client, "reference_image", "again.jpg", raw).json()["id"] == body["id"]


def image_with_icc(fmt: str) -> tuple[bytes, bytes]:
    """(image bytes, its embedded ICC profile): a real profile, as cameras and editors embed them."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    Image.new("RGB", (32, 20), (30, 160, 90)).save(out, fmt, icc_profile=icc)
    return out.getvalue(), icc


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_icc_profile_of_an_upload_is_not_kept_in_the_stored_reference_image(user_client, app, fmt):
    raw, icc = image_with_icc(fmt)
    assert Image.open(io.BytesIO(raw)).info.get("icc_profile") == icc  # the upload really carries it
    r = upload(user_client, "reference_image", f"profiled.{fmt.lower()}", raw)
    assert r.status_code == 201, r.text
    with app.state.services.db.transaction() as s:
        blob_key = s.get(Asset, r.json()["id"]).blob_key
    served = user_client.get(f"/api/v1/assets/{r.json()['id']}/content").content
    for blob in (app.state.services.blobs.get(blob_key), served):
        assert Image.open(io.BytesIO(blob)).info.get("icc_profile") is None
        assert b"iCCP" not in png_chunks(blob) and b"iCCP" not in blob
        assert icc[:128] not in blob and icc[-128:] not in blob  # the profile's header and tags, in no chunk


# ---------------------------------------------------------------------------------------------------------------
# Refusals: a message that says what is wrong, and nothing stored


def _pickle(_tmp: Path) -> bytes:
    return pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}, protocol=2)


def _torch_zip(tmp: Path) -> bytes:
    torch.save({"w": torch.zeros(2)}, tmp / "z.pt")
    return (tmp / "z.pt").read_bytes()


def _header(raw: bytes, declared: int | None = None, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(raw) if declared is None else declared) + raw + data


REFUSED = [
    ("truncated", "checkpoint", "m.safetensors", lambda t: model_bytes(t, sd15_checkpoint())[:-10], 422,
     "truncated"),
    ("huge-header-length", "checkpoint", "m.safetensors", lambda _t: _header(b"{}", declared=2**40), 422,
     "more than the 100000000 allowed"),
    ("bad-json", "checkpoint", "m.safetensors", lambda _t: _header(b'{"a": {"dtype": '), 422, "not valid JSON"),
    ("offsets-outside", "lora", "m.safetensors",
     lambda _t: _header(b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', data=bytes(8)), 422,
     "the data section has 8"),
    ("pickle-renamed", "checkpoint", "model.safetensors", _pickle, 415, "a Python pickle (protocol 2)"),
    ("ckpt", "checkpoint", "model.ckpt", _pickle, 415, "a .ckpt file"),
    ("torch-zip", "lora", "lora.safetensors", _torch_zip, 415, "a zip archive"),
    ("other-suffix", "checkpoint", "model.gguf", lambda _t: b"GGUF", 415, "not a .safetensors file"),
    ("lora-as-checkpoint", "checkpoint", "m.safetensors", lambda t: model_bytes(t, KOHYA_SD15), 422,
     "is a LoRA (LoRA for SD 1.x"),
    ("checkpoint-as-lora", "lora", "m.safetensors", lambda t: model_bytes(t, sd15_checkpoint()), 422,
     "is a checkpoint (SD 1.x checkpoint), not a LoRA"),
    ("vae-alone", "checkpoint", "m.safetensors",
     lambda t: model_bytes(t, {"first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3)}), 422, "a VAE on its own"),
    ("decompression-bomb", "reference_image", "bomb.png", lambda _t: png_header_only(30_000, 30_000), 422,
     "decompression bomb"),
    ("too-many-pixels", "reference_image", "big.png", lambda _t: png_header_only(5000, 5000), 422,
     "more than 16777216 pixels"),
    ("gif", "reference_image", "a.gif", lambda _t: _gif(), 422, "format GIF is not accepted"),
    ("not-an-image", "reference_image", "a.png", lambda _t: b"hello", 422, "not a readable PNG, JPEG or WebP"),
    ("empty", "checkpoint", "m.safetensors", lambda _t: b"", 422, "the file is empty"),
]


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("P", (4, 4)).save(out, "GIF")
    return out.getvalue()


@pytest.mark.parametrize(("kind", "name", "make", "status", "message"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_bad_files_are_refused_and_nothing_is_kept(user_client, app, settings, tmp_path, kind, name, make, status,
                                                   message):
    r = upload(user_client, kind, name, make(tmp_path))
    assert r.status_code == status, r.text
    assert message in str(r.json()["detail"])
    if (status == 415 and "pickle" in message) or "ckpt" in name:
        assert "safetensors.torch.save_file" in r.json()["detail"]
    assert_nothing_stored(app, settings)


@pytest.mark.parametrize(("filename", "why"), [
    ("../evil.safetensors", "path separator"), ("sub/dir.safetensors", "path separator"),
    ("..\\evil.safetensors", "path separator"), ("C:\\Users\\me\\m.safetensors", "path separator"),
    ("..", "'..'"), ("a..safetensors", None), ("x\x00.safetensors", "control"), ("x\x1b[2J.safetensors", "control"),
    ("", "is empty"), ("   ", "is empty"), ("a" * 250 + ".safetensors", "longer than 255"),
    ("\u202egnp.safetensors", "invisible"),
])
def test_odd_file_names_are_refused_before_storing(user_client, app, settings, tmp_path, filename, why):
    data = model_bytes(tmp_path, KOHYA_SD15)
    body, headers = multipart(("kind", None, b"lora"), ("file", filename, data))
    r = user_client.post("/api/v1/assets", content=body, headers=headers)
    if why is None:  # two dots inside a name are fine
        assert r.status_code == 201, r.text
        return
    assert r.status_code == 400, r.text
    assert why in r.json()["detail"] and "file name" in r.json()["detail"]
    assert_nothing_stored(app, settings)


@pytest.mark.parametrize(("parts", "status", "field", "message"), [
    ([("file", "m.safetensors", b"x")], 422, "kind", "Field required"),
    ([("kind", None, b"vae"), ("file", "m.safetensors", b"x")], 422, "kind", "must be one of"),
    ([("kind", None, b"lora")], 422, "file", "Field required"),
    ([("kind", None, b"lora"), ("notes", None, b"hi")], 422, "notes", "unknown field"),
    ([("kind", None, b"lora"), ("public", None, b"maybe")], 422, "public", "true or false"),
    ([("kind", None, b"lora"), ("kind", None, b"lora")], 400, None, "more than once"),
    ([("kind", None, b"lora"), ("file", None, b"x")], 422, "file", "no filename"),
])
def test_malformed_forms_say_what_is_missing(user_client, app, settings, parts, status, field, message):
    body, headers = multipart(*parts)
    r = user_client.post("/api/v1/assets", content=body, headers=headers)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    if field is None:
        assert message in detail
    else:
        assert detail[0]["loc"] == ["body", field] and message in detail[0]["msg"]
    assert_nothing_stored(app, settings)


def test_unfinished_body_and_wrong_content_type(user_client, app, settings, tmp_path):
    body, headers = multipart(("kind", None, b"lora"), ("file", "m.safetensors", model_bytes(tmp_path, KOHYA_SD15)),
                              end=False)
    r = user_client.post("/api/v1/assets", content=body, headers=headers)
    assert r.status_code == 400 and "ended before" in r.json()["detail"]
    r = user_client.post("/api/v1/assets", json={"kind": "lora"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    assert_nothing_stored(app, settings)


# ---------------------------------------------------------------------------------------------------------------
# Limits: per file and quota, enforced while streaming


def post_streamed(client: TestClient, app: FastAPI, body: bytes, headers: dict[str, str],
                  chunk: int = 64 * 1024) -> tuple[int, Any, int]:
    """POST through the ASGI app chunk by chunk, as a server would (TestClient reads the whole body first).

    Returns (status, JSON body, how many body bytes the app pulled before answering).
    """
    pulled, sent = [0], []
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (client.headers | headers).items()]
    raw_headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in client.cookies.items()).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
             "path": "/api/v1/assets", "raw_path": b"/api/v1/assets", "query_string": b"", "root_path": "",
             "headers": raw_headers, "client": ("127.0.0.1", 5000), "server": ("testserver", 443), "state": {}}

    async def receive() -> dict[str, Any]:
        start = pulled[0]
        pulled[0] = min(start + chunk, len(body))
        return {"type": "http.request", "body": body[start:pulled[0]], "more_body": pulled[0] < len(body)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    client.portal.call(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload), pulled[0]


def test_model_over_the_per_file_limit_is_stopped_early(user_client, app, settings):
    settings.max_model_upload_bytes, settings.max_image_upload_bytes = 100_000, 50_000
    body, headers = multipart(("kind", None, b"checkpoint"), ("file", "big.safetensors", bytes(8 << 20)))
    status, detail, pulled = post_streamed(user_client, app, body, headers)  # chunked: no Content-Length
    assert status == 413 and "97.7 KiB limit for model files" in detail["detail"]
    assert pulled < 256 * 1024  # stopped after ~164 KiB of an 8 MiB body
    assert_nothing_stored(app, settings)
    r = user_client.post("/api/v1/assets", content=body, headers=headers)  # with Content-Length: refused at once
    assert r.status_code == 413 and "The upload is 8 MiB" in r.json()["detail"]
    assert_nothing_stored(app, settings)


def test_image_limit_applies_while_streaming_and_when_kind_comes_last(user_client, app, settings):
    settings.max_image_upload_bytes = 50_000
    body, headers = multipart(("kind", None, b"reference_image"), ("file", "a.png", bytes(8 << 20)))
    status, detail, pulled = post_streamed(user_client, app, body, headers)
    assert status == 413 and "48.8 KiB limit for reference images" in detail["detail"]
    assert pulled <= 2 << 20  # the file part is checked per ~1 MiB batch, not after 8 MiB
    body, headers = multipart(("file", "a.png", bytes(60_000)), ("kind", None, b"reference_image"))
    r = user_client.post("/api/v1/assets", content=body, headers=headers)
    assert r.status_code == 413 and "limit for reference images" in r.json()["detail"]
    assert_nothing_stored(app, settings)


def test_storage_quota(user_client, app, settings, tmp_path):
    first = model_bytes(tmp_path, KOHYA_SD15, "a.safetensors")
    second = model_bytes(tmp_path, KOHYA_SDXL, "b.safetensors")
    settings.user_storage_quota_bytes = len(first) + len(second) - 1
    r1 = upload(user_client, "lora", "a.safetensors", first)
    assert r1.status_code == 201
    before = stored(app, settings)
    r2 = upload(user_client, "lora", "b.safetensors", second)
    assert r2.status_code == 413 and "storage quota" in r2.json()["detail"], r2.text
    assert stored(app, settings) == before
    user_client.delete(f"/api/v1/assets/{r1.json()['id']}")
    assert upload(user_client, "lora", "b.safetensors", second).status_code == 201
    settings.user_storage_quota_bytes = len(second)
    r3 = upload(user_client, "lora", "a.safetensors", first)
    assert r3.status_code == 413 and "No upload fits" in r3.json()["detail"]


# ---------------------------------------------------------------------------------------------------------------
# Ownership, publishing, deletion


def test_other_users_assets_are_404_everywhere(user_client, new_client, app, settings, tmp_path):
    mine = upload(user_client, "lora", "a.safetensors", model_bytes(tmp_path, KOHYA_SD15)).json()
    other = new_client()
    signup(other, "eve@example.com")
    for method, path in [("GET", ""), ("GET", "/content"), ("DELETE", "")]:
        r = other.request(method, f"/api/v1/assets/{mine['id']}{path}")
        assert r.status_code == 404 and r.json()["detail"] == "Asset not found"
    assert other.get("/api/v1/assets").json() == []
    assert other.post(f"/api/v1/assets/{mine['id']}/publish").status_code == 403
    assert user_client.post(f"/api/v1/assets/{mine['id']}/publish").status_code == 403
    assert stored(app, settings)[0] == 1 and user_client.get(f"/api/v1/assets/{mine['id']}").status_code == 200


def test_admin_publishes_and_others_can_use_but_not_download(client, new_client, app, settings, tmp_path):
    signup(client, "root@example.com")
    make_admin(app, "root@example.com")
    ckpt = upload(client, "checkpoint", "base.safetensors", model_bytes(tmp_path, sd15_checkpoint())).json()
    lora = upload(client, "lora", "l.safetensors", model_bytes(tmp_path, KOHYA_SD15), public="true")
    assert lora.status_code == 201 and lora.json()["public"] is True
    image = upload(client, "reference_image", "a.jpg", jpeg_with_metadata()).json()
    published = client.post(f"/api/v1/assets/{ckpt['id']}/publish")
    assert published.status_code == 200 and published.json()["public"] is True
    assert client.post(f"/api/v1/assets/{image['id']}/publish").status_code == 422

    user = new_client()
    signup(user, "ada@example.com")
    seen = user.get(f"/api/v1/assets/{ckpt['id']}")
    assert seen.status_code == 200 and seen.json()["owned"] is False
    assert user.get(f"/api/v1/assets/{ckpt['id']}/content").status_code == 404
    assert user.delete(f"/api/v1/assets/{ckpt['id']}").status_code == 404
    assert user.get("/api/v1/assets").json() == []
    assert {a["id"] for a in user.get("/api/v1/assets?include_public=true").json()} == {ckpt["id"],
                                                                                        lora.json()["id"]}
    assert user.post(f"/api/v1/assets/{ckpt['id']}/unpublish").status_code == 403
    with app.state.services.db.transaction() as s:
        ada = s.scalars(select(User).where(User.email == "ada@example.com")).one()
        assert {a.id for a in asset_service.list_models(s, user=ada)} == {ckpt["id"], lora.json()["id"]}
        got = asset_service.get_usable(s, user=ada, asset_id=ckpt["id"], kinds=("checkpoint",), what="Checkpoint")
        assert got.id == ckpt["id"]
        with pytest.raises(NotFound, match="LoRA not found"):
            asset_service.get_usable(s, user=ada, asset_id=ckpt["id"], kinds=("lora",), what="LoRA")
        with pytest.raises(NotFound, match="Image not found"):
            asset_service.get_usable(s, user=ada, asset_id=image["id"], kinds=("reference_image",), what="Image")

    assert client.post(f"/api/v1/assets/{ckpt['id']}/unpublish").json()["public"] is False
    assert user.get(f"/api/v1/assets/{ckpt['id']}").status_code == 404


def test_only_admins_upload_public(user_client, app, settings, tmp_path):
    r = upload(user_client, "lora", "l.safetensors", model_bytes(tmp_path, KOHYA_SD15), public="true")
    assert r.status_code == 403 and "administrators" in r.json()["detail"]
    assert_nothing_stored(app, settings)


def test_delete_removes_row_and_blob(user_client, app, settings, tmp_path):
    data = model_bytes(tmp_path, KOHYA_SD15)
    asset = upload(user_client, "lora", "a.safetensors", data).json()
    with app.state.services.db.transaction() as s:
        user_id = s.scalars(select(Asset.user_id)).one()
        assert asset_service.used_bytes(s, user_id=user_id) == len(data)
    assert user_client.delete(f"/api/v1/assets/{asset['id']}").status_code == 204
    assert_nothing_stored(app, settings)
    assert user_client.get(f"/api/v1/assets/{asset['id']}").status_code == 404
    assert user_client.delete(f"/api/v1/assets/{asset['id']}").status_code == 404
    with app.state.services.db.transaction() as s:
        assert asset_service.used_bytes(s, user_id=user_id) == 0


# ---------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_add_list_remove(cli_env):
    from imagen.cli import app as cli

    runner = CliRunner()
    assert runner.invoke(cli, ["admin", "create-user", "op@example.com", "--password", "Sturdy-passphrase-42"]
                         ).exit_code == 0
    ckpt = _save(cli_env / "base model.safetensors", sdxl_checkpoint())
    lora = _save(cli_env / "style.safetensors", KOHYA_SD15)
    added = runner.invoke(cli, ["models", "add", str(ckpt), "--owner", "op@example.com", "--public"])
    assert added.exit_code == 0, added.output
    assert "Added SDXL checkpoint" in added.output and "public" in added.output
    assert runner.invoke(cli, ["models", "add", str(lora), "--owner", "op@example.com", "--kind", "lora"]
                         ).exit_code == 0
    again = runner.invoke(cli, ["models", "add", str(ckpt), "--owner", "op@example.com"])
    assert again.exit_code == 0 and "Already there" in again.output
    assert ckpt.exists()  # the operator's file is copied, never moved

    wrong = runner.invoke(cli, ["models", "add", str(lora), "--owner", "op@example.com", "--kind", "checkpoint"])
    assert wrong.exit_code == 1 and "not a checkpoint" in wrong.output
    pickled = cli_env / "old.ckpt"
    pickled.write_bytes(_pickle(cli_env))
    refused = runner.invoke(cli, ["models", "add", str(pickled), "--owner", "op@example.com"])
    assert refused.exit_code == 1 and "arbitrary code" in refused.output
    nobody = runner.invoke(cli, ["models", "add", str(lora), "--owner", "nobody@example.com"])
    assert nobody.exit_code == 1 and "No account" in nobody.output

    assert {"base model.safetensors", "style.safetensors"} <= listed_files(runner, "--owner", "op@example.com")
    blobs = cli_env / "data" / "blobs"
    files = sorted(p.name for p in blobs.rglob("*") if p.is_file())
    assert files == sorted([hashlib.sha256(ckpt.read_bytes()).hexdigest() + ".safetensors",
                            hashlib.sha256(lora.read_bytes()).hexdigest() + ".safetensors"])

    from imagen.kit.config import get_settings
    from imagen.kit.db import Database

    db = Database(get_settings().resolved_database_url)
    with db.transaction() as s:
        ids = {a.filename: a.id for a in s.scalars(select(Asset))}
    db.dispose()
    removed = runner.invoke(cli, ["models", "remove", ids["style.safetensors"]])
    assert removed.exit_code == 0 and "Removed style.safetensors" in removed.output
    assert runner.invoke(cli, ["models", "remove", ids["style.safetensors"]]).exit_code == 1
    assert len([p for p in blobs.rglob("*") if p.is_file()]) == 1
    as_json = runner.invoke(cli, ["models", "list", "--json"])
    assert as_json.exit_code == 0, as_json.output
    listed = json.loads(as_json.stdout)  # stdout only: a library may warn on stderr
    uploaded = [e for e in listed if not e["builtin"]]
    assert [(e["id"], e["file"], e["owner"], e["kind"]) for e in uploaded] == [
        (ids["base model.safetensors"], "base model.safetensors", "op@example.com", "checkpoint")]
    assert {"imagen-tiny", "imagen-tiny-xl"} <= {e["id"] for e in listed if e["builtin"]}
    table = runner.invoke(cli, ["models", "list"]).output  # a narrow table (no terminal): ids fold, never cut
    id_column = "".join(line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│"))
    assert ids["base model.safetensors"] in id_column
    runner.invoke(cli, ["models", "remove", ids["base model.safetensors"]])
    assert "No models" in runner.invoke(cli, ["models", "list", "--owner", "op@example.com"]).output
    assert listed_files(runner) == {None}  # the built-ins are still listed, with no file of their own


def listed_files(runner: CliRunner, *args: str) -> set[str | None]:
    """The file names `imagen models list --json` shows (None for the built-ins)."""
    from imagen.cli import app as cli

    result = runner.invoke(cli, ["models", "list", "--json", *args])
    assert result.exit_code == 0, result.output
    return {e["file"] for e in json.loads(result.stdout)}


def test_cli_add_without_owner_uses_the_first_admin(cli_env):
    from imagen.cli import app as cli

    runner = CliRunner()
    lora = _save(cli_env / "style.safetensors", KOHYA_SD15)
    refused = runner.invoke(cli, ["models", "add", str(lora)])
    assert refused.exit_code != 0 and "No admin account" in refused.output
    assert runner.invoke(cli, ["admin", "create-user", "user@example.com", "--password", "Sturdy-passphrase-42"]
                         ).exit_code == 0
    assert runner.invoke(cli, ["admin", "create-user", "op@example.com", "--admin", "--password",
                               "Sturdy-passphrase-42"]).exit_code == 0
    added = runner.invoke(cli, ["models", "add", str(lora)])
    assert added.exit_code == 0, added.output
    assert "style.safetensors" in listed_files(runner, "--owner", "op@example.com")
    assert "style.safetensors" not in listed_files(runner, "--owner", "user@example.com")
