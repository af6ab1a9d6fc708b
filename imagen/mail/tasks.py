"""Mail delivery as background work: `mail.deliver` after the message's row commits, `mail.retry` on a schedule for
what a failed SMTP server or a restart left (both safe to run twice: only the call that claims a row sends it)."""

from __future__ import annotations

from typing import Any

from imagen.kit.tasks import periodic, task

Services = Any  # imagen/services.py: the running process's services (domains sit below the root)


@task("mail.deliver")
def deliver(services: Services, message_id: str) -> bool:
    return services.outbox.deliver(message_id)


@periodic("mail.retry", every=lambda settings: settings.mail_retry_interval_seconds)
def retry(services: Services) -> int:
    return services.outbox.deliver_pending()
