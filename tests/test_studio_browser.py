"""The studio in a real headless Chromium (SQLite only, one browser for the module, bounded waits, no sleeps):
gallery paging past 200 images, the detail view and its arrows, reuse settings round trip, form state across a
reload, bulk ZIP download, deleting one image of a batch, dark mode, and every page at 390 px without sideways scroll
(screenshots at 390 and 1280 px kept under $IMAGEN_TEST_ARTIFACTS, default test-artifacts/ in the checkout)."""

from __future__ import annotations

import io
import os
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from PIL import Image

from imagen.accounts.service import account_service
from imagen.generation.models import Generation, Output
from imagen.kit.db import new_id, utcnow
from imagen.notifications.service import notification_service
from tests.conftest import PASSWORD, signup_payload
from tests.test_browser import CHROMIUM, chromium, live, open_page, playwright_sync  # noqa: F401 (fixtures)

expect = playwright_sync.expect
ARTIFACTS = Path(os.environ.get("IMAGEN_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
PROMPT = "a lighthouse on a cliff at dusk"
PUBLIC_PAGES = ["/", "/login", "/signup", "/privacy", "/privacy/request", "/report-minor"]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"  # axe-core 4.14.1 from npm (MPL-2.0)
AXE_RUN = """axe.run(document, {resultTypes: ["violations"]}).then((r) => r.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(" | ")}`))"""
pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
PAGES = ["/account", "/generate", "/gallery", "/models", "/privacy", "/privacy/centre", "/privacy/consents",
         "/report-minor", "/admin", "/admin/minor-reports", "/admin/privacy-requests", "/admin/breaches",
         "/admin/legal-requests", "/admin/cases", "/admin/users", "/admin/hash-banks"]


def seed_rows(app, user_id: str, count: int) -> None:
    """Older images (rows only, no files): enough to page through."""
    start = utcnow() - timedelta(days=1)
    with app.state.services.db.transaction() as s:
        for n in range(count):
            gen = Generation(id=new_id(), user_id=user_id, workflow="txt2img", workflow_version=1,
                             pipeline="txt2img", params={"prompt": f"old {n}"}, checkpoint="imagen-tiny",
                             checkpoint_sha256="0" * 64, models=[], consent_model_improvement=False,
                             status="succeeded", progress=1.0, created_at=start - timedelta(seconds=n))
            s.add_all([gen, Output(id=new_id(), generation_id=gen.id, user_id=user_id, index=0, width=64, height=64,
                                   blob_key=f"outputs/{user_id}/{gen.id}/0.png", seed=1000 + n, size_bytes=1,
                                   created_at=start - timedelta(seconds=n))])


def test_studio_journey(live, chromium) -> None:  # noqa: F811
    app, base = live
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context, page, errors = open_page(chromium, base, downloads=True)
    try:
        r = page.request.post("/api/v1/auth/signup", data=signup_payload("studio@example.com"))
        assert r.status == 201, r.text()
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
        user_id = page.request.get("/api/v1/me").json()["id"]
        params = {"prompt": PROMPT, "negative_prompt": "fog", "checkpoint": "imagen-tiny", "steps": 3, "width": 64,
                  "height": 64, "seed": 11, "batch_size": 2}
        gen_id = page.request.post("/api/v1/generations", data={"workflow": "txt2img", "params": params},
                                   headers=csrf).json()["id"]
        for _ in range(600):  # bounded: 600 looks, each waiting up to 0.2 s
            body = page.request.get(f"/api/v1/generations/{gen_id}").json()
            if body["status"] not in ("queued", "running"):
                break
            page.wait_for_timeout(200)
        assert body["status"] == "succeeded", body
        first, second = body["outputs"]
        seed_rows(app, user_id, 230)

        # Paging past 200: 48 at first, then "Load more" until there are no more.
        page.goto("/gallery")
        tiles = page.locator("#gallery li.tile")
        expect(tiles).to_have_count(48)
        more = page.locator("#load-more")
        for _ in range(10):
            if not more.is_visible():
                break
            count = tiles.count()
            more.click()
            expect(tiles).not_to_have_count(count)
        expect(more).to_be_hidden()
        expect(tiles).to_have_count(232)
        page.screenshot(path=str(ARTIFACTS / "gallery-1280.png"))

        # The detail view: prompt, negative prompt, seed, model hash; arrows move; Esc closes.
        page.click(f'.open-detail[data-output-id="{first["id"]}"]')
        dialog = page.locator("#lightbox")
        expect(dialog).to_be_visible()
        info = page.locator("#detail-params")
        expect(info).to_contain_text(PROMPT)
        expect(info).to_contain_text("fog")
        expect(info).to_contain_text(f"sha256 {body['checkpoint_sha256']}")
        expect(page.locator("#detail-title")).to_contain_text(f"seed {first['seed']}")
        page.keyboard.press("ArrowRight")
        expect(page.locator("#detail-title")).to_contain_text(f"seed {second['seed']}")
        page.keyboard.press("ArrowLeft")
        expect(page.locator("#detail-title")).to_contain_text(f"seed {first['seed']}")
        expect(page.locator("#detail-download")).to_have_attribute("href", f"{first['url']}?download=1")
        page.screenshot(path=str(ARTIFACTS / "detail-1280.png"))
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        # Reuse settings: the generate form is filled with the image's prompt, seed and parameters.
        page.click(f'.open-detail[data-output-id="{second["id"]}"]')
        page.click("#detail-reuse")
        page.wait_for_url(f"{base}/generate?workflow=txt2img")
        expect(page.locator("#param-prompt")).to_have_value(PROMPT)
        expect(page.locator("#param-negative_prompt")).to_have_value("fog")
        expect(page.locator("#param-seed")).to_have_value(str(second["seed"]))
        expect(page.locator("#param-steps")).to_have_value("3")
        # Form state survives a reload.
        page.fill("#param-prompt", "kept across a reload")
        page.reload()
        expect(page.locator("#param-prompt")).to_have_value("kept across a reload")
        expect(page.locator("h1")).to_have_text("Generate")

        # Bulk ZIP of two selected images, then delete one image of the batch from the detail view.
        page.goto("/gallery")
        page.check(f'.select-output[value="{first["id"]}"]')
        page.check(f'.select-output[value="{second["id"]}"]')
        expect(page.locator("#bulk-count")).to_have_text("2 selected")
        with page.expect_download() as download_info:
            page.click("#bulk-download")
        with zipfile.ZipFile(io.BytesIO(Path(download_info.value.path()).read_bytes())) as archive:
            assert sorted(archive.namelist()) == sorted([f"imagen-{first['id']}.png", f"imagen-{second['id']}.png"])
        page.click(f'.open-detail[data-output-id="{first["id"]}"]')
        page.once("dialog", lambda d: d.accept())
        page.click("#detail-delete")
        expect(page.locator(f'li[data-output-id="{first["id"]}"]')).to_have_count(0)
        expect(page.locator("#detail-title")).to_contain_text(f"seed {second['seed']}")  # moved to the next one
        assert page.request.get(first["url"]).status == 404
        assert page.request.get(second["url"]).status == 200

        # Dark mode: the toggle sets it and it is kept across pages.
        page.keyboard.press("Escape")
        page.click("#theme-toggle")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        page.goto("/generate")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        expect(page.locator("#theme-toggle")).to_have_attribute("aria-pressed", "true")

        # The account page: a key is shown once, its last use appears, it can be revoked; notifications are read.
        with app.state.services.db.transaction() as s:
            notification_service.notify(s, user_id=user_id, kind="export.ready", title="Your export is ready",
                                        body="Download it from the privacy centre.", link="/privacy/centre")
        page.goto("/account")
        expect(page.locator("h1")).to_have_text("Your account")
        expect(page.locator("#notes-list li.unread")).to_contain_text("Your export is ready")
        page.click("#notes-list .mark-read")
        expect(page.locator("#notes-list li.read")).to_have_count(1)
        page.fill("#key-name", "my script")
        page.click("#key-form button[type=submit]")
        key = page.locator("#key-value")
        expect(key).not_to_be_empty()
        row = page.locator("#key-table tbody tr", has_text="my script")
        expect(row.locator(".last-used")).to_have_text("never")
        with httpx.Client(base_url=base, trust_env=False) as api:  # no cookies: the key alone
            assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {key.text_content()}"}).is_success
        page.reload()
        expect(page.locator("#key-created")).to_be_hidden()  # shown once
        expect(row.locator(".last-used")).not_to_have_text("never")
        page.once("dialog", lambda d: d.accept())
        row.locator(".revoke-key").click()
        expect(row).to_have_count(0)

        # Generation metadata: off by default; the toggle turns it on and downloads then carry it.
        embed = page.locator("#embed-metadata")
        expect(embed).not_to_be_checked()
        embed.check()
        for _ in range(50):  # bounded: the PUT lands within a few looks
            if page.request.get("/api/v1/me/settings").json()["embed_metadata"]:
                break
            page.wait_for_timeout(100)
        with Image.open(io.BytesIO(page.request.get(second["url"]).body())) as tagged:
            assert tagged.info["parameters"].startswith(PROMPT)
        page.reload()
        expect(embed).to_be_checked()

        # Password change: a wrong current password is refused on the page; then the new one works.
        page.fill("#current-password", "not-my-password")
        page.fill("#new-password", "another-Long-passphrase-9")
        page.click("#password-form button[type=submit]")
        expect(page.locator("#password-error")).to_contain_text("current_password")
        page.fill("#current-password", PASSWORD)
        page.click("#password-form button[type=submit]")
        expect(page.locator("#password-done")).to_be_visible()
        expect(page.locator("#sessions-list li")).to_have_count(1)
        expect(page.locator("#sessions-list")).to_contain_text("(this browser)")
        with httpx.Client(base_url=base, trust_env=False) as api:
            assert api.post("/api/v1/auth/login", json={"email": "studio@example.com",
                                                        "password": "another-Long-passphrase-9"}).is_success

        # The admin home links to every admin page (this account made an admin).
        with app.state.services.db.transaction() as s:
            account_service.get_by_email(s, "studio@example.com").role = "admin"
        page.goto("/gallery")
        page.click('header nav a[href="/admin"]')
        expect(page.locator("h1")).to_have_text("Administration")
        for href in ("/admin/minor-reports", "/admin/privacy-requests", "/admin/breaches", "/admin/cases"):
            page.click(f'#admin-links a[href="{href}"]')
            page.wait_for_url(f"{base}{href}")
            expect(page.locator("h1")).to_have_count(1)
            page.go_back()

        # Every page at 390 px: no sideways scroll, one h1, a skip link to the main content.
        page.set_viewport_size({"width": 390, "height": 844})
        for path in PAGES:
            page.goto(path)
            expect(page.locator("h1")).to_have_count(1)
            assert page.locator("a.skip-link").get_attribute("href") == "#main"
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            wide = page.evaluate("""Array.from(document.querySelectorAll('body *'))
                .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
                .slice(0, 5).map((e) => e.tagName + '#' + e.id + '.' + e.className)""")
            assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at 390 px: {wide}"
            page.screenshot(path=str(ARTIFACTS / f"{path.strip('/').replace('/', '-')}-390.png"), full_page=True)

        # axe-core on every page, light and dark: no serious or critical violation (injected through the DevTools
        # protocol, which the page's CSP does not govern; the pages themselves still load only their own scripts).
        axe = AXE.read_text()
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto("/account")
        page.evaluate(axe)
        page.evaluate("document.querySelector('main').append(document.createElement('input'))")  # no label
        assert any(v.startswith("label (critical)") for v in page.evaluate(AXE_RUN))  # the scan does find things
        found = []
        for pages, signed_in in ((PAGES, True), (PUBLIC_PAGES, False)):
            if not signed_in:  # the signed-out pages, at 390 px
                context.clear_cookies()
                page.set_viewport_size({"width": 390, "height": 844})
            for theme in ("light", "dark"):
                page.evaluate(f"localStorage.setItem('imagen_theme', '{theme}')")
                for path in pages:
                    page.goto(path)
                    if not signed_in:
                        overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
                        assert overflow <= 0 and page.locator("h1").count() == 1, path
                    page.evaluate(axe)
                    found += [f"{path} [{theme}] {v}" for v in page.evaluate(AXE_RUN)]
        assert not found, "accessibility violations:\n" + "\n".join(found)
        assert not errors, f"errors in the page: {errors}"
    finally:
        context.close()
