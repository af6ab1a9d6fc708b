"""Consent centre, cookie choice and GPC, policy versions and re-acceptance, marketing consent per output, minors.

Policy §3 (consent, withdrawal, marketing use of outputs), §4.1 (configured providers only), §6 (cookies, GPC),
§10 (minors), §11 (material changes re-accepted), §12 (operator details).
"""

from __future__ import annotations

import os
import re
import time

import pytest
from fastapi import Request
from pydantic import ValidationError
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from imagen.accounts.http import OptionalPrincipalDep
from imagen.accounts.models import User
from imagen.cli import app as cli
from imagen.consent.cookies import analytics_allowed
from imagen.consent.models import ConsentRecord, OutputMarketingConsent, PolicyVersion
from imagen.kit.config import Settings, get_settings
from imagen.kit.db import Database
from imagen.notifications.models import Notification
from imagen.privacy.minors import MinorReport
from imagen.privacy.policy import LISTS, policy_template, render_policy
from imagen.privacy.providers import PROVIDERS
from imagen.web.pages import policy_blocks
from tests.conftest import PASSWORD, POLICY_VERSION, TINY, signup, signup_payload, wait_for

GPC = {"Sec-GPC": "1"}


def make_admin(app, email: str) -> None:
    with app.state.services.db.transaction() as s:
        s.execute(update(User).where(User.email == email).values(role="admin"))


@pytest.fixture
def admin(new_client, app):
    c = new_client()
    signup(c, "root@example.com")
    make_admin(app, "root@example.com")
    return c


def records(app, email: str, purpose: str | None = None) -> list[ConsentRecord]:
    with app.state.services.db.transaction() as s:
        user = s.scalars(select(User).where(User.email == email)).one()
        query = select(ConsentRecord).where(ConsentRecord.user_id == user.id)
        if purpose:
            query = query.where(ConsentRecord.purpose == purpose)
        rows = list(s.scalars(query.order_by(ConsentRecord.created_at)))
        s.expunge_all()
        return rows


def submit(client, **params):
    return client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {"prompt": "a fox", **TINY,
                                                                                       **params}})


# ---- consent centre (policy §3, §6) ----

def test_consent_centre_lists_choices_and_appends_every_change(user_client, app):
    body = user_client.get("/api/v1/me/consents").json()
    assert body["current"] == {"model_improvement": False, "marketing_emails": False, "analytics": False}
    assert body["explicit_opt_in"] is True and body["country"] == "GB"
    assert body["choices"]["analytics"]["chosen"] is False and body["choices"]["model_improvement"]["chosen"]
    assert {h["purpose"] for h in body["history"]} == {"policy_acceptance", "model_improvement", "marketing_emails"}
    assert body["policy"] == {**body["policy"], "current_version": POLICY_VERSION, "acceptance_required": False}

    r = user_client.put("/api/v1/me/consents", json={"analytics": True, "model_improvement": True})
    assert r.status_code == 200, r.text
    assert r.json()["current"] == {"model_improvement": True, "marketing_emails": False, "analytics": True}
    assert "imagen_cookie_consent=accepted" in r.headers["set-cookie"]  # the browser's choice follows
    # Partial update; an unchanged value adds nothing; each record has its time, version and source.
    r = user_client.put("/api/v1/me/consents", json={"model_improvement": False, "analytics": True})
    assert r.json()["current"] == {"model_improvement": False, "marketing_emails": False, "analytics": True}
    history = r.json()["history"]
    assert [(h["purpose"], h["granted"]) for h in history[:3]] == [
        ("model_improvement", False), ("model_improvement", True), ("analytics", True)] or \
        [(h["purpose"], h["granted"]) for h in history[:3]] == [
        ("model_improvement", False), ("analytics", True), ("model_improvement", True)]
    assert all(h["at"] and h["policy_version"] == POLICY_VERSION and h["source"] for h in history)
    assert {h["source"] for h in history[:3]} == {"consent_centre"}
    mi = records(app, "ada@example.com", "model_improvement")
    assert [r.granted for r in mi] == [False, True, False]  # appended, never edited

    assert user_client.put("/api/v1/me/consents", json={}).status_code == 422
    assert user_client.put("/api/v1/me/consents", json={"profiling": True}).status_code == 422
    del user_client.headers["X-CSRF-Token"]
    assert user_client.put("/api/v1/me/consents", json={"analytics": False}).status_code == 403


def test_regional_defaults_opt_in_in_europe_operator_defaults_elsewhere(client, new_client, settings, app):
    settings.consent_defaults_elsewhere = "model_improvement,analytics"
    us = signup(client, "sam@example.com", country="US", consents={})
    assert us["account"]["consents"] == {"model_improvement": True, "marketing_emails": False}
    body = client.get("/api/v1/me/consents").json()
    assert body["explicit_opt_in"] is False
    assert body["current"] == {"model_improvement": True, "marketing_emails": False, "analytics": True}
    assert body["choices"]["model_improvement"]["source"] == "signup_default"
    assert body["choices"]["analytics"]["chosen"] is False  # a default, not a choice: the banner still asks
    for country in ("DE", "NO", "CH", "GB"):
        c = new_client()
        account = signup(c, f"eu-{country.lower()}@example.com", country=country, consents={})["account"]
        assert account["consents"] == {"model_improvement": False, "marketing_emails": False}
        assert c.get("/api/v1/me/consents").json()["current"] == {
            "model_improvement": False, "marketing_emails": False, "analytics": False}
    # An explicit choice wins over the default everywhere.
    c = new_client()
    signup(c, "kim@example.com", country="US", consents={"model_improvement": False})
    assert c.get("/api/v1/me/consents").json()["choices"]["model_improvement"]["source"] == "signup"
    assert c.get("/api/v1/me/consents").json()["current"]["model_improvement"] is False


def test_withdrawal_is_honoured_by_the_next_generation(user_client):
    assert user_client.put("/api/v1/me/consents", json={"model_improvement": True}).status_code == 200
    first = submit(user_client)
    assert first.status_code == 202 and first.json()["consent_model_improvement"] is True
    assert user_client.put("/api/v1/me/consents", json={"model_improvement": False}).status_code == 200
    second = submit(user_client)
    assert second.json()["consent_model_improvement"] is False
    assert wait_for(user_client, first.json()["id"])["consent_model_improvement"] is True
    assert wait_for(user_client, second.json()["id"])["consent_model_improvement"] is False


# ---- cookies and GPC (policy §6) ----

def test_cookie_choice_is_first_party_and_gpc_overrides_it(client, new_client, app):
    anon = client.get("/api/v1/cookie-consent").json()
    assert anon == {"choice": None, "gpc": False, "analytics_allowed": False,
                    "essential_cookies": ["imagen_session", "imagen_csrf", "imagen_cookie_consent"]}
    r = client.post("/api/v1/cookie-consent", json={"analytics": True})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("imagen_cookie_consent=accepted") and "Domain" not in cookie
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert client.get("/api/v1/cookie-consent").json()["analytics_allowed"] is True
    assert client.get("/api/v1/cookie-consent", headers=GPC).json() == {
        **anon, "choice": "accepted", "gpc": True, "analytics_allowed": False}
    client.post("/api/v1/cookie-consent", json={"analytics": False})
    assert client.get("/api/v1/cookie-consent").json()["choice"] == "declined"

    # Logged in: the banner's choice is an analytics record; GPC then withdraws it, recorded once.
    user = new_client()
    signup(user, "gpc@example.com")
    assert user.post("/api/v1/cookie-consent", json={"analytics": True}).json()["analytics_allowed"] is True
    assert [(r.granted, r.source) for r in records(app, "gpc@example.com", "analytics")] == [(True, "cookie_banner")]
    assert user.get("/api/v1/me/consents").json()["analytics_allowed"] is True
    body = user.get("/api/v1/me/consents", headers=GPC).json()
    assert body["gpc"] is True and body["analytics_allowed"] is False and body["current"]["analytics"] is False
    user.get("/api/v1/me/consents", headers=GPC)
    user.get("/api/v1/cookie-consent", headers=GPC)
    assert [(r.granted, r.source) for r in records(app, "gpc@example.com", "analytics")] == [
        (True, "cookie_banner"), (False, "gpc")]
    # Even after accepting again, a request that carries GPC never allows analytics.
    user.put("/api/v1/me/consents", json={"analytics": True})
    assert user.get("/api/v1/cookie-consent", headers=GPC).json()["analytics_allowed"] is False


def test_analytics_allowed_is_the_gate_for_analytics_code(client, app):
    @app.get("/_analytics-probe")
    def probe(request: Request, principal: OptionalPrincipalDep) -> dict[str, bool]:
        return {"allowed": analytics_allowed(request, principal)}

    assert client.get("/_analytics-probe").json() == {"allowed": False}  # nobody chose
    client.post("/api/v1/cookie-consent", json={"analytics": True})
    assert client.get("/_analytics-probe").json() == {"allowed": True}
    assert client.get("/_analytics-probe", headers=GPC).json() == {"allowed": False}
    signup(client)  # the account's choice (accepted, from the banner) now decides, GPC still overrides
    assert client.get("/_analytics-probe").json() == {"allowed": True}
    client.put("/api/v1/me/consents", json={"analytics": False})
    client.cookies.set("imagen_cookie_consent", "accepted")
    assert client.get("/_analytics-probe").json() == {"allowed": False}
    assert 'data-analytics="off"' in client.get("/privacy").text


def test_cookie_choice_made_before_sign_up_becomes_the_accounts_record(client, app):
    client.post("/api/v1/cookie-consent", json={"analytics": False})
    signup(client, "bea@example.com")
    assert [(r.granted, r.source) for r in records(app, "bea@example.com", "analytics")] == [
        (False, "cookie_banner")]


# ---- policy versions (policy §11, §12) ----

def test_material_change_is_notified_and_must_be_accepted_before_writes(admin, user_client, new_client, app):
    assert user_client.post("/api/v1/admin/policy-versions",
                            json={"version": "2026-06-01", "material": True}).status_code == 403
    r = admin.post("/api/v1/admin/policy-versions",
                   json={"version": "2026-06-01", "material": True, "summary": "We now use RunPod for GPUs."})
    assert r.status_code == 201, r.text
    assert r.json()["notified"] == 2 and r.json()["material"] is True
    assert admin.post("/api/v1/admin/policy-versions",
                      json={"version": "2026-06-01", "material": True}).status_code == 409
    assert admin.post("/api/v1/admin/policy-versions",
                      json={"version": "no spaces", "material": True}).status_code == 422
    with app.state.services.db.transaction() as s:
        notes = s.scalars(select(Notification).where(Notification.kind == "policy_changed")).all()
        assert len(notes) == 2 and all("2026-06-01" in n.title and "RunPod" in n.body for n in notes)
    assert user_client.get("/api/v1/policy").json()["version"] == "2026-06-01"

    # At the next login the user is asked; until then writes are refused with a 403 that says so.
    c = new_client()
    login = c.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD}).json()
    c.headers["X-CSRF-Token"] = login["csrf_token"]
    assert login["account"]["policy_acceptance_required"] is True
    assert login["account"]["policy_version_current"] == "2026-06-01"
    assert c.get("/api/v1/me").json()["policy_acceptance_required"] is True
    refused = submit(c)
    assert refused.status_code == 403 and "privacy policy has changed (version 2026-06-01)" in refused.json()["detail"]
    assert c.post("/api/v1/api-keys", json={"name": "k"}).status_code == 403
    # Reads and the privacy functions keep working.
    assert c.get("/api/v1/generations").status_code == 200
    assert c.put("/api/v1/me/consents", json={"marketing_emails": True}).status_code == 200
    assert c.get("/api/v1/me/consents").json()["policy"]["acceptance_required"] is True
    assert c.get("/api/v1/me/notifications").status_code == 200
    # Acceptance: only the current version; kept in the history next to the first one.
    assert c.post("/api/v1/me/policy-acceptance", json={"version": POLICY_VERSION}).status_code == 422
    ok = c.post("/api/v1/me/policy-acceptance", json={"version": "2026-06-01"})
    assert ok.status_code == 200 and ok.json()["acceptance_required"] is False
    assert submit(c).status_code == 202
    assert [(r.policy_version, r.source) for r in records(app, "ada@example.com", "policy_acceptance")] == [
        (POLICY_VERSION, "signup"), ("2026-06-01", "re_acceptance")]
    # Sign-up now accepts the current version only.
    fresh = new_client()
    assert fresh.post("/api/v1/auth/signup", json=signup_payload("new@example.com")).status_code == 422
    assert signup(fresh, "new@example.com", accept_policy_version="2026-06-01")["account"][
        "policy_acceptance_required"] is False


def test_non_material_change_needs_no_acceptance(admin, user_client, app):
    r = admin.post("/api/v1/admin/policy-versions", json={"version": "2026-05-02", "material": False})
    assert r.status_code == 201 and r.json()["notified"] == 0
    me = user_client.get("/api/v1/me").json()
    assert me["policy_version_current"] == "2026-05-02" and me["policy_acceptance_required"] is False
    assert submit(user_client).status_code == 202
    versions = [v["version"] for v in user_client.get("/api/v1/policy-versions").json()]
    assert versions == ["2026-05-02", POLICY_VERSION]


def test_policy_lists_only_configured_providers(monkeypatch):
    for name in [k for k in os.environ if k.startswith("IMAGEN_") and k != "IMAGEN_TEST_DATABASES"]:
        monkeypatch.delenv(name)
    base = {"IMAGEN_LEGAL_ENTITY": "Imagen Test Ltd", "IMAGEN_CONTACT_EMAIL": "privacy@imagen.test"}
    for name, value in base.items():
        monkeypatch.setenv(name, value)
    text = render_policy(Settings())
    for name in ("Stripe", "RunPod", "Cloudflare", "AWS", "Postmark", "PostHog", "Hetzner"):
        assert name not in text
    assert "uses no third-party service providers" in text and "Provider | Purpose" not in text
    # Each provider is switched on the way an operator does it: environment variables, validated by Settings.
    enabled = {"IMAGEN_HOSTING_PROVIDER": "Hetzner Online GmbH", "IMAGEN_EXECUTOR": "runpod",
               "IMAGEN_RUNPOD_ENDPOINT_ID": "ep-1", "IMAGEN_RUNPOD_API_KEY": "rp-key", "IMAGEN_STORAGE": "s3",
               "IMAGEN_S3_BUCKET": "imagen", "IMAGEN_S3_ENDPOINT_URL": "https://acc.r2.cloudflarestorage.com",
               "IMAGEN_MAIL_BACKEND": "smtp", "IMAGEN_SMTP_HOST": "smtp.postmarkapp.com",
               # A Stripe key alone does not switch billing on (IMAGEN_BILLING=stripe does), nor a PostHog key
               # analytics (IMAGEN_ANALYTICS=posthog does): neither is listed yet.
               "IMAGEN_STRIPE_SECRET_KEY": "sk_live_x", "IMAGEN_POSTHOG_API_KEY": "phc_x"}
    for name, value in enabled.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.executor, settings.storage, settings.mail_backend) == ("runpod", "s3", "smtp")
    text = render_policy(settings)
    table = text[text.index("Provider | Purpose | Data shared"):].split("\n\n")[0].splitlines()
    assert table == [
        "Provider | Purpose | Data shared",
        "Hetzner Online GmbH | Application hosting | Account data, generations, uploads, logs",
        "RunPod | GPU inference | Generation parameters, model files, transient inputs/outputs",
        "Cloudflare (R2) | Storage and content delivery | Uploaded assets, generated outputs",
        "Postmark | Service emails | Email address, message content",
    ]
    assert "Stripe" not in text and "PostHog" not in text and "uses no third-party" not in text
    for name, value in {"IMAGEN_BILLING": "stripe", "IMAGEN_STRIPE_WEBHOOK_SECRET": "whsec_x",
                        "IMAGEN_ANALYTICS": "posthog"}.items():
        monkeypatch.setenv(name, value)
    switched_on = render_policy(Settings())
    assert "\nStripe | " in switched_on and "\nPostHog | " in switched_on
    for name in ("IMAGEN_BILLING", "IMAGEN_ANALYTICS"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("IMAGEN_S3_ENDPOINT_URL")  # no endpoint: AWS S3
    assert "Amazon Web Services (S3) | Storage and content delivery" in render_policy(Settings())
    monkeypatch.setenv("IMAGEN_SMTP_HOST", "localhost")
    assert "Service emails" not in render_policy(Settings())  # a mail server on this machine is no processor
    monkeypatch.delenv("IMAGEN_RUNPOD_API_KEY")
    with pytest.raises(ValidationError, match="IMAGEN_RUNPOD_API_KEY"):
        Settings()  # RunPod can't be named without what it takes to use it
    assert {p.id for p in PROVIDERS} >= {"hosting", "runpod", "cloudflare_r2", "smtp", "stripe", "posthog"}


def test_rendered_policy_reads_well():
    settings = Settings(legal_entity="Imagen Test Ltd", postal_address="1 Test Street", contact_email="p@i.test",
                        site_domain="imagen.test")
    template = policy_template()
    text = render_policy(settings)
    assert text.startswith("Last updated: April 29, 2026\n\nPrivacy Policy\n\nThis Privacy Policy explains how "
                           'Imagen Test Ltd ("IMAGEN," "we," "us," "our")')
    assert "when you use imagen.test and related services" in text
    assert text.endswith("For privacy questions, requests, or complaints:\n\nEmail: p@i.test\n\n"
                         "Postal: Imagen Test Ltd, 1 Test Street")
    assert "To exercise these rights, email p@i.test. We will respond within 30 days." in text
    assert "If you believe a minor has provided us with information, contact p@i.test." in text
    for leftover in ("[", "]", "protected", "LAWYER", "Legal review", "example.com", "reetche", "not set",
                     "imagen.invalid"):  # placeholders, drafting notes, the template's own site and contact
        assert leftover not in text, leftover
    # Every section and subsection of the template is there, in order, as a heading of its own.
    headings = [b for b in text.split("\n\n") if re.match(r"^\d+\.(\d+)?\.? [A-Z]", b) and len(b) < 100]
    assert headings == [
        "1. Information We Collect", "1.1 Information you provide directly", "1.2 Information collected automatically",
        "1.3 Information from third parties", "2. How We Use Information", "3. Model Improvement and Training",
        "4. How We Share Information", "4.1 Service providers", "4.2 Legal requirements",
        "4.3 CSAM and serious harm", "4.4 Business transfers", "5. International Data Transfers",
        "6. Cookies and Tracking", "7. Data Retention", "8. Your Rights", "8.1 All users",
        "8.2 EU / UK / Swiss users (GDPR / UK GDPR)", "8.3 California users (CCPA / CPRA)", "8.4 Other US states",
        "9. Security", "10. Children", "11. Changes to This Policy", "12. Contact"]
    # Every list the template introduces ("…:") is followed by its items; every completion found its place.
    blocks = text.split("\n\n")
    for i, block in enumerate(blocks):
        if block.endswith(":") and not block.endswith(("plain language:", "What we do:", "complaints:")):
            assert blocks[i + 1].startswith(("  • ", "Provider |")), block
    used = [intro for intro in LISTS if any(b == intro or b.endswith(intro) for b in template.split("\n\n"))]
    assert used == list(LISTS)
    for heading in ("1.1 Information you provide directly", "1.2 Information collected automatically"):
        assert blocks[blocks.index(heading) + 1].startswith("  • ")
    assert "imagen_cookie_consent" in text and "Global Privacy Control" in text and "/report-minor" in text
    kinds = [kind for kind, _ in policy_blocks(text)]
    assert kinds.count("ul") == len(LISTS) + 2 and "table" not in kinds  # + the two lists of §3
    assert kinds.count("h2") == 12 and kinds.count("h3") == 11
    assert render_policy(settings, drafting_notes=True).count("[LAWYER]") == template.count("[LAWYER]")


def test_privacy_page_shows_the_current_version_the_table_and_the_versions(client, settings):
    settings.hosting_provider = "Hetzner Online GmbH"
    page = client.get("/privacy")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert '<table class="policy-table" id="policy-providers">' in html and "Hetzner Online GmbH</td>" in html
    assert '<ul class="policy-list"' in html and "<li>Comply with a legal obligation</li>" in html
    assert f'id="policy-version">{POLICY_VERSION}<' in html and 'id="policy-versions"' in html
    body = client.get("/api/v1/policy").json()
    assert body["version"] == POLICY_VERSION and "Hetzner Online GmbH | Application hosting" in body["text"]
    assert body["sha256"] != body["published_sha256"]  # configuration changed since publication
    assert [p["id"] for p in body["providers"]] == ["hosting"]


def test_cli_publishes_a_material_version(tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("IMAGEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMAGEN_MODELS_DIR", str(models_dir))
    monkeypatch.delenv("IMAGEN_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        made = runner.invoke(cli, ["admin", "create-user", "op@example.com", "--password", "Sturdy-passphrase-42"])
        assert made.exit_code == 0, made.output
        assert runner.invoke(cli, ["policy", "check"]).exit_code == 0
        r = runner.invoke(cli, ["policy", "publish", "2026-07-01", "--material", "--summary", "New processor"])
        assert r.exit_code == 0, r.output
        assert "Published policy version 2026-07-01" in r.output and "Notified 1 user" in r.output
        assert runner.invoke(cli, ["policy", "publish", "2026-07-01"]).exit_code == 1
        listed = runner.invoke(cli, ["policy", "list"])
        assert "2026-07-01 (current)" in listed.output and POLICY_VERSION in listed.output
        db = Database(get_settings().resolved_database_url)
        with db.transaction() as s:
            row = s.get(PolicyVersion, "2026-07-01")
            assert row.material and row.summary == "New processor"
            assert s.scalar(select(func.count()).select_from(Notification)) == 1
        db.dispose()
        # An operator-created account accepts the current version.
        runner.invoke(cli, ["admin", "create-user", "op2@example.com", "--password", "Sturdy-passphrase-42"])
        db = Database(get_settings().resolved_database_url)
        with db.transaction() as s:
            user = s.scalars(select(User).where(User.email == "op2@example.com")).one()
            accepted = s.scalars(select(ConsentRecord).where(ConsentRecord.user_id == user.id,
                                                             ConsentRecord.purpose == "policy_acceptance")).one()
            assert accepted.policy_version == "2026-07-01"
        db.dispose()
    finally:
        get_settings.cache_clear()


# ---- marketing use of outputs (policy §3) ----

def test_outputs_are_marked_for_marketing_only_with_written_consent(user_client, admin, new_client, app):
    gen = wait_for(user_client, submit(user_client).json()["id"])
    output_id = gen["outputs"][0]["id"]
    url = f"/api/v1/outputs/{output_id}/marketing-consent"
    status = user_client.get(url).json()
    assert status["consented"] is False and "Imagen Test Ltd" in status["text"]

    refused = admin.post(f"/api/v1/admin/outputs/{output_id}/marketing")
    assert refused.status_code == 409 and "written consent" in refused.json()["detail"]
    assert user_client.post(url, json={"text_shown": status["text"], "agree": False}).status_code == 422
    assert user_client.post(url, json={"text_shown": "ok", "agree": True}).status_code == 422
    other = new_client()
    signup(other, "eve@example.com")
    assert other.post(url, json={"text_shown": status["text"], "agree": True}).status_code == 404
    assert admin.post(url, json={"text_shown": status["text"], "agree": True}).status_code == 404

    given = user_client.post(url, json={"text_shown": status["text"], "agree": True})
    assert given.status_code == 201, given.text
    assert given.json()["text_shown"] == status["text"] and given.json()["policy_version"] == POLICY_VERSION
    assert user_client.post(url, json={"text_shown": status["text"], "agree": True}).status_code == 200
    assert user_client.post(f"/api/v1/admin/outputs/{output_id}/marketing").status_code == 403
    marked = admin.post(f"/api/v1/admin/outputs/{output_id}/marketing")
    assert marked.status_code == 200 and marked.json()["marked_at"]
    assert [m["output_id"] for m in admin.get("/api/v1/admin/marketing-outputs").json()] == [output_id]
    assert "withdraw-marketing" in user_client.get("/privacy/consents").text

    assert user_client.delete(url).status_code == 204
    assert user_client.delete(url).status_code == 404
    assert admin.get("/api/v1/admin/marketing-outputs").json() == []
    assert admin.post(f"/api/v1/admin/outputs/{output_id}/marketing").status_code == 409
    with app.state.services.db.transaction() as s:
        row = s.scalars(select(OutputMarketingConsent)).one()  # the record stays, withdrawn
        assert row.withdrawn_at and row.user_id and row.created_at and row.text_shown == status["text"]


# ---- minors (policy §10) ----

def test_minor_report_confirmed_erases_the_account(client, admin, new_client, app):
    kid = new_client()
    signup(kid, "kid@example.com")
    gen = wait_for(kid, submit(kid).json()["id"])
    r = client.post("/api/v1/minor-reports", json={"account_email": "KID@example.com",
                                                   "details": "Says in the prompts they are 14."})
    assert r.status_code == 202 and r.json()["status"] == "received"
    unknown = client.post("/api/v1/minor-reports", json={"account_email": "nobody@example.com",
                                                         "details": "Just a feeling about them."})
    assert unknown.status_code == 202 and set(unknown.json()) == set(r.json())  # reveals nothing
    by_link = client.post("/api/v1/minor-reports", json={"reference": gen["outputs"][0]["url"],
                                                         "reporter_email": "mum@example.com",
                                                         "details": "This is my daughter's account."})
    assert by_link.status_code == 202
    assert client.post("/api/v1/minor-reports", json={"details": "Names nobody at all."}).status_code == 422
    assert client.get("/api/v1/admin/minor-reports").status_code == 401
    assert kid.get("/api/v1/admin/minor-reports").status_code == 403

    queue = {x["id"]: x for x in admin.get("/api/v1/admin/minor-reports?status=open").json()}
    assert queue[r.json()["id"]]["matched_user"]["email"] == "kid@example.com"
    assert queue[by_link.json()["id"]]["matched_user"]["email"] == "kid@example.com"
    assert queue[unknown.json()["id"]]["matched_user"] is None
    assert admin.post(f"/api/v1/admin/minor-reports/{unknown.json()['id']}/confirm").status_code == 409
    assert admin.post(f"/api/v1/admin/minor-reports/{unknown.json()['id']}/dismiss", json={}).status_code == 422
    dismissed = admin.post(f"/api/v1/admin/minor-reports/{unknown.json()['id']}/dismiss",
                           json={"reason": "No such account"})
    assert dismissed.json()["status"] == "dismissed" and dismissed.json()["resolution"] == "No such account"

    confirmed = admin.post(f"/api/v1/admin/minor-reports/{r.json()['id']}/confirm", json={"note": "ID seen"})
    assert confirmed.status_code == 200, confirmed.text
    body = confirmed.json()
    assert body["status"] == "confirmed" and body["erasure_ref"] and body["account_email"] is None
    assert "removed" in body["details"]
    assert admin.post(f"/api/v1/admin/minor-reports/{r.json()['id']}/confirm").status_code == 409
    # The account stops at once and is erased (in the background, right after the commit).
    assert kid.get("/api/v1/me").status_code == 401
    deadline = time.monotonic() + 30
    while True:
        with app.state.services.db.transaction() as s:
            gone = s.scalars(select(User).where(User.email == "kid@example.com")).first() is None
        if gone or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert gone
    with app.state.services.db.transaction() as s:
        kept = s.get(MinorReport, r.json()["id"])
        assert kept.status == "confirmed" and kept.subject_email is None and kept.subject_user_id is None


# ---- pages ----

def test_consent_centre_and_report_pages(client, new_client):
    assert client.get("/privacy/consents", follow_redirects=False).headers["location"] == "/login"
    page = client.get("/report-minor")
    assert page.status_code == 200 and 'id="minor-report-form"' in page.text
    assert "Content-Security-Policy" in page.headers and "<script>" not in page.text and "style=" not in page.text
    assert 'id="cookie-banner"' in page.text and 'data-analytics="off"' in page.text
    signup(client)
    client.put("/api/v1/me/consents", json={"model_improvement": True})
    html = client.get("/privacy/consents").text
    assert "checked" in html.split('id="consent-model_improvement"')[1][:40]
    assert 'id="consent-history"' in html and "consent centre" in html and "imagen_cookie_consent" in html
    assert 'id="cookie-banner"' in html  # no analytics choice yet
    gpc = client.get("/privacy/consents", headers=GPC).text
    assert 'id="gpc-notice"' in gpc and 'id="cookie-banner"' not in gpc
