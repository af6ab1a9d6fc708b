"""Account security against a real SMTP server (aiosmtpd on 127.0.0.1): email verification, password reset, changes
of password and email, TOTP two-factor with recovery codes, staff 2FA, login throttling, retention of the counters.

The app is built with the SMTP settings from the start (the composition root builds the mailer once)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from imagen.accounts.models import AccountToken, LoginFailure, LoginSession, RecoveryCode, TotpCredential, User
from imagen.app import create_app
from imagen.kit.db import utcnow
from imagen.mail.models import OutboundEmail
from imagen.privacy.retention import run_retention
from tests.conftest import PASSWORD, signup
from tests.test_mail import Inbox, smtp_server  # noqa: F401  (smtp_server: a fixture)

NEW_PASSWORD = "violet-harbour-tangent-91"
LINK = re.compile(r"https?://\S+")


class Mailroom:
    """The running app, its SMTP inbox, and helpers to read what was delivered."""

    def __init__(self, app: FastAPI, inbox: Inbox) -> None:
        self.app, self.inbox = app, inbox

    def delivered(self, to: str, subject_part: str = "") -> list[Any]:
        assert self.app.state.services.tasks.wait_idle()  # reset lookups and deliveries run as tasks after commit
        return [m["message"] for m in self.inbox.messages
                if m["rcpt_tos"] == [to] and subject_part in m["message"]["Subject"]]

    def token(self, to: str, subject_part: str, path: str) -> str:
        [*_, msg] = self.delivered(to, subject_part)
        [url] = LINK.findall(msg.get_content())
        parsed = urlparse(url)
        assert parsed.path == path
        [token] = parse_qs(parsed.query)["token"]
        return token

    def db(self):
        return self.app.state.services.db.transaction()


@pytest.fixture
def smtp_settings(settings, smtp_server):  # noqa: F811
    _inbox, port = smtp_server
    return settings.model_copy(update={"mail_backend": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port,
                                       "smtp_starttls": False, "base_url": "https://imagen.test"})


def running(settings, runtime, inbox: Inbox) -> Iterator[tuple[TestClient, Mailroom]]:
    app = create_app(settings, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as client:
        yield client, Mailroom(app, inbox)


@pytest.fixture
def mail_client(smtp_settings, runtime, smtp_server):  # noqa: F811
    yield from running(smtp_settings, runtime, smtp_server[0])


def browser(mailroom: Mailroom) -> TestClient:
    return TestClient(mailroom.app, base_url="https://testserver")


def login(client: TestClient, email: str = "ada@example.com", password: str = PASSWORD, **extra: Any):
    r = client.post("/api/v1/auth/login", json={"email": email, "password": password, **extra})
    if r.status_code == 200:
        client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return r


def submit(client: TestClient):
    # An unknown workflow: past the verification gate it is a 4xx about the workflow, never the 403.
    return client.post("/api/v1/generations", json={"workflow": "no-such-workflow", "params": {}})


# ---- email verification ------------------------------------------------------------------------------------------


def test_signup_with_smtp_mails_a_single_use_link_that_unlocks_generation(mail_client):
    client, mail = mail_client
    signup(client)
    assert client.get("/api/v1/me").json()["email_verification_required"] is True
    r = submit(client)
    assert r.status_code == 403 and "Confirm your email address" in r.json()["detail"]
    upload = client.post("/api/v1/assets?kind=reference_image&filename=a.png", content=b"\x89PNG")
    assert upload.status_code == 403 and "Confirm your email address" in upload.json()["detail"]
    token = mail.token("ada@example.com", "Confirm your email", "/verify-email")

    other = browser(mail)  # the link may be opened anywhere, signed in or not
    r = other.post("/api/v1/auth/verify-email", json={"token": token})
    assert r.status_code == 200, r.text
    me = client.get("/api/v1/me").json()
    assert me["email_verification_required"] is False and me["email_verified_at"]
    assert submit(client).status_code != 403
    again = other.post("/api/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 400 and "already used" in again.json()["detail"]
    with mail.db() as s:
        [row] = s.scalars(select(AccountToken)).all()
        assert token not in row.token_hash and row.used_at is not None  # only a keyed hash is stored


def test_resend_replaces_the_old_link_and_an_expired_link_is_refused(mail_client):
    client, mail = mail_client
    signup(client)
    first = mail.token("ada@example.com", "Confirm your email", "/verify-email")
    assert client.post("/api/v1/me/verify-email").status_code == 202
    second = mail.token("ada@example.com", "Confirm your email", "/verify-email")
    assert first != second and len(mail.delivered("ada@example.com", "Confirm your email")) == 2
    r = client.post("/api/v1/auth/verify-email", json={"token": first})
    assert r.status_code == 400 and "expired" in r.json()["detail"]
    with mail.db() as s:
        s.execute(update(AccountToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    r = client.post("/api/v1/auth/verify-email", json={"token": second})
    assert r.status_code == 400 and "expired" in r.json()["detail"]
    assert client.get("/api/v1/me").json()["email_verification_required"] is True
    bogus = client.post("/api/v1/auth/verify-email", json={"token": "not-a-token"})
    assert bogus.status_code == 400 and "not valid" in bogus.json()["detail"]


def test_the_outbox_backend_sends_no_verification_and_requires_none(client, app):
    signup(client)
    assert client.get("/api/v1/me").json()["email_verification_required"] is False
    assert submit(client).status_code != 403
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(OutboundEmail)) == 0


# ---- password reset ----------------------------------------------------------------------------------------------


def test_reset_answers_known_and_unknown_addresses_alike(mail_client, monkeypatch):
    client, mail = mail_client
    signup(client)
    tasks = mail.app.state.services.tasks
    enqueued: list[tuple[str, tuple[str, ...]]] = []
    real = tasks.enqueue
    monkeypatch.setattr(tasks, "enqueue", lambda name, *args: (enqueued.append((name, args)), real(name, *args)))
    anon = browser(mail)
    known = anon.post("/api/v1/auth/password-reset", json={"email": "Ada@Example.com"})
    unknown = anon.post("/api/v1/auth/password-reset", json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert {k: v for k, v in known.headers.items() if k != "date"} == \
        {k: v for k, v in unknown.headers.items() if k != "date"}
    # The same path for both: the request enqueues the lookup; only the task knows whether an account exists.
    resets = [e for e in enqueued if e[0] == "accounts.password_reset"]
    assert resets == [("accounts.password_reset", ("ada@example.com",)),
                      ("accounts.password_reset", ("nobody@example.com",))]
    assert len(mail.delivered("ada@example.com", "Reset your IMAGEN password")) == 1
    assert mail.delivered("nobody@example.com") == []
    with mail.db() as s:
        assert s.scalar(select(func.count()).select_from(OutboundEmail)
                        .where(OutboundEmail.to_address == "nobody@example.com")) == 0


def test_reset_link_sets_the_password_once_and_signs_every_browser_out(mail_client):
    client, mail = mail_client
    signup(client)
    second = browser(mail)
    assert login(second).status_code == 200
    assert browser(mail).post("/api/v1/auth/password-reset", json={"email": "ada@example.com"}).status_code == 202
    token = mail.token("ada@example.com", "Reset your IMAGEN password", "/reset-password")

    anon = browser(mail)
    weak = anon.post("/api/v1/auth/password-reset/confirm", json={"token": token, "password": "password1234"})
    assert weak.status_code == 422 and "too easy to guess" in weak.json()["detail"][0]["msg"]
    r = anon.post("/api/v1/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD})
    assert r.status_code in (200, 204), r.text
    assert client.get("/api/v1/me").status_code == 401 and second.get("/api/v1/me").status_code == 401
    with mail.db() as s:
        assert s.scalar(select(func.count()).select_from(LoginSession)) == 0
    assert login(browser(mail)).status_code == 401
    assert login(browser(mail), password=NEW_PASSWORD).status_code == 200
    assert mail.delivered("ada@example.com", "password was changed")
    used = anon.post("/api/v1/auth/password-reset/confirm",
                     json={"token": token, "password": "another-" + NEW_PASSWORD})
    assert used.status_code == 400 and "already used" in used.json()["detail"]
    assert login(browser(mail), password=NEW_PASSWORD).status_code == 200


def test_an_expired_reset_link_is_refused(mail_client):
    client, mail = mail_client
    signup(client)
    client.post("/api/v1/auth/password-reset", json={"email": "ada@example.com"})
    token = mail.token("ada@example.com", "Reset your IMAGEN password", "/reset-password")
    with mail.db() as s:
        s.execute(update(AccountToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    r = client.post("/api/v1/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD})
    assert r.status_code == 400 and "expired" in r.json()["detail"]
    assert client.get("/api/v1/me").status_code == 200  # nothing changed: this session still works
    assert login(browser(mail)).status_code == 200


# ---- changing the password and the email --------------------------------------------------------------------------


def test_password_change_needs_the_current_password_and_ends_other_sessions(mail_client):
    client, mail = mail_client
    signup(client)
    other = browser(mail)
    assert login(other).status_code == 200
    wrong = client.post("/api/v1/me/password",
                        json={"current_password": "not-it-at-all-9", "new_password": NEW_PASSWORD})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "current_password"]
    assert other.get("/api/v1/me").status_code == 200
    weak = client.post("/api/v1/me/password", json={"current_password": PASSWORD, "new_password": "password1234"})
    assert weak.status_code == 422 and "very common" in weak.json()["detail"][0]["msg"]
    ok = client.post("/api/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert ok.status_code == 204
    assert client.get("/api/v1/me").status_code == 200 and other.get("/api/v1/me").status_code == 401
    assert login(browser(mail), password=NEW_PASSWORD).status_code == 200


def test_email_change_is_confirmed_on_the_new_address_and_the_old_one_is_told(mail_client):
    client, mail = mail_client
    signup(client)
    signup(browser(mail), "taken@example.com")
    wrong = client.post("/api/v1/me/email", json={"new_email": "ada@new.example", "current_password": "nope-nope-9"})
    assert wrong.status_code == 422
    taken = client.post("/api/v1/me/email", json={"new_email": "taken@example.com", "current_password": PASSWORD})
    assert taken.status_code == 409
    r = client.post("/api/v1/me/email", json={"new_email": "Ada@New.example", "current_password": PASSWORD})
    assert r.status_code == 202, r.text
    token = mail.token("ada@new.example", "Confirm your new email", "/verify-email")
    assert client.get("/api/v1/me").json()["email"] == "ada@example.com"  # not before the link is opened
    assert client.post("/api/v1/auth/verify-email", json={"token": token}).status_code == 200
    me = client.get("/api/v1/me").json()
    assert me["email"] == "ada@new.example" and me["email_verified_at"]
    [notice] = mail.delivered("ada@example.com", "email address was changed")
    assert "ada@new.example" in notice.get_content()
    assert login(browser(mail), email="ada@new.example").status_code == 200
    assert login(browser(mail)).status_code == 401


# ---- two-factor ----------------------------------------------------------------------------------------------------


def enrol(client: TestClient) -> tuple[pyotp.TOTP, list[str]]:
    assert client.post("/api/v1/me/2fa/setup", json={"password": "wrong-password-9"}).status_code == 422
    r = client.post("/api/v1/me/2fa/setup", json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["otpauth_uri"].startswith("otpauth://totp/") and body["secret"] in body["otpauth_uri"]
    totp = pyotp.TOTP(body["secret"])
    assert client.post("/api/v1/me/2fa/confirm", json={"code": "000000" if totp.now() != "000000" else "111111"}
                       ).status_code == 422
    r = client.post("/api/v1/me/2fa/confirm", json={"code": totp.now()})
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    return totp, codes


def test_two_factor_enrolment_login_and_recovery_codes(mail_client):
    client, mail = mail_client
    signup(client)
    totp, codes = enrol(client)
    assert client.get("/api/v1/me/2fa").json() == {"enabled": True, "recovery_codes_left": 10, "required": False}
    with mail.db() as s:
        cred = s.get(TotpCredential, client.get("/api/v1/me").json()["id"])
        assert totp.secret not in cred.secret_encrypted  # stored encrypted
        assert all(c not in h for c in codes for h in s.scalars(select(RecoveryCode.code_hash)))

    r = login(browser(mail))
    assert r.status_code == 401 and r.json()["two_factor_required"] is True
    assert "imagen_session" not in r.cookies
    assert login(browser(mail), code="123456" if totp.now() != "123456" else "654321").status_code == 401
    # The enrolment used the current step's code; the next step's is within the allowed drift, and works once.
    next_code = totp.at(utcnow() + timedelta(seconds=30))
    assert login(browser(mail), code=next_code).status_code == 200
    assert login(browser(mail), code=next_code).status_code == 401  # replayed
    assert login(browser(mail), code=codes[0]).status_code == 200
    assert login(browser(mail), code=codes[0]).status_code == 401  # used up
    assert login(browser(mail), code=codes[1].upper().replace("-", " ")).status_code == 200
    assert client.get("/api/v1/me/2fa").json()["recovery_codes_left"] == 8
    assert client.post("/api/v1/me/2fa/recovery-codes", json={"code": codes[2]}).status_code == 422  # needs the app
    with mail.db() as s:  # as if the next 30-second step had come (its code was used above)
        s.execute(update(TotpCredential).values(last_step=None))
    fresh = client.post("/api/v1/me/2fa/recovery-codes", json={"code": totp.now()})
    assert fresh.status_code == 200 and len(fresh.json()["recovery_codes"]) == 10
    assert login(browser(mail), code=codes[3]).status_code == 401  # the old codes stopped working
    assert login(browser(mail), code=fresh.json()["recovery_codes"][0]).status_code == 200

    assert client.post("/api/v1/me/2fa/disable", json={"password": PASSWORD}).status_code == 204
    assert login(browser(mail)).status_code == 200
    assert client.get("/api/v1/me").json()["two_factor_enabled"] is False


def test_staff_need_two_factor_when_required(smtp_settings, runtime, smtp_server):  # noqa: F811
    settings = smtp_settings.model_copy(update={"require_staff_2fa": True})
    for client, mail in running(settings, runtime, smtp_server[0]):
        signup(client)
        with mail.db() as s:
            s.execute(update(User).values(role="admin"))
        r = client.get("/api/v1/admin/marketing-outputs")
        assert r.status_code == 403 and "two-factor" in r.json()["detail"]
        assert client.get("/api/v1/me/2fa").json()["required"] is True
        enrol(client)
        assert client.get("/api/v1/admin/marketing-outputs").status_code == 200


# ---- login throttling ----------------------------------------------------------------------------------------------


def test_ten_failures_pause_the_account_whatever_the_password_and_tell_the_owner(mail_client):
    client, mail = mail_client
    signup(client)
    signup(browser(mail), "bob@example.com")
    attacker = browser(mail)
    for _ in range(10):
        assert login(attacker, password="wrong-guess-wrong-9").status_code == 401
    r = login(browser(mail))  # the right password
    assert r.status_code == 429, r.text
    retry = int(r.headers["Retry-After"])
    assert 0 < retry <= 15 * 60
    assert login(attacker, password="wrong-guess-wrong-9").status_code == 429
    [notice] = mail.delivered("ada@example.com", "Sign-ins to your IMAGEN account were paused")
    assert "10 failed attempts" in notice.get_content()
    assert login(browser(mail), email="bob@example.com").status_code == 200  # other accounts are not paused
    with mail.db() as s:  # the window passes
        s.execute(update(LoginFailure).values(created_at=utcnow() - timedelta(minutes=16)))
    assert login(browser(mail)).status_code == 200


def test_the_pause_grows_for_whoever_keeps_guessing(mail_client):
    """Twice the limit within a day: once the window has passed, the pause is two windows from the last failure."""
    client, mail = mail_client
    signup(client)
    user_id = client.get("/api/v1/me").json()["id"]
    with mail.db() as s:
        s.add_all(LoginFailure(user_id=user_id, created_at=utcnow() - timedelta(minutes=20)) for _ in range(20))
    r = login(browser(mail))
    assert r.status_code == 429
    assert 9 * 60 <= int(r.headers["Retry-After"]) <= 10 * 60 + 1  # 30 minutes after the last, 20 have passed
    with mail.db() as s:
        s.execute(update(LoginFailure).values(created_at=utcnow() - timedelta(minutes=31)))
    assert login(browser(mail)).status_code == 200


def test_failures_from_one_address_pause_it_for_every_account(smtp_settings, runtime, smtp_server):  # noqa: F811
    settings = smtp_settings.model_copy(update={"login_max_failures_per_ip": 5})
    for client, mail in running(settings, runtime, smtp_server[0]):
        signup(client)
        for i in range(5):
            assert login(browser(mail), email=f"guess{i}@example.com", password="wrong-guess-wrong-9"
                         ).status_code == 401
        r = login(browser(mail))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert mail.delivered("ada@example.com", "paused") == []  # the account itself had no failures


def test_a_reset_ends_the_pause_and_retention_purges_the_counters(mail_client):
    client, mail = mail_client
    signup(client)
    for _ in range(10):
        login(browser(mail), password="wrong-guess-wrong-9")
    assert login(browser(mail)).status_code == 429
    browser(mail).post("/api/v1/auth/password-reset", json={"email": "ada@example.com"})
    token = mail.token("ada@example.com", "Reset your IMAGEN password", "/reset-password")
    assert browser(mail).post("/api/v1/auth/password-reset/confirm",
                              json={"token": token, "password": NEW_PASSWORD}).status_code == 204
    assert login(browser(mail), password=NEW_PASSWORD).status_code == 200

    services = mail.app.state.services
    with mail.db() as s:
        s.execute(update(LoginFailure).values(created_at=utcnow() - timedelta(days=2)))
    purges = run_retention(services.db, services.blobs, services.settings)
    assert any(p.name == "login_failures" and p.count == 10 for p in purges)
    with mail.db() as s:
        assert s.scalar(select(func.count()).select_from(LoginFailure)) == 0


# ---- export and erasure --------------------------------------------------------------------------------------------


def test_export_leaves_out_the_secrets_and_erasure_leaves_no_residue(mail_client, smtp_settings):
    import io
    import json
    import time
    import zipfile

    from imagen.privacy.erasure import erase_user
    from imagen.privacy.residue import residue, scan

    client, mail = mail_client
    signup(client)
    totp, _codes = enrol(client)
    client.post("/api/v1/me/email", json={"new_email": "ada@new.example", "current_password": PASSWORD})
    login(browser(mail), password="wrong-guess-wrong-9")
    r = client.post("/api/v1/me/exports")
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while (body := client.get(f"/api/v1/me/exports/{r.json()['id']}").json())["status"] == "pending":
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    with zipfile.ZipFile(io.BytesIO(client.get(body["download_url"]).content)) as z:
        data = json.loads(z.read("data.json"))["sections"]
    dumped = json.dumps(data)
    for section in ("account_links", "two_factor", "recovery_codes", "login_failures", "account_emails"):
        assert data[section]["count"] >= 1, section
    for secret_column in ("token_hash", "secret_encrypted", "code_hash", "ip_hash"):
        assert secret_column not in dumped
    assert totp.secret not in dumped

    user_id = client.get("/api/v1/me").json()["id"]
    services = mail.app.state.services
    erase_user(services.db, services.blobs, services.executor, user_id, settings=services.settings)
    with mail.db() as s:
        for model in (AccountToken, TotpCredential, RecoveryCode, LoginFailure):
            assert s.scalar(select(func.count()).select_from(model)) == 0, model
    findings = scan(services.db.engine, services.blobs, user_id=user_id, email="ada@example.com",
                    secret=smtp_settings.resolved_secret_key(), settings=smtp_settings)
    assert residue(findings) == [], [(f.where, f.needle) for f in residue(findings)]


# ---- pages ---------------------------------------------------------------------------------------------------------


def test_pages_for_the_emailed_links_and_the_account_sections(client):
    page = client.get("/reset-password?token=abc-123")
    assert page.status_code == 200 and 'data-token="abc-123"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "account_security.js" in page.text and "<script>" not in page.text
    assert 'id="reset-request-form"' in client.get("/reset-password").text
    assert 'data-token="xyz"' in client.get("/verify-email?token=xyz").text
    assert 'href="/reset-password"' in client.get("/login").text
    signup(client)
    account = client.get("/account").text
    assert 'id="twofa-setup-form"' in account and 'id="email-form"' in account
    assert client.get("/static/account_security.js").status_code == 200
