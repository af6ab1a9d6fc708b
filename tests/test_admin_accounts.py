"""Admins suspend, restore and delete accounts (the API and the /admin/users page): unknown account 404, your own
409, non-admins 403; a suspended account's sessions stop at once; delete runs the privacy erasure; every action
is in the security log, on the account and on the admin."""

from __future__ import annotations

import time

from sqlalchemy import select

from imagen.accounts.models import SecurityEvent, User
from imagen.accounts.service import account_service
from imagen.privacy.models import Erasure
from tests.conftest import signup


def make_admin(client, app, email: str):
    body = signup(client, email)
    with app.state.services.db.transaction() as s:
        account_service.get_by_email(s, email).role = "admin"
    return body["account"]["id"]


def events(app, user_id: str) -> list[str]:
    with app.state.services.db.transaction() as s:
        return list(s.scalars(select(SecurityEvent.kind).where(SecurityEvent.user_id == user_id)
                              .order_by(SecurityEvent.created_at, SecurityEvent.id)))


def test_suspend_restore_and_refusals(client, new_client, app):
    admin_id = make_admin(client, app, "root@example.com")
    user = new_client()
    signup(user, "someone@example.com")
    user_id = user.get("/api/v1/me").json()["id"]

    assert user.post(f"/api/v1/admin/users/{admin_id}/suspend").status_code == 403  # not an admin
    assert new_client().post(f"/api/v1/admin/users/{user_id}/suspend").status_code in (401, 403)
    missing = client.post("/api/v1/admin/users/no-such-user/suspend")
    assert missing.status_code == 404 and missing.json()["detail"] == "User not found"
    for verb, path in (("POST", "suspend"), ("POST", "restore")):
        own = client.request(verb, f"/api/v1/admin/users/{admin_id}/{path}")
        assert own.status_code == 409 and "your own account" in own.json()["detail"]
    own_delete = client.delete(f"/api/v1/admin/users/{admin_id}")
    assert own_delete.status_code == 409 and "your own account" in own_delete.json()["detail"]
    assert client.delete("/api/v1/admin/users/no-such-user").status_code == 404
    assert events(app, user_id).count("account_suspended") == 0

    r = client.post(f"/api/v1/admin/users/{user_id}/suspend")
    assert r.status_code == 200 and r.json() == {"id": user_id, "state": "suspended"}
    assert user.get("/api/v1/me").status_code in (401, 403)  # the session stops at once
    again = client.post(f"/api/v1/admin/users/{user_id}/suspend")  # idempotent, logged once
    assert again.status_code == 200 and again.json()["state"] == "suspended"
    page = client.get("/admin/users")
    assert f'data-action="restore" data-user-id="{user_id}"' in page.text
    assert f'data-action="suspend" data-user-id="{admin_id}"' not in page.text  # no buttons for yourself

    r = client.post(f"/api/v1/admin/users/{user_id}/restore")
    assert r.status_code == 200 and r.json()["state"] == "active"
    assert user.get("/api/v1/me").status_code == 200
    assert events(app, user_id)[-2:] == ["account_suspended", "account_restored"]
    assert events(app, admin_id)[-2:] == ["admin_suspended_user", "admin_restored_user"]


def test_delete_runs_the_erasure(client, new_client, app):
    admin_id = make_admin(client, app, "root@example.com")
    user = new_client()
    signup(user, "leaving@example.com")
    user_id = user.get("/api/v1/me").json()["id"]

    r = client.delete(f"/api/v1/admin/users/{user_id}")
    assert r.status_code == 202, r.text
    assert r.json() == {"id": user_id, "state": "deleting"}
    assert user.get("/api/v1/me").status_code == 401  # stopped at once
    deadline = time.monotonic() + 30
    while True:  # erased in the background right after the commit
        with app.state.services.db.transaction() as s:
            gone = s.get(User, user_id) is None
        if gone or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert gone
    with app.state.services.db.transaction() as s:
        erasure = s.scalars(select(Erasure).where(Erasure.via == "admin")).one()
        assert erasure.status == "completed" and erasure.user_id is None
    assert events(app, admin_id)[-1] == "admin_deleted_user"
    assert client.post(f"/api/v1/admin/users/{user_id}/restore").status_code == 404
    assert "leaving@example.com" not in client.get("/admin/users").text
