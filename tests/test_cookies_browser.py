"""Cookies in a real headless Chromium (policy §6, §10, §11), against the app served by uvicorn.

Before a choice only essential cookies exist (none at all for a visitor who has not logged in); declining adds
only the choice cookie; accepting sets the choice cookie to "accepted"; every cookie belongs to the server's own
host (no third-party cookies) and every request stays on its origin. GPC turns analytics off whatever was chosen.
Then: the choice follows a sign-up into the account, the consent centre changes it, a changed policy is accepted
from its notice, and a minor is reported without an account.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from imagen.consent.models import ConsentRecord
from imagen.consent.service import consent_service
from imagen.privacy.minors import MinorReport
from tests.conftest import PASSWORD
from tests.test_browser import CHROMIUM, chromium, live, playwright_sync  # noqa: F401  (fixtures)

expect = playwright_sync.expect
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
ESSENTIAL = {"imagen_session", "imagen_csrf", "imagen_cookie_consent"}


def cookie_map(context) -> dict[str, dict]:
    return {c["name"]: c for c in context.cookies()}


def watch(page, base: str) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    foreign: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("request", lambda req: None if req.url.startswith(base + "/") else foreign.append(req.url))
    return errors, foreign


def analytics_records(app: FastAPI) -> list[tuple[bool, str]]:
    with app.state.services.db.transaction() as s:
        rows = s.scalars(select(ConsentRecord).where(ConsentRecord.purpose == "analytics")
                         .order_by(ConsentRecord.created_at)).all()
        return [(r.granted, r.source) for r in rows]


def test_cookies_before_and_after_the_choice(live, chromium) -> None:  # noqa: F811
    app, base = live
    host = urlparse(base).hostname
    declined = chromium.new_context(base_url=base)
    accepted = chromium.new_context(base_url=base)
    gpc = chromium.new_context(base_url=base, extra_http_headers={"Sec-GPC": "1"})
    for context in (declined, accepted, gpc):
        context.set_default_timeout(30_000)
    try:
        # (1) First visit: no cookie at all (nothing essential is needed yet); the banner asks.
        page = declined.new_page()
        errors, foreign = watch(page, base)
        page.goto("/")
        expect(page.locator("#cookie-banner")).to_be_visible()
        expect(page.locator("body")).to_have_attribute("data-analytics", "off")
        assert declined.cookies() == []
        page.goto("/privacy")
        assert declined.cookies() == []

        # (2) Declining: only the choice cookie is added; the banner does not come back.
        page.click("#cookie-decline")
        expect(page.locator("#cookie-banner")).to_have_count(0)
        cookies = cookie_map(declined)
        assert set(cookies) == {"imagen_cookie_consent"} and cookies["imagen_cookie_consent"]["value"] == "declined"
        page.reload()
        expect(page.locator("#cookie-banner")).to_have_count(0)
        expect(page.locator("body")).to_have_attribute("data-analytics", "off")

        # (3) Accepting: the choice cookie says so; still first-party only, on the server's own host.
        page2 = accepted.new_page()
        errors2, foreign2 = watch(page2, base)
        page2.goto("/report-minor")
        page2.click("#cookie-accept")
        expect(page2.locator("#cookie-banner")).to_have_count(0)
        expect(page2.locator("body")).to_have_attribute("data-analytics", "on")
        page2.reload()
        expect(page2.locator("body")).to_have_attribute("data-analytics", "on")
        cookies = cookie_map(accepted)
        assert set(cookies) == {"imagen_cookie_consent"} and cookies["imagen_cookie_consent"]["value"] == "accepted"
        assert cookies["imagen_cookie_consent"]["httpOnly"] and cookies["imagen_cookie_consent"]["sameSite"] == "Lax"

        # (4) Global Privacy Control: no banner, analytics off even with an "accepted" cookie.
        gpc.add_cookies([{"name": "imagen_cookie_consent", "value": "accepted", "url": base}])
        page3 = gpc.new_page()
        page3.goto("/")
        expect(page3.locator("body")).to_have_attribute("data-analytics", "off")
        expect(page3.locator("#cookie-banner")).to_have_count(0)

        # (5) A minor is reported without an account.
        page2.fill("#account_email", "young@example.com")
        page2.fill("#details", "Their profile says they are 15 years old.")
        page2.click("#minor-report-form button[type=submit]")
        expect(page2.locator("#minor-report-done")).to_contain_text("Thank you")
        with app.state.services.db.transaction() as s:
            assert s.scalars(select(MinorReport.subject_email)).all() == ["young@example.com"]

        # (6) Signing up carries the banner's choice into the account; essential cookies only.
        page2.goto("/signup")
        page2.fill("#email", "ada@example.com")
        page2.fill("#password", PASSWORD)
        page2.fill("#date_of_birth", "1990-05-17")
        page2.select_option("#country", "GB")
        page2.check("#accept_policy")
        page2.click("#signup-form button[type=submit]")
        page2.wait_for_url(f"{base}/generate")
        assert set(cookie_map(accepted)) == ESSENTIAL
        assert analytics_records(app) == [(True, "cookie_banner")]
        expect(page2.locator("#cookie-banner")).to_have_count(0)

        # (7) The consent centre: switching analytics off is recorded, shown in the history, and followed by the
        # browser's choice cookie.
        page2.goto("/privacy/consents")
        expect(page2.locator("#consent-analytics")).to_be_checked()
        expect(page2.locator("#consent-model_improvement")).not_to_be_checked()
        page2.click("#consent-analytics")
        expect(page2.locator("#consent-analytics")).not_to_be_checked()
        expect(page2.locator("#consent-history tr[data-purpose=analytics]")).to_have_count(2)
        expect(page2.locator("#consent-history")).to_contain_text("consent centre")
        assert analytics_records(app) == [(True, "cookie_banner"), (False, "consent_centre")]
        assert cookie_map(accepted)["imagen_cookie_consent"]["value"] == "declined"
        expect(page2.locator("body")).to_have_attribute("data-analytics", "off")
        page2.screenshot(path="/tmp/imagen-consents.png", full_page=True)

        # (8) A material policy change: the notice asks; new work is refused until it is accepted there.
        with app.state.services.db.transaction() as s:
            consent_service.publish(s, version="2026-09-01", material=True, summary="A new GPU provider.",
                                    text="text")
        page2.goto("/generate")
        notice = page2.locator("#policy-notice")
        expect(notice).to_contain_text("2026-09-01")
        expect(notice).to_contain_text("A new GPU provider.")
        page2.screenshot(path="/tmp/imagen-policy-notice.png")
        page2.fill("#param-prompt", "a lighthouse")
        page2.click("#submit")
        expect(page2.locator("#form-error")).to_contain_text("privacy policy has changed")
        page2.click("#accept-policy")
        expect(notice).to_have_count(0)
        assert page2.request.get("/api/v1/me").json()["policy_acceptance_required"] is False
        page2.reload()
        expect(page2.locator("#policy-notice")).to_have_count(0)

        for context in (declined, accepted, gpc):
            for cookie in context.cookies():
                assert cookie["domain"] == host, cookie  # the server's own host: no third-party cookies
                assert cookie["name"] in ESSENTIAL, cookie
        assert not foreign and not foreign2, f"requests left the origin: {foreign + foreign2}"
        assert not errors and not errors2, f"errors in the page: {errors + errors2}"
    finally:
        for context in (declined, accepted, gpc):
            context.close()
