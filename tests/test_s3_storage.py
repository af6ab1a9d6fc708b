"""IMAGEN_STORAGE=s3 against a real S3 API: moto's server mode, started here on 127.0.0.1 (nothing leaves the host).

The store's contract (the same one the local store keeps), its local cache of model files, presigned URLs (also
through a pass-through CDN), the start-up checks, and the whole app in S3 mode: uploads, generations, redirects to
the bucket, another user's 404, export read from the bucket, erasure leaving nothing in it, and the residue scan
listing the bucket.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.stub import Stubber
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer
from PIL import Image
from sqlalchemy import select

from imagen.accounts.models import User
from imagen.app import create_app
from imagen.inference import synthetic
from imagen.kit.config import Settings
from imagen.privacy.models import Erasure
from imagen.privacy.residue import residue, scan
from imagen.storage import BlobNotFound, make_blob_store
from imagen.storage.cache import BlobCache
from imagen.storage.local import LocalBlobStore
from imagen.storage.s3 import S3BlobStore, StorageUnavailable, make_s3_blob_store, make_s3_client
from tests.conftest import PASSWORD, TINY, signup, wait_for

REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a free port of 127.0.0.1, with fake credentials (and no other source of any)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    none = tmp_path_factory.mktemp("no-aws-config") / "absent"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "imagen-test-key")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "imagen-test-secret")
        mp.setenv("AWS_CONFIG_FILE", str(none))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(none))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A fresh bucket per test, so 'the whole bucket' is this test's alone."""
    name = f"imagen-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION).create_bucket(Bucket=name)
    return name


def s3_settings(base: Settings | None = None, **overrides) -> Settings:
    values = base.model_dump() if base is not None else {}
    return Settings(**{**values, "storage": "s3", "s3_region": REGION, **overrides})


@pytest.fixture
def s3_conf(tmp_path: Path, s3_endpoint: str, bucket: str) -> Settings:
    return s3_settings(data_dir=tmp_path / "data", s3_endpoint_url=s3_endpoint, s3_bucket=bucket)


@pytest.fixture
def store(s3_conf: Settings) -> S3BlobStore:
    made = make_blob_store(s3_conf)
    assert isinstance(made, S3BlobStore)
    return made


def bucket_keys(s3_endpoint: str, bucket: str) -> list[str]:
    """The whole bucket, read with a client of the test's own (not the store under test)."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    return [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", ())]


def count_calls(store: S3BlobStore, operation: str) -> list[int]:
    calls: list[int] = []
    store.client.meta.events.register(f"before-call.s3.{operation}", lambda **_: calls.append(1))
    return calls


# ---- the store's contract ----

def test_put_get_exists_stream_and_delete_twice(store: S3BlobStore, s3_endpoint: str, bucket: str):
    store.put("outputs/u1/a.png", b"one", "image/png")
    assert store.get("outputs/u1/a.png") == b"one" and store.exists("outputs/u1/a.png")
    assert not store.exists("outputs/u1/b.png")
    data = os.urandom(3 * 1024 + 5)
    store.put("assets/u1/x", data)
    chunks = list(store.open_stream("assets/u1/x", chunk_size=1024))
    assert b"".join(chunks) == data and len(chunks) >= 4
    head = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION).head_object(
        Bucket=bucket, Key="outputs/u1/a.png")
    assert head["ContentType"] == "image/png"
    store.delete("outputs/u1/a.png")
    store.delete("outputs/u1/a.png")  # a missing key is no error
    assert not store.exists("outputs/u1/a.png")
    for read in (store.get, store.open_stream, store.local_path):
        with pytest.raises(BlobNotFound):
            read("outputs/u1/a.png")
    with pytest.raises(ValueError, match="invalid blob key"):
        store.put("../escape", b"x")
    assert bucket_keys(s3_endpoint, bucket) == ["assets/u1/x"]


def test_keys_pages_through_the_listing(store: S3BlobStore, monkeypatch):
    monkeypatch.setattr(store, "list_page", 3)
    lists = count_calls(store, "ListObjectsV2")
    wanted = [f"outputs/u1/{i:02d}.png" for i in range(8)]
    for key in [*wanted, "outputs/u10/x.png", "assets/u1/m"]:
        store.put(key, b"x")
    assert list(store.keys("outputs/u1/")) == wanted
    assert len(lists) == 3  # 8 keys, 3 a page
    assert sorted(store.keys("")) == sorted([*wanted, "outputs/u10/x.png", "assets/u1/m"])
    assert list(store.keys("nothing/")) == []


def test_put_file_streams_in_parts_above_the_threshold_and_removes_the_file(store: S3BlobStore, tmp_path: Path):
    store.transfer = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=2)
    parts = count_calls(store, "UploadPart")
    big = store.staging_dir() / "upload.bin"
    data = os.urandom(11 << 20)
    big.write_bytes(data)
    store.put_file("assets/u1/model.safetensors", big, "application/octet-stream")
    assert not big.exists()
    assert len(parts) == 3  # 5 + 5 + 1 MiB
    assert store.client.head_object(Bucket=store.bucket, Key="assets/u1/model.safetensors")["ETag"].endswith('-3"')
    assert store.get("assets/u1/model.safetensors") == data
    small = store.staging_dir() / "small.bin"
    small.write_bytes(b"tiny")
    store.put_file("assets/u1/small", small)
    assert not small.exists() and len(parts) == 3 and store.get("assets/u1/small") == b"tiny"
    assert store.staging_dir().is_relative_to(tmp_path)


def test_clean_staging_aborts_multipart_uploads_abandoned_for_a_day(store: S3BlobStore, monkeypatch):
    upload = store.client.create_multipart_upload(Bucket=store.bucket, Key="assets/u1/crashed")["UploadId"]
    store.client.upload_part(Bucket=store.bucket, Key="assets/u1/crashed", UploadId=upload, PartNumber=1,
                             Body=b"x" * 1024)
    stale = store.staging_dir() / "upload-old"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 120, time.time() - 120))
    # moto says every upload started in 2010: a bound reaching further back makes it a young (maybe live) one.
    monkeypatch.setattr(store, "stale_multipart_seconds", 100 * 365 * 24 * 3600)
    assert store.clean_staging(60) == 1  # the local file only
    assert len(store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])) == 1
    monkeypatch.undo()  # a day: the upload is abandoned
    assert store.clean_staging(60) == 1
    assert store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    with Stubber(store.client) as stub:  # credentials that may not list uploads: the start goes on, with a warning
        stub.add_client_error("list_multipart_uploads", service_error_code="AccessDenied", http_status_code=403)
        assert store.clean_staging(60) == 0


# ---- the local cache of remote blobs ----

def test_local_path_downloads_once_and_follows_a_replaced_object(store: S3BlobStore):
    store.put("assets/u1/lora", b"version one")
    gets = count_calls(store, "GetObject")
    first = store.local_path("assets/u1/lora")
    assert first.read_bytes() == b"version one" and first.is_relative_to(store.cache.root)
    assert store.local_path("assets/u1/lora") == first and len(gets) == 1  # a hit: no second download
    modified = store.client.head_object(Bucket=store.bucket, Key="assets/u1/lora")["LastModified"]
    assert first.stat().st_mtime == modified.timestamp()  # the blob's age, not the download's

    store.put("assets/u1/lora", b"version two")  # replaced: a new ETag, so a new address
    second = store.local_path("assets/u1/lora")
    assert second != first and second.read_bytes() == b"version two" and len(gets) == 2
    store.delete("assets/u1/lora")  # every cached version of the key goes with it
    assert not first.exists() and not second.exists()
    with pytest.raises(BlobNotFound):
        store.local_path("assets/u1/lora")


def test_the_cache_is_bounded_by_bytes_and_evicts_the_least_recently_used(store: S3BlobStore, tmp_path: Path):
    store.cache = BlobCache(tmp_path / "cache", max_bytes=2500)
    for name in ("a", "b", "c"):
        store.put(f"assets/u1/{name}", name.encode() * 1000)
    a = store.local_path("assets/u1/a")
    os.utime(a, (time.time() - 100, a.stat().st_mtime))
    b = store.local_path("assets/u1/b")
    os.utime(b, (time.time() - 50, b.stat().st_mtime))
    assert store.local_path("assets/u1/a") == a  # a hit makes `a` the most recent
    c = store.local_path("assets/u1/c")  # 3000 bytes > 2500: the least recently used (b) goes
    assert a.exists() and c.exists() and not b.exists()
    assert sum(p.stat().st_size for p in store.cache.root.iterdir()) <= 2500
    store.put("assets/u1/huge", b"h" * 4000)  # alone over the budget: kept (it is in use), everything else goes
    huge = store.local_path("assets/u1/huge")
    assert [p.name for p in store.cache.root.iterdir()] == [huge.name]


def test_a_changed_object_during_download_is_fetched_again(store: S3BlobStore, monkeypatch):
    store.put("assets/u1/m", b"old")
    real_head, heads = store._head, []

    def head(key: str):
        found = real_head(key)
        if not heads:  # after the first look, before the download: someone replaces the object
            store.put(key, b"new")
        heads.append(found["ETag"])
        return found

    monkeypatch.setattr(store, "_head", head)
    assert store.local_path("assets/u1/m").read_bytes() == b"new"
    assert len(heads) == 2 and heads[0] != heads[1]
    assert len(list(store.cache.root.iterdir())) == 1  # nothing cached under the stale ETag


def test_simultaneous_readers_share_one_download_and_leave_no_temp_file(store: S3BlobStore):
    store.put("assets/u1/ckpt", os.urandom(256 * 1024))
    gets = count_calls(store, "GetObject")
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: store.local_path("assets/u1/ckpt"), range(8)))
    assert len(set(paths)) == 1 and len(gets) == 1
    assert [p.name for p in store.cache.root.iterdir()] == [paths[0].name]


def test_the_cache_ignores_live_temp_files_and_removes_abandoned_ones(tmp_path: Path):
    cache = BlobCache(tmp_path / "cache", max_bytes=10)
    live, abandoned = cache.root / ".tmp-live", cache.root / ".tmp-crashed"
    live.write_bytes(b"x" * 100)  # another process's download in progress: not counted, not removed
    abandoned.write_bytes(b"x" * 100)
    old = time.time() - 2 * 3600
    os.utime(abandoned, (old, old))
    path = cache.get_or_fill("k", '"etag"', old, lambda f: f.write(b"12345"))
    assert path.read_bytes() == b"12345" and live.exists() and not abandoned.exists()
    assert path.stat().st_mtime == old  # the blob's time, as given


# ---- presigned URLs ----

def test_presigned_url_serves_the_bytes_and_the_download_name(store: S3BlobStore):
    store.put("outputs/u1/o.png", b"\x89PNG-bytes", "image/png")
    url = store.presigned_url("outputs/u1/o.png", 60)
    assert url is not None and "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    got = httpx.get(url)
    assert got.status_code == 200 and got.content == b"\x89PNG-bytes"
    assert got.headers["content-type"] == "image/png" and got.headers["cache-control"] == "private, no-store"
    attached = httpx.get(store.presigned_url("outputs/u1/o.png", 60, download_name="imagen-o.png"))
    assert attached.headers["content-disposition"] == 'attachment; filename="imagen-o.png"'
    assert LocalBlobStore(store.staging_dir() / "local").presigned_url("x", 60) is None


def test_presigned_url_on_a_pass_through_cdn(store: S3BlobStore, s3_endpoint: str):
    """The CDN base replaces scheme and host; a CDN that forwards path and query to the origin serves the bytes."""
    store.put("outputs/u1/o.png", b"png", "image/png")
    store.cdn_base_url = "https://cdn.imagen.test/edge"
    url = store.presigned_url("outputs/u1/o.png", 60)
    assert url is not None and url.startswith(f"https://cdn.imagen.test/edge/{store.bucket}/outputs/u1/o.png?")
    assert "X-Amz-Signature=" in url

    def cdn(request: httpx.Request) -> httpx.Response:  # forwards to the origin the URL was signed for
        assert request.url.path.startswith("/edge/")
        origin = httpx.URL(s3_endpoint).copy_with(path=request.url.path.removeprefix("/edge"),
                                                  query=request.url.query)
        return httpx.get(origin)

    with httpx.Client(transport=httpx.MockTransport(cdn)) as client:
        got = client.get(url)
    assert got.status_code == 200 and got.content == b"png"


# ---- start-up checks name the setting at fault ----

def test_a_missing_bucket_fails_at_start_naming_the_setting(s3_conf: Settings, settings: Settings, runtime):
    wrong = s3_settings(s3_conf, s3_bucket="imagen-no-such-bucket")
    with pytest.raises(StorageUnavailable, match="IMAGEN_S3_BUCKET=imagen-no-such-bucket: no such bucket"):
        make_blob_store(wrong)
    app = create_app(s3_settings(settings, s3_endpoint_url=wrong.s3_endpoint_url, s3_bucket=wrong.s3_bucket),
                     run_migrations=False, runtime=runtime)
    with pytest.raises(StorageUnavailable, match="IMAGEN_S3_BUCKET"), TestClient(app):
        pass


def test_missing_or_refused_credentials_fail_at_start_naming_them(s3_conf: Settings, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageUnavailable, match="no credentials found; set AWS_ACCESS_KEY_ID"):
        make_blob_store(s3_conf)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    client = make_s3_client(s3_conf)
    with Stubber(client) as stub:  # moto accepts any key; a real service answers a wrong one with 403
        stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
        with pytest.raises(StorageUnavailable, match=f"IMAGEN_S3_BUCKET={s3_conf.s3_bucket}: access denied.*"
                                                     "AWS_ACCESS_KEY_ID"):
            make_s3_blob_store(s3_conf, client)


def test_s3_settings_validate():
    assert Settings(storage="s3", s3_bucket="b").s3_redirect_outputs is True
    with pytest.raises(ValueError, match="IMAGEN_S3_BUCKET"):
        Settings(storage="s3")
    assert Settings(data_dir=Path("/d")).resolved_blob_cache_dir == Path("/d/cache/blobs")


# ---- the app in S3 mode, end to end ----

def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return buf.getvalue()


def _upload(client: TestClient, name: str, data: bytes, kind: str) -> dict:
    r = client.post("/api/v1/assets", data={"kind": kind}, files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == 201, r.text
    return r.json()


def _generate(client: TestClient, workflow: str = "txt2img", **params) -> dict:
    r = client.post("/api/v1/generations", json={"workflow": workflow, "params": {"prompt": "a fox", **TINY, **params}})
    assert r.status_code == 202, r.text
    body = wait_for(client, r.json()["id"])
    assert body["status"] == "succeeded", body
    return body


def _export(client: TestClient) -> zipfile.ZipFile:
    export_id = client.post("/api/v1/me/exports").json()["id"]
    deadline = time.monotonic() + 60
    while (body := client.get(f"/api/v1/me/exports/{export_id}").json())["status"] == "pending":
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert body["status"] == "ready", body
    download = client.get(body["download_url"])
    assert download.status_code == 200, download.text
    return zipfile.ZipFile(io.BytesIO(download.content))


def _wait_erased(app, user_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with app.state.services.db.transaction() as s:
            if s.get(User, user_id) is None and not s.scalars(select(Erasure).where(
                    Erasure.status.in_(("scheduled", "in_progress")))).first():
                return
        time.sleep(0.05)
    raise AssertionError("the erasure did not finish")


LORA_SEEDS = itertools.count(500)


@pytest.fixture
def tiny_lora(tmp_path: Path) -> bytes:
    """A LoRA no earlier test loaded: the shared runtime must fetch it through the store, not its memory."""
    return synthetic.build_tiny_lora("sd15", tmp_path / "style.safetensors", seed=next(LORA_SEEDS)).read_bytes()


def test_the_app_on_s3_uploads_generates_redirects_exports_and_erases(
        settings, runtime, s3_endpoint, bucket, tiny_lora):
    conf = s3_settings(settings, s3_endpoint_url=s3_endpoint, s3_bucket=bucket)
    app = create_app(conf, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        assert isinstance(app.state.services.blobs, S3BlobStore)
        me = signup(client)["account"]
        user_id, email = me["id"], me["email"]
        ref = _upload(client, "ref.png", _png((200, 30, 30)), "reference_image")
        lora = _upload(client, "style.safetensors", tiny_lora, "lora")  # staged locally, then streamed up
        gens = [_generate(client, "img2img", init_image=f"asset:{ref['id']}", strength=0.5),
                _generate(client, loras=[{"id": lora["id"], "weight": 0.8}])]
        mine = [k for k in bucket_keys(s3_endpoint, bucket) if user_id in k]
        outputs = [o for g in gens for o in g["outputs"]]
        output_keys = [k for k in mine if k.startswith(f"outputs/{user_id}/")]
        assert len(output_keys) == len(outputs) == 2
        for gen in gens:
            assert any(k.startswith(f"outputs/{user_id}/{gen['id']}/") for k in output_keys), (gen["id"], mine)
        # The runtime read the LoRA from the local cache (downloaded from the bucket), not from a local blob folder.
        cached = list(app.state.services.blobs.cache.root.iterdir())
        assert [p.read_bytes() for p in cached] == [tiny_lora]
        assert not conf.blobs_dir.exists()

        # The owner is redirected to a short-lived URL of the bucket that serves the image's bytes.
        first = client.get(outputs[0]["url"])
        assert first.status_code == 307 and first.headers["cache-control"] == "private, no-store"
        location = first.headers["location"]
        key = next(k for k in output_keys if k.startswith(f"outputs/{user_id}/{gens[0]['id']}/"))
        assert location.startswith(f"{s3_endpoint}/{bucket}/{key}?") and "X-Amz-Expires=300" in location
        image = httpx.get(location)
        assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert image.content == app.state.services.blobs.get(key)
        download = client.get(outputs[0]["url"], params={"download": "true"})
        assert httpx.get(download.headers["location"]).headers["content-disposition"] == \
            f'attachment; filename="imagen-{outputs[0]["id"]}.png"'
        # Redirects off: the server streams the bytes itself.
        conf.s3_redirect_outputs = False
        streamed = client.get(outputs[0]["url"])
        assert streamed.status_code == 200 and streamed.content == image.content
        conf.s3_redirect_outputs = True

        # Another user gets a 404, and no URL.
        other = TestClient(app, base_url="https://testserver", follow_redirects=False)
        signup(other, "grace@example.com")
        theirs = _generate(other)
        refused = other.get(outputs[0]["url"])
        assert refused.status_code == 404 and "location" not in refused.headers
        assert bucket not in refused.text

        # The export carries every output, read back from the bucket.
        zf = _export(client)
        data = json.loads(zf.read("data.json"))
        rows = data["sections"]["outputs"]["items"]
        assert {r["id"] for r in rows} == {o["id"] for o in outputs}
        assert sorted(zf.read(r["file"]) for r in rows) == sorted(app.state.services.blobs.get(k) for k in output_keys)
        assert any(k.startswith("exports/") for k in bucket_keys(s3_endpoint, bucket))

        # Erasure leaves nothing of theirs in the bucket, nor in the local cache.
        assert client.request("DELETE", "/api/v1/me", json={"password": PASSWORD}).status_code == 202
        _wait_erased(app, user_id)
        # The record says "completed" before the last sweep of the blob prefixes ends: give that sweep its moment.
        deadline = time.monotonic() + 30
        while (left := bucket_keys(s3_endpoint, bucket)) and any(user_id in k for k in left) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [k for k in left if user_id in k] == [] and left  # the other user's output is still there
        assert any(f"/{theirs['id']}/" in k for k in left)
        assert list(app.state.services.blobs.cache.root.iterdir()) == []
        findings = scan(app.state.services.db.engine, app.state.services.blobs, user_id=user_id, email=email,
                        secret=conf.resolved_secret_key(), settings=conf)
        assert residue(findings) == [], [(f.where, f.samples) for f in residue(findings)]

        # The residue scan lists the bucket itself: an object left behind under their id is found.
        boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION).put_object(
            Bucket=bucket, Key=f"outputs/{user_id}/left-behind.png", Body=b"x")
        found = residue(scan(app.state.services.db.engine, app.state.services.blobs, user_id=user_id, email=email,
                             secret=conf.resolved_secret_key(), settings=conf))
        assert [(f.store, f.where) for f in found] == [("blobs", f"outputs/{user_id}/left-behind.png")]
        assert other.get(theirs["outputs"][0]["url"]).status_code == 307
