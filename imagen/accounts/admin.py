"""Admins acting on other accounts: suspend, restore, delete (the same erasure as a user's own deletion, at once).

Each action is recorded in the security log twice: on the account it touched (`account_suspended`, ...) and on
the admin who did it (`admin_suspended_user`, ...), so either side's history shows it; the target's events go
with its erasure (anonymised, as the data map says), the admin's stay.
"""

from __future__ import annotations

import logging
from typing import Literal

from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.accounts.service import ClientInfo, account_service
from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.kit.errors import Conflict, NotFound
from imagen.kit.tasks import JobControl, TaskQueue
from imagen.privacy.erasure import erasure_service

log = logging.getLogger(__name__)

AdminAction = Literal["suspend", "restore", "delete"]
TARGET_EVENTS = {"suspend": "account_suspended", "restore": "account_restored", "delete": "account_deleted"}
ADMIN_EVENTS = {"suspend": "admin_suspended_user", "restore": "admin_restored_user", "delete": "admin_deleted_user"}


class AccountAdminService:
    def _target(self, session: Session, *, admin: User, user_id: str, action: AdminAction) -> User:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("User not found")
        if user.id == admin.id:
            raise Conflict(f"You cannot {action} your own account here")
        return user

    def _log(self, session: Session, *, admin: User, user: User, action: AdminAction, client: ClientInfo) -> None:
        account_service.log_event(session, kind=TARGET_EVENTS[action], client=client, user_id=user.id)
        account_service.log_event(session, kind=ADMIN_EVENTS[action], client=client, user_id=admin.id)
        log.info("admin %s: %s account %s", admin.id, action, user.id)

    def suspend(self, session: Session, *, admin: User, user_id: str, client: ClientInfo) -> User:
        """Sessions and API keys stop working at once (kit/http.py checks `suspended_at`). Suspending a suspended
        account changes nothing and logs nothing."""
        user = self._target(session, admin=admin, user_id=user_id, action="suspend")
        if user.suspended_at is None:
            user.suspended_at = utcnow()
            self._log(session, admin=admin, user=user, action="suspend", client=client)
        return user

    def restore(self, session: Session, *, admin: User, user_id: str, client: ClientInfo) -> User:
        user = self._target(session, admin=admin, user_id=user_id, action="restore")
        erasure = erasure_service.current(session, user_id=user.id)
        if erasure is not None and erasure.status == "in_progress":
            raise Conflict("This account is being deleted and cannot be restored")
        if user.suspended_at is not None:
            user.suspended_at = None
            self._log(session, admin=admin, user=user, action="restore", client=client)
        return user

    def delete(self, session: Session, *, admin: User, user_id: str, client: ClientInfo, settings: Settings,
               tasks: TaskQueue | None = None, jobs: JobControl | None = None) -> str:
        """The erasure a user's own deletion runs, with no grace period: the account stops now and
        `privacy.erase_user` runs after the commit. Returns the erasure's id."""
        user = self._target(session, admin=admin, user_id=user_id, action="delete")
        self._log(session, admin=admin, user=user, action="delete", client=client)
        erasure = erasure_service.request(session, user=user, via="admin", grace=False, settings=settings,
                                          tasks=tasks, jobs=jobs)
        return erasure.id


account_admin_service = AccountAdminService()
