"""Product analytics through PostHog (issue 14, policy §6), against a local fake capture endpoint: events only for
users who consented and whose browser sends no Global Privacy Control, under a keyed pseudonym, with no email,
prompt, IP address or file name; the SDK client belongs to the composition root and is flushed and stopped with
the app; erasure asks PostHog to delete the person, retried until it agrees."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from imagen.accounts.models import SecurityEvent, User
from imagen.analytics.client import NoAnalytics, PostHogAnalytics, distinct_id, make_analytics
from imagen.analytics.models import AnalyticsDeletion
from imagen.analytics.service import EVENTS, analytics_service
from imagen.app import create_app
from imagen.kit.config import Settings
from imagen.kit.tasks import run_task
from imagen.privacy.policy import render_policy
from imagen.privacy.providers import configured_providers
from imagen.privacy.residue import subject_hash
from tests.conftest import PASSWORD, TINY, signup
from tests.fake_posthog import PERSONAL_KEY, PROJECT_KEY, posthog, posthog_settings  # noqa: F401  (fixture)

PROMPT = "a lighthouse at dusk, unique-prompt-7731"
GPC = {"Sec-GPC": "1"}


def consents(analytics: bool) -> dict[str, Any]:
    return {"consents": {"model_improvement": False, "marketing_emails": False, "analytics": analytics}}


def new_client(app) -> TestClient:
    return TestClient(app, base_url="https://testserver")


def use_the_service(client: TestClient, headers: dict[str, str] | None = None) -> None:
    """A generation (with a recognisable prompt) and an export request."""
    r = client.post("/api/v1/generations", headers=headers,
                    json={"workflow": "txt2img", "params": {"prompt": PROMPT, **TINY}})
    assert r.status_code == 202, r.text
    assert client.post("/api/v1/me/exports", headers=headers).status_code == 202


def user_row(app, email: str) -> tuple[str, set[str]]:
    """The account's id and the addresses its security log recorded."""
    with app.state.services.db.transaction() as s:
        user_id = s.scalar(select(User.id).where(User.email == email))
        ips = set(s.scalars(select(SecurityEvent.ip_address).where(SecurityEvent.user_id == user_id)))
    return user_id, {ip for ip in ips if ip}


def test_no_event_without_consent_or_with_gpc(settings, runtime, posthog):  # noqa: F811
    app = create_app(posthog_settings(settings, posthog), run_migrations=False, runtime=runtime)
    with new_client(app) as ada:
        signup(ada, "ada@example.com", **consents(False))  # consent off
        assert ada.get("/api/v1/me/consents").json()["current"]["analytics"] is False
        use_the_service(ada)
        bob = new_client(app)
        r = bob.post("/api/v1/auth/signup", headers=GPC, json={
            "email": "bob@example.com", "password": PASSWORD, "date_of_birth": "1990-05-17", "country": "US",
            "accept_policy_version": settings.policy_version, **consents(True)})
        assert r.status_code == 201, r.text
        bob.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        use_the_service(bob, headers=GPC)  # consented, but the browser sends GPC: recorded as a withdrawal
        assert bob.get("/api/v1/me/consents").json()["current"]["analytics"] is False
        app.state.services.analytics.flush()
    assert posthog.batches == [] and posthog.events == [] and posthog.server.requests == []


def test_analytics_off_sends_nothing_even_with_consent(client, app, posthog):  # noqa: F811
    assert isinstance(app.state.services.analytics, NoAnalytics)
    signup(client, "ada@example.com", **consents(True))
    use_the_service(client)
    assert posthog.batches == []


def test_consented_events_are_pseudonymous_and_carry_no_email_prompt_or_address(settings, runtime,
                                                                                  posthog):  # noqa: F811
    app = create_app(posthog_settings(settings, posthog), run_migrations=False, runtime=runtime)
    with new_client(app) as carol:
        signup(carol, "carol@example.com", **consents(True))
        use_the_service(carol)
        user_id, ips = user_row(app, "carol@example.com")
        secret = app.state.services.settings.resolved_secret_key()
    # Leaving the app stopped the SDK client, which sent what it held: no explicit flush needed.
    assert app.state.services.analytics._client is None
    events = posthog.events
    assert [e["event"] for e in events] == ["signed_up", "generation_submitted", "export_requested"]
    pseudonym = distinct_id(secret, user_id)
    assert {e["distinct_id"] for e in events} == {pseudonym} and pseudonym != subject_hash(secret, user_id)
    for event in events:
        own = {k: v for k, v in event["properties"].items() if not k.startswith("$")}
        assert set(own) <= EVENTS[event["event"]]
        assert event["properties"].get("$geoip_disable") is True and "$ip" not in event["properties"]
    submitted = events[1]["properties"]
    assert (submitted["workflow"], submitted["size"], submitted["steps"]) == ("txt2img", "64x64", 2)
    assert {r.path for r in posthog.server.requests} == {"/batch/"}  # no flags, no remote config, only events
    raw = " ".join(batch.body.decode() for batch in posthog.batches)
    assert all(batch.json["api_key"] == PROJECT_KEY for batch in posthog.batches)
    for secret_value in ("carol@example.com", "unique-prompt-7731", "lighthouse", user_id, *ips):
        assert secret_value not in raw, secret_value
    # A later GPC signal stops the events at once.
    with new_client(app) as again:
        assert again.post("/api/v1/auth/login", json={"email": "carol@example.com", "password": PASSWORD},
                          headers=GPC).status_code == 200
        again.headers["X-CSRF-Token"] = again.cookies.get("imagen_csrf") or ""
        use_the_service(again, headers=GPC)
    assert len(posthog.events) == 3


def wait_for_row(app, predicate, timeout: float = 15.0) -> list[AnalyticsDeletion]:
    deadline = time.monotonic() + timeout
    while True:
        with app.state.services.db.transaction() as s:
            rows = list(s.scalars(select(AnalyticsDeletion)))
            s.expunge_all()
        if predicate(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_erasure_asks_posthog_to_delete_the_person_and_retries_until_it_agrees(settings, runtime,
                                                                             posthog):  # noqa: F811
    app = create_app(posthog_settings(settings, posthog), run_migrations=False, runtime=runtime)
    posthog.fail_deletions = 1
    with new_client(app) as dana:
        signup(dana, "dana@example.com", **consents(True))
        user_id, _ = user_row(app, "dana@example.com")
        pseudonym = distinct_id(app.state.services.settings.resolved_secret_key(), user_id)
        assert dana.request("DELETE", "/api/v1/me", json={"password": PASSWORD}).status_code == 202
        [row] = wait_for_row(app, lambda rows: any(r.attempts for r in rows))
        assert row.distinct_id == pseudonym and row.attempts == 1 and "503" in row.error
        assert user_row(app, "dana@example.com")[0] is None  # the account is gone; only the pseudonym is kept
        # The scheduled retry asks again; PostHog agrees and the row goes.
        assert run_task(app.state.services, "analytics.retry") == 1
        assert wait_for_row(app, lambda rows: not rows) == []
        assert run_task(app.state.services, "analytics.retry") == 0
    first, second = posthog.deletions
    for request in (first, second):
        assert request.json == {"distinct_ids": [pseudonym], "delete_events": True}
        assert request.headers["authorization"] == f"Bearer {PERSONAL_KEY}"


def test_settings_gate_and_provider_list(tmp_path, db):
    with pytest.raises(ValidationError, match="IMAGEN_POSTHOG_API_KEY"):
        Settings(data_dir=tmp_path, analytics="posthog")
    off = Settings(data_dir=tmp_path, posthog_api_key="phc_x")  # a key alone switches nothing on
    assert isinstance(make_analytics(off), NoAnalytics) and "PostHog" not in render_policy(off)
    on = Settings(data_dir=tmp_path, analytics="posthog", posthog_api_key="phc_x", secret_key="k" * 40)
    client = make_analytics(on)
    assert isinstance(client, PostHogAnalytics) and client._client is None  # no thread before the first event
    assert [p.name for p in configured_providers(on)] == ["PostHog"]
    assert "PostHog product analytics" in render_policy(on)
    assert client.distinct_id("u1") == distinct_id("k" * 40, "u1") != distinct_id("other-secret", "u1")
    with pytest.raises(RuntimeError, match="PERSONAL_API_KEY"):
        client.delete_person("x")
    client.stop()
    with Session(db.engine) as s:
        assert analytics_service.request_deletion(s, settings=off, user_id="u1") is None


def test_an_event_may_not_carry_undeclared_properties():
    class Enabled:
        enabled = True

    for event, field in (("signed_up", "email"), ("generation_submitted", "prompt"),
                         ("export_requested", "ip_address"), ("generation_submitted", "file_name")):
        with pytest.raises(ValueError, match=field):
            analytics_service.track(None, None, analytics=Enabled(), user=None, event=event,  # type: ignore[arg-type]
                                    **{field: "x"})
    assert json.dumps(sorted(EVENTS)) == '["export_requested", "generation_submitted", "signed_up"]'
