"""The web pages in a real headless Chromium against the real app served by uvicorn (SQLite and PostgreSQL).

One journey: refused under-18 sign-up, sign-up, a refused parameter, generate with live progress, download,
gallery, delete, log out, privacy policy, log in again.
Every request the pages make must stay on the service's own origin.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image

from imagen.accounts.service import account_service
from imagen.app import create_app
from imagen.inference.runtime import Runtime
from imagen.kit.config import Settings
from tests.conftest import PASSWORD, POLICY_VERSION

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("/tmp/imagen-generate.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")


@pytest.fixture(scope="module")
def chromium() -> Iterator[playwright_sync.Browser]:
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(chromium: playwright_sync.Browser, base: str, *, downloads: bool = False,
              size: tuple[int, int] | None = (1280, 900),
              ) -> tuple[playwright_sync.BrowserContext, playwright_sync.Page, list[str]]:
    """A context on the live server (`size` wide and high; None: Playwright's default) and its page, with the page's
    script errors and console errors (other than failed resource loads) collected in the list returned."""
    viewport = {"viewport": {"width": size[0], "height": size[1]}} if size else {}
    context = chromium.new_context(base_url=base, accept_downloads=downloads, **viewport)
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    return context, page, errors


@pytest.fixture
def live(settings: Settings, runtime: Runtime) -> Iterator[tuple[FastAPI, str]]:
    """The app on a free 127.0.0.1 port, served by uvicorn in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings.base_url = base_url
    app = create_app(settings, run_migrations=False, runtime=runtime)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-browser-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting (see the log above)"
        assert time.monotonic() < deadline, "uvicorn did not start within 60 s"
        time.sleep(0.02)
    try:
        yield app, base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


def test_browser_journey(live: tuple[FastAPI, str], chromium: playwright_sync.Browser) -> None:
    app, base = live
    context, page, js_errors = open_page(chromium, base, downloads=True, size=None)
    foreign: list[str] = []
    page.on("request", lambda req: None if req.url.startswith(base + "/") else foreign.append(req.url))

    try:
        # (1) An under-18 sign-up is refused with a visible reason, and nothing is stored.
        today = date.today()
        page.goto("/signup")
        expect(page.locator("#consent_model_improvement")).not_to_be_checked()
        expect(page.locator("#consent_marketing_emails")).not_to_be_checked()
        expect(page.locator("label.check", has=page.locator("#accept_policy"))).to_contain_text(
            f"(version {POLICY_VERSION})")
        page.fill("#email", "kid@example.com")
        page.fill("#password", PASSWORD)
        page.fill("#date_of_birth", today.replace(year=today.year - 10, day=1).isoformat())
        page.select_option("#country", "GB")
        page.check("#accept_policy")
        page.click("#signup-form button[type=submit]")
        error = page.locator("#form-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("Date of birth: You must be 18 or older")
        expect(error).to_contain_text("no account was created")
        assert page.url == f"{base}/signup"
        assert not [c for c in context.cookies() if c["name"].startswith("imagen_")]
        with app.state.services.db.transaction() as session:
            assert account_service.get_by_email(session, "kid@example.com") is None
        with httpx.Client(base_url=base, trust_env=False) as api:
            refused = api.post("/api/v1/auth/login", json={"email": "kid@example.com", "password": PASSWORD})
            assert refused.status_code == 401, refused.text

        # (2) An adult sign-up with the policy accepted and both optional consents left unticked.
        page.fill("#email", "ada@example.com")
        page.fill("#date_of_birth", "1990-05-17")
        page.click("#signup-form button[type=submit]")
        page.wait_for_url(f"{base}/generate")
        cookies = {c["name"]: c for c in context.cookies()}
        assert set(cookies) == {"imagen_session", "imagen_csrf"}
        assert cookies["imagen_session"]["httpOnly"] and cookies["imagen_session"]["secure"]
        me = page.request.get("/api/v1/me").json()
        assert me["email"] == "ada@example.com"
        assert me["policy_version_accepted"] == POLICY_VERSION
        assert me["consents"] == {"model_improvement": False, "marketing_emails": False}

        # (3) The form built from txt2img's parameters; progress over SSE; the image appears.
        expect(page.locator("#workflow")).to_have_value("txt2img")
        expect(page.locator("#param-checkpoint")).to_have_value("imagen-demo")  # the built-in default
        expect(page.locator("#demo-model-note")).to_be_visible()
        expect(page.locator("#param-width")).to_have_attribute("step", "8")
        page.fill("#param-prompt", "a lighthouse on a cliff at dusk")
        # The API's 422 list is shown field by field (browser-side checks switched off to reach the API).
        page.eval_on_selector("#generate-form", "form => { form.noValidate = true; }")
        page.fill("#param-steps", "0")
        page.click("#submit")
        expect(error).to_contain_text("Steps: Input should be greater than or equal to 1")
        expect(page.locator("#param-steps")).to_have_attribute("aria-invalid", "true")
        page.eval_on_selector("#generate-form", "form => { form.noValidate = false; }")
        page.fill("#param-steps", "4")
        page.fill("#param-width", "64")
        page.fill("#param-height", "64")
        page.fill("#param-seed", "7")
        page.click("#submit")
        image = page.locator('#outputs img[src^="/api/v1/outputs/"]')
        expect(image).to_be_visible(timeout=90_000)
        expect(page.locator("#progress-text")).to_have_text("100%")
        assert page.eval_on_selector("#progress", "el => el.value") == 1
        expect(page.locator("#status")).to_have_text("Done.")
        expect(error).to_be_hidden()
        expect(page.locator("#outputs .seed")).to_contain_text("seed 7")
        expect(page.locator("#cancel")).to_be_hidden()
        page.wait_for_function("document.querySelector('#outputs img').naturalWidth === 64")
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        # (4) The image is a 64x64 PNG; the download link asks for an attachment.
        src = image.get_attribute("src")
        assert src is not None
        shown = page.request.get(src)
        assert shown.ok and shown.headers["content-type"] == "image/png"
        assert shown.body().startswith(PNG_MAGIC)
        assert Image.open(io.BytesIO(shown.body())).size == (64, 64)
        link = page.locator("#outputs a.download")
        assert link.get_attribute("href") == f"{src}?download=1"
        attachment = page.request.get(f"{src}?download=1")
        assert attachment.ok and attachment.headers["content-disposition"].startswith("attachment")
        assert attachment.body() == shown.body()
        with page.expect_download() as download_info:
            link.click()
        output_id = src.rsplit("/", 1)[1]
        assert download_info.value.suggested_filename == f"imagen-{output_id}.png"

        # (5) The gallery shows its thumbnail (loaded, not broken); deleting the image removes it.
        page.goto("/gallery")
        thumb = f"{src}/thumb"
        tile = page.locator(f'#gallery img[src="{thumb}"]')
        expect(tile).to_be_visible()
        page.wait_for_function(f"document.querySelector('#gallery img[src=\"{thumb}\"]').naturalWidth === 64")
        expect(page.locator(f'#gallery a[href="{src}?download=1"]')).to_be_visible()
        page.once("dialog", lambda dialog: dialog.accept())
        page.click(".delete-output")
        expect(page.locator("#gallery-empty")).to_be_visible()
        assert page.request.get(src).status == 404

        # (6) Log out from the header; the generate page then sends the browser to the login page.
        page.goto("/generate")
        page.click("#logout")
        page.wait_for_url(f"{base}/login")
        assert not [c for c in context.cookies() if c["name"].startswith("imagen_")]
        page.goto("/generate")
        assert page.url == f"{base}/login"
        expect(page.locator("header nav")).to_contain_text("Log in")

        # (7) The published policy names the operator from settings, not the template placeholders.
        page.goto("/privacy")
        policy = page.locator("article.policy")
        expect(policy).to_contain_text("Imagen Test Ltd")
        expect(policy).to_contain_text("privacy@imagen.test")
        expect(page.locator("#policy-version")).to_have_text(POLICY_VERSION)
        html = page.content()
        assert "[YOUR LEGAL ENTITY NAME]" not in html and "[YOUR ADDRESS]" not in html
        # The test settings leave the site's domain unset: a development install says so, visibly.
        warning = page.locator("#policy-unset-warning")
        expect(warning).to_be_visible()
        expect(warning).to_contain_text("IMAGEN_SITE_DOMAIN")
        expect(warning).not_to_contain_text("IMAGEN_LEGAL_ENTITY")

        # (8) Logging in again: a wrong password is reported on the page, the right one leads to /generate.
        page.goto("/login")
        page.fill("#email", "ada@example.com")
        page.fill("#password", "not-the-password")
        page.click("#login-form button[type=submit]")
        expect(error).to_be_visible()
        assert page.url == f"{base}/login"
        page.fill("#password", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"{base}/generate")
        expect(page.locator("#logout")).to_be_visible()

        assert not foreign, f"requests left the service's origin: {foreign}"
        assert not js_errors, f"errors in the page: {js_errors}"
    finally:
        context.close()
