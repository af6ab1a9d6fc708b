"""Admins' actions on an account: suspend, restore, delete (erasure). Unknown account: 404; your own: 409."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel

from imagen.accounts.admin import account_admin_service
from imagen.accounts.http import AdminUser, ClientDep
from imagen.accounts.models import User
from imagen.kit.http import ServicesDep, SessionDep

router = APIRouter(prefix="/api/v1/admin/users", tags=["admin"])


class AccountState(BaseModel):
    id: str
    state: str  # "active" | "suspended" | "deleting"


def _state(user: User) -> AccountState:
    return AccountState(id=user.id, state="suspended" if user.suspended_at else "active")


@router.post("/{user_id}/suspend", response_model=AccountState)
def suspend_user(user_id: str, admin: AdminUser, session: SessionDep, client: ClientDep) -> AccountState:
    return _state(account_admin_service.suspend(session, admin=admin, user_id=user_id, client=client))


@router.post("/{user_id}/restore", response_model=AccountState)
def restore_user(user_id: str, admin: AdminUser, session: SessionDep, client: ClientDep) -> AccountState:
    return _state(account_admin_service.restore(session, admin=admin, user_id=user_id, client=client))


@router.delete("/{user_id}", status_code=status.HTTP_202_ACCEPTED, response_model=AccountState)
def delete_user(user_id: str, admin: AdminUser, session: SessionDep, client: ClientDep,
                services: ServicesDep) -> AccountState:
    """Erase the account (the same erasure as the user's own deletion, no grace period); it runs after the
    request, in the background."""
    account_admin_service.delete(session, admin=admin, user_id=user_id, client=client, settings=services.settings,
                                 tasks=services.tasks, jobs=services.executor)
    return AccountState(id=user_id, state="deleting")
