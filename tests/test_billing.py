"""Billing (IMAGEN_BILLING=stripe) through the API on SQLite and PostgreSQL, with the real `stripe` SDK against a
fake Stripe on 127.0.0.1: checkout, the webhook (signature, replays, refunds, disputes), holds settled or released
once, receipts, and the books balancing after every movement. Off by default: generation stays free."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from imagen.accounts.models import User
from imagen.app import create_app
from imagen.billing.ledger import Balance, ledger
from imagen.billing.models import BillingAccount, BillingCase, Hold, LedgerEntry, Purchase, StripeEvent
from imagen.billing.pricing import parse_packs, parse_prices, price_of
from imagen.generation.models import Generation
from imagen.generation.service import generation_service
from imagen.kit.config import Settings
from imagen.kit.db import new_id, utcnow
from tests import fake_stripe
from tests.conftest import TINY, signup, wait_for

WEBHOOK = "/api/v1/billing/stripe/webhook"
JOB = {"workflow": "txt2img", "params": {"prompt": "a lighthouse", **TINY}}


@pytest.fixture
def stripe_api() -> Iterator[fake_stripe.FakeStripe]:
    with fake_stripe.running() as fake:
        yield fake


def billing_on(settings: Settings, api_base: str, prices: str = '{"*": {"base": 1, "per_step": 0}}') -> Settings:
    settings.billing, settings.stripe_api_base, settings.billing_prices = "stripe", api_base, prices
    settings.stripe_secret_key, settings.stripe_webhook_secret = fake_stripe.SECRET_KEY, fake_stripe.WEBHOOK_SECRET
    return settings


@pytest.fixture
def billed_app(settings: Settings, runtime, stripe_api) -> FastAPI:
    return create_app(billing_on(settings, stripe_api.url, '{"*": {"base": 10, "per_step": 0}}'),
                      run_migrations=False, runtime=runtime)


@pytest.fixture
def billed(billed_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(billed_app, base_url="https://testserver") as c:
        yield c


def stripe_post(app: FastAPI, payload: bytes, headers: dict[str, str] | None = None):
    """From Stripe: no cookie, no CSRF token."""
    return TestClient(app, base_url="https://testserver").post(WEBHOOK, content=payload,
                                                               headers=headers or fake_stripe.sign(payload))


def buy(client: TestClient, stripe_api: fake_stripe.FakeStripe, pack: str = "credits-100") -> str:
    r = client.post("/api/v1/billing/checkout", json={"pack": pack})
    assert r.status_code == 201, r.text
    return r.json()["url"].rsplit("/", 1)[1]


def balance(client: TestClient) -> dict:
    r = client.get("/api/v1/billing/balance")
    assert r.status_code == 200, r.text
    return r.json()


def assert_books_balance(app: FastAPI) -> None:
    """Every movement sums to zero, and each user's ledger accounts equal the balances on their row."""
    with app.state.services.db.transaction() as s:
        unbalanced = s.execute(select(LedgerEntry.txn_id).group_by(LedgerEntry.txn_id)
                               .having(func.sum(LedgerEntry.amount) != 0)).all()
        assert unbalanced == []
        for acct in s.scalars(select(BillingAccount)):
            sums = dict(s.execute(select(LedgerEntry.account, func.sum(LedgerEntry.amount))
                                  .where(LedgerEntry.user_id == acct.user_id).group_by(LedgerEntry.account)).all())
            assert (sums.get("user", 0), sums.get("user_hold", 0), -sums.get("user_debt", 0)) == \
                (acct.credits, acct.held, acct.debt)
            assert min(acct.credits, acct.held, acct.debt) >= 0


def grant(app: FastAPI, email: str, credits: int) -> str:
    with app.state.services.db.transaction() as s:
        user_id = s.scalar(select(User.id).where(User.email == email))
        ledger.credit(s, user_id=user_id, credits=credits, kind="grant", source="grants")
    return user_id


# ---- off by default ----

def test_billing_is_off_by_default_and_generation_stays_free(user_client, app):
    assert balance(user_client) == {"credits": 0, "held": 0, "debt": 0, "billing": "off"}
    r = user_client.post("/api/v1/generations", json=JOB)
    assert r.status_code == 202, r.text
    assert user_client.get("/api/v1/billing/packs").status_code == 404
    assert stripe_post(app, b"{}").status_code == 404
    assert "Generation is free" in user_client.get("/billing").text
    wait_for(user_client, r.json()["id"])
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 0
        assert s.scalar(select(func.count()).select_from(Hold)) == 0


# ---- checkout and the webhook ----

def test_a_checkout_session_names_the_user_and_the_credits(billed, stripe_api):
    user = signup(billed)
    packs = billed.get("/api/v1/billing/packs").json()
    assert [p["id"] for p in packs] == ["credits-100", "credits-1000"]
    r = billed.post("/api/v1/billing/checkout", json={"pack": "credits-100"})
    assert r.status_code == 201, r.text
    assert r.json()["url"].startswith("https://checkout.stripe.test/")
    (_method, _path, form, _headers), = [q for q in stripe_api.requests if q[1] == "/v1/checkout/sessions"]
    assert form["client_reference_id"] == user["account"]["id"] and form["metadata[credits]"] == "100"
    assert (form["mode"], form["line_items[0][price_data][unit_amount]"]) == ("payment", "500")
    assert billed.post("/api/v1/billing/checkout", json={"pack": "nope"}).status_code == 422
    stripe_api.failures = 10  # more than the SDK's retries
    refused = billed.post("/api/v1/billing/checkout", json={"pack": "credits-100"})
    assert refused.status_code == 503 and "try again" in refused.json()["detail"]
    stripe_api.failures = 0
    assert balance(billed)["credits"] == 0  # nothing until Stripe says it is paid
    with billed.app.state.services.db.transaction() as s:  # the refused one left no purchase behind
        assert s.scalar(select(func.count()).select_from(Purchase)) == 1


def test_a_webhook_replayed_three_times_credits_once(billed, billed_app, stripe_api):
    signup(billed)
    payload = stripe_api.completed(buy(billed, stripe_api))
    answers = [stripe_post(billed_app, payload) for _ in range(3)]
    assert [(a.status_code, a.json()["result"]) for a in answers] == \
        [(200, "granted"), (200, "duplicate"), (200, "duplicate")]
    assert balance(billed) == {"credits": 100, "held": 0, "debt": 0, "billing": "stripe"}
    # The same session in a new event (Stripe retries with the same id; this is a second notice) grants nothing.
    again = stripe_api.event("checkout.session.completed", json.loads(payload)["data"]["object"])
    assert stripe_post(billed_app, again).json()["result"] == "already granted"
    assert balance(billed)["credits"] == 100
    (receipt,) = billed.get("/api/v1/billing/receipts").json()
    assert (receipt["credits"], receipt["amount"], receipt["currency"], receipt["status"]) == (100, 500, "usd", "paid")
    assert billed.get(f"/api/v1/billing/receipts/{receipt['id']}").json()["seller"] == "Imagen Test Ltd"
    history = billed.get("/api/v1/billing/history").json()["items"]
    assert [(e["kind"], e["account"], e["amount"]) for e in history] == [("purchase", "user", 100)]
    assert_books_balance(billed_app)
    signup(billed, "bob@example.com")  # another user: the receipt is not found
    assert billed.get(f"/api/v1/billing/receipts/{receipt['id']}").status_code == 404


def test_a_bad_signature_gets_400_and_changes_nothing(billed, billed_app, stripe_api):
    signup(billed)
    payload = stripe_api.completed(buy(billed, stripe_api))
    tampered = payload.replace(b'"metadata": {"credits": "100"', b'"metadata": {"credits": "9999"')
    assert tampered != payload
    for body, headers in ((tampered, fake_stripe.sign(payload)),  # signed for other bytes
                          (payload, fake_stripe.sign(payload, "whsec_someone_else")),
                          (payload, {"Content-Type": "application/json"}),  # no signature at all
                          (payload, {"Stripe-Signature": "garbage", "Content-Type": "application/json"})):
        r = stripe_post(billed_app, body, headers)
        assert r.status_code == 400 and "signature" in r.json()["detail"], r.text
    assert balance(billed)["credits"] == 0
    with billed_app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(StripeEvent)) == 0
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 0
        assert s.scalar(select(Purchase.status)) == "pending"
    assert stripe_post(billed_app, payload).json()["result"] == "granted"  # the genuine one still works


def test_a_paid_session_for_an_account_that_is_gone_opens_a_refund_case(billed, billed_app, stripe_api):
    signup(billed)
    ghost = {"id": "cs_test_elsewhere", "object": "checkout.session", "payment_status": "paid",
             "client_reference_id": "f" * 32, "metadata": {"credits": "50", "pack": "credits-50"},
             "amount_total": 300, "currency": "usd", "payment_intent": "pi_elsewhere"}
    assert stripe_post(billed_app, stripe_api.event("checkout.session.completed", ghost)).json()["result"] == \
        "no account"
    with billed_app.state.services.db.transaction() as s:
        (purchase,) = s.scalars(select(Purchase)).all()
        assert (purchase.user_id, purchase.status, purchase.credits) == (None, "paid", 50)
        (case,) = s.scalars(select(BillingCase)).all()
        assert case.kind == "refund" and "no longer exists" in case.summary
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 0


# ---- holds ----

def test_a_hold_is_settled_when_the_job_succeeds_and_released_when_it_is_canceled(billed, billed_app):
    signup(billed)
    grant(billed_app, "ada@example.com", 25)
    r = billed.post("/api/v1/generations", json=JOB)
    assert r.status_code == 202, r.text
    done = wait_for(billed, r.json()["id"])
    assert done["status"] == "succeeded", done
    assert balance(billed) == {"credits": 15, "held": 0, "debt": 0, "billing": "stripe"}

    billed_app.state.services.executor.stop()  # the next job stays queued
    queued = billed.post("/api/v1/generations", json=JOB).json()["id"]
    assert balance(billed)["credits"] == 5 and balance(billed)["held"] == 10
    assert billed.post(f"/api/v1/generations/{queued}/cancel").status_code == 200
    assert balance(billed) == {"credits": 15, "held": 0, "debt": 0, "billing": "stripe"}
    with billed_app.state.services.db.transaction() as s:  # a second end (a late worker) changes nothing
        assert not ledger.release(s, generation_id=queued) and not ledger.settle(s, generation_id=queued)
        assert dict(s.execute(select(Hold.generation_id, Hold.status)).all()) == \
            {r.json()["id"]: "settled", queued: "released"}
    kinds = [e["kind"] for e in billed.get("/api/v1/billing/history").json()["items"]]
    assert kinds == ["release", "release", "hold", "hold", "settle", "hold", "hold", "grant"]
    assert_books_balance(billed_app)


def test_a_deleted_queued_job_gives_its_credits_back(billed, billed_app):
    signup(billed)
    grant(billed_app, "ada@example.com", 10)
    billed_app.state.services.executor.stop()
    gen_id = billed.post("/api/v1/generations", json=JOB).json()["id"]
    assert balance(billed)["held"] == 10
    assert billed.delete(f"/api/v1/generations/{gen_id}").status_code == 204
    assert balance(billed)["credits"] == 10 and balance(billed)["held"] == 0
    assert_books_balance(billed_app)


def test_a_short_balance_gets_402_and_stores_nothing(billed, billed_app):
    signup(billed)
    grant(billed_app, "ada@example.com", 9)  # the price is 10
    r = billed.post("/api/v1/generations", json=JOB)
    assert r.status_code == 402 and "costs 10 credits and you have 9" in r.json()["detail"]
    assert billed.get("/api/v1/generations").json()["items"] == []
    assert balance(billed)["credits"] == 9
    with billed_app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Hold)) == 0


# ---- refunds and disputes ----

def test_a_refund_claws_back_what_is_left_and_records_the_rest_as_owed(billed, billed_app, stripe_api):
    signup(billed)
    session_id = buy(billed, stripe_api)
    assert stripe_post(billed_app, stripe_api.completed(session_id)).json()["result"] == "granted"
    billed_app.state.services.executor.stop()
    for _ in range(3):  # 30 of the 100 credits held by queued jobs
        assert billed.post("/api/v1/generations", json=JOB).status_code == 202
    half = stripe_post(billed_app, stripe_api.refunded(session_id, 0.5)).json()["result"]
    assert half == "refund: 50 taken, 0 owed"
    full = stripe_post(billed_app, stripe_api.refunded(session_id, 1.0)).json()["result"]
    assert full == "refund: 20 taken, 30 owed"  # the held 30 stay held; what was spendable is taken
    assert balance(billed) == {"credits": 0, "held": 30, "debt": 30, "billing": "stripe"}
    with billed_app.state.services.db.transaction() as s:
        (case,) = s.scalars(select(BillingCase)).all()
        assert (case.kind, case.debt, case.status) == ("refund", 30, "open")
        assert s.scalar(select(Purchase.status)) == "refunded"
    # The next purchase repays the debt first.
    second = buy(billed, stripe_api)
    stripe_post(billed_app, stripe_api.completed(second))
    assert balance(billed) == {"credits": 70, "held": 30, "debt": 0, "billing": "stripe"}
    assert_books_balance(billed_app)


def test_a_dispute_claws_the_credits_back_and_opens_a_case_for_administrators(billed, billed_app, stripe_api):
    signup(billed, "root@example.com")
    with billed_app.state.services.db.transaction() as s:
        s.execute(update(User).where(User.email == "root@example.com").values(role="admin"))
    session_id = buy(billed, stripe_api)
    stripe_post(billed_app, stripe_api.completed(session_id))
    billed_app.state.services.executor.stop()
    assert billed.post("/api/v1/generations", json=JOB).status_code == 202
    dispute = stripe_api.disputed(session_id)
    assert stripe_post(billed_app, dispute).json()["result"] == "dispute: 90 taken, 10 owed"
    assert stripe_post(billed_app, dispute).json()["result"] == "duplicate"
    assert balance(billed) == {"credits": 0, "held": 10, "debt": 10, "billing": "stripe"}
    (case,) = billed.get("/api/v1/admin/billing/cases").json()
    assert (case["kind"], case["clawed_back"], case["debt"], case["status"]) == ("dispute", 90, 10, "open")
    assert case["stripe_ref"].startswith("dp_") and "fraudulent" in case["summary"]
    assert billed.post(f"/api/v1/admin/billing/cases/{case['id']}/close").json()["status"] == "closed"
    assert billed.get("/api/v1/billing/receipts").json()[0]["status"] == "disputed"
    assert_books_balance(billed_app)


def test_administrators_grant_credits_and_others_cannot(billed, billed_app):
    user_id = signup(billed)["account"]["id"]
    r = billed.post("/api/v1/admin/billing/grants", json={"user_id": user_id, "credits": 5})
    assert r.status_code in (403, 404)
    with billed_app.state.services.db.transaction() as s:
        s.execute(update(User).where(User.id == user_id).values(role="admin"))
    r = billed.post("/api/v1/admin/billing/grants", json={"user_id": user_id, "credits": 5, "memo": "welcome"})
    assert r.status_code == 201 and r.json() == {"credits": 5}
    assert billed.post("/api/v1/admin/billing/grants", json={"user_id": "0" * 32, "credits": 5}).status_code == 404
    assert billed.post("/api/v1/admin/billing/grants", json={"user_id": user_id, "credits": 0}).status_code == 422
    assert balance(billed)["credits"] == 5
    page = billed.get("/billing")
    assert page.status_code == 200 and "Buy credits" in page.text and "<script>" not in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


# ---- prices and settings (no database) ----

def test_prices_per_workflow_size_and_steps():
    prices = parse_prices('{"*": {"base": 1, "per_step": 0.1}, "txt2img_sdxl": {"base": 4}}')
    assert price_of(prices, "txt2img", {"width": 512, "height": 512, "steps": 20}) == 3
    assert price_of(prices, "txt2img", {"width": 64, "height": 64, "steps": 30}) == 4  # small counts as 512²
    assert price_of(prices, "txt2img", {"width": 1024, "height": 1024, "steps": 20, "batch_size": 2}) == 18
    assert price_of(prices, "txt2img_sdxl", {"width": 1024, "height": 1024, "steps": 50}) == 4
    for bad in ('{"*": {"base": -1}}', '{"*": {"cost": 1}}', "[1]", "{", '{"*": {"base": true}}'):
        with pytest.raises(ValueError, match="IMAGEN_BILLING_PRICES"):
            parse_prices(bad)
    for bad in ('[{"id": "a", "credits": 0, "amount": 1}]', '[{"id": "a b", "credits": 1, "amount": 1}]',
                '[{"id": "a", "credits": 1, "amount": 1, "currency": "euro"}]', "[]"):
        with pytest.raises(ValueError, match="IMAGEN_BILLING_PACKS"):
            parse_packs(bad)


def test_stripe_billing_needs_its_keys():
    with pytest.raises(ValueError, match="IMAGEN_STRIPE_SECRET_KEY and IMAGEN_STRIPE_WEBHOOK_SECRET"):
        Settings(billing="stripe", stripe_secret_key="sk_test_x")
    assert Settings(billing="stripe", stripe_secret_key="sk", stripe_webhook_secret="whsec").billing == "stripe"


# ---- every way a job ends (the service, on each database) ----

def test_every_final_state_ends_the_hold_once(db, blobs):
    """Failed by the worker, failed by the fleet's watchdog after its last attempt, ended by the in-process
    watchdog: each releases its hold, and running them all again changes nothing; a queued job keeps its hold."""
    now = utcnow()
    silence = {"failed": now, "last_attempt": now - timedelta(hours=2), "abandoned": now - timedelta(hours=1),
               "queued": None}
    with db.transaction() as s:
        user = User(email="ada@example.com", password_hash="$argon2id$x", date_of_birth=date(1990, 1, 1),
                    country="GB")
        s.add(user)
        s.flush()
        ledger.credit(s, user_id=user.id, credits=40, kind="grant", source="grants")
        ids = {}
        for name, heard in silence.items():
            gen = Generation(id=new_id(), user_id=user.id, workflow="txt2img", workflow_version=1,
                             pipeline="txt2img", params={"prompt": "a lighthouse"}, checkpoint="imagen-tiny",
                             checkpoint_sha256="0" * 64, models=[], consent_model_improvement=False,
                             status="queued" if heard is None else "running", started_at=heard, heartbeat_at=heard,
                             attempt=3)
            s.add(gen)
            ledger.hold(s, user_id=user.id, generation_id=gen.id, credits=10)
            ids[name] = gen.id
        user_id = user.id
    for _ in range(2):  # the second round finds every hold already ended
        with db.transaction() as s:
            generation_service.finish_unsuccessfully(s, generation_id=ids["failed"], status="failed", error="boom",
                                                     blobs=blobs)
            generation_service.requeue_abandoned(s, silent_since=now - timedelta(minutes=90), max_attempts=3,
                                                 blobs=blobs)
            generation_service.end_abandoned(s, silent_since=now - timedelta(minutes=30), started_before=None,
                                             timeout_seconds=0, blobs=blobs)
    with db.transaction() as s:
        assert {name: s.get(Generation, gen_id).status for name, gen_id in ids.items()} == {
            "failed": "failed", "last_attempt": "failed", "abandoned": "failed", "queued": "queued"}
        assert dict(s.execute(select(Hold.generation_id, Hold.status)).all()) == {
            ids["failed"]: "released", ids["last_attempt"]: "released", ids["abandoned"]: "released",
            ids["queued"]: "held"}
        assert ledger.balance(s, user_id=user_id) == Balance(credits=30, held=10, debt=0)
        assert s.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "release")) == 6
