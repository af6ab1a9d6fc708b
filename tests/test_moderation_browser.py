"""The moderation pages in headless Chromium (moderation.js over api.js): a moderator acts on a case and sees the
audit, a refused NCMEC report shows its reason, an admin imports a hash bank from a file, disables it and makes a
user a moderator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from imagen.accounts.models import User
from imagen.safety.banks import hash_bank_service
from imagen.safety.models import CaseAction
from imagen.safety.service import case_service
from tests.conftest import signup_payload
from tests.test_browser import CHROMIUM, chromium, live, playwright_sync  # noqa: F401  (fixtures)
from tests.test_cookies_browser import watch

expect = playwright_sync.expect
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
MD5_A, MD5_B = "0" * 31 + "a", "0" * 31 + "b"


def signed_in_page(chromium, base: str, email: str):  # noqa: F811
    context = chromium.new_context(base_url=base)
    context.set_default_timeout(30_000)
    page = context.new_page()
    r = page.request.post("/api/v1/auth/signup", data=signup_payload(email))  # cookies land in the context
    assert r.status == 201, r.text()
    return page


def set_role(app, email: str, role: str) -> str:
    with app.state.services.db.transaction() as s:
        user = s.scalars(select(User).where(User.email == email)).one()
        user.role = role
        return user.id


def test_moderator_acts_on_a_case_and_admin_manages_banks(live, chromium, settings, tmp_path) -> None:  # noqa: F811
    app, base = live
    eve = signed_in_page(chromium, base, "eve@example.com")
    eve_id = set_role(app, "eve@example.com", "user")
    with app.state.services.db.transaction() as s:
        case_id = case_service.open_case(s, kind="user_report", user_id=eve_id, settings=settings,
                                         summary="reported by a user: not ok").id

    mod = signed_in_page(chromium, base, "mod@example.com")
    set_role(app, "mod@example.com", "moderator")
    errors, foreign = watch(mod, base)
    mod.goto("/admin/cases")
    row = mod.locator(f"tr[data-case-id='{case_id}']")
    expect(row).to_contain_text("user_report")
    expect(row).to_contain_text("eve@example.com")
    row.locator("a").first.click()
    mod.wait_for_url(f"{base}/admin/cases/{case_id}")

    mod.fill("#action-note", "repeated reports")
    mod.click("button.case-action[data-action='suspend']")
    expect(mod.locator("#case-status")).to_have_text("suspended")
    expect(mod.locator("#audit tr.audit-entry[data-action='suspend']")).to_contain_text("repeated reports")
    assert eve.request.get("/api/v1/me").status == 401  # suspended at once

    # Reporting asks first; declining sends nothing.
    mod.once("dialog", lambda dialog: dialog.dismiss())
    mod.click("button.case-action[data-action='report']")
    expect(mod.locator("#audit tr.audit-entry[data-action='report']")).to_have_count(0)
    # Accepted, but the case holds no preserved file: the reason is shown, nothing is recorded.
    mod.once("dialog", lambda dialog: dialog.accept())
    mod.click("button.case-action[data-action='report']")
    expect(mod.locator("#action-error")).to_contain_text("no preserved file")
    expect(mod.locator("#audit tr.audit-entry[data-action='report']")).to_have_count(0)

    mod.fill("#preserve-days", "500")
    mod.click("button.case-action[data-action='preserve']")
    expect(mod.locator("#audit tr.audit-entry[data-action='preserve']")).to_contain_text("held until")

    mod.click("button.case-action[data-action='restore']")
    expect(mod.locator("#case-status")).to_have_text("restored")
    assert eve.request.get("/api/v1/me").status == 200
    with app.state.services.db.transaction() as s:
        audit = [a.action for a in s.scalars(select(CaseAction).where(CaseAction.case_id == case_id)
                                              .order_by(CaseAction.created_at))]
    assert audit == ["open", "suspend", "preserve", "restore"]
    assert mod.goto("/admin/hash-banks").status == 404  # moderators don't manage banks
    assert errors == [] and foreign == []

    admin = signed_in_page(chromium, base, "root@example.com")
    set_role(app, "root@example.com", "admin")
    errors, foreign = watch(admin, base)
    admin.goto("/admin/hash-banks")
    bank_file = tmp_path / "list.txt"
    bank_file.write_text(f"{MD5_A}\n{MD5_B}\n{MD5_A}\nnot-a-hash\n")
    admin.fill("#bank-name", "partner-list")
    admin.select_option("#bank-type", "md5")
    admin.fill("#bank-source", "a partner")
    admin.set_input_files("#bank-file", str(bank_file))
    admin.click("#bank-import button[type=submit]")
    expect(admin.locator("#import-report")).to_contain_text("2 added")
    bank_row = admin.locator("#banks tr", has_text="partner-list")
    expect(bank_row.locator(".count")).to_have_text("2")
    expect(bank_row.locator(".enabled")).to_have_text("yes")
    bank_row.locator("button.bank-toggle").click()
    expect(admin.locator("#banks tr", has_text="partner-list").locator(".enabled")).to_have_text("no")
    with app.state.services.db.transaction() as s:
        [bank] = hash_bank_service.list(s)
        assert (bank.name, bank.hash_type, bank.count, bank.enabled) == ("partner-list", "md5", 2, False)

    # Roles from the accounts page: eve becomes a moderator and then sees the queue.
    admin.goto("/admin/users")
    with admin.expect_navigation():  # the page reloads once the role is saved
        admin.select_option(f"select.user-role[data-user-id='{eve_id}']", "moderator")
    expect(admin.locator(f"select.user-role[data-user-id='{eve_id}']")).to_have_value("moderator")
    assert eve.goto("/admin/cases").status == 200
    assert errors == [] and foreign == []
