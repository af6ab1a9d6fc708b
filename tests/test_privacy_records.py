"""Records (policy §9, §4.2, §4.4): the breach register with its affected-user lookup and 72-hour deadline, the
legal-request log, business-transfer notices; and the pages: the privacy centre and the admin records pages."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import delete, func, select, update
from typer.testing import CliRunner

from imagen.accounts.models import User
from imagen.cli import app as cli
from imagen.kit.config import get_settings
from imagen.kit.db import Database, new_id, utcnow
from imagen.notifications.models import Notification
from imagen.privacy.records.models import LegalRequest, LegalRequestUser, TransferNotice
from tests.conftest import signup

HOUR = timedelta(hours=1)


def make_admin(app, email: str) -> None:
    with app.state.services.db.transaction() as s:
        s.execute(update(User).where(User.email == email).values(role="admin"))


def ids_by_email(app) -> dict[str, str]:
    with app.state.services.db.transaction() as s:
        return dict(s.execute(select(User.email, User.id)).all())


@pytest.fixture
def admin(client, app):
    signup(client, "root@example.com")
    make_admin(app, "root@example.com")
    return client


@pytest.fixture
def people(admin, new_client, app):
    """Two more users: ada (who has generated) and bob (who has not)."""
    clients = {}
    for email in ("ada@example.com", "bob@example.com"):
        clients[email] = new_client()
        signup(clients[email], email)
    from imagen.generation.models import Generation

    ids = ids_by_email(app)
    with app.state.services.db.transaction() as s:
        s.add(Generation(id=new_id(), user_id=ids["ada@example.com"], workflow="txt2img", workflow_version=1,
                         pipeline="txt2img", params={"prompt": "x"}, checkpoint="imagen-tiny",
                         checkpoint_sha256="0" * 64, models=[], consent_model_improvement=False, status="failed"))
    return clients, ids


def iso(value) -> str:
    return value.isoformat()


def breach_body(**overrides):
    body = {"detected_at": iso(utcnow() - 10 * HOUR), "description": "An S3 bucket was public for a day",
            "categories": ["account"], "severity": "high"}
    body.update(overrides)
    return body


def test_only_admins_see_the_records(client, people):
    clients, _ = people
    ada = clients["ada@example.com"]
    for method, url in (("GET", "/api/v1/admin/breaches"), ("POST", "/api/v1/admin/breaches"),
                        ("GET", "/api/v1/admin/legal-requests"), ("POST", "/api/v1/admin/transfer-notices")):
        assert ada.request(method, url, json={}).status_code == 403
    assert ada.get("/admin/breaches").status_code == 404
    assert ada.get("/admin/legal-requests").status_code == 404


def test_breach_register_lookup_deadline_and_user_notices(admin, people, app):
    clients, ids = people
    ada, bob, root = ids["ada@example.com"], ids["bob@example.com"], ids["root@example.com"]

    # the lookup: listed ids, every account, users with data in a category, created or active in a window
    def lookup(**criteria):
        r = admin.post("/api/v1/admin/breaches/lookup", json=criteria)
        assert r.status_code == 200, r.text
        return set(r.json()["user_ids"])

    assert lookup(user_ids=[bob]) == {bob}
    assert lookup(all_users=True) == {ada, bob, root}
    assert lookup() == set()
    generations = "generation parameters and prompts"  # the data map's category
    assert lookup(categories=[generations]) == {ada}
    assert lookup(created_from=iso(utcnow() - HOUR)) == {ada, bob, root}
    assert lookup(created_from=iso(utcnow() + HOUR)) == set()
    assert lookup(active_from=iso(utcnow() - HOUR), categories=[generations]) == {ada}
    bad = admin.post("/api/v1/admin/breaches/lookup", json={"categories": ["horoscopes"]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "categories"
    unknown = admin.post("/api/v1/admin/breaches", json=breach_body(affected={"user_ids": ["nobody"]}))
    assert unknown.status_code == 422 and "nobody" in unknown.text

    # a breach detected 10 hours ago: 62 hours left to tell the regulator
    r = admin.post("/api/v1/admin/breaches", json=breach_body(affected={"categories": [generations]}))
    assert r.status_code == 201, r.text
    breach = r.json()
    assert breach["affected_user_ids"] == [ada] and breach["affected_count"] == 1
    assert breach["deadline_passed"] is False and 61.5 < breach["hours_left"] <= 62
    assert breach["regulator_deadline"].startswith(iso(utcnow() + 62 * HOUR)[:13])

    late = admin.post("/api/v1/admin/breaches", json=breach_body(
        detected_at=iso(utcnow() - 80 * HOUR), severity="low", affected={"user_ids": [ada, bob]})).json()
    assert late["deadline_passed"] is True and late["hours_left"] < -7.5

    # recording the regulator's notification stops the clock
    told = admin.patch(f"/api/v1/admin/breaches/{breach['id']}",
                       json={"regulator_notified_at": iso(utcnow()), "regulator_reference": "ICO-123"}).json()
    assert told["hours_left"] is None and told["deadline_passed"] is False
    assert told["regulator_reference"] == "ICO-123"
    assert admin.patch(f"/api/v1/admin/breaches/{breach['id']}", json={
        "regulator_notified_at": iso(utcnow() - 20 * HOUR)}).status_code == 422  # before detection
    assert admin.patch("/api/v1/admin/breaches/nope", json={}).status_code == 404

    # notices to the affected users, once each
    r = admin.post(f"/api/v1/admin/breaches/{late['id']}/notify-users", json={})
    assert r.status_code == 200 and r.json()["notified"] == 2 and r.json()["users_notified_at"]
    again = admin.post(f"/api/v1/admin/breaches/{late['id']}/notify-users").json()
    assert again["notified"] == 0 and again["already_notified"] == 2
    for email in ("ada@example.com", "bob@example.com"):
        notes = clients[email].get("/api/v1/me/notifications").json()
        assert [n["kind"] for n in notes] == ["breach"]
        assert "public for a day" in notes[0]["body"] and notes[0]["link"] == "/privacy/centre"
    assert admin.get("/api/v1/me/notifications").json() == []
    assert 'data-category="security incidents"' in clients["ada@example.com"].get("/privacy/centre").text
    listed = admin.get("/api/v1/admin/breaches").json()
    assert [b["id"] for b in listed] == [breach["id"], late["id"]]  # newest detection first
    assert listed[1]["users_notified"] == 2

    # an erased user leaves the register (the count stays)
    with app.state.services.db.transaction() as s:
        s.execute(delete(User).where(User.id == bob))
    kept = admin.get(f"/api/v1/admin/breaches/{late['id']}").json()
    assert kept["affected_user_ids"] == [ada] and kept["affected_count"] == 2


def test_legal_request_log(admin, people, app):
    _, ids = people
    ada = ids["ada@example.com"]
    base = {"received_at": iso(utcnow() - 48 * HOUR), "authority": "Metropolitan Police",
            "instrument": "production order", "reference": "MP/2026/17", "scope": "account data of one user",
            "user_ids": [ada]}
    refused = admin.post("/api/v1/admin/legal-requests", json={**base, "decision": "refused"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "decision_reason"
    early = admin.post("/api/v1/admin/legal-requests", json={**base, "responded_at": iso(utcnow())})
    assert early.status_code == 422  # a response needs a decision
    assert admin.post("/api/v1/admin/legal-requests",
                      json={**base, "user_ids": ["nobody"]}).status_code == 422
    for field in ("instrument", "scope", "authority"):  # the basis, what was asked, and who asked: required
        for bad in ({k: v for k, v in base.items() if k != field}, {**base, field: "   "}):
            missing = admin.post("/api/v1/admin/legal-requests", json=bad)
            assert missing.status_code == 422 and missing.json()["detail"][0]["loc"][-1] == field, missing.text
    assert admin.get("/api/v1/admin/legal-requests").json() == []  # nothing refused was stored

    r = admin.post("/api/v1/admin/legal-requests", json=base)
    assert r.status_code == 201, r.text
    logged = r.json()
    assert logged["decision"] == "pending" and logged["affected_user_ids"] == [ada]
    with app.state.services.db.transaction() as s:  # read back from the log itself, not the answer
        row = s.get(LegalRequest, logged["id"])
        assert (row.authority, row.instrument, row.reference, row.scope, row.affected_count) == (
            "Metropolitan Police", "production order", "MP/2026/17", "account data of one user", 1)
        assert s.scalars(select(LegalRequestUser.user_id).where(
            LegalRequestUser.legal_request_id == logged["id"])).all() == [ada]
    listed = admin.get(f"/api/v1/admin/legal-requests/{logged['id']}").json()
    assert (listed["instrument"], listed["scope"]) == ("production order", "account data of one user")
    patch = admin.patch(f"/api/v1/admin/legal-requests/{logged['id']}",
                        json={"decision": "partially_complied", "responded_at": iso(utcnow())})
    assert patch.status_code == 422
    done = admin.patch(f"/api/v1/admin/legal-requests/{logged['id']}", json={
        "decision": "partially_complied", "decision_reason": "only the email was in scope of the order",
        "disclosed": "email address", "responded_at": iso(utcnow())})
    assert done.status_code == 200, done.text
    assert done.json()["decision"] == "partially_complied" and done.json()["responded_at"]
    assert [x["id"] for x in admin.get("/api/v1/admin/legal-requests").json()] == [logged["id"]]
    assert admin.get("/api/v1/admin/legal-requests/nope").status_code == 404
    # the user's privacy centre does not reveal that an authority asked about them
    centre = people[0]["ada@example.com"].get("/privacy/centre")
    assert centre.status_code == 200 and 'data-category="legal requests"' not in centre.text


def test_business_transfer_notice_reaches_every_user_before_the_transfer(admin, people):
    clients, _ = people
    effective = (date.today() + timedelta(days=30)).isoformat()
    past = admin.post("/api/v1/admin/transfer-notices", json={"acquirer": "Acme", "effective_on": "2020-01-01"})
    assert past.status_code == 422 and past.json()["detail"][0]["loc"][-1] == "effective_on"
    r = admin.post("/api/v1/admin/transfer-notices",
                   json={"acquirer": "Acme Corp", "effective_on": effective, "summary": "Acme keeps this policy."})
    assert r.status_code == 201, r.text
    assert r.json()["recipients"] == 3
    for c in (admin, *clients.values()):
        notes = c.get("/api/v1/me/notifications").json()
        assert [n["kind"] for n in notes] == ["business_transfer"]
        assert "Acme Corp" in notes[0]["title"] and "Acme keeps this policy." in notes[0]["body"]
    dup = admin.post("/api/v1/admin/transfer-notices", json={"acquirer": "Acme Corp", "effective_on": effective})
    assert dup.status_code == 409
    assert [n["acquirer"] for n in admin.get("/api/v1/admin/transfer-notices").json()] == ["Acme Corp"]


def test_privacy_centre_shows_holdings_where_and_how_long(client, app, settings):
    assert client.get("/privacy/centre", follow_redirects=False).status_code == 303
    signup(client)
    page = client.get("/privacy/centre")
    assert page.status_code == 200
    assert "content-security-policy" in page.headers
    html = page.text
    assert "What we hold about you" in html and 'id="holdings"' in html
    assert "this IMAGEN server" in html
    assert f"{settings.retention_security_log_days} days" in html
    assert 'id="start-export"' in html and 'id="erase-form"' in html and 'href="/privacy/consents"' in html
    assert 'href="/privacy/centre"' in html  # the header links it
    assert "<script>" not in html and "style=" not in html
    import re
    counts = dict(re.findall(r'data-category="([^"]+)">\s*<td>[^<]*</td>\s*<td>[^<]*</td>\s*'
                             r'<td class="count">(\d+)</td>', html))
    assert counts.get("account") == "1"
    assert int(counts.get("security log", 0)) >= 1  # the sign-up

    # The retention table is the data map's periods and holds with the configured values, nothing hard-coded.
    from imagen.privacy.datamap import DATA_MAP

    settings.prompt_refusals_retention_days, settings.retention_outbound_emails_days = 91, 45
    table = client.get("/privacy/centre").text.split('id="retention"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", table)
    assert ("Refused prompts", "91 days") in rows and ("Emails", "45 days, then deleted with the address") in rows
    timed = {i.category for i in DATA_MAP if (i.period or i.hold) and not i.withheld}
    assert timed <= {what.lower() for what, _ in rows}
    assert not any("retention_" in period or "_days" in period for _, period in rows)  # every setting filled in


def test_admin_pages_render(admin, people):
    admin.post("/api/v1/admin/breaches", json=breach_body(affected={"all_users": True}))
    admin.post("/api/v1/admin/legal-requests", json={
        "received_at": iso(utcnow()), "authority": "County Court", "instrument": "subpoena",
        "scope": "logs", "decision": "refused", "decision_reason": "overbroad"})
    breaches = admin.get("/admin/breaches")
    assert breaches.status_code == 200
    assert "An S3 bucket was public for a day" in breaches.text and "62" in breaches.text
    assert 'class="notify-users"' in breaches.text and 'id="breach-form"' in breaches.text
    legal = admin.get("/admin/legal-requests")
    assert legal.status_code == 200
    assert "County Court" in legal.text and "overbroad" in legal.text and 'id="legal-request-form"' in legal.text
    assert "No transfer notices sent" in legal.text


def test_cli_notify_transfer_and_listings(cli_env):
    runner = CliRunner()
    for email in ("op@example.com", "u@example.com"):
        assert runner.invoke(cli, ["admin", "create-user", email, "--password", "Sturdy-passphrase-42"]).exit_code == 0
    effective = (date.today() + timedelta(days=14)).isoformat()
    result = runner.invoke(cli, ["records", "notify-transfer", "--acquirer", "Acme Corp", "--effective", effective,
                                 "--summary", "Nothing changes for you."])
    assert result.exit_code == 0, result.output
    assert "Notified 2 user(s)" in result.output
    again = runner.invoke(cli, ["records", "notify-transfer", "--acquirer", "Acme Corp", "--effective", effective])
    assert again.exit_code == 1 and "already notified" in again.output
    past = runner.invoke(cli, ["records", "notify-transfer", "--acquirer", "X", "--effective", "2020-01-01"])
    assert past.exit_code == 1 and "after today" in past.output
    assert runner.invoke(cli, ["records", "notify-transfer", "--acquirer", "X", "--effective", "soon"]).exit_code != 0
    db = Database(get_settings().resolved_database_url)
    try:
        with db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(Notification).where(
                Notification.kind == "business_transfer")) == 2
            assert s.scalars(select(TransferNotice.recipients)).one() == 2
    finally:
        db.dispose()
    listing = runner.invoke(cli, ["records", "transfers"])
    assert listing.exit_code == 0, listing.output
    [row] = _rows(listing.output, "Acme Corp")
    assert row[:3] == ["Acme Corp", effective, "2"] and row[3].startswith(f"{utcnow():%Y-%m-%d}")

    empty = runner.invoke(cli, ["records", "breaches"])
    assert empty.exit_code == 0 and "Breach register" in empty.output and _rows(empty.output, "") == []
    db = Database(get_settings().resolved_database_url)
    try:
        with db.transaction() as s:
            from imagen.privacy.records.models import Breach

            s.add(Breach(detected_at=utcnow() - 80 * HOUR, description="logs were public", categories=["account"],
                         severity="high", affected_count=2, recorded_by=None))
            s.add(LegalRequest(received_at=utcnow() - 48 * HOUR, authority="County Court", instrument="subpoena",
                               reference="CC/1", scope="login times of one user", affected_count=1,
                               decision="refused", decision_reason="overbroad", disclosed="",
                               responded_at=utcnow(), recorded_by=None))
            breach_id = s.scalars(select(Breach.id)).one()
    finally:
        db.dispose()
    breaches = runner.invoke(cli, ["records", "breaches"])
    assert breaches.exit_code == 0, breaches.output
    [row] = _rows(breaches.output, breach_id)
    assert row[2:5] == ["high", "2", "0"] and row[5].startswith("due ") and row[5].endswith("(-8.0 h)")  # 72 h passed
    legal = runner.invoke(cli, ["records", "legal-requests"])
    assert legal.exit_code == 0, legal.output
    [row] = _rows(legal.output, "County Court")
    assert row == [f"{utcnow() - 48 * HOUR:%Y-%m-%d}", "County Court", "subpoena", "1", "refused",
                   f"{utcnow():%Y-%m-%d}"]


def _rows(output: str, containing: str) -> list[list[str]]:
    """The data rows of a rich table printed by the CLI, as lists of cell texts."""
    rows = []
    for line in output.splitlines():
        if line.startswith("│") and containing in line:
            cells = [c.strip() for c in line.strip("│").split("│")]
            if cells and not all(c == "" for c in cells):
                rows.append(cells)
    return [r for r in rows if r[0] not in ("id", "acquirer", "received")]
