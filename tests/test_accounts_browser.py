"""The account-security pages in headless Chromium against the app served by uvicorn: two-factor enrolment on
/account, a sign-in that asks for the code, an email change and a password-reset request; no script errors."""

from __future__ import annotations

import pyotp
import pytest
from fastapi import FastAPI

from tests.conftest import PASSWORD, signup_payload
from tests.test_browser import chromium, live, open_page, playwright_sync  # noqa: F401  (fixtures)

expect = playwright_sync.expect
pytestmark = pytest.mark.skipif(not __import__("pathlib").Path("/usr/bin/chromium").exists(),
                                reason="/usr/bin/chromium is not installed")


def test_two_factor_email_change_and_reset_in_the_browser(live: tuple[FastAPI, str],  # noqa: F811
                                                          chromium: playwright_sync.Browser) -> None:  # noqa: F811
    _app, base = live
    context, page, js_errors = open_page(chromium, base, size=None)
    try:
        assert page.request.post("/api/v1/auth/signup", data=signup_payload()).status == 201

        # Two-factor: the password, then a code from the authenticator; the recovery codes are shown once.
        page.goto("/account")
        expect(page.locator("#twofa-status")).to_contain_text("Off.")
        expect(page.locator("#email-status")).to_contain_text("ada@example.com")
        page.fill("#twofa-password", PASSWORD)
        page.click("#twofa-setup-form button[type=submit]")
        expect(page.locator("#twofa-confirm-form")).to_be_visible()
        secret = page.locator("#twofa-secret").inner_text()
        page.fill("#twofa-code", pyotp.TOTP(secret).now())
        page.click("#twofa-confirm-form button[type=submit]")
        expect(page.locator("#twofa-codes")).to_be_visible()
        expect(page.locator("#twofa-code-list li")).to_have_count(10)
        recovery = page.locator("#twofa-code-list li").first.inner_text()
        expect(page.locator("#twofa-status")).to_contain_text("On; 10 recovery codes left")

        # An email change waits for the link sent to the new address.
        page.fill("#new-email", "ada@new.example")
        page.fill("#email-password", PASSWORD)
        page.click("#email-form button[type=submit]")
        expect(page.locator("#email-done")).to_contain_text("ada@new.example")

        # Signing in again: the password, then the form asks for the code.
        page.click("#logout")
        page.wait_for_url(f"{base}/login")
        page.fill("#email", "ada@example.com")
        page.fill("#password", PASSWORD)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#code-field")).to_be_visible()
        page.fill("#code", recovery)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"{base}/generate")

        # A reset request from the link on the sign-in page answers the same for any address.
        context.clear_cookies()
        page.goto("/login")
        page.click("a[href='/reset-password']")
        page.fill("#reset-email", "nobody@example.com")
        page.click("#reset-request-form button[type=submit]")
        expect(page.locator("#reset-sent")).to_contain_text("If an account uses this address")
        assert js_errors == []
    finally:
        context.close()
