"""Privacy requests (policy §8): the public form and emailed code, the operator's queue with deadlines, the legal
moves and their audit trail, and completion through the same export/erasure code as self-service.

Mail goes through the `outbox` backend (rows in outbound_emails) except in the SMTP test, which reads a real SMTP
server. Dates in the past are set through the admin API (`received_at`) or the database, never by sleeping.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from imagen.accounts.models import User
from imagen.app import create_app
from imagen.mail.models import OutboundEmail
from imagen.privacy.requests.models import PrivacyRequest, PrivacyRequestEvent
from imagen.privacy.residue import scan
from imagen.privacy.retention import retention_service
from tests.conftest import PASSWORD, signup
from tests.test_mail import smtp_server  # noqa: F401  (fixture)

DAY = timedelta(days=1)


def make_admin(app: FastAPI, email: str) -> None:
    with app.state.services.db.transaction() as s:
        s.execute(update(User).where(User.email == email).values(role="admin"))


@pytest.fixture
def admin(client: TestClient, app: FastAPI) -> TestClient:
    signup(client, "operator@example.com")
    make_admin(app, "operator@example.com")
    return client


def mails(app: FastAPI, to: str | None = None) -> list[OutboundEmail]:
    assert app.state.services.tasks.wait_idle()  # mail is delivered by a task enqueued after commit
    with app.state.services.db.transaction() as s:
        query = select(OutboundEmail).order_by(OutboundEmail.created_at)
        return list(s.scalars(query.where(OutboundEmail.to_address == to) if to else query))


def code_in(text: str) -> str:
    match = re.search(r"^    (\d{6})\r?$", text, re.MULTILINE)
    assert match, text
    return match.group(1)


def latest_code(app: FastAPI, to: str) -> str:
    return code_in([m for m in mails(app, to) if m.kind == "privacy_request.code"][-1].body)


def stored(app: FastAPI, request_id: str) -> PrivacyRequest:
    with app.state.services.db.transaction() as s:
        req = s.get(PrivacyRequest, request_id)
        assert req is not None
        s.expunge(req)
        return req


def trail(app: FastAPI, request_id: str) -> list[tuple[str, str | None, str, str | None]]:
    with app.state.services.db.transaction() as s:
        events = s.scalars(select(PrivacyRequestEvent).where(PrivacyRequestEvent.request_id == request_id)
                           .order_by(PrivacyRequestEvent.seq))
        return [(e.actor, e.from_status, e.to_status, e.note) for e in events]


def public_request(client: TestClient, email: str = "someone@example.com", kind: str = "access",
                   details: str = "Please send me my data") -> dict[str, Any]:
    r = client.post("/api/v1/privacy-requests", json={"email": email, "kind": kind, "details": details})
    assert r.status_code == 201, r.text
    assert client.app.state.services.tasks.wait_idle()  # the code's mail is sent by a task after commit
    return r.json()


def record(admin: TestClient, email: str = "writer@example.com", *, kind: str = "correction",
           days_ago: float = 0, send_code: bool = False, channel: str = "letter") -> dict[str, Any]:
    received = (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()
    r = admin.post("/api/v1/admin/privacy-requests", json={
        "email": email, "kind": kind, "details": "by post", "channel": channel, "received_at": received,
        "send_code": send_code})
    assert r.status_code == 201, r.text
    return r.json()


def move(admin: TestClient, request_id: str, status: str, note: str | None = None, days: int | None = None) -> Any:
    body: dict[str, Any] = {"status": status, "note": note}
    if days is not None:
        body["days"] = days
    return admin.post(f"/api/v1/admin/privacy-requests/{request_id}/transition", json=body)


def verified(admin: TestClient, **kwargs: Any) -> dict[str, Any]:
    req = record(admin, **kwargs)
    r = move(admin, req["id"], "pending", note="identity checked against a copy of the passport")
    assert r.status_code == 200, r.text
    return r.json()


# ---- the public form and the emailed code ------------------------------------------------------------------------


def test_public_request_emails_a_code_and_the_code_verifies_it(client, app, settings):
    before = datetime.now(UTC)
    body = public_request(client, "Someone@Example.com")
    assert body["status"] == "identity_unverified" and body["verification"] == "code_sent"
    received = datetime.fromisoformat(body["received_at"])
    assert received >= before - timedelta(seconds=1)
    assert datetime.fromisoformat(body["due_at"]) - received == timedelta(days=settings.privacy_response_days)

    [mail] = mails(app)
    assert (mail.to_address, mail.subject, mail.kind, mail.status, mail.backend) == (
        "someone@example.com", "Confirm your privacy request", "privacy_request.code", "sent", "outbox")
    assert f"/privacy/request?id={body['id']}" in mail.body
    code = code_in(mail.body)
    req = stored(app, body["id"])
    assert req.code_hash and code not in req.code_hash  # only an HMAC is kept
    assert req.code_expires_at - req.code_sent_at == timedelta(hours=24)

    r = client.post(f"/api/v1/privacy-requests/{body['id']}/verify", json={"code": f"{code[:3]} {code[3:]}"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending" and r.json()["verification"] == "verified"
    req = stored(app, body["id"])
    assert req.verified_at is not None and req.code_hash is None and req.user_id is None
    assert [(a, f, t) for a, f, t, _ in trail(app, body["id"])] == [
        ("requester", None, "received"), ("system", "received", "identity_unverified"),
        ("requester", "identity_unverified", "pending")]
    # The code is used up.
    assert client.post(f"/api/v1/privacy-requests/{body['id']}/verify", json={"code": code}).status_code == 409


def test_verified_requester_is_linked_to_their_account_and_sees_the_request(client, app, new_client):
    signup(client, "ada@example.com")
    stranger = new_client()
    body = public_request(stranger, "ada@example.com", kind="opt_out")
    assert stored(app, body["id"]).user_id is None  # not before the code proves it
    assert client.get("/api/v1/me/privacy-requests").json() == []
    r = stranger.post(f"/api/v1/privacy-requests/{body['id']}/verify",
                      json={"code": latest_code(app, "ada@example.com")})
    assert r.status_code == 200, r.text
    user_id = client.get("/api/v1/me").json()["id"]
    assert stored(app, body["id"]).user_id == user_id
    [mine] = client.get("/api/v1/me/privacy-requests").json()
    assert (mine["id"], mine["kind"], mine["status"]) == (body["id"], "opt_out", "pending")
    assert [h["status"] for h in mine["history"]] == ["received", "identity_unverified", "pending"]
    other = new_client()
    signup(other, "bob@example.com")
    assert other.get("/api/v1/me/privacy-requests").json() == []
    assert other.get("/api/v1/me/privacy-requests").status_code == 200
    assert new_client().get("/api/v1/me/privacy-requests").status_code == 401


def test_signed_in_account_holder_is_verified_at_once(client, app):
    signup(client, "ada@example.com")
    body = public_request(client, "ada@example.com", kind="access")
    assert (body["status"], body["verification"]) == ("pending", "verified")
    assert stored(app, body["id"]).user_id == client.get("/api/v1/me").json()["id"]
    assert [m.kind for m in mails(app)] == ["privacy_request.received"]
    # Someone else's address from the same session still needs the code.
    other = public_request(client, "bob@example.com")
    assert other["status"] == "identity_unverified" and stored(app, other["id"]).user_id is None


def test_wrong_codes_count_and_the_limit_holds(client, app, settings):
    settings.privacy_code_resend_seconds = 0
    body = public_request(client)
    code = latest_code(app, "someone@example.com")
    wrong = "000000" if code != "000000" else "111111"
    url = f"/api/v1/privacy-requests/{body['id']}/verify"
    r = client.post(url, json={"code": wrong})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "code"]
    assert r.json()["detail"][0]["msg"] == "Wrong code; 4 attempts left"
    assert stored(app, body["id"]).code_attempts == 1  # committed although refused
    for left in (3, 2, 1):
        assert client.post(url, json={"code": wrong}).json()["detail"][0]["msg"].startswith(f"Wrong code; {left}")
    assert "no attempts left" in client.post(url, json={"code": wrong}).json()["detail"][0]["msg"]
    r = client.post(url, json={"code": code})  # even the right code, now
    assert r.status_code == 429 and "new one" in r.json()["detail"]
    assert stored(app, body["id"]).status == "identity_unverified"

    r = client.post(f"/api/v1/privacy-requests/{body['id']}/resend-code")
    assert r.status_code == 200, r.text
    new_code = latest_code(app, "someone@example.com")
    assert stored(app, body["id"]).code_attempts == 0
    if new_code != code:
        assert client.post(url, json={"code": code}).status_code == 422  # the old code stopped working
    assert client.post(url, json={"code": new_code}).json()["status"] == "pending"


def test_expired_code_is_refused(client, app):
    body = public_request(client)
    code = latest_code(app, "someone@example.com")
    with app.state.services.db.transaction() as s:
        s.execute(update(PrivacyRequest).where(PrivacyRequest.id == body["id"])
                  .values(code_expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    r = client.post(f"/api/v1/privacy-requests/{body['id']}/verify", json={"code": code})
    assert r.status_code == 422 and "expired" in r.json()["detail"][0]["msg"]
    assert stored(app, body["id"]).status == "identity_unverified"


def test_public_resend_is_rate_limited(client, app):
    body = public_request(client)
    r = client.post(f"/api/v1/privacy-requests/{body['id']}/resend-code")
    assert r.status_code == 429 and "wait" in r.json()["detail"]
    assert client.post("/api/v1/privacy-requests/nope/resend-code").status_code == 404
    assert client.post("/api/v1/privacy-requests/nope/verify", json={"code": "123456"}).status_code == 404


@pytest.mark.parametrize("payload, field", [
    ({"email": "not-an-email", "kind": "access"}, "email"),
    ({"email": "a@example.com", "kind": "everything"}, "kind"),
    ({"kind": "access"}, "email"),
    ({"email": "a@example.com", "kind": "access", "details": "x" * 5001}, "details"),
    ({"email": "a@example.com", "kind": "access", "status": "completed"}, "status"),
])
def test_public_form_validation(client, app, payload, field):
    r = client.post("/api/v1/privacy-requests", json=payload)
    assert r.status_code == 422
    assert field in [e["loc"][-1] for e in r.json()["detail"]]
    assert mails(app) == []
    with app.state.services.db.transaction() as s:
        assert s.scalars(select(PrivacyRequest)).first() is None


def test_public_form_is_limited_per_address(client, app, settings):
    settings.privacy_public_requests_per_day = 2
    public_request(client, "flood@example.com")
    public_request(client, "flood@example.com")
    r = client.post("/api/v1/privacy-requests", json={"email": "flood@example.com", "kind": "access"})
    assert r.status_code == 429
    assert len(mails(app, "flood@example.com")) == 2
    public_request(client, "other@example.com")


# ---- the operator's side -----------------------------------------------------------------------------------------


def test_non_admins_get_403(client, app, new_client, admin):
    req = record(admin)
    user = new_client()
    signup(user, "ada@example.com")
    for method, url, body in [
        ("GET", "/api/v1/admin/privacy-requests", None),
        ("GET", f"/api/v1/admin/privacy-requests/{req['id']}", None),
        ("POST", "/api/v1/admin/privacy-requests", {"email": "x@example.com", "kind": "access", "channel": "email"}),
        ("POST", f"/api/v1/admin/privacy-requests/{req['id']}/transition", {"status": "canceled"}),
        ("POST", f"/api/v1/admin/privacy-requests/{req['id']}/send-code", None),
    ]:
        assert user.request(method, url, json=body).status_code == 403, url
        assert new_client().request(method, url, json=body).status_code == 401, url
    assert stored(app, req["id"]).status == "received"
    page = user.get("/admin/privacy-requests")
    assert page.status_code == 403 and "Administrators only" in page.text and req["email"] not in page.text
    assert new_client().get("/admin/privacy-requests", follow_redirects=False).headers["location"] == "/login"


def test_admin_records_a_request_received_by_letter(admin, app, settings):
    received = datetime.now(UTC) - timedelta(days=3)
    r = admin.post("/api/v1/admin/privacy-requests", json={
        "email": "Writer@Example.com", "kind": "deletion", "details": "Letter dated 2 March", "channel": "letter",
        "received_at": received.replace(tzinfo=None).isoformat()})  # no zone: UTC
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["email"], body["channel"], body["received_by"], body["status"]) == (
        "writer@example.com", "letter", "operator@example.com", "identity_unverified")
    assert abs(datetime.fromisoformat(body["received_at"]) - received) < timedelta(seconds=1)
    assert datetime.fromisoformat(body["due_at"]) - datetime.fromisoformat(body["received_at"]) == 30 * DAY
    assert body["days_left"] == 27 and not body["overdue"] and not body["due_soon"]
    assert [(e["actor"], e["actor_email"], e["to_status"]) for e in body["events"]] == [
        ("admin", "operator@example.com", "received"), ("admin", "operator@example.com", "identity_unverified")]
    assert [m.kind for m in mails(app, "writer@example.com")] == ["privacy_request.code"]
    r = admin.post(f"/api/v1/admin/privacy-requests/{body['id']}/send-code")  # no wait for the operator
    assert r.status_code == 200 and r.json()["events"][-1]["note"] == "verification code sent by email (new code)"
    assert [m.kind for m in mails(app, "writer@example.com")] == ["privacy_request.code"] * 2
    move(admin, body["id"], "pending", note="signature matches the account's records")
    assert admin.post(f"/api/v1/admin/privacy-requests/{body['id']}/send-code").status_code == 409
    future = (datetime.now(UTC) + DAY).isoformat()
    r = admin.post("/api/v1/admin/privacy-requests", json={
        "email": "a@example.com", "kind": "access", "channel": "phone", "received_at": future})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "received_at"]
    r = admin.post("/api/v1/admin/privacy-requests", json={"email": "a@example.com", "kind": "access",
                                                             "channel": "pigeon"})
    assert r.status_code == 422


def test_legal_and_illegal_transitions_with_audit_trail(admin, app):
    req = record(admin, kind="correction")
    assert req["status"] == "received"
    assert req["allowed_transitions"] == ["identity_unverified", "pending", "denied", "canceled"]
    assert [m.kind for m in mails(app, "writer@example.com")] == ["privacy_request.received"]

    r = move(admin, req["id"], "completed", note="done")
    assert r.status_code == 409
    assert r.json()["detail"] == ("A received request cannot become completed; allowed: identity_unverified, "
                                  "pending, denied, canceled")
    r = move(admin, req["id"], "pending")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "note"]
    assert move(admin, req["id"], "pending", note="called back on the number on file").json()["status"] == "pending"
    assert move(admin, req["id"], "received").status_code == 409
    assert move(admin, req["id"], "in_progress").json()["status"] == "in_progress"
    r = move(admin, req["id"], "completed")
    assert r.status_code == 422 and "Say what was done" in r.json()["detail"][0]["msg"]
    r = move(admin, req["id"], "completed", note="Corrected the country on the account from FR to BE.")
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "completed" and done["closed_at"] and done["allowed_transitions"] == []
    assert (done["days_left"], done["overdue"], done["due_soon"]) == (None, False, False)
    for status in ("in_progress", "canceled", "denied"):
        r = move(admin, req["id"], status, note="x")
        assert r.status_code == 409 and r.json()["detail"].endswith("allowed: none (it is closed)")
    assert move(admin, req["id"], "archived").status_code == 422
    assert move(admin, "no-such-request", "canceled").status_code == 404

    assert [(a, f, t) for a, f, t, _ in trail(app, req["id"])] == [
        ("admin", None, "received"), ("admin", "received", "pending"), ("admin", "pending", "in_progress"),
        ("admin", "in_progress", "completed")]
    assert trail(app, req["id"])[-1][3] == "Corrected the country on the account from FR to BE."
    [completion] = [m for m in mails(app, "writer@example.com") if m.kind == "privacy_request.completed"]
    assert completion.subject == "Your privacy request is complete" and "from FR to BE" in completion.body


def test_denial_requires_a_reason_which_the_requester_receives(admin, app):
    req = record(admin, kind="objection")
    r = move(admin, req["id"], "denied")
    assert r.status_code == 422
    assert r.json()["detail"][0] == {"loc": ["body", "note"], "msg": "A reason is required to deny a request",
                                     "type": "value_error"}
    assert move(admin, req["id"], "denied", note="   ").status_code == 422
    assert stored(app, req["id"]).status == "received"
    r = move(admin, req["id"], "denied", note="We could not verify that you hold this account.")
    assert r.status_code == 200
    assert r.json()["denial_reason"] == "We could not verify that you hold this account."
    [denial] = [m for m in mails(app, "writer@example.com") if m.kind == "privacy_request.denied"]
    assert "Reason: We could not verify that you hold this account." in denial.body


def test_extension_needs_a_reason_and_stops_at_the_legal_maximum(admin, app, settings):
    req = verified(admin, kind="access", days_ago=20)
    due = datetime.fromisoformat(req["due_at"])
    r = move(admin, req["id"], "extended", days=30)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "note"]
    r = move(admin, req["id"], "extended", note="many requests at once")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "days"]
    r = move(admin, req["id"], "extended", note="many requests at once", days=61)
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"] == "At most 60 more days: the legal maximum is 90 days from receipt"
    assert stored(app, req["id"]).due_at == due

    r = move(admin, req["id"], "extended", note="The request is complex: eight years of records.", days=40)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "extended" and datetime.fromisoformat(body["due_at"]) == due + 40 * DAY
    assert body["extension_reason"] == "The request is complex: eight years of records."
    [notice] = [m for m in mails(app, "writer@example.com") if m.kind == "privacy_request.extended"]
    assert "Reason: The request is complex" in notice.body
    assert (due + 40 * DAY).strftime("%d %B %Y") in notice.body
    assert move(admin, req["id"], "extended", note="more", days=21).status_code == 422
    assert move(admin, req["id"], "extended", note="still more", days=20).status_code == 200
    r = move(admin, req["id"], "extended", note="and more", days=1)
    assert r.status_code == 409 and "legal maximum of 90 days" in r.json()["detail"]
    final = stored(app, req["id"])
    assert final.due_at - final.received_at == 90 * DAY


def test_the_maximum_is_configurable(admin, settings):
    settings.privacy_max_response_days = 45
    req = verified(admin)
    r = move(admin, req["id"], "extended", note="complex", days=16)
    assert r.status_code == 422 and "At most 15 more days" in r.json()["detail"][0]["msg"]
    assert move(admin, req["id"], "extended", note="complex", days=15).status_code == 200


def test_queue_is_sorted_by_due_date_with_overdue_and_nearly_due_flags(admin, app):
    fresh = record(admin, "fresh@example.com", days_ago=0)
    late = record(admin, "late@example.com", days_ago=40)
    soon = record(admin, "soon@example.com", days_ago=25)
    edge = record(admin, "edge@example.com", days_ago=23.5)  # 6.5 days left: nearly due
    closed = record(admin, "closed@example.com", days_ago=45)
    assert move(admin, closed["id"], "canceled", note="withdrawn by phone").status_code == 200

    r = admin.get("/api/v1/admin/privacy-requests")
    assert r.status_code == 200
    queue = r.json()
    assert [q["email"] for q in queue] == ["late@example.com", "soon@example.com", "edge@example.com",
                                           "fresh@example.com"]
    flags = {q["email"]: (q["overdue"], q["due_soon"], q["days_left"]) for q in queue}
    assert flags["late@example.com"] == (True, False, -10)
    assert flags["soon@example.com"] == (False, True, 5)
    assert flags["edge@example.com"][:2] == (False, True)
    assert flags["fresh@example.com"] == (False, False, 30)
    everything = admin.get("/api/v1/admin/privacy-requests?status=all").json()
    assert everything[0]["id"] == closed["id"] and len(everything) == 5
    assert [q["id"] for q in admin.get("/api/v1/admin/privacy-requests?status=closed").json()] == [closed["id"]]
    assert [q["id"] for q in admin.get("/api/v1/admin/privacy-requests?status=received").json()] == [
        late["id"], soon["id"], edge["id"], fresh["id"]]
    r = admin.get("/api/v1/admin/privacy-requests?status=bogus")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "status"]
    # An extension moves a request down the queue and clears its flag.
    move(admin, soon["id"], "pending", note="known customer, called back")
    move(admin, soon["id"], "extended", note="complex", days=30)
    queue = admin.get("/api/v1/admin/privacy-requests").json()
    assert [q["email"] for q in queue] == ["late@example.com", "edge@example.com", "fresh@example.com",
                                           "soon@example.com"]
    assert queue[-1]["days_left"] == 35 and not queue[-1]["due_soon"]


def test_admin_page_highlights_overdue_and_nearly_due(admin, app):
    late = record(admin, "late@example.com", days_ago=33)
    soon = record(admin, "soon@example.com", days_ago=26)
    fresh = record(admin, "fresh@example.com")
    page = admin.get("/admin/privacy-requests")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert "<script>" not in html and " style=" not in html
    assert f'class="card privacy-request overdue"\n        id="request-{late["id"]}"' in html
    assert f'class="card privacy-request due-soon"\n        id="request-{soon["id"]}"' in html
    assert f'class="card privacy-request"\n        id="request-{fresh["id"]}"' in html
    assert "Overdue by 3 days" in html and "Due soon: 4 days left" in html
    assert html.index("late@example.com") < html.index("soon@example.com") < html.index("fresh@example.com")
    assert re.search(r'<strong class="req">1 overdue</strong>', html)
    assert 'data-request-id="' + late["id"] + '"' in html  # the action form
    assert '<option value="denied">denied</option>' in html


def test_every_message_kind_is_declared_in_the_data_map(admin, app):
    from imagen.privacy.datamap import item

    public_request(admin, "a@example.com")
    move(admin, record(admin, "b@example.com")["id"], "denied", note="not a request about personal data")
    move(admin, record(admin, "c@example.com")["id"], "canceled")
    req = verified(admin, email="d@example.com", kind="objection")
    move(admin, req["id"], "extended", note="complex", days=10)
    move(admin, req["id"], "completed", note="Stopped using the data for that purpose.")
    sent = {m.kind for m in mails(app)}
    assert sent == {"privacy_request.code", "privacy_request.received", "privacy_request.denied",
                    "privacy_request.canceled", "privacy_request.extended", "privacy_request.completed"}
    column, kinds = item("privacy_request_emails").only
    assert column == "kind" and sent <= set(kinds)


def test_public_page_renders(client, new_client):
    page = client.get("/privacy/request")
    assert page.status_code == 200 and "Make a privacy request" in page.text
    assert 'id="privacy-request-form"' in page.text and 'value="opt_out"' in page.text
    assert "within 30 days" in page.text and "<script>" not in page.text
    page = client.get("/privacy/request?id=abc123")
    assert 'data-request-id="abc123"' in page.text


def test_smtp_backend_carries_the_code(settings, runtime, smtp_server):  # noqa: F811
    inbox, port = smtp_server
    # The mailer is built once by the composition root: the app starts with the SMTP settings.
    smtp_settings = settings.model_copy(update={
        "mail_backend": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False})
    app = create_app(smtp_settings, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as client:
        body = public_request(client, "ada@example.com")
        [got] = inbox.messages
        msg = got["message"]
        assert got["rcpt_tos"] == ["ada@example.com"] and msg["From"] == "privacy@imagen.test"
        assert msg["Subject"] == "Confirm your privacy request"
        code = code_in(msg.get_content())
        assert client.post(f"/api/v1/privacy-requests/{body['id']}/verify", json={"code": code}).status_code == 200
        assert [(m.status, m.backend) for m in mails(app)] == [("sent", "smtp")]


# ---- completion runs the self-service code -----------------------------------------------------------------------


def linked_request(client: TestClient, admin: TestClient, app: FastAPI, kind: str) -> tuple[TestClient, str]:
    """A user with an account whose request, made from another browser, was verified by code."""
    signup(client, "ada@example.com")
    body = public_request(admin, "ada@example.com", kind=kind)
    r = admin.post(f"/api/v1/privacy-requests/{body['id']}/verify", json={"code": latest_code(app, "ada@example.com")})
    assert r.status_code == 200, r.text
    assert stored(app, body["id"]).user_id == client.get("/api/v1/me").json()["id"]
    return client, body["id"]


def test_completing_an_access_request_exports_the_linked_account(admin, app, new_client):
    user, request_id = linked_request(new_client(), admin, app, "access")
    assert move(admin, request_id, "in_progress").status_code == 200
    r = move(admin, request_id, "completed")
    assert r.status_code == 200, r.text
    export_id = r.json()["export_id"]
    assert export_id
    export = user.get(f"/api/v1/me/exports/{export_id}")
    assert export.status_code == 200, export.text
    assert export.json()["status"] in ("pending", "ready")
    [mine] = user.get("/api/v1/me/privacy-requests").json()
    assert mine["status"] == "completed" and mine["export_id"] == export_id
    [done] = [m for m in mails(app, "ada@example.com") if m.kind == "privacy_request.completed"]
    assert "export" in done.body
    notes = user.get("/api/v1/me/notifications").json()
    assert "Your privacy request is complete" in [n["title"] for n in notes]


def test_completing_a_deletion_request_erases_the_linked_account(admin, app, new_client, settings):
    user, request_id = linked_request(new_client(), admin, app, "deletion")
    r = move(admin, request_id, "completed")
    assert r.status_code == 200, r.text
    assert user.get("/api/v1/me").status_code == 401  # stopped at once
    deadline = time.monotonic() + 60  # erased in the background, just after the commit
    while True:
        with app.state.services.db.transaction() as s:
            if s.scalars(select(User).where(User.email == "ada@example.com")).first() is None:
                break
        assert time.monotonic() < deadline, "the account was not erased"
        time.sleep(0.1)
    assert admin.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}).status_code == 401
    kept = stored(app, request_id)  # the request itself is kept as proof of compliance
    assert (kept.status, kept.email, kept.user_id) == ("completed", "ada@example.com", None)
    assert any(m.kind == "privacy_request.completed" for m in mails(app, "ada@example.com"))
    # Kept as proof only for the declared periods: past them the retention run takes the address everywhere.
    later = datetime.now(UTC) + timedelta(days=max(settings.retention_privacy_requests_days,
                                                   settings.retention_outbound_emails_days) + 1)
    with app.state.services.db.transaction() as s:
        retention_service.run(s, settings=settings, blobs=app.state.services.blobs, now=later)
    assert mails(app, "ada@example.com") == []
    with app.state.services.db.transaction() as s:
        assert s.get(PrivacyRequest, request_id) is None
        assert s.scalars(select(PrivacyRequestEvent).where(PrivacyRequestEvent.request_id == request_id)).all() == []
    assert scan(app.state.services.db.engine, app.state.services.blobs, email="ada@example.com", settings=settings,
                now=later) == []
