"""Outgoing email: a transactional outbox (`outbound_emails`) and the backends that deliver it.

A service queues a message inside its transaction (`Outbox.queue`); the row and the delivery live and die with that
transaction. After the commit the message is delivered once by the configured backend (`IMAGEN_MAIL_BACKEND`):
`outbox` only logs it (the row is the record an operator reads), `smtp` sends it with smtplib.
"""

from imagen.mail.backends import LogMailer, Mailer, SmtpMailer, make_mailer
from imagen.mail.outbox import Outbox

__all__ = ["LogMailer", "Mailer", "Outbox", "SmtpMailer", "make_mailer"]
