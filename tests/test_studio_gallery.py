"""The gallery through the API: keyset pages with no cap, WebP thumbnails made at storage, one image deleted (not
its batch), favourites, filters, prompt search, bulk delete and ZIP download, isolation between users."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta

from PIL import Image
from sqlalchemy import select, update

from imagen.generation.gallery import THUMB_MAX_BYTES, make_thumbnail, thumb_key
from imagen.generation.models import Generation, Output
from imagen.kit.db import new_id, utcnow
from tests.conftest import TINY, signup, wait_for

WEBP_MAGIC = b"RIFF"


def submit(client, **params):
    payload = {"workflow": "txt2img", "params": {"prompt": "a fox", "checkpoint": "imagen-tiny", **TINY, **params}}
    r = client.post("/api/v1/generations", json=payload)
    assert r.status_code == 202, r.text
    return wait_for(client, r.json()["id"])


def seed_outputs(app, user_id: str, count: int, *, prompt: str = "bulk") -> list[str]:
    """Rows only (no blobs): enough for paging, which never reads a blob."""
    now = utcnow()
    ids = []
    with app.state.services.db.transaction() as s:
        for n in range(count):
            gen = Generation(id=new_id(), user_id=user_id, workflow="txt2img", workflow_version=1,
                             pipeline="txt2img", params={"prompt": f"{prompt} {n}"}, checkpoint="imagen-tiny",
                             checkpoint_sha256="0" * 64, models=[], consent_model_improvement=False,
                             status="succeeded", progress=1.0, created_at=now - timedelta(seconds=n))
            out = Output(id=new_id(), generation_id=gen.id, user_id=user_id, index=0,
                         blob_key=f"outputs/{user_id}/{gen.id}/0.png", width=64, height=64, seed=n, size_bytes=1,
                         created_at=now - timedelta(seconds=n))
            s.add_all([gen, out])
            ids.append(out.id)
    return ids


def me(client) -> str:
    return client.get("/api/v1/me").json()["id"]


def walk(client, **params) -> list[str]:
    seen, cursor = [], None
    for _ in range(100):
        page = client.get("/api/v1/outputs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += [i["id"] for i in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return seen
    raise AssertionError("more than 100 pages")


def test_paging_goes_past_200_in_order_with_no_repeats(user_client, app):
    ids = seed_outputs(app, me(user_client), 230)
    assert walk(user_client, limit=100) == ids  # newest first, all 230
    assert user_client.get("/api/v1/outputs", params={"cursor": "garbage"}).status_code == 422
    assert user_client.get("/api/v1/outputs", params={"limit": 101}).status_code == 422
    # The page shows the first 48 and the cursor to the next ones.
    html = user_client.get("/gallery").text
    assert html.count('class="tile"') == 48 and 'id="load-more"' in html and "data-next-cursor=\"\"" not in html


def test_thumbnail_is_webp_made_at_storage_and_small(user_client, app):
    body = submit(user_client, batch_size=2, width=256, height=256)
    blobs = app.state.services.blobs
    user_id = me(user_client)
    keys = sorted(blobs.keys(f"thumbs/{user_id}/"))
    assert keys == [thumb_key(user_id, body["id"], 0), thumb_key(user_id, body["id"], 1)]
    r = user_client.get(f"/api/v1/outputs/{body['outputs'][0]['id']}/thumb")
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert r.content[:4] == WEBP_MAGIC and len(r.content) < THUMB_MAX_BYTES
    assert Image.open(io.BytesIO(r.content)).size == (256, 256)
    # A large noisy image still gives a small thumbnail.
    noise = Image.frombytes("RGB", (1024, 1024), bytes((i * 7919) % 251 for i in range(1024 * 1024 * 3)))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    thumb = make_thumbnail(buffer.getvalue())
    assert len(thumb) < THUMB_MAX_BYTES and max(Image.open(io.BytesIO(thumb)).size) == 256
    # An output stored before thumbnails existed gets one on first request.
    blobs.delete(keys[1])
    assert user_client.get(f"/api/v1/outputs/{body['outputs'][1]['id']}/thumb").status_code == 200
    assert blobs.exists(keys[1])


def test_delete_one_image_keeps_the_rest_of_its_batch(user_client, app):
    body = submit(user_client, batch_size=2)
    first, second = body["outputs"]
    blobs = app.state.services.blobs
    assert user_client.delete(f"/api/v1/outputs/{first['id']}").status_code == 204
    assert user_client.get(first["url"]).status_code == 404
    assert user_client.get(second["url"]).status_code == 200
    left = user_client.get(f"/api/v1/generations/{body['id']}").json()["outputs"]
    assert [o["id"] for o in left] == [second["id"]]
    assert len(list(blobs.keys("outputs/"))) == 1 and len(list(blobs.keys("thumbs/"))) == 1
    # The last image goes with its generation (nothing left to show it by).
    assert user_client.delete(f"/api/v1/outputs/{second['id']}").status_code == 204
    assert user_client.get(f"/api/v1/generations/{body['id']}").status_code == 404
    assert not list(blobs.keys("outputs/")) and not list(blobs.keys("thumbs/"))
    assert user_client.delete(f"/api/v1/outputs/{second['id']}").status_code == 404


def test_generation_delete_removes_thumbnails(user_client, app):
    body = submit(user_client)
    assert list(app.state.services.blobs.keys("thumbs/"))
    assert user_client.delete(f"/api/v1/generations/{body['id']}").status_code == 204
    assert not list(app.state.services.blobs.keys("thumbs/"))


def test_favourites_filters_and_prompt_search(user_client, app):
    user_id = me(user_client)
    foxes = seed_outputs(app, user_id, 3, prompt="a red fox")
    owls = seed_outputs(app, user_id, 2, prompt="an owl at 100% zoom")
    with app.state.services.db.transaction() as s:
        s.execute(update(Generation).where(Generation.id.in_(
            select(Output.generation_id).where(Output.id == owls[0]).scalar_subquery()))
            .values(workflow="img2img", checkpoint="other-model"))
    r = user_client.put(f"/api/v1/outputs/{foxes[1]}/favorite", json={"favorite": True})
    assert r.status_code == 200 and r.json()["favorite"] is True
    assert walk(user_client, favorites=True) == [foxes[1]]
    assert set(walk(user_client, q="FOX")) == set(foxes)
    assert set(walk(user_client, q="owl zoom")) == set(owls)
    assert walk(user_client, q="100%") == walk(user_client, q="owl")  # % is a character, not a wildcard
    assert walk(user_client, q="_") == []
    assert walk(user_client, workflow="img2img") == [owls[0]]
    assert walk(user_client, model="other-model") == [owls[0]]
    today = utcnow().date()
    assert len(walk(user_client, since=today.isoformat(), until=today.isoformat())) in (4, 5)  # midnight edge
    assert walk(user_client, until=(today - timedelta(days=2)).isoformat()) == []
    assert user_client.put(f"/api/v1/outputs/{foxes[1]}/favorite", json={"favorite": "maybe"}).status_code == 422
    page = user_client.get("/gallery", params={"q": "owl"}).text
    assert page.count('class="tile"') == 2


def test_bulk_zip_and_bulk_delete(user_client, app):
    a = submit(user_client, batch_size=2)
    b = submit(user_client, seed=7)
    ids = [a["outputs"][0]["id"], b["outputs"][0]["id"]]
    r = user_client.get("/api/v1/outputs/archive", params={"ids": ",".join(ids)})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        assert archive.namelist() == [f"imagen-{i}.png" for i in ids]
        assert archive.read(f"imagen-{ids[0]}.png") == user_client.get(a["outputs"][0]["url"]).content
    assert user_client.get("/api/v1/outputs/archive", params={"ids": "nope"}).status_code == 422
    assert user_client.get("/api/v1/outputs/archive", params={"ids": ""}).status_code == 422
    assert user_client.get("/api/v1/outputs/archive",
                           params={"ids": ",".join([new_id() for _ in range(101)])}).status_code == 422
    r = user_client.post("/api/v1/outputs/delete", json={"ids": ids})
    assert r.status_code == 200 and r.json() == {"deleted": 2}
    assert [i["id"] for i in user_client.get("/api/v1/outputs").json()["items"]] == [a["outputs"][1]["id"]]
    assert user_client.get(f"/api/v1/generations/{b['id']}").status_code == 404  # its only image went


def test_another_users_images_answer_404(user_client, new_client, app):
    body = submit(user_client)
    out_id = body["outputs"][0]["id"]
    other = new_client()
    signup(other, "bob@example.com")
    assert other.get("/api/v1/outputs").json()["items"] == []
    assert other.get(f"/api/v1/outputs/{out_id}/thumb").status_code == 404
    assert other.delete(f"/api/v1/outputs/{out_id}").status_code == 404
    assert other.put(f"/api/v1/outputs/{out_id}/favorite", json={"favorite": True}).status_code == 404
    assert other.get("/api/v1/outputs/archive", params={"ids": out_id}).status_code == 404
    assert other.post("/api/v1/outputs/delete", json={"ids": [out_id]}).status_code == 404
    assert user_client.get(body["outputs"][0]["url"]).status_code == 200


def test_queue_lists_my_active_jobs_with_what_is_ahead_and_cancel_removes_them(settings, runtime):
    from fastapi.testclient import TestClient

    from imagen.app import create_app

    settings.worker_autostart = False  # nothing runs: the jobs stay queued
    app = create_app(settings, run_migrations=False, runtime=runtime)
    payload = {"workflow": "txt2img", "params": {"prompt": "a queued fox", "checkpoint": "imagen-tiny", **TINY}}
    with TestClient(app, base_url="https://testserver") as a, TestClient(app, base_url="https://testserver") as b:
        signup(a, "a@example.com")
        signup(b, "b@example.com")
        first = a.post("/api/v1/generations", json=payload).json()["id"]
        b.post("/api/v1/generations", json=payload)
        second = a.post("/api/v1/generations", json=payload).json()["id"]
        items = a.get("/api/v1/queue").json()["items"]
        assert [(i["id"], i["status"], i["ahead"], i["prompt"]) for i in items] == [
            (first, "queued", 0, "a queued fox"), (second, "queued", 2, "a queued fox")]
        assert len(b.get("/api/v1/queue").json()["items"]) == 1
        assert a.post(f"/api/v1/generations/{first}/cancel").status_code == 200
        assert [i["id"] for i in a.get("/api/v1/queue").json()["items"]] == [second]
