"""Account: password change (needs the current password, the password rules apply, other sessions end, this one
stays) and active sessions (listed, the current one marked, another revoked; another user's is a 404)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import PASSWORD, signup

NEW_PASSWORD = "another-Long-passphrase-9"


def login(app, email: str, password: str = PASSWORD) -> TestClient:
    other = TestClient(app, base_url="https://testserver")
    r = other.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    other.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return other


def test_password_change_ends_other_sessions(user_client, app):
    phone = login(app, "ada@example.com")
    r = user_client.post("/api/v1/me/password", json={"current_password": "wrong-password-here",
                                                      "new_password": NEW_PASSWORD})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "current_password"
    r = user_client.post("/api/v1/me/password", json={"current_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "new_password"
    assert phone.get("/api/v1/me").status_code == 200  # nothing changed yet
    r = user_client.post("/api/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 204, r.text
    assert user_client.get("/api/v1/me").status_code == 200  # this session stays
    assert phone.get("/api/v1/me").status_code == 401  # the other one ended
    assert user_client.post("/api/v1/auth/login", json={"email": "ada@example.com",
                                                        "password": PASSWORD}).status_code == 401
    login(app, "ada@example.com", NEW_PASSWORD)


def test_sessions_listed_and_revoked(user_client, app, new_client):
    phone = login(app, "ada@example.com")
    sessions = user_client.get("/api/v1/me/sessions").json()
    assert len(sessions) == 2 and [s["current"] for s in sessions].count(True) == 1
    other = next(s for s in sessions if not s["current"])
    stranger = new_client()
    signup(stranger, "eve@example.com")
    assert stranger.delete(f"/api/v1/me/sessions/{other['id']}").status_code == 404
    assert user_client.delete(f"/api/v1/me/sessions/{other['id']}").status_code == 204
    assert phone.get("/api/v1/me").status_code == 401
    assert [s["current"] for s in user_client.get("/api/v1/me/sessions").json()] == [True]


def test_metadata_setting_is_off_by_default_and_writes_a1111_parameters_when_on(user_client):
    import io

    from PIL import Image

    from tests.conftest import TINY, wait_for

    r = user_client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {
        "prompt": "a fox in snow", "negative_prompt": "blur", "checkpoint": "imagen-tiny", **TINY}})
    body = wait_for(user_client, r.json()["id"])
    url = body["outputs"][0]["url"]
    assert user_client.get("/api/v1/me/settings").json() == {"embed_metadata": False}
    plain = user_client.get(url).content
    assert "parameters" not in Image.open(io.BytesIO(plain)).info

    r = user_client.put("/api/v1/me/settings", json={"embed_metadata": True})
    assert r.status_code == 200 and r.json() == {"embed_metadata": True}
    assert user_client.put("/api/v1/me/settings", json={"embed_metadata": "yes please"}).status_code == 422
    tagged = user_client.get(f"{url}?download=1")
    assert tagged.headers["content-disposition"].startswith("attachment")
    image = Image.open(io.BytesIO(tagged.content))
    text = image.info["parameters"]
    assert text.startswith("a fox in snow\nNegative prompt: blur\nSteps: 2, ")
    assert f"Seed: {TINY['seed']}, Size: 64x64" in text and "Model: imagen-tiny" in text
    assert image.tobytes() == Image.open(io.BytesIO(plain)).tobytes()  # the same pixels

    user_client.put("/api/v1/me/settings", json={"embed_metadata": False})
    assert user_client.get(url).content == plain
