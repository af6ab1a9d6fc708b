"""Account mail that must not be looked up in the request: a password reset answers every address the same, and
finds the account here (safe to run twice: a second run sends a newer link, within the hourly limit)."""

from __future__ import annotations

from typing import Any

from imagen.accounts.links import account_link_service
from imagen.kit.tasks import task

Services = Any  # imagen/services.py: the running process's services (domains sit below the root)


@task("accounts.password_reset")
def send_password_reset(services: Services, email: str) -> bool:
    with services.db.transaction() as session:
        return account_link_service.send_password_reset(session, settings=services.settings,
                                                        outbox=services.outbox, email=email)
