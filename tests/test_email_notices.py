"""Notices by email as well as in-app (issue 14, policy §4.4, §9, §11): export ready, a material policy change, a
security incident and a business transfer reach the user in-app and, when mail really leaves the server (here
Postmark, against a local fake), by email: notices to everyone on the broadcast stream, never to a suppressed
address (its outbox row says so). With the outbox backend they stay in-app. The emails are declared in the data map
and erased with the account."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from imagen.accounts.models import User
from imagen.app import create_app
from imagen.cli import app as cli
from imagen.kit.config import get_settings
from imagen.kit.db import Database, utcnow
from imagen.mail.models import MailSuppression, OutboundEmail
from imagen.mail.suppressions import suppression_service
from imagen.notifications.models import Notification
from imagen.notifications.service import EMAILED_KINDS, NOTICE_MAIL_KINDS
from imagen.privacy.datamap import item
from tests.conftest import PASSWORD, signup
from tests.fake_postmark import TOKEN, postmark, postmark_settings  # noqa: F401  (fixture)


@pytest.fixture
def pm(settings, runtime, postmark):  # noqa: F811
    """An app mailing through (fake) Postmark: (app, admin client, new clients)."""
    app = create_app(postmark_settings(settings, postmark), run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as admin:
        signup(admin, "root@example.com")
        with app.state.services.db.transaction() as s:
            s.execute(update(User).where(User.email == "root@example.com").values(role="admin"))
        yield app, admin, lambda: TestClient(app, base_url="https://testserver")


def user_ids(app) -> dict[str, str]:
    with app.state.services.db.transaction() as s:
        return dict(s.execute(select(User.email, User.id)).all())


def notice_rows(app, kind: str) -> list[OutboundEmail]:
    with app.state.services.db.transaction() as s:
        rows = list(s.scalars(select(OutboundEmail).where(OutboundEmail.kind == f"notice.{kind}")))
        s.expunge_all()
    return rows


def in_app(app, kind: str) -> set[str]:
    with app.state.services.db.transaction() as s:
        return set(s.scalars(select(Notification.user_id).where(Notification.kind == kind)))


def settled(app, kind: str, count: int) -> list[OutboundEmail]:
    """The notice emails of `kind` once each has been delivered or refused (bounded wait)."""
    deadline = time.monotonic() + 15
    while True:
        rows = notice_rows(app, kind)
        if (len(rows) >= count and all(r.status in ("sent", "suppressed", "failed") for r in rows)) \
                or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def received(fake, subject_start: str) -> dict[str, dict]:
    return {m["To"]: m for m in fake.sent if m["Subject"].startswith(subject_start)}


def test_export_ready_is_emailed_with_its_link_and_shown_in_app(pm, postmark):  # noqa: F811
    app, _admin, new_client = pm
    ada = new_client()
    signup(ada, "ada@example.com")
    export_id = ada.post("/api/v1/me/exports").json()["id"]
    [row] = settled(app, "export_ready", 1)
    assert ada.get(f"/api/v1/me/exports/{export_id}").json()["status"] == "ready"
    assert (row.status, row.backend, row.to_address) == ("sent", "postmark", "ada@example.com")
    assert row.user_id == user_ids(app)["ada@example.com"]
    mail = received(postmark, "Your data export is ready")["ada@example.com"]
    assert mail["MessageStream"] == "outbound"
    assert f"/api/v1/me/exports/{export_id}/download" in mail["TextBody"] and "Download it before" in mail["TextBody"]
    [note] = [n for n in ada.get("/api/v1/me/notifications").json() if n["kind"] == "export_ready"]
    assert note["title"] == mail["Subject"]


def test_policy_change_and_business_transfer_reach_everyone_on_the_broadcast_stream(pm, postmark):  # noqa: F811
    app, admin, new_client = pm
    for email in ("ada@example.com", "bob@example.com"):
        signup(new_client(), email)
    with app.state.services.db.transaction() as s:  # bob's mail bounced for good
        suppression_service.suppress(s, email="bob@example.com", reason="hard_bounce")
    ids = user_ids(app)

    r = admin.post("/api/v1/admin/policy-versions", json={"version": "2026-09-01", "material": True,
                                                          "summary": "We added a mail provider."})
    assert r.status_code == 201 and r.json()["notified"] == 3
    rows = settled(app, "policy_changed", 3)
    assert {r.to_address: r.status for r in rows} == {"root@example.com": "sent", "ada@example.com": "sent",
                                                      "bob@example.com": "suppressed"}
    assert in_app(app, "policy_changed") == set(ids.values())  # bob is still told in-app
    mails = received(postmark, "Our privacy policy has changed")
    assert set(mails) == {"root@example.com", "ada@example.com"}
    assert all(m["MessageStream"] == "broadcast" for m in mails.values())
    assert "We added a mail provider." in mails["ada@example.com"]["TextBody"]
    admin.post("/api/v1/me/policy-acceptance", json={"version": "2026-09-01"})

    effective = (date.today() + timedelta(days=30)).isoformat()
    r = admin.post("/api/v1/admin/transfer-notices", json={"acquirer": "Acme Corp", "effective_on": effective,
                                                           "summary": "Nothing changes for you."})
    assert r.status_code == 201, r.text
    rows = settled(app, "business_transfer", 3)
    assert sorted(r.status for r in rows) == ["sent", "sent", "suppressed"]
    mails = received(postmark, "Your data will be transferred to Acme Corp")
    assert set(mails) == {"root@example.com", "ada@example.com"}
    assert all(m["MessageStream"] == "broadcast" for m in mails.values())
    assert "Nothing changes for you." in mails["ada@example.com"]["TextBody"]
    assert in_app(app, "business_transfer") == set(ids.values())


def test_a_breach_notice_is_emailed_to_the_affected_users_only(pm, postmark):  # noqa: F811
    app, admin, new_client = pm
    for email in ("ada@example.com", "bob@example.com"):
        signup(new_client(), email)
    ada = user_ids(app)["ada@example.com"]
    breach = admin.post("/api/v1/admin/breaches", json={
        "detected_at": (utcnow() - timedelta(hours=2)).isoformat(), "description": "A bucket was public for a day",
        "categories": ["account"], "severity": "high", "affected": {"user_ids": [ada]}}).json()
    r = admin.post(f"/api/v1/admin/breaches/{breach['id']}/notify-users", json={})
    assert r.status_code == 200 and r.json()["notified"] == 1
    [row] = settled(app, "breach", 1)
    assert (row.to_address, row.status) == ("ada@example.com", "sent")
    mail = received(postmark, "A security incident may have affected your data")["ada@example.com"]
    assert "A bucket was public for a day" in mail["TextBody"] and mail["MessageStream"] == "outbound"
    # Telling them again tells no one twice.
    assert admin.post(f"/api/v1/admin/breaches/{breach['id']}/notify-users", json={}).json()["notified"] == 0
    assert len(notice_rows(app, "breach")) == 1 and in_app(app, "breach") == {ada}


def test_with_the_outbox_backend_notices_stay_in_app(client, app):
    signup(client, "root@example.com")
    with app.state.services.db.transaction() as s:
        s.execute(update(User).where(User.email == "root@example.com").values(role="admin"))
    assert client.post("/api/v1/admin/policy-versions", json={"version": "2026-09-01", "material": True}
                       ).status_code == 201
    client.post("/api/v1/me/policy-acceptance", json={"version": "2026-09-01"})
    client.post("/api/v1/me/exports")
    effective = (date.today() + timedelta(days=30)).isoformat()
    assert client.post("/api/v1/admin/transfer-notices", json={"acquirer": "Acme", "effective_on": effective}
                       ).status_code == 201
    deadline = time.monotonic() + 15
    while not in_app(app, "export_ready") and time.monotonic() < deadline:
        time.sleep(0.05)
    for kind in ("policy_changed", "export_ready", "business_transfer"):
        assert in_app(app, kind) and notice_rows(app, kind) == []


def test_the_cli_queues_notice_emails_for_the_servers_retry(cli_env, monkeypatch, postmark):  # noqa: F811
    """`imagen records notify-transfer` and `imagen policy publish` email too; without the server's task backend the
    mail waits in the outbox and `mail.retry` sends it."""
    for name, value in {"IMAGEN_MAIL_BACKEND": "postmark", "IMAGEN_POSTMARK_SERVER_TOKEN": TOKEN,
                        "IMAGEN_POSTMARK_API_BASE": postmark.url}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(cli, ["admin", "create-user", "u@example.com", "--password", PASSWORD]).exit_code == 0
    effective = (date.today() + timedelta(days=14)).isoformat()
    result = runner.invoke(cli, ["records", "notify-transfer", "--acquirer", "Acme Corp", "--effective", effective])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["policy", "publish", "2026-09-01", "--material"])
    assert result.exit_code == 0 and "in-app and by email" in result.output
    db = Database(get_settings().resolved_database_url)
    try:
        with db.transaction() as s:
            queued = {(r.kind, r.to_address, r.status) for r in s.scalars(select(OutboundEmail))}
        assert queued == {("notice.business_transfer", "u@example.com", "queued"),
                          ("notice.policy_changed", "u@example.com", "queued")}
    finally:
        db.dispose()
    assert postmark.sent == []


def test_notice_emails_are_declared_and_erased_with_the_account(pm, postmark):  # noqa: F811
    notices, suppressions = item("notice_emails"), item("mail_suppressions")
    assert notices.table == "outbound_emails" and notices.only == ("kind", NOTICE_MAIL_KINDS)
    assert set(EMAILED_KINDS) == {"export_ready", "policy_changed", "breach", "business_transfer"}
    assert notices.erasure == suppressions.erasure == "delete"
    assert notices.period.setting == "retention_outbound_emails_days"
    assert "postmark" in notices.providers and "postmark" in item("privacy_request_emails").providers

    app, admin, new_client = pm
    ada = new_client()
    signup(ada, "ada@example.com")
    ada.post("/api/v1/me/exports")
    settled(app, "export_ready", 1)
    admin.post("/api/v1/me/exports")
    settled(app, "export_ready", 2)
    with app.state.services.db.transaction() as s:
        suppression_service.suppress(s, email="ada@example.com", reason="spam_complaint")
        suppression_service.suppress(s, email="root@example.com", reason="hard_bounce")
    assert ada.request("DELETE", "/api/v1/me", json={"password": PASSWORD}).status_code == 202
    deadline = time.monotonic() + 15
    while "ada@example.com" in user_ids(app) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ada@example.com" not in user_ids(app)
    with app.state.services.db.transaction() as s:
        left = {(r.kind, r.to_address) for r in s.scalars(select(OutboundEmail))}
        suppressed = set(s.scalars(select(MailSuppression.email)))
    assert ("notice.export_ready", "ada@example.com") not in left
    assert ("notice.export_ready", "root@example.com") in left
    assert suppressed == {"root@example.com"}
