"""Mail: the transactional outbox (queued in the sender's transaction, delivered once after its commit) and the
backends: `outbox` logs, `smtp` talks to a real SMTP server (aiosmtpd, started here on a free port)."""

from __future__ import annotations

import email
import email.policy
import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from imagen.kit.config import Settings
from imagen.kit.db import Database
from imagen.kit.tasks import InlineTasks
from imagen.mail import LogMailer, SmtpMailer, make_mailer
from imagen.mail import Outbox as MailOutbox
from imagen.mail.models import OutboundEmail


class Recorder:
    """A backend that keeps what it was asked to send (and can be told to fail)."""

    name = "recorder"

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, str, str, str | None]] = []
        self.fail = fail

    def send(self, to: str, subject: str, text: str, *, message_id: str | None = None) -> None:
        if self.fail:
            raise ConnectionRefusedError("smtp server down")
        self.sent.append((to, subject, text, message_id))


class Inbox:
    """aiosmtpd handler: every message the server accepts."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append({"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                              "message": email.message_from_bytes(envelope.content, policy=email.policy.default)})
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def Outbox(db: Database, mailer, **kwargs) -> MailOutbox:
    """An outbox whose `mail.deliver` runs at once after the commit (the app runs it on its task backend)."""
    holder = SimpleNamespace()
    holder.outbox = MailOutbox(db, mailer, InlineTasks(holder), **kwargs)
    return holder.outbox


def rows(db: Database) -> list[OutboundEmail]:
    with db.transaction() as s:
        return list(s.scalars(select(OutboundEmail).order_by(OutboundEmail.created_at)))


# ---- the outbox --------------------------------------------------------------------------------------------------


def test_message_is_delivered_after_commit_and_recorded(db):
    mailer = Recorder()
    outbox = Outbox(db, mailer, domain="imagen.test")
    with db.transaction() as s:
        row = outbox.queue(s, to="ada@example.com", subject="Hello", text="Body text", kind="test")
        assert mailer.sent == []  # nothing leaves before the commit
    assert mailer.sent == [("ada@example.com", "Hello", "Body text", f"<{row.id}@imagen.test>")]
    [stored] = rows(db)
    assert (stored.to_address, stored.subject, stored.body, stored.kind, stored.status, stored.backend,
            stored.attempts) == ("ada@example.com", "Hello", "Body text", "test", "sent", "recorder", 1)
    assert stored.sent_at is not None


def test_rolled_back_message_is_neither_stored_nor_sent(db):
    mailer = Recorder()
    outbox = Outbox(db, mailer)
    with pytest.raises(RuntimeError), db.transaction() as s:
        outbox.queue(s, to="ada@example.com", subject="Hello", text="Body", kind="test")
        raise RuntimeError("the request failed")
    assert mailer.sent == []
    assert rows(db) == []


def test_delivery_is_safe_to_run_twice(db):
    mailer = Recorder()
    outbox = Outbox(db, mailer)
    with db.transaction() as s:
        row = outbox.queue(s, to="ada@example.com", subject="Once", text="Only once", kind="test")
    assert outbox.deliver(row.id) is False
    assert outbox.deliver_pending(older_than=timedelta(0)) == 0
    assert len(mailer.sent) == 1


def test_failed_delivery_is_recorded_and_retried(db):
    mailer = Recorder(fail=True)
    outbox = Outbox(db, mailer)
    with db.transaction() as s:
        outbox.queue(s, to="ada@example.com", subject="Retry", text="Body", kind="test")
    [stored] = rows(db)
    assert stored.status == "failed" and "smtp server down" in stored.error and stored.sent_at is None
    mailer.fail = False
    assert outbox.deliver_pending(older_than=timedelta(0)) == 1
    [stored] = rows(db)
    assert (stored.status, stored.attempts, stored.error) == ("sent", 2, None)
    assert [m[1] for m in mailer.sent] == ["Retry"]


def test_outbox_backend_logs_the_message(db, caplog):
    outbox = Outbox(db, LogMailer())
    with caplog.at_level("WARNING", logger="imagen.mail.backends"), db.transaction() as s:
        outbox.queue(s, to="ada@example.com", subject="Your code", text="Code: 123456", kind="test")
    assert "ada@example.com" in caplog.text and "Code: 123456" in caplog.text
    [stored] = rows(db)
    assert (stored.status, stored.backend, stored.body) == ("sent", "outbox", "Code: 123456")


def test_backend_is_chosen_by_setting(tmp_path):
    assert isinstance(make_mailer(Settings(data_dir=tmp_path)), LogMailer)
    smtp = make_mailer(Settings(data_dir=tmp_path, mail_backend="smtp", smtp_host="mail.example", smtp_port=2525,
                                smtp_username="u", smtp_password="p", contact_email="privacy@example.org"))
    assert isinstance(smtp, SmtpMailer)
    assert (smtp.host, smtp.port, smtp.username, smtp.password, smtp.starttls, smtp.sender) == (
        "mail.example", 2525, "u", "p", True, "privacy@example.org")
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, mail_backend="carrier-pigeon")


# ---- SMTP against a real server ----------------------------------------------------------------------------------


def test_smtp_backend_delivers_with_headers_and_body(smtp_server):
    inbox, port = smtp_server
    mailer = SmtpMailer(host="127.0.0.1", port=port, sender="IMAGEN <privacy@imagen.test>", starttls=False)
    mailer.send("ada@example.com", "Confirm your privacy request", "Your code:\n\n    123456\n",
                message_id="<abc@imagen.test>")
    [got] = inbox.messages
    msg = got["message"]
    assert got["mail_from"] == "privacy@imagen.test"
    assert got["rcpt_tos"] == ["ada@example.com"]
    assert msg["From"] == "IMAGEN <privacy@imagen.test>"
    assert msg["To"] == "ada@example.com"
    assert msg["Subject"] == "Confirm your privacy request"
    assert msg["Message-ID"] == "<abc@imagen.test>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Date"]
    assert msg.get_content_type() == "text/plain"
    assert "    123456" in msg.get_content()


def test_smtp_outbox_end_to_end(db, smtp_server):
    inbox, port = smtp_server
    outbox = Outbox(db, SmtpMailer(host="127.0.0.1", port=port, sender="privacy@imagen.test", starttls=False),
                    domain="imagen.test")
    with db.transaction() as s:
        row = outbox.queue(s, to="grace@example.com", subject="Done", text="Your request is complete.", kind="test")
    [got] = inbox.messages
    assert got["message"]["Message-ID"] == f"<{row.id}@imagen.test>"
    assert re.search("Your request is complete", got["message"].get_content())
    [stored] = rows(db)
    assert (stored.status, stored.backend) == ("sent", "smtp")


def test_smtp_server_down_leaves_the_message_failed(db):
    outbox = Outbox(db, SmtpMailer(host="127.0.0.1", port=free_port(), sender="p@imagen.test", starttls=False,
                                   timeout=2))
    with db.transaction() as s:
        outbox.queue(s, to="ada@example.com", subject="Lost?", text="No: kept for a retry", kind="test")
    [stored] = rows(db)
    assert stored.status == "failed" and stored.error
