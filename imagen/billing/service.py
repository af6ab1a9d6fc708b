"""Billing: what a job costs and its hold at submit, credit packs through Stripe Checkout, the Stripe webhook,
receipts, and the billing cases refunds and disputes open.

`Billing` is built once by the composition root (imagen/services.py) from the settings; with IMAGEN_BILLING=off
(the default) it holds nothing and generation is free. The webhook grants a pack from the Checkout Session alone
(`client_reference_id` = the user, `metadata.credits`), never calling Stripe back; each Stripe event is handled once
(its id stored, unique), so replays change nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.billing.ledger import ledger
from imagen.billing.models import BillingCase, Purchase, StripeEvent
from imagen.billing.pricing import Pack, parse_packs, parse_prices, price_of
from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.kit.errors import BadRequest, NotFound, Unavailable, field_error
from imagen.kit.scoped import get_owned, owned

log = logging.getLogger(__name__)


class Billing:
    def __init__(self, settings: Settings, *, stripe_client: stripe.StripeClient | None = None) -> None:
        self.enabled = settings.billing == "stripe"
        self.prices = parse_prices(settings.billing_prices)
        self.packs: dict[str, Pack] = parse_packs(settings.billing_packs)
        self.webhook_secret = settings.stripe_webhook_secret or ""
        self.base_url = settings.base_url.rstrip("/")
        self.stripe = stripe_client
        if self.enabled and stripe_client is None:
            self.stripe = stripe.StripeClient(settings.stripe_secret_key or "",
                                              base_addresses={"api": settings.stripe_api_base.rstrip("/")},
                                              max_network_retries=2)

    def price(self, workflow: str, params: dict[str, Any]) -> int:
        return price_of(self.prices, workflow, params) if self.enabled else 0

    def hold(self, session: Session, *, user_id: str, generation_id: str, workflow: str,
             params: dict[str, Any]) -> int:
        """Hold the job's price (402 when short); nothing when billing is off. Called under the user's lock."""
        credits = self.price(workflow, params)
        ledger.hold(session, user_id=user_id, generation_id=generation_id, credits=credits)
        return credits

    def require_enabled(self) -> None:
        if not self.enabled:
            raise NotFound("Billing is off on this server (IMAGEN_BILLING=off): generation is free")

    # ---- checkout ----
    def start_checkout(self, session: Session, *, user: User, pack_id: str) -> tuple[Purchase, str]:
        """A Checkout Session for one pack; the purchase is recorded as pending until Stripe says it is paid."""
        self.require_enabled()
        pack = self.packs.get(pack_id)
        if pack is None:
            raise field_error("pack", f"unknown pack {pack_id!r}; available: {', '.join(self.packs)}")
        assert self.stripe is not None
        try:
            checkout = self.stripe.v1.checkout.sessions.create(params={
                "mode": "payment", "client_reference_id": user.id,
                "metadata": {"credits": str(pack.credits), "pack": pack.id},
                "line_items": [{"quantity": 1, "price_data": {
                    "currency": pack.currency, "unit_amount": pack.amount, "product_data": {"name": pack.name}}}],
                "success_url": f"{self.base_url}/billing?checkout=success",
                "cancel_url": f"{self.base_url}/billing?checkout=canceled",
            })
        except stripe.StripeError as exc:
            log.warning("Stripe refused a checkout session: %s", type(exc).__name__)
            raise Unavailable("The payment provider could not start the checkout; try again later") from None
        purchase = Purchase(user_id=user.id, pack=pack.id, credits=pack.credits, amount=pack.amount,
                            currency=pack.currency, status="pending", checkout_session_id=checkout.id)
        session.add(purchase)
        session.flush()
        return purchase, str(checkout.url or "")

    # ---- the webhook ----
    def handle_webhook(self, session: Session, *, payload: bytes, signature: str | None) -> str:
        """Verify, record the event id (a replay answers "duplicate"), act. Returns what happened."""
        self.require_enabled()
        try:
            event = stripe.Webhook.construct_event(payload, signature, self.webhook_secret)
        except (ValueError, stripe.SignatureVerificationError):
            raise BadRequest("Invalid Stripe signature or payload") from None
        if not _first_time(session, event.id, event.type):
            return "duplicate"
        obj = json.loads(payload)["data"]["object"]
        handler = {
            "checkout.session.completed": self._checkout_completed,
            "checkout.session.async_payment_succeeded": self._checkout_completed,
            "checkout.session.expired": self._checkout_expired,
            "charge.refunded": self._charge_refunded,
            "charge.dispute.created": self._dispute_created,
        }.get(event.type)
        return handler(session, obj) if handler else "ignored"

    def _checkout_completed(self, session: Session, obj: dict[str, Any]) -> str:
        if obj.get("payment_status") not in ("paid", "no_payment_required"):
            return "awaiting payment"  # a delayed method: async_payment_succeeded follows
        user_id = str(obj.get("client_reference_id") or "")
        try:
            credits = int((obj.get("metadata") or {}).get("credits", ""))
        except ValueError:
            credits = 0
        if credits < 1 or not user_id:
            log.error("checkout session %s: no user or credits in it; nothing granted", obj.get("id"))
            return "ignored"
        purchase = session.scalar(select(Purchase).where(Purchase.checkout_session_id == obj["id"]))
        if purchase is None:  # started outside this server's checkout endpoint: recorded from the session itself
            known = session.get(User, user_id) is not None
            purchase = Purchase(user_id=user_id if known else None, credits=credits,
                                pack=str((obj.get("metadata") or {}).get("pack") or "")[:64],
                                amount=int(obj.get("amount_total") or 0),
                                currency=str(obj.get("currency") or "")[:3], checkout_session_id=obj["id"],
                                status="pending")
            session.add(purchase)
        if purchase.status not in ("pending", "expired"):
            return "already granted"
        purchase.status, purchase.paid_at = "paid", utcnow()
        purchase.payment_intent_id = obj.get("payment_intent")
        purchase.credits = credits
        session.flush()
        if purchase.user_id is None:  # the account was erased since: the payment is to be refunded by hand
            self._open_case(session, kind="refund", user_id=None, purchase=purchase, ref=str(obj["id"]),
                            clawed=0, debt=0, summary="Paid for an account that no longer exists: refund the payment")
            return "no account"
        ledger.credit(session, user_id=purchase.user_id, credits=credits, kind="purchase", source="stripe",
                      purchase_id=purchase.id, memo=f"pack {purchase.pack}")
        return "granted"

    def _checkout_expired(self, session: Session, obj: dict[str, Any]) -> str:
        purchase = session.scalar(select(Purchase).where(Purchase.checkout_session_id == obj.get("id")))
        if purchase is not None and purchase.status == "pending":
            purchase.status = "expired"
        return "expired"

    def _charge_refunded(self, session: Session, obj: dict[str, Any]) -> str:
        purchase = self._purchase_of(session, obj.get("payment_intent"))
        if purchase is None:
            return "unknown payment"
        amount, refunded = int(obj.get("amount") or 0), int(obj.get("amount_refunded") or 0)
        target = purchase.credits if amount <= 0 or refunded >= amount else purchase.credits * refunded // amount
        if target >= purchase.credits:
            purchase.status = "refunded" if purchase.status != "disputed" else purchase.status
        return self._take_back(session, purchase, target - purchase.clawed_back, kind="refund",
                               ref=str(obj.get("id") or ""), why=f"refund of {refunded} of {amount}")

    def _dispute_created(self, session: Session, obj: dict[str, Any]) -> str:
        purchase = self._purchase_of(session, obj.get("payment_intent"))
        if purchase is None:
            return "unknown payment"
        purchase.status = "disputed"
        result = self._take_back(session, purchase, purchase.credits - purchase.clawed_back, kind="dispute",
                                 ref=str(obj.get("id") or ""), why=f"dispute ({obj.get('reason') or 'no reason'})",
                                 always_open=True)
        return result

    def _take_back(self, session: Session, purchase: Purchase, credits: int, *, kind: str, ref: str, why: str,
                   always_open: bool = False) -> str:
        taken = owed = 0
        if credits > 0 and purchase.user_id is not None:
            taken, owed = ledger.claw_back(session, user_id=purchase.user_id, credits=credits, kind=kind,
                                           purchase_id=purchase.id, memo=why)
        purchase.clawed_back += max(credits, 0)
        if always_open or owed:
            self._open_case(session, kind=kind, user_id=purchase.user_id, purchase=purchase, ref=ref, clawed=taken,
                            debt=owed, summary=f"{why}: {taken} credits taken back, {owed} already spent (owed)")
        return f"{kind}: {taken} taken, {owed} owed"

    def _purchase_of(self, session: Session, payment_intent: Any) -> Purchase | None:
        if not payment_intent:
            return None
        return session.scalar(select(Purchase).where(Purchase.payment_intent_id == str(payment_intent)))

    def _open_case(self, session: Session, *, kind: str, user_id: str | None, purchase: Purchase, ref: str,
                   clawed: int, debt: int, summary: str) -> BillingCase:
        case = BillingCase(kind=kind, user_id=user_id, purchase_id=purchase.id, stripe_ref=ref[:255],
                           clawed_back=clawed, debt=debt, summary=summary, status="open")
        session.add(case)
        log.warning("billing case (%s) opened for purchase %s: %s", kind, purchase.id, summary)
        return case


def _first_time(session: Session, event_id: str, event_type: str) -> bool:
    """Store the event id unless it is there: insert-or-ignore, so two simultaneous deliveries record it once."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stored = session.execute(insert(StripeEvent).values(id=event_id, type=event_type[:100], received_at=utcnow())
                             .on_conflict_do_nothing(index_elements=["id"]).returning(StripeEvent.id)).scalar()
    return stored is not None  # (an insert's rowcount is not reliable here: RETURNING is)


class BillingRecords:
    """What a user and an administrator read: receipts, cases."""

    def receipts(self, session: Session, *, user_id: str, limit: int = 100) -> list[Purchase]:
        return list(session.scalars(owned(Purchase, user_id).where(Purchase.status != "pending")
                                    .order_by(Purchase.created_at.desc()).limit(limit)))

    def receipt(self, session: Session, *, user_id: str, purchase_id: str) -> Purchase:
        purchase = get_owned(session, Purchase, purchase_id, user_id, what="Receipt")
        if purchase.status in ("pending", "expired"):
            raise NotFound("Receipt not found")  # nothing was paid
        return purchase

    def cases(self, session: Session, *, status: str | None, limit: int = 100) -> list[BillingCase]:
        query = select(BillingCase).order_by(BillingCase.created_at.desc()).limit(limit)
        if status:
            query = query.where(BillingCase.status == status)
        return list(session.scalars(query))

    def close_case(self, session: Session, *, case_id: str) -> BillingCase:
        case = session.get(BillingCase, case_id)
        if case is None:
            raise NotFound("Billing case not found")
        case.status = "closed"
        return case

    def grant(self, session: Session, *, user_id: str, credits: int, memo: str) -> int:
        if session.get(User, user_id) is None:
            raise NotFound("User not found")
        return ledger.credit(session, user_id=user_id, credits=credits, kind="grant", source="grants", memo=memo)


billing_records = BillingRecords()
