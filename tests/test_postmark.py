"""Mail through Postmark (issue 14): the HTTP API backend against a local fake (token, streams, headers, errors),
the bounce and spam-complaint webhook that suppresses an address, suppressed addresses getting no mail (the outbox
row says so), and failed mail retried by `mail.retry`."""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select

from imagen.app import create_app
from imagen.kit.config import Settings
from imagen.kit.tasks import run_task
from imagen.mail import make_mailer
from imagen.mail.models import MailSuppression, OutboundEmail
from imagen.mail.postmark import PostmarkError, PostmarkMailer, RecipientSuppressed
from imagen.privacy.policy import render_policy
from imagen.privacy.providers import configured_providers
from tests.conftest import signup
from tests.fake_postmark import TOKEN, postmark, postmark_settings  # noqa: F401  (fixture)

HOOK = "hook-secret-1234"


def mailer(fake) -> PostmarkMailer:
    return PostmarkMailer(server_token=TOKEN, sender="IMAGEN <privacy@imagen.test>", api_base=fake.url,
                          transactional_stream="outbound", broadcast_stream="broadcast")


def test_sends_plain_text_through_the_api_on_the_right_stream(postmark):  # noqa: F811
    m = mailer(postmark)
    m.send("ada@example.com", "Your export is ready", "Download it.", message_id="<abc@imagen.test>")
    m.send("bob@example.com", "Our privacy policy has changed", "Read it.", broadcast=True)
    first, second = postmark.sent
    assert first["From"] == "IMAGEN <privacy@imagen.test>" and first["To"] == "ada@example.com"
    assert first["Subject"] == "Your export is ready" and first["TextBody"] == "Download it."
    assert first["MessageStream"] == "outbound" and second["MessageStream"] == "broadcast"
    assert {"Name": "Message-ID", "Value": "<abc@imagen.test>"} in first["Headers"]
    assert first["TrackOpens"] is False and first["TrackLinks"] == "None"  # no tracking pixels or rewritten links
    assert "HtmlBody" not in first
    m.close()


def test_refusals_raise_and_an_inactive_recipient_is_told_apart(postmark):  # noqa: F811
    wrong = PostmarkMailer(server_token="not-the-token", sender="x@imagen.test", api_base=postmark.url)
    with pytest.raises(PostmarkError, match="401"):
        wrong.send("ada@example.com", "s", "t")
    postmark.inactive.add("gone@example.com")
    with pytest.raises(RecipientSuppressed):
        mailer(postmark).send("gone@example.com", "s", "t")
    postmark.fail_next = 1
    with pytest.raises(PostmarkError, match="500") as caught:
        mailer(postmark).send("ada@example.com", "s", "t")
    assert not isinstance(caught.value, RecipientSuppressed)
    assert postmark.sent == []


def test_settings_choose_postmark_and_the_policy_lists_it_only_then(tmp_path):
    with pytest.raises(ValidationError, match="IMAGEN_POSTMARK_SERVER_TOKEN"):
        Settings(data_dir=tmp_path, mail_backend="postmark")
    configured = Settings(data_dir=tmp_path, mail_backend="postmark", postmark_server_token=TOKEN,
                          postmark_broadcast_stream="news", mail_from="IMAGEN <mail@imagen.test>")
    backend = make_mailer(configured)
    assert isinstance(backend, PostmarkMailer) and backend.broadcast_stream == "news"
    assert backend.sender == "IMAGEN <mail@imagen.test>" and configured.mail_delivered
    assert [p.name for p in configured_providers(configured)] == ["Postmark"]
    assert "Postmark" in render_policy(configured)
    default = Settings(data_dir=tmp_path)
    assert "Postmark" not in render_policy(default) and not default.mail_delivered


# ---- through the app: the webhook, suppression and retries ----

@pytest.fixture
def pm_app(settings, runtime, postmark):  # noqa: F811
    app = create_app(postmark_settings(settings, postmark, postmark_webhook_token=HOOK), run_migrations=False,
                     runtime=runtime)
    with TestClient(app, base_url="https://testserver") as client:
        yield app, client


def basic(password: str, user: str = "postmark") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bounce(email: str, **extra) -> dict:
    return {"RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce",
            "MessageStream": "outbound", "Description": "The server was unable to deliver your message",
            "Email": email, "Inactive": True, "CanActivate": True, **extra}


def suppressions(app) -> dict[str, MailSuppression]:
    with app.state.services.db.transaction() as s:
        return {row.email: row for row in s.scalars(select(MailSuppression))}


def queue(app, to: str, kind: str = "test.message") -> str:
    services = app.state.services
    with services.db.transaction() as s:
        return services.outbox.queue(s, to=to, subject="Hello", text="Body", kind=kind).id


def wait_status(app, message_id: str, statuses=("sent", "failed", "suppressed")) -> OutboundEmail:
    deadline = time.monotonic() + 10
    while True:
        with app.state.services.db.transaction() as s:
            row = s.get(OutboundEmail, message_id)
            s.expunge(row)
        if row.status in statuses or time.monotonic() > deadline:
            return row
        time.sleep(0.05)


def test_the_webhook_needs_postmark_and_its_token(client, pm_app):
    # The default app (outbox backend, no token) has no webhook to call.
    assert client.post("/api/v1/mail/postmark/webhook", json=bounce("a@example.com")).status_code == 404
    app, pm = pm_app
    url = "/api/v1/mail/postmark/webhook"
    assert pm.post(url, json=bounce("a@example.com")).status_code == 401
    assert pm.post(url, json=bounce("a@example.com"), headers=basic("wrong")).status_code == 401
    assert pm.post(url, json=bounce("a@example.com"), headers={"Authorization": "Bearer " + HOOK}).status_code == 401
    assert pm.post(url, json=bounce("a@example.com"), headers={"Authorization": "Basic %%%"}).status_code == 401
    assert suppressions(app) == {}
    r = pm.post(url, json=bounce("a@example.com"), headers=basic(HOOK, user="anyone"))
    assert r.status_code == 200 and r.json() == {"result": "suppressed"}


def test_bounces_and_complaints_suppress_and_suppressed_addresses_get_no_mail(pm_app, postmark):  # noqa: F811
    app, client = pm_app
    signup(client, "ada@example.com")
    url, auth = "/api/v1/mail/postmark/webhook", basic(HOOK)
    answers = [client.post(url, json=event, headers=auth).json()["result"] for event in (
        bounce("ADA@example.com"),  # the account's address, in another case
        bounce("soft@example.com", Type="SoftBounce", TypeCode=4096, Inactive=False),
        {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "TypeCode": 512, "Email": "spam@example.com",
         "MessageStream": "broadcast"},
        {"RecordType": "Delivery", "Email": "fine@example.com"},
        {"RecordType": "Bounce", "Type": "HardBounce", "Inactive": True},  # no address
        {"RecordType": "SubscriptionChange", "Recipient": "later@example.com", "SuppressSending": True,
         "SuppressionReason": "ManualSuppression"},
    )]
    assert answers == ["suppressed", "ignored", "suppressed", "ignored", "ignored", "suppressed"]
    found = suppressions(app)
    assert set(found) == {"ada@example.com", "spam@example.com", "later@example.com"}
    assert found["ada@example.com"].reason == "hard_bounce" and found["ada@example.com"].user_id
    assert found["spam@example.com"].reason == "spam_complaint" and found["spam@example.com"].user_id is None
    assert found["later@example.com"].reason == "unsubscribed"
    # Again: one row per address.
    assert client.post(url, json=bounce("ada@example.com"), headers=auth).status_code == 200
    assert len(suppressions(app)) == 3

    sent_before = len(postmark.sent)
    blocked = wait_status(app, queue(app, "ada@example.com"))
    assert blocked.status == "suppressed" and "suppressed (hard_bounce)" in blocked.error and blocked.sent_at is None
    assert wait_status(app, queue(app, "fine@example.com")).status == "sent"
    assert [m["To"] for m in postmark.sent[sent_before:]] == ["fine@example.com"]

    # Reactivated in Postmark: mail flows again.
    lifted = client.post(url, headers=auth, json={"RecordType": "SubscriptionChange", "Recipient": "later@example.com",
                                                  "SuppressSending": False})
    assert lifted.json() == {"result": "lifted"} and "later@example.com" not in suppressions(app)
    assert wait_status(app, queue(app, "later@example.com")).status == "sent"


def test_postmark_refusing_an_inactive_recipient_suppresses_it(pm_app, postmark):  # noqa: F811
    app, _client = pm_app
    postmark.inactive.add("inactive@example.com")
    row = wait_status(app, queue(app, "inactive@example.com"))
    assert row.status == "suppressed" and "inactive" in row.error
    assert suppressions(app)["inactive@example.com"].reason == "inactive"
    # Never retried.
    assert run_task(app.state.services, "mail.retry") == 0


def test_failed_mail_is_retried_by_the_schedule(pm_app, postmark):  # noqa: F811
    app, _client = pm_app
    postmark.fail_next = 1
    row = wait_status(app, queue(app, "ada@example.com"))
    assert row.status == "failed" and "500" in row.error and row.attempts == 1
    assert postmark.sent == []
    # `mail.retry` (what the scheduler runs) sends what failed, once it is old enough.
    assert app.state.services.outbox.deliver_pending(older_than=timedelta(0)) == 1
    row = wait_status(app, row.id)
    assert (row.status, row.backend, row.attempts) == ("sent", "postmark", 2)
    assert [m["To"] for m in postmark.sent] == ["ada@example.com"]
    assert app.state.services.outbox.deliver_pending(older_than=timedelta(0)) == 0
