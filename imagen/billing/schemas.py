from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class PackOut(BaseModel):
    id: str
    name: str
    credits: int
    amount: int = Field(description="price in the currency's smallest unit (cents)")
    currency: str


class BalanceOut(BaseModel):
    credits: int = Field(description="spendable now")
    held: int = Field(description="held by queued and running generations")
    debt: int = Field(description="clawed back by a refund or dispute after being spent; repaid by the next purchase")
    billing: str = Field(description="off (generation is free) or stripe")


class CheckoutIn(BaseModel):
    pack: str = Field(min_length=1, max_length=64)


class CheckoutOut(BaseModel):
    receipt_id: str
    url: str = Field(description="Stripe Checkout: send the browser here")


class EntryOut(BaseModel):
    id: str
    txn_id: str
    account: str
    amount: int
    kind: str
    generation_id: str | None
    purchase_id: str | None
    memo: str
    created_at: datetime


class HistoryPage(BaseModel):
    items: list[EntryOut]


class ReceiptOut(BaseModel):
    id: str = Field(description="the receipt number")
    pack: str
    credits: int
    amount: int
    currency: str
    status: str
    paid_at: datetime | None
    credits_taken_back: int
    seller: str
    seller_address: str
    created_at: datetime


class WebhookResult(BaseModel):
    result: str


class CaseOut(BaseModel):
    id: str
    kind: str
    status: str
    user_id: str | None
    purchase_id: str | None
    stripe_ref: str
    clawed_back: int
    debt: int
    summary: str
    created_at: datetime


class GrantIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=32)
    credits: int = Field(ge=1, le=1_000_000)
    memo: str = Field(default="", max_length=200)


class GrantOut(BaseModel):
    credits: int
