"""/admin: links and counts (open cases, privacy requests due, open breaches, open minor reports) for admins, the
queue link only for moderators, a 404 for everyone else; /admin/minor-reports lists open reports (or all)."""

from __future__ import annotations

import re
from datetime import timedelta

from imagen.accounts.service import account_service
from imagen.kit.db import utcnow
from imagen.privacy.minors import MinorReport
from imagen.privacy.requests.models import PrivacyRequest
from tests.conftest import signup


def as_role(client, app, email: str, role: str):
    signup(client, email)
    with app.state.services.db.transaction() as s:
        account_service.get_by_email(s, email).role = role
    return client


def admin_links(html: str) -> set[str]:
    block = html.split('id="admin-links"', 1)[1].split("</ul>", 1)[0]
    return set(re.findall(r'href="([^"]+)"', block))


def count(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}">([^<]*)<', html)
    assert match, element_id
    return " ".join(match.group(1).split())


def test_admin_home_counts_and_links(client, new_client, app):
    admin = as_role(client, app, "root@example.com", "admin")
    now = utcnow()
    with app.state.services.db.transaction() as s:
        s.add_all([MinorReport(subject_email="kid@example.com", details="says they are 15", status="open"),
                   MinorReport(subject_email="old@example.com", status="dismissed")])
        for due, status in ((now - timedelta(days=1), "pending"), (now + timedelta(days=2), "received"),
                            (now + timedelta(days=20), "pending"), (now - timedelta(days=3), "completed")):
            s.add(PrivacyRequest(kind="access", channel="email", email="p@example.com", status=status,
                                 received_at=now - timedelta(days=25), due_at=due))
    r = admin.get("/admin")
    assert r.status_code == 200
    assert "<h1>Administration</h1>" in r.text
    links = admin_links(r.text)
    assert {"/admin/cases", "/admin/privacy-requests", "/admin/breaches", "/admin/minor-reports",
            "/admin/legal-requests", "/admin/hash-banks", "/admin/users"} <= links
    assert count(r.text, "count-minors") == "1 open"
    assert count(r.text, "count-requests") == "3 open, 2 due within 7 days, 1 overdue"
    assert count(r.text, "count-cases") == "0 open"
    assert count(r.text, "count-breaches") == "0 open"
    assert 'href="/admin"' in admin.get("/gallery").text

    minors = admin.get("/admin/minor-reports")
    assert minors.status_code == 200 and "says they are 15" in minors.text and "old@example.com" not in minors.text
    assert "old@example.com" in admin.get("/admin/minor-reports", params={"status": "all"}).text

    mod = as_role(new_client(), app, "mod@example.com", "moderator")
    assert admin_links(mod.get("/admin").text) == {"/admin/cases"}
    assert mod.get("/admin/minor-reports").status_code == 404
    user = new_client()
    signup(user, "user@example.com")
    assert user.get("/admin").status_code == 404
    assert 'href="/admin"' not in user.get("/gallery").text
    assert new_client().get("/admin", follow_redirects=False).headers["location"] == "/login"
