"""Billing records and the data map, on SQLite and PostgreSQL: the export carries the user's balance, ledger,
holds and receipts; erasure deletes the balance and holds but keeps the accounting records (ledger, receipts,
billing cases) without the user's id, with nothing of the person left (residue scan); the retention run removes
them once the accounting period has passed; Stripe is named as a processor only with IMAGEN_BILLING=stripe."""

from __future__ import annotations

import json
import zipfile
from datetime import date

from sqlalchemy import func, select

from imagen.accounts.models import User
from imagen.billing.ledger import ledger
from imagen.billing.models import BillingAccount, BillingCase, Hold, LedgerEntry, Purchase
from imagen.generation.models import Generation
from imagen.kit.config import Settings
from imagen.kit.db import new_id
from imagen.privacy.erasure import erase_user
from imagen.privacy.exports import build_export, export_service
from imagen.privacy.policy import render_policy
from imagen.privacy.providers import configured_providers
from imagen.privacy.retention import retention_service

BILLING_SECTIONS = ("credit_balance", "credit_holds", "credit_ledger", "purchases", "billing_cases")


def customer(db) -> str:
    """A user who bought 100 credits, has 10 held by a job and a dispute case on file."""
    with db.transaction() as s:
        user = User(email="ada@example.com", password_hash="$argon2id$x", date_of_birth=date(1990, 1, 1),
                    country="GB")
        s.add(user)
        s.flush()
        purchase = Purchase(user_id=user.id, pack="credits-100", credits=100, amount=500, currency="usd",
                            status="paid", checkout_session_id="cs_test_1", payment_intent_id="pi_1")
        s.add(purchase)
        s.flush()
        ledger.credit(s, user_id=user.id, credits=100, kind="purchase", source="stripe", purchase_id=purchase.id)
        ledger.hold(s, user_id=user.id, generation_id="g" * 32, credits=10)
        s.add(BillingCase(user_id=user.id, purchase_id=purchase.id, kind="dispute", stripe_ref="dp_1",
                          clawed_back=0, debt=0, summary="dispute (fraudulent)"))
        return user.id


def test_the_export_holds_the_balance_ledger_holds_and_receipts(db, blobs):
    uid = customer(db)
    with db.transaction() as s:
        export_id = export_service.request(s, user_id=uid).id
    assert build_export(db, blobs, export_id) == "ready"
    with zipfile.ZipFile(blobs.local_path(f"exports/{uid}/{export_id}.zip")) as zf:
        sections = json.loads(zf.read("data.json"))["sections"]
    assert {name: sections[name]["count"] for name in BILLING_SECTIONS} == {
        "credit_balance": 1, "credit_holds": 1, "credit_ledger": 4, "purchases": 1, "billing_cases": 1}
    assert sections["credit_balance"]["items"][0]["credits"] == 90
    assert sorted((e["account"], e["amount"]) for e in sections["credit_ledger"]["items"]) == \
        [("stripe", -100), ("user", -10), ("user", 100), ("user_hold", 10)]
    assert "legal obligation to keep accounting records" in sections["purchases"]["legal_basis"]


def test_erasure_keeps_the_accounting_records_without_the_person(db, blobs, settings):
    uid = customer(db)
    summary = erase_user(db, blobs, None, uid, settings=settings, verify=True)
    assert summary["residue"] == 0, summary["findings"]
    assert (summary["credit_balance"], summary["credit_holds"]) == (1, 1)
    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(BillingAccount)) == 0
        assert s.scalar(select(func.count()).select_from(Hold)) == 0
        # Kept for the accounting period, linked to no one.
        assert s.scalars(select(Purchase.user_id)).all() == [None]
        assert set(s.scalars(select(LedgerEntry.user_id))) == {None}
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 4
        assert s.scalars(select(BillingCase.user_id)).all() == [None]
        # Still balanced books.
        assert s.scalar(select(func.sum(LedgerEntry.amount))) == 0


def test_erasure_releases_the_holds_of_the_jobs_it_cancels(db, blobs, settings):
    uid = customer(db)
    with db.transaction() as s:
        gen = Generation(id=new_id(), user_id=uid, workflow="txt2img", workflow_version=1, pipeline="txt2img",
                         params={"prompt": "a lighthouse"}, checkpoint="imagen-tiny", checkpoint_sha256="0" * 64,
                         models=[], consent_model_improvement=False, status="queued")
        s.add(gen)
        ledger.hold(s, user_id=uid, generation_id=gen.id, credits=5)
    erase_user(db, blobs, None, uid, settings=settings)
    with db.transaction() as s:
        released = s.scalars(select(LedgerEntry.generation_id).where(LedgerEntry.kind == "release",
                                                                     LedgerEntry.account == "user_hold")).all()
        assert released == [gen.id]


def test_the_records_go_once_the_accounting_period_has_passed(db, blobs, settings):
    customer(db)
    with db.transaction() as s:
        plan = {p.name: p for p in retention_service.plan(s, settings=settings)}
        assert plan["credit_ledger"].count == 0 and plan["credit_ledger"].setting == \
            "IMAGEN_BILLING_RECORDS_RETENTION_DAYS"
        assert plan["credit_ledger"].period == f"{7 * 365} days"
    settings.billing_records_retention_days = 0
    with db.transaction() as s:
        gone = {p.name: p.count for p in retention_service.run(s, settings=settings, blobs=blobs)}
    assert (gone["credit_ledger"], gone["purchases"], gone["billing_cases"]) == (4, 1, 1)
    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 0
        assert s.scalar(select(BillingAccount.credits)) == 90  # the balance is the account's, kept while it lives


def test_stripe_is_a_processor_only_when_billing_uses_it():
    off = Settings(stripe_secret_key="sk_live_x")  # a key alone does not switch billing on
    on = Settings(billing="stripe", stripe_secret_key="sk_live_x", stripe_webhook_secret="whsec_x")
    assert "stripe" not in [p.id for p in configured_providers(off)]
    assert "stripe" in [p.id for p in configured_providers(on)]
    assert "Stripe" not in render_policy(off) and "Stripe" in render_policy(on)
