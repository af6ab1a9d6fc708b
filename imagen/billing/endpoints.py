"""Billing API: balance, packs, checkout, history, receipts; the Stripe webhook; billing cases and grants (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from imagen.accounts.http import AdminUser, CurrentUser
from imagen.billing.ledger import ledger
from imagen.billing.models import BillingCase, LedgerEntry, Purchase
from imagen.billing.schemas import (
    BalanceOut,
    CaseOut,
    CheckoutIn,
    CheckoutOut,
    EntryOut,
    GrantIn,
    GrantOut,
    HistoryPage,
    PackOut,
    ReceiptOut,
    WebhookResult,
)
from imagen.billing.service import Billing, billing_records
from imagen.kit.http import ServicesDep, SessionDep, SettingsDep

router = APIRouter(prefix="/api/v1", tags=["billing"])


def get_billing(services: ServicesDep) -> Billing:
    return services.billing


BillingDep = Annotated[Billing, Depends(get_billing)]


async def raw_body(request: Request) -> bytes:
    """The webhook's bytes as sent: the signature covers them exactly."""
    return await request.body()


def entry_out(e: LedgerEntry) -> EntryOut:
    return EntryOut(id=e.id, txn_id=e.txn_id, account=e.account, amount=e.amount, kind=e.kind,
                    generation_id=e.generation_id, purchase_id=e.purchase_id, memo=e.memo, created_at=e.created_at)


def receipt_out(p: Purchase, seller: str, address: str) -> ReceiptOut:
    return ReceiptOut(id=p.id, pack=p.pack, credits=p.credits, amount=p.amount, currency=p.currency,
                      status=p.status, paid_at=p.paid_at, credits_taken_back=p.clawed_back, seller=seller,
                      seller_address=address, created_at=p.created_at)


def case_out(c: BillingCase) -> CaseOut:
    return CaseOut(id=c.id, kind=c.kind, status=c.status, user_id=c.user_id, purchase_id=c.purchase_id,
                   stripe_ref=c.stripe_ref, clawed_back=c.clawed_back, debt=c.debt, summary=c.summary,
                   created_at=c.created_at)


@router.get("/billing/balance", response_model=BalanceOut)
def balance(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> BalanceOut:
    b = ledger.balance(session, user_id=user.id)
    return BalanceOut(credits=b.credits, held=b.held, debt=b.debt, billing=settings.billing)


@router.get("/billing/packs", response_model=list[PackOut])
def packs(user: CurrentUser, billing: BillingDep) -> list[PackOut]:
    billing.require_enabled()
    return [PackOut(id=p.id, name=p.name, credits=p.credits, amount=p.amount, currency=p.currency)
            for p in billing.packs.values()]


@router.post("/billing/checkout", status_code=status.HTTP_201_CREATED, response_model=CheckoutOut)
def checkout(data: CheckoutIn, user: CurrentUser, session: SessionDep, billing: BillingDep) -> CheckoutOut:
    """A Stripe Checkout Session for one pack; the credits arrive with Stripe's webhook once it is paid."""
    purchase, url = billing.start_checkout(session, user=user, pack_id=data.pack)
    return CheckoutOut(receipt_id=purchase.id, url=url)


@router.get("/billing/history", response_model=HistoryPage)
def history(user: CurrentUser, session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50,
            offset: Annotated[int, Query(ge=0, le=100_000)] = 0) -> HistoryPage:
    """Your side of every movement, newest first: `user` (spendable), `user_hold` (held), `user_debt` (owed)."""
    return HistoryPage(items=[entry_out(e) for e in ledger.history(session, user_id=user.id, limit=limit,
                                                                    offset=offset)])


@router.get("/billing/receipts", response_model=list[ReceiptOut])
def receipts(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> list[ReceiptOut]:
    return [receipt_out(p, settings.legal_entity, settings.postal_address)
            for p in billing_records.receipts(session, user_id=user.id)]


@router.get("/billing/receipts/{receipt_id}", response_model=ReceiptOut)
def receipt(receipt_id: str, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> ReceiptOut:
    return receipt_out(billing_records.receipt(session, user_id=user.id, purchase_id=receipt_id),
                       settings.legal_entity, settings.postal_address)


@router.post("/billing/stripe/webhook", response_model=WebhookResult)
def stripe_webhook(request: Request, session: SessionDep, billing: BillingDep,
                   payload: Annotated[bytes, Depends(raw_body)]) -> WebhookResult:
    """Stripe's events, verified by their `Stripe-Signature` (400 when it does not match); each handled once."""
    return WebhookResult(result=billing.handle_webhook(session, payload=payload,
                                                       signature=request.headers.get("Stripe-Signature")))


@router.get("/admin/billing/cases", response_model=list[CaseOut])
def billing_cases(admin: AdminUser, session: SessionDep,
                  case_status: Annotated[str | None, Query(alias="status", pattern="^(open|closed)$")] = None,
                  ) -> list[CaseOut]:
    """Refunds that left a debt and every dispute: what was taken back and what is owed."""
    return [case_out(c) for c in billing_records.cases(session, status=case_status)]


@router.post("/admin/billing/cases/{case_id}/close", response_model=CaseOut)
def close_billing_case(case_id: str, admin: AdminUser, session: SessionDep) -> CaseOut:
    return case_out(billing_records.close_case(session, case_id=case_id))


@router.post("/admin/billing/grants", status_code=status.HTTP_201_CREATED, response_model=GrantOut)
def grant_credits(data: GrantIn, admin: AdminUser, session: SessionDep) -> GrantOut:
    """Give a user credits (support, promotions): from the `grants` account, repaying any debt first."""
    return GrantOut(credits=billing_records.grant(session, user_id=data.user_id, credits=data.credits,
                                                  memo=data.memo or "granted by an administrator"))
