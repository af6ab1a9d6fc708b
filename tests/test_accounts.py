"""Sign-up rules (18+, duplicates, passwords, policy version), sessions, CSRF, API keys, security log."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from imagen.accounts.models import ApiKey, LoginSession, SecurityEvent, User
from imagen.consent.models import ConsentRecord
from imagen.kit.db import utcnow
from tests.conftest import PASSWORD, POLICY_VERSION, signup, signup_payload


def count(app, model) -> int:
    with app.state.services.db.transaction() as s:
        return s.scalar(select(func.count()).select_from(model))


def years_ago(years: int, days: int = 0) -> str:
    today = date.today()
    d = today.replace(year=today.year - years)
    return date.fromordinal(d.toordinal() + days).isoformat()


def test_signup_creates_account_with_consents_off_by_default(client, app):
    body = signup(client, consents={})
    assert body["account"]["email"] == "ada@example.com"
    assert body["account"]["consents"] == {"model_improvement": False, "marketing_emails": False}
    assert body["account"]["policy_version_accepted"] == POLICY_VERSION
    assert client.cookies.get("imagen_session") and client.cookies.get("imagen_csrf") == body["csrf_token"]
    with app.state.services.db.transaction() as s:
        records = s.scalars(select(ConsentRecord)).all()
        assert {(r.purpose, r.granted, r.policy_version) for r in records} == {
            ("policy_acceptance", True, POLICY_VERSION),
            ("model_improvement", False, POLICY_VERSION),
            ("marketing_emails", False, POLICY_VERSION),
        }
        event = s.scalars(select(SecurityEvent).where(SecurityEvent.kind == "signup")).one()
        assert event.ip_address and event.user_agent and event.created_at


def test_signup_records_ticked_consents(client):
    body = signup(client, consents={"model_improvement": True, "marketing_emails": True})
    assert body["account"]["consents"] == {"model_improvement": True, "marketing_emails": True}


def test_session_cookie_is_httponly_secure_samesite(client):
    r = client.post("/api/v1/auth/signup", json=signup_payload())
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("imagen_session="))
    assert "HttpOnly" in session and "Secure" in session and "SameSite=lax" in session
    csrf = next(c for c in cookies if c.startswith("imagen_csrf="))
    assert "HttpOnly" not in csrf and "Secure" in csrf


@pytest.mark.parametrize(
    ("dob", "accepted"),
    [(years_ago(18, 1), False), (years_ago(17), False), (years_ago(10), False), (years_ago(18), True)],
)
def test_under_18_is_refused_and_nothing_is_stored(client, app, dob, accepted):
    r = client.post("/api/v1/auth/signup", json=signup_payload(date_of_birth=dob))
    if accepted:
        assert r.status_code == 201
        return
    assert r.status_code == 422
    assert "18 or older" in r.json()["detail"][0]["msg"]
    assert r.json()["detail"][0]["loc"] == ["body", "date_of_birth"]
    assert count(app, User) == 0 and count(app, ConsentRecord) == 0 and count(app, SecurityEvent) == 0
    assert "imagen_session" not in r.cookies


def test_duplicate_email_is_refused_case_insensitively(client, app):
    signup(client)
    r = client.post("/api/v1/auth/signup", json=signup_payload("ADA@Example.com"))
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    assert count(app, User) == 1


@pytest.mark.parametrize(
    ("password", "reason"),
    [("short1A", "at least 10"), ("password123", "too easy to guess"), ("aaaaaaaaaaaa", "Repeats"),
     ("password1234", "very common"), ("ada-lovelace-ada", "too easy to guess")],
)
def test_weak_passwords_are_refused(client, app, password, reason):
    r = client.post("/api/v1/auth/signup", json=signup_payload("ada-lovelace@example.com", password=password))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "password"] and reason in r.json()["detail"][0]["msg"]
    assert count(app, User) == 0


def test_policy_version_must_be_current(client, app):
    r = client.post("/api/v1/auth/signup", json=signup_payload(accept_policy_version="2020-01-01"))
    assert r.status_code == 422
    assert "not the current version" in r.json()["detail"][0]["msg"]
    assert count(app, User) == 0
    assert client.get("/api/v1/policy").json()["version"] == POLICY_VERSION


@pytest.mark.parametrize(
    ("field", "value"), [("country", "XX"), ("email", "not-an-email"), ("date_of_birth", "2999-01-01")]
)
def test_bad_signup_fields_name_the_field(client, field, value):
    r = client.post("/api/v1/auth/signup", json=signup_payload(**{field: value}))
    assert r.status_code == 422
    assert any(field in d["loc"] for d in r.json()["detail"])


def test_login_logout_and_security_log(client, new_client, app):
    signup(client)
    other = new_client()
    bad = other.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": "wrong-password-1"},
                     headers={"User-Agent": "pytest-agent"})
    assert bad.status_code == 401 and bad.json()["detail"] == "Email or password is incorrect"
    unknown = other.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
    assert unknown.status_code == 401 and unknown.json()["detail"] == bad.json()["detail"]
    assert other.get("/api/v1/me").status_code == 401

    ok = other.post("/api/v1/auth/login", json={"email": "Ada@example.com", "password": PASSWORD})
    assert ok.status_code == 200
    other.headers["X-CSRF-Token"] = ok.json()["csrf_token"]
    assert other.get("/api/v1/me").json()["email"] == "ada@example.com"
    assert other.post("/api/v1/auth/logout").status_code == 204
    assert other.get("/api/v1/me").status_code == 401

    with app.state.services.db.transaction() as s:
        events = s.scalars(select(SecurityEvent).order_by(SecurityEvent.created_at)).all()
        kinds = [e.kind for e in events]
        assert kinds == ["signup", "login_failed", "login_failed", "login", "logout"]
        failed = events[1]
        assert failed.user_agent == "pytest-agent" and failed.ip_address and failed.email == "ada@example.com"
        # An address with no account behind it is not stored (it may belong to an erased user).
        assert events[2].email is None and events[2].user_id is None


def test_cookie_writes_need_the_csrf_header(client):
    body = signup(client)
    del client.headers["X-CSRF-Token"]
    r = client.post("/api/v1/api-keys", json={"name": "laptop"})
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["detail"]
    r = client.post("/api/v1/api-keys", json={"name": "laptop"}, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    r = client.post("/api/v1/api-keys", json={"name": "laptop"}, headers={"X-CSRF-Token": body["csrf_token"]})
    assert r.status_code == 201
    assert client.get("/api/v1/me").status_code == 200  # reads need no token


def test_api_keys_shown_once_stored_hashed_and_revocable(user_client, new_client, app):
    r = user_client.post("/api/v1/api-keys", json={"name": "script"})
    assert r.status_code == 201
    key = r.json()["key"]
    listed = user_client.get("/api/v1/api-keys").json()
    assert [k["name"] for k in listed] == ["script"] and "key" not in listed[0]
    with app.state.services.db.transaction() as s:
        stored = s.scalars(select(ApiKey)).one()
        assert key not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64

    bearer = new_client()
    bearer.headers["Authorization"] = f"Bearer {key}"
    assert bearer.get("/api/v1/me").json()["email"] == "ada@example.com"
    # Bearer writes need no CSRF token: no cookie is involved.
    assert bearer.post("/api/v1/api-keys", json={"name": "second"}).status_code == 201

    assert user_client.delete(f"/api/v1/api-keys/{r.json()['id']}").status_code == 204
    assert bearer.get("/api/v1/me").status_code == 401
    wrong = new_client()
    wrong.headers["Authorization"] = "Bearer imk_not-a-real-key"
    assert wrong.get("/api/v1/me").status_code == 401


def test_api_keys_of_another_user_answer_404(user_client, new_client):
    key_id = user_client.post("/api/v1/api-keys", json={"name": "mine"}).json()["id"]
    other = new_client()
    signup(other, "bob@example.com")
    assert other.delete(f"/api/v1/api-keys/{key_id}").status_code == 404
    assert len(user_client.get("/api/v1/api-keys").json()) == 1


# ---- what is stored for sessions, passwords and logins (policy §9, §1.2); suspension stops API keys ----

def test_session_tokens_are_stored_only_as_hashes(client, new_client, app):
    signup(client)
    other = new_client()
    assert other.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}).status_code == 200
    tokens = {c.cookies.get("imagen_session") for c in (client, other)}
    assert len(tokens) == 2 and all(t and len(t) >= 32 for t in tokens)
    with app.state.services.db.transaction() as s:
        rows = s.scalars(select(LoginSession)).all()
        stored = [str(getattr(row, column.key)) for row in rows for column in LoginSession.__table__.columns]
    assert len(rows) == 2
    for token in tokens:
        # Neither the token nor a large piece of it is in any column of any session row.
        assert not any(token in value or token[:16] in value for value in stored), "session token stored in clear"
    assert {row.token_hash for row in rows} == {hashlib.sha256(t.encode()).hexdigest() for t in tokens}


def test_passwords_are_salted_argon2id_hashes(client, new_client, app):
    signup(client, "ada@example.com")
    signup(new_client(), "bob@example.com")  # the same password
    with app.state.services.db.transaction() as s:
        hashes = dict(s.execute(select(User.email, User.password_hash)).all())
    ada, bob = hashes["ada@example.com"], hashes["bob@example.com"]
    assert ada.startswith("$argon2id$") and bob.startswith("$argon2id$")
    assert ada != bob  # a salt per password: equal passwords don't give equal hashes
    assert PASSWORD not in ada and hashlib.sha256(PASSWORD.encode()).hexdigest() not in (ada, bob)
    assert PasswordHasher().verify(ada, PASSWORD) and PasswordHasher().verify(bob, PASSWORD)
    login = new_client().post("/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
    assert login.status_code == 200
    wrong = new_client().post("/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD + "x"})
    assert wrong.status_code == 401


def test_login_and_logout_record_ip_and_user_agent(client, app):
    signup(client)
    browser = TestClient(app, base_url="https://testserver", client=("203.0.113.9", 50123),
                         headers={"User-Agent": "Firefox/140 (test)"})
    login = browser.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 200
    browser.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    assert browser.post("/api/v1/auth/logout").status_code == 204
    with app.state.services.db.transaction() as s:
        query = select(SecurityEvent).where(SecurityEvent.kind.in_(("login", "logout")))
        events = {e.kind: e for e in s.scalars(query)}
        assert set(events) == {"login", "logout"}
        for kind, event in events.items():
            assert (event.ip_address, event.user_agent) == ("203.0.113.9", "Firefox/140 (test)"), kind
            assert event.user_id is not None and event.created_at is not None


def test_api_keys_stop_working_while_the_account_is_suspended(user_client, new_client, app):
    key = user_client.post("/api/v1/api-keys", json={"name": "script"}).json()["key"]
    bearer = new_client()
    bearer.headers["Authorization"] = f"Bearer {key}"
    assert bearer.get("/api/v1/me").status_code == 200

    def suspend(at) -> None:
        with app.state.services.db.transaction() as s:
            s.execute(update(User).where(User.email == "ada@example.com").values(suspended_at=at))

    suspend(utcnow())
    assert bearer.get("/api/v1/me").status_code in (401, 403)
    assert bearer.get("/api/v1/generations").status_code in (401, 403)
    assert bearer.post("/api/v1/api-keys", json={"name": "another"}).status_code in (401, 403)
    assert user_client.get("/api/v1/me").status_code in (401, 403)  # the browser session too
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(ApiKey)) == 1  # nothing was created
    suspend(None)  # restored: the same key works again, so it was the suspension that stopped it
    assert bearer.get("/api/v1/me").json()["email"] == "ada@example.com"
