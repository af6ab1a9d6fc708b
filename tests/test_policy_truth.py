"""The published policy is true of the installation that publishes it (issue 19).

Each sentence that holds only for some installations is rendered from what is configured or built: one test per
conditional section, under the default configuration and under a fully configured one (every provider that has a
setting, hash banks and NCMEC credentials, hosting country and transfer safeguards, SMTP mail), asserting that the
true sentence is there and the false one is not. Then the operator's details (refused in production, flagged in
development) and the pages that talk about mail.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select, update
from typer.testing import CliRunner

from imagen.accounts.models import User
from imagen.app import create_app
from imagen.cli import app as cli
from imagen.kit.config import Settings, get_settings
from imagen.mail.models import OutboundEmail
from imagen.privacy import policy
from imagen.privacy.policy import PolicyFacts, render_policy
from imagen.safety.banks import hash_bank_service
from tests.conftest import signup
from tests.test_mail import smtp_server  # noqa: F401  (fixture)

OPERATOR = {"legal_entity": "Imagen Test Ltd", "postal_address": "1 Test Street, Testville",
            "contact_email": "privacy@imagen.test", "site_domain": "imagen.test"}
FULL = {
    **OPERATOR,
    "hosting_provider": "Hetzner Online GmbH", "hosting_country": "the United States",
    "transfer_safeguards": "the European Commission's Standard Contractual Clauses",
    "executor": "runpod", "runpod_endpoint_id": "ep-1", "runpod_api_key": "rp-key",
    "storage": "s3", "s3_bucket": "imagen", "s3_endpoint_url": "https://acc.r2.cloudflarestorage.com",
    "mail_backend": "smtp", "smtp_host": "smtp.postmarkapp.com",
    "ncmec_environment": "production", "ncmec_username": "esp", "ncmec_password": "pw",
}
FULL_FACTS = PolicyFacts(hash_banks=True)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Settings come only from what each test passes (no IMAGEN_* variables of the machine)."""
    for name in [k for k in os.environ if k.startswith("IMAGEN_") and k != "IMAGEN_TEST_DATABASES"]:
        monkeypatch.delenv(name)


def default_text() -> str:
    return render_policy(Settings())


def full_text(**facts) -> str:
    return render_policy(Settings(**FULL), facts=PolicyFacts(**{"hash_banks": True, **facts}))


def section(text: str, heading: str) -> str:
    """The text of one numbered section, up to the next heading of the same depth."""
    start = text.index(f"\n\n{heading}\n\n") + 2
    top = heading.split(" ")[0].endswith(".")  # "3." a section, "4.1" a subsection
    nxt = re.compile(r"\n\n\d+\. [A-Z]" if top else r"\n\n\d+\.(\d+)? [A-Z]").search(text, start + len(heading))
    return text[start:nxt.start() if nxt else len(text)]


# ---- §3 model improvement: what the insights pipeline (imagen/insights) derives, or that none runs ----

def test_section_3_says_what_the_insights_pipeline_derives_and_that_earlier_records_are_unlinked():
    assert policy.MODEL_IMPROVEMENT_PIPELINE is True  # imagen/insights is built
    for text in (default_text(), full_text()):
        s3 = section(text, "3. Model Improvement and Training")
        assert "We use anonymized, aggregated data derived from generations" in s3
        assert "does not use your data, or anything derived from it" not in text
        assert "holds no account id, email, prompt text, image, IP address or upload hash" in s3
        assert "its time is only the day" in s3
        assert "Reports show only groups of at least 20 generations;" in s3  # IMAGEN_INSIGHTS_MIN_GROUP's default
        assert "withdrawing it applies from your next generation, and what was derived before is already " \
               "unlinked from you" in s3
        assert "the change applies from your next generation" in s3  # "Your control"
        assert "removes your data from active model-improvement pipelines" not in s3  # not true of unlinked rows
        s2 = section(text, "2. How We Use Information")
        assert "Improve the Service as described in §3, only with your consent" in s2
        assert "none takes place at present" not in s2
        s7 = section(text, "7. Data Retention")
        assert "nothing more is derived from them for model improvement" in s7
    noisy = render_policy(Settings(**FULL, insights_min_group=50, insights_epsilon=0.5), facts=FULL_FACTS)
    s3 = section(noisy, "3. Model Improvement and Training")
    assert "at least 50 generations, and every count we show carries random noise" in s3 and "epsilon 0.5" in s3
    # A build without the pipeline says plainly that none runs (the sentence kept for such builds).
    bare = full_text(model_improvement=False)
    s3 = section(bare, "3. Model Improvement and Training")
    assert "does not use your data, or anything derived from it, to improve the Service or any model" in s3
    assert "We use anonymized, aggregated data" not in bare and "none takes place at present" in bare


# ---- §4.1 processors ----

def test_section_4_1_lists_what_is_configured_and_says_when_nothing_is():
    s41 = section(default_text(), "4.1 Service providers")
    assert "uses no third-party service providers" in s41 and "Provider | Purpose" not in s41
    s41 = section(full_text(), "4.1 Service providers")
    assert "uses no third-party service providers" not in s41
    rows = [line.split(" | ")[0] for line in s41.splitlines() if " | " in line][1:]
    assert rows == ["Hetzner Online GmbH", "RunPod", "Cloudflare (R2)", "Postmark"]
    # Billing and analytics are off here (IMAGEN_BILLING, IMAGEN_ANALYTICS): neither is listed.
    assert "Stripe" not in s41 and "PostHog" not in s41


# ---- §4.3 hash matching and NCMEC ----

def test_section_4_3_says_what_is_matched_and_reported():
    s43 = section(default_text(), "4.3 CSAM and serious harm")
    assert "does not currently check uploads or generated images against lists of known" in s43
    assert "not connected to the CyberTipline" in s43 and "sends no reports to NCMEC" in s43
    assert "We report apparent CSAM" not in s43 and "We check every uploaded image" not in s43
    assert "required by U.S. federal law" not in s43

    s43 = section(full_text(), "4.3 CSAM and serious harm")
    assert "We check every uploaded image and model file, and every generated image" in s43
    assert "kept encrypted as evidence, with the account's details, for 365 days" in s43
    assert "We report apparent CSAM to the National Center for Missing & Exploited Children (NCMEC)" in s43
    assert "once one of our moderators has reviewed it" in s43  # IMAGEN_NCMEC_REQUIRE_CONFIRMATION (default)
    assert "does not currently check" not in s43 and "not connected" not in s43

    # Credentials for NCMEC's test environment report nothing; banks without credentials match but don't report.
    test_env = Settings(**{**FULL, "ncmec_environment": "test"})
    s43 = section(render_policy(test_env, facts=FULL_FACTS), "4.3 CSAM and serious harm")
    assert "We check every uploaded image" in s43 and "sends no reports to NCMEC" in s43
    automatic = Settings(**FULL, ncmec_require_confirmation=False, evidence_retention_days=400)
    s43 = section(render_policy(automatic, facts=PolicyFacts(hash_banks=False)), "4.3 CSAM and serious harm")
    assert "We report apparent CSAM" in s43 and "moderators has reviewed" not in s43
    assert "does not currently check" in s43


def test_section_4_3_follows_the_banks_in_the_database(client, app):
    def s43() -> str:
        return section(client.get("/api/v1/policy").json()["text"], "4.3 CSAM and serious harm")

    assert "does not currently check" in s43()
    with app.state.services.db.transaction() as s:
        hash_bank_service.ensure(s, name="empty", hash_type="md5")
    assert "does not currently check" in s43()  # a bank with no hashes matches nothing
    with app.state.services.db.transaction() as s:
        bank_id = hash_bank_service.import_lines(s, name="known", hash_type="md5", lines=["0" * 32])[0].id
    assert "We check every uploaded image" in s43()
    with app.state.services.db.transaction() as s:
        hash_bank_service.set_enabled(s, bank=hash_bank_service.get(s, bank_id=bank_id), enabled=False)
    assert "does not currently check" in s43()


# ---- §4.4 and §11: notices are in-app, and emailed only when mail really leaves the server ----

def test_sections_4_4_and_11_promise_email_only_with_a_real_mail_backend_and_no_acceptance_by_use():
    postmark = render_policy(Settings(**{**FULL, "mail_backend": "postmark", "postmark_server_token": "pm-token"}),
                             facts=FULL_FACTS)
    for text, emailed in ((default_text(), False), (full_text(), True), (postmark, True)):
        s44, s11 = section(text, "4.4 Business transfers"), section(text, "11. Changes to This Policy")
        assert "Continued use" not in s11 and "constitutes acceptance" not in s11
        assert "continuing to use the Service does not count as accepting it" in s11
        assert "and/or" not in s44 and "and/or" not in s11
        if emailed:
            assert "by email and by a prominent notice in the Service" in s44
            assert "material change by email and with a notice in the Service and ask you to accept" in s11
        else:
            assert "by a prominent notice in the Service" in s44 and "email" not in s44
            assert "material change with a notice in the Service and ask you to accept the new version" in s11
            assert "email" not in s11


@pytest.mark.parametrize("emailed", [False, True], ids=["outbox", "smtp"])
def test_a_material_change_is_emailed_exactly_when_the_policy_promises_it(settings, runtime, smtp_server,  # noqa: F811
                                                                            emailed):
    """With the outbox backend nothing is emailed and §11 promises no email; with SMTP every user gets the notice
    by email (through a real SMTP server) and §11 says so."""
    inbox, port = smtp_server
    config = settings.model_copy(update={"mail_backend": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port,
                                         "smtp_starttls": False}) if emailed else settings
    app = create_app(config, run_migrations=False, runtime=runtime)
    with TestClient(app, base_url="https://testserver") as client:
        signup(client, "root@example.com")
        signup(TestClient(app, base_url="https://testserver"), "ada@example.com")
        with app.state.services.db.transaction() as s:
            s.execute(update(User).where(User.email == "root@example.com").values(role="admin"))
        r = client.post("/api/v1/admin/policy-versions", json={"version": "2026-09-01", "material": True,
                                                               "summary": "A new GPU provider."})
        assert r.status_code == 201 and r.json()["notified"] == 2
        with app.state.services.db.transaction() as s:
            mails = list(s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "notice.policy_changed")))
        s11 = section(client.get("/api/v1/policy").json()["text"], "11. Changes to This Policy")
        if not emailed:
            assert mails == [] and "email" not in s11
            assert inbox.messages == []  # the outbox backend: nothing leaves, not even address confirmations
            return
        assert "by email" in s11
        assert {m.to_address for m in mails} == {"root@example.com", "ada@example.com"}
        def notices() -> list[dict]:  # (sign-up's address confirmations aside)
            return [m for m in inbox.messages if m["message"]["Subject"].startswith("Our privacy policy has changed")]

        deadline = time.monotonic() + 10
        while len(notices()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = {m["rcpt_tos"][0]: m["message"] for m in notices()}
        assert set(got) == {"root@example.com", "ada@example.com"}
        assert got["ada@example.com"]["Subject"] == "Our privacy policy has changed (version 2026-09-01)"
        text = got["ada@example.com"].get_content()
        assert "A new GPU provider." in text and "/privacy" in text and "accept it" in text


# ---- §5 international transfers ----

def test_section_5_names_a_country_and_safeguards_only_when_configured():
    s5 = section(default_text(), "5. International Data Transfers")
    assert "has not declared the country where its servers are located" in s5
    for claim in ("United States", "U.S.", "Standard Contractual Clauses", "SCC", "we rely on"):
        assert claim not in s5, claim

    s5 = section(full_text(), "5. International Data Transfers")
    assert "The Service operates from infrastructure in the United States." in s5
    assert "If you access the Service from outside the United States" in s5
    assert "we rely on the European Commission's Standard Contractual Clauses" in s5
    assert "You may request a copy by emailing privacy@imagen.test." in s5
    assert "has not declared" not in s5

    country_only = Settings(**OPERATOR, hosting_country="Germany")
    s5 = section(render_policy(country_only), "5. International Data Transfers")
    assert "infrastructure in Germany" in s5 and "we rely on" not in s5 and "Contractual" not in s5


def test_section_8_response_time_follows_the_setting():
    assert "We will respond within 30 days." in default_text()
    text = render_policy(Settings(**OPERATOR, privacy_response_days=21))
    assert "We will respond within 21 days." in text and "30 days" not in section(text, "8.1 All users")


# ---- the operator's details ----

def test_a_default_install_publishes_no_real_looking_operator():
    text = default_text()
    for wrong in ("example.com", "reetche", "[YOUR", "privacy@"):
        assert wrong not in text, wrong
    assert "(operator name not set: IMAGEN_LEGAL_ENTITY)" in text and "contact-not-set@imagen.invalid" in text
    assert "when you use imagen.invalid and related services" in text
    assert [var for var, _ in Settings().unset_operator_settings()] == [
        "IMAGEN_LEGAL_ENTITY", "IMAGEN_POSTAL_ADDRESS", "IMAGEN_CONTACT_EMAIL", "IMAGEN_SITE_DOMAIN"]
    assert Settings(**OPERATOR).unset_operator_settings() == []
    # Blank or a template placeholder counts as unset too.
    assert [v for v, _ in Settings(**{**OPERATOR, "postal_address": " ", "legal_entity": "[YOUR LEGAL ENTITY NAME]"})
            .unset_operator_settings()] == ["IMAGEN_LEGAL_ENTITY", "IMAGEN_POSTAL_ADDRESS"]


def test_production_refuses_unset_operator_details_naming_each(tmp_path):
    key = "k" * 48
    with pytest.raises(ValidationError) as refused:
        Settings(env="production", data_dir=tmp_path, secret_key=key)
    message = str(refused.value)
    for var in ("IMAGEN_LEGAL_ENTITY", "IMAGEN_POSTAL_ADDRESS", "IMAGEN_CONTACT_EMAIL", "IMAGEN_SITE_DOMAIN"):
        assert f"{var} must be set" in message, var
    assert "IMAGEN_SECRET_KEY" not in message
    with pytest.raises(ValidationError) as refused:
        Settings(env="production", data_dir=tmp_path, secret_key=key, **{**OPERATOR, "site_domain": ""})
    assert "IMAGEN_SITE_DOMAIN must be set" in str(refused.value)
    assert "IMAGEN_LEGAL_ENTITY" not in str(refused.value)
    assert Settings(env="production", data_dir=tmp_path, secret_key=key, **OPERATOR).legal_entity == "Imagen Test Ltd"


def test_policy_page_warns_while_operator_details_are_unset(client, settings):
    settings.site_domain = settings.legal_entity = ""
    html = client.get("/privacy").text
    assert 'id="policy-unset-warning" role="alert"' in html
    assert "<code>IMAGEN_SITE_DOMAIN</code>" in html and "<code>IMAGEN_LEGAL_ENTITY</code>" in html
    assert "<code>IMAGEN_CONTACT_EMAIL</code>" not in html  # set by the test settings
    settings.site_domain, settings.legal_entity = "imagen.test", "Imagen Test Ltd"
    assert "policy-unset-warning" not in client.get("/privacy").text


def said(result) -> str:
    """CLI output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_serve_warns_in_development_and_refuses_in_production(tmp_path, monkeypatch):
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(kw))
    monkeypatch.setenv("IMAGEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMAGEN_SMTP_PASSWORD", "smtp-secret-value")
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        out = runner.invoke(cli, ["serve"])
        assert out.exit_code == 0, out.output
        assert "Warning: the published privacy policy shows placeholders" in said(out)
        for var in ("IMAGEN_LEGAL_ENTITY", "IMAGEN_POSTAL_ADDRESS", "IMAGEN_CONTACT_EMAIL", "IMAGEN_SITE_DOMAIN"):
            assert var in said(out)
        assert len(started) == 1

        get_settings.cache_clear()
        monkeypatch.setenv("IMAGEN_ENV", "production")
        monkeypatch.setenv("IMAGEN_SECRET_KEY", "s" * 48)
        monkeypatch.setenv("IMAGEN_CONTACT_EMAIL", "privacy@imagen.test")
        out = runner.invoke(cli, ["serve"])
        assert out.exit_code == 2 and len(started) == 1  # never started
        for var in ("IMAGEN_LEGAL_ENTITY", "IMAGEN_POSTAL_ADDRESS", "IMAGEN_SITE_DOMAIN"):
            assert f"{var} must be set" in said(out), out.output
        assert "IMAGEN_CONTACT_EMAIL" not in said(out) and "smtp-secret-value" not in said(out)

        get_settings.cache_clear()
        for name, value in OPERATOR.items():
            monkeypatch.setenv(f"IMAGEN_{name.upper()}", value)
        out = runner.invoke(cli, ["serve"])
        assert out.exit_code == 0 and "Warning" not in said(out) and len(started) == 2
    finally:
        get_settings.cache_clear()


# ---- the production backends say what they are missing ----

def test_runpod_s3_and_celery_name_the_settings_they_need():
    with pytest.raises(ValidationError, match="IMAGEN_RUNPOD_ENDPOINT_ID and IMAGEN_RUNPOD_API_KEY"):
        Settings(executor="runpod")
    with pytest.raises(ValidationError, match="IMAGEN_S3_BUCKET"):
        Settings(storage="s3")
    with pytest.raises(ValidationError, match="IMAGEN_BROKER_URL"):
        Settings(executor="celery")


# ---- pages never claim a mail was sent when the backend only logs it ----

def test_privacy_request_page_says_whether_the_code_is_emailed(client, settings):
    assert settings.mail_backend == "outbox" and not settings.mail_delivered
    page = client.get("/privacy/request?id=req-1").text
    assert "We sent a 6-digit code" not in page and "We email a 6-digit code" not in page
    assert "This server does not send email, so the 6-digit code was not emailed to you" in page
    assert 'id="pr-no-mail"' in page and 'data-mail-sent="no"' in page
    assert "mailto:privacy@imagen.test" in page  # whom to ask

    settings.mail_backend, settings.smtp_host = "smtp", "smtp.postmarkapp.com"
    page = client.get("/privacy/request?id=req-1").text
    assert "We sent a 6-digit code to your email address" in page and "does not send email" not in page
    assert 'data-mail-sent="yes"' in page
