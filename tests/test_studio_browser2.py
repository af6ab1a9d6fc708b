"""More of the studio in a real headless Chromium (SQLite only, bounded waits, no sleeps): the queue panel with
cancel, generation metadata off (no `parameters` chunk) and on, the admin accounts page (suspend, restore, delete
with its confirm dialog), hires fix from the detail view, and axe-core in light and dark mode on the pages the
first browser test does not scan (/billing, /admin/insights, /reset-password, /verify-email, /admin/users with
accounts listed); screenshots at 390 and 1280 px under $IMAGEN_TEST_ARTIFACTS (default test-artifacts/)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from imagen.accounts.models import User
from imagen.accounts.service import account_service
from tests.conftest import signup_payload
from tests.test_browser import CHROMIUM, chromium, live, open_page, playwright_sync  # noqa: F401 (fixtures)
from tests.test_studio_browser import ARTIFACTS, AXE, AXE_RUN

expect = playwright_sync.expect
pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
PROMPT = "a red kite over a harbour"
SIGNED_IN_PAGES = ["/billing", "/admin/insights", "/admin/users"]
SIGNED_OUT_PAGES = ["/reset-password", "/verify-email"]
LONG = {"prompt": "a very slow painting", "checkpoint": "imagen-tiny", "steps": 150, "width": 512, "height": 512,
        "batch_size": 4}


def wait_done(page, gen_id: str, states=("succeeded", "failed", "canceled")) -> dict:
    for _ in range(600):  # bounded: 600 looks, each waiting up to 0.2 s
        body = page.request.get(f"/api/v1/generations/{gen_id}").json()
        if body["status"] in states:
            return body
        page.wait_for_timeout(200)
    raise AssertionError(f"generation {gen_id} stayed {body['status']}")


def test_queue_metadata_admin_accounts_hires_and_axe(live, chromium) -> None:  # noqa: F811
    app, base = live
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context, page, errors = open_page(chromium, base, downloads=True)
    try:
        # A second account first (the admin acts on it later), then the admin's own session in this browser.
        other = context.request.post("/api/v1/auth/signup", data=signup_payload("member@example.com"))
        assert other.status == 201, other.text()
        member_id = other.json()["account"]["id"]
        context.clear_cookies()
        r = page.request.post("/api/v1/auth/signup", data=signup_payload("owner@example.com"))
        assert r.status == 201, r.text()
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}

        def submit(params: dict) -> str:
            r = page.request.post("/api/v1/generations", data={"workflow": "txt2img", "params": params},
                                  headers=csrf)
            assert r.status == 202, r.text()
            return r.json()["id"]

        # The queue panel: two long jobs (one running, one waiting); each is canceled from the panel and leaves.
        running, waiting = submit(LONG), submit(LONG)
        wait_done(page, running, ("running",))
        page.goto("/generate")
        items = page.locator("#queue-list li")
        expect(items).to_have_count(2)
        expect(page.locator(f'#queue-list li[data-generation-id="{waiting}"]')).to_contain_text("queued")
        expect(page.locator("#queue-empty")).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "queue-1280.png"))
        page.click(f'#queue-list li[data-generation-id="{waiting}"] button.queue-cancel')
        expect(page.locator(f'#queue-list li[data-generation-id="{waiting}"]')).to_have_count(0)
        assert wait_done(page, waiting)["status"] == "canceled"
        page.click(f'#queue-list li[data-generation-id="{running}"] button.queue-cancel')
        assert wait_done(page, running)["status"] == "canceled"
        page.click("#queue-refresh")
        expect(items).to_have_count(0)
        expect(page.locator("#queue-empty")).to_be_visible()

        # Metadata off (the default): a download has no `parameters` chunk; on: it has A1111's text.
        gen = wait_done(page, submit({"prompt": PROMPT, "checkpoint": "imagen-tiny", "steps": 3, "width": 64,
                                      "height": 64, "seed": 21}))
        assert gen["status"] == "succeeded", gen
        output = gen["outputs"][0]
        with Image.open(io.BytesIO(page.request.get(f"{output['url']}?download=1").body())) as plain:
            assert "parameters" not in plain.info
        page.goto("/account")
        embed = page.locator("#embed-metadata")
        expect(embed).not_to_be_checked()
        embed.check()
        for _ in range(50):  # bounded: the PUT lands within a few looks
            if page.request.get("/api/v1/me/settings").json()["embed_metadata"]:
                break
            page.wait_for_timeout(100)
        with Image.open(io.BytesIO(page.request.get(f"{output['url']}?download=1").body())) as tagged:
            assert tagged.info["parameters"].startswith(PROMPT) and "Seed: 21" in tagged.info["parameters"]
        embed.uncheck()
        for _ in range(50):
            if not page.request.get("/api/v1/me/settings").json()["embed_metadata"]:
                break
            page.wait_for_timeout(100)
        with Image.open(io.BytesIO(page.request.get(output["url"]).body())) as plain:
            assert "parameters" not in plain.info

        # Hires fix from the detail view: the same prompt and seed through the hires_fix workflow (1.5x the size).
        page.goto("/gallery")
        page.click(f'.open-detail[data-output-id="{output["id"]}"]')
        expect(page.locator("#lightbox")).to_be_visible()
        page.click("#detail-hires")
        status = page.locator("#detail-hires-status")
        expect(status).to_be_visible()
        expect(status).to_contain_text("Hires fix queued")
        hires = wait_done(page, status.get_attribute("data-generation-id"))
        assert hires["status"] == "succeeded", hires
        assert hires["workflow"] == "hires_fix" and hires["params"]["prompt"] == PROMPT
        assert hires["params"]["seed"] == 21 and hires["outputs"][0]["seed"] == 21
        assert (hires["outputs"][0]["width"], hires["outputs"][0]["height"]) == (96, 96)
        page.keyboard.press("Escape")

        # The admin accounts page: suspend (asks first), restore, delete (asks first; the erasure runs).
        with app.state.services.db.transaction() as s:
            account_service.get_by_email(s, "owner@example.com").role = "admin"
        page.goto("/admin/users")
        row = page.locator(f'#users tr[data-user-id="{member_id}"]')
        own = page.locator("#users tr", has_text="owner@example.com")
        expect(own.locator("button.account-action")).to_have_count(0)  # not on yourself
        dialogs: list[str] = []

        def answer(accept: bool):
            def handle(dialog) -> None:
                dialogs.append(dialog.message)
                dialog.accept() if accept else dialog.dismiss()
            return handle

        page.once("dialog", answer(False))
        row.locator('button[data-action="suspend"]').click()
        expect(row.locator(".state")).to_have_text("active")  # dismissed: nothing happened
        page.once("dialog", answer(True))
        row.locator('button[data-action="suspend"]').click()
        expect(row.locator(".state")).to_have_text("suspended")
        assert dialogs[-1].startswith("Suspend member@example.com?")
        page.screenshot(path=str(ARTIFACTS / "admin-users-1280.png"), full_page=True)
        row.locator('button[data-action="restore"]').click()
        expect(row.locator(".state")).to_have_text("active")
        page.once("dialog", answer(True))
        with page.expect_navigation():  # the page reloads itself once the API call returns; wait for that reload
            row.locator('button[data-action="delete"]').click()
        assert "cannot be undone" in dialogs[-1]
        for _ in range(150):  # bounded: the erasure runs in the background right after the request
            with app.state.services.db.transaction() as s:
                if s.get(User, member_id) is None:
                    break
            page.wait_for_timeout(200)
        page.goto("/admin/users")
        expect(row).to_have_count(0)

        # axe-core in light and dark mode, no sideways scroll at 390 px, screenshots at 390 and 1280 px.
        axe = AXE.read_text()
        found = []
        for paths, signed_in in ((SIGNED_IN_PAGES, True), (SIGNED_OUT_PAGES, False)):
            if not signed_in:
                context.clear_cookies()
            for theme in ("light", "dark"):
                for width, height in ((1280, 900), (390, 844)):
                    page.set_viewport_size({"width": width, "height": height})
                    for path in paths:
                        page.goto(path)
                        page.evaluate(f"localStorage.setItem('imagen_theme', '{theme}')")
                        page.reload()
                        assert page.evaluate("document.documentElement.dataset.theme") == theme, path
                        expect(page.locator("h1")).to_have_count(1)
                        overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
                        assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at {width} px"
                        name = path.strip("/").replace("/", "-")
                        page.screenshot(path=str(ARTIFACTS / f"{name}-{theme}-{width}.png"), full_page=True)
                        page.evaluate(axe)
                        found += [f"{path} [{theme}, {width} px] {v}" for v in page.evaluate(AXE_RUN)]
        assert not found, "accessibility violations:\n" + "\n".join(found)
        assert not errors, f"errors in the page: {errors}"
    finally:
        context.close()
