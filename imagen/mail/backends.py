"""Mail backends: the one interface (`send(to, subject, text)`) and its implementations."""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol

from imagen.kit.config import Settings
from imagen.mail.postmark import PostmarkMailer

log = logging.getLogger(__name__)


class Mailer(Protocol):
    name: str

    def send(self, to: str, subject: str, text: str, *, message_id: str | None = None,
             broadcast: bool = False) -> None:
        """Deliver one plain-text message or raise. `broadcast`: a notice to every user (Postmark's bulk stream)."""


class LogMailer:
    """`IMAGEN_MAIL_BACKEND=outbox`: nothing leaves the server; the message is logged (and kept in the outbox)."""

    name = "outbox"

    def send(self, to: str, subject: str, text: str, *, message_id: str | None = None,
             broadcast: bool = False) -> None:
        log.warning("mail (outbox backend, not sent) %s to %s: %s\n%s", message_id or "", to, subject, text)


class SmtpMailer:
    """`IMAGEN_MAIL_BACKEND=smtp`: smtplib, with STARTTLS or implicit TLS and login when configured."""

    name = "smtp"

    def __init__(self, *, host: str, port: int, sender: str, username: str | None = None,
                 password: str | None = None, starttls: bool = True, use_ssl: bool = False,
                 timeout: float = 10.0) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password = username, password
        self.starttls, self.use_ssl, self.timeout = starttls, use_ssl, timeout

    def message(self, to: str, subject: str, text: str, *, message_id: str | None = None) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        if message_id:
            msg["Message-ID"] = message_id
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text)
        return msg

    def send(self, to: str, subject: str, text: str, *, message_id: str | None = None,
             broadcast: bool = False) -> None:
        msg = self.message(to, subject, text, message_id=message_id)
        context = ssl.create_default_context()
        smtp_class = smtplib.SMTP_SSL if self.use_ssl else smtplib.SMTP
        kwargs = {"context": context} if self.use_ssl else {}
        with smtp_class(self.host, self.port, timeout=self.timeout, **kwargs) as smtp:
            if self.starttls and not self.use_ssl:
                smtp.starttls(context=context)
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(msg)


def make_mailer(settings: Settings) -> Mailer:
    if settings.mail_backend == "postmark":
        return PostmarkMailer(
            server_token=settings.postmark_server_token or "", sender=settings.mail_from or settings.contact_email,
            api_base=settings.postmark_api_base, transactional_stream=settings.postmark_transactional_stream,
            broadcast_stream=settings.postmark_broadcast_stream, timeout=settings.postmark_timeout_seconds)
    if settings.mail_backend == "smtp":
        return SmtpMailer(
            host=settings.smtp_host, port=settings.smtp_port, sender=settings.mail_from or settings.contact_email,
            username=settings.smtp_username, password=settings.smtp_password, starttls=settings.smtp_starttls,
            use_ssl=settings.smtp_ssl, timeout=settings.smtp_timeout,
        )
    return LogMailer()
