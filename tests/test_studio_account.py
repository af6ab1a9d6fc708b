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
