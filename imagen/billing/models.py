"""Billing tables: per-user balances, the append-only double-entry ledger, holds, purchases (receipts), processed
Stripe events and billing cases (refunds and disputes an administrator looks at).

Accounts are the ledger's `account` column: `user`, `user_hold` and `user_debt` belong to the entry's `user_id`;
`stripe` (credits sold), `revenue` (credits spent), `grants` (credits given by an administrator) are the
service's. Every movement is one `txn_id` whose entries sum to zero. A user's balances are also kept on their
`billing_accounts` row (checked never negative), which the conditional updates lock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime, utcnow

USER_ACCOUNTS = ("user", "user_hold", "user_debt")
SYSTEM_ACCOUNTS = ("stripe", "revenue", "grants")
HOLD_STATUSES = ("held", "settled", "released")
PURCHASE_STATUSES = ("pending", "paid", "refunded", "disputed", "expired")
CASE_KINDS = ("refund", "dispute")


class BillingAccount(Base):
    """A user's balances: `credits` spendable, `held` by queued and running jobs, `debt` clawed back by a refund or
    dispute after the credits were already spent (repaid first by the next purchase)."""

    __tablename__ = "billing_accounts"
    __table_args__ = (
        CheckConstraint("credits >= 0", name="credits_not_negative"),
        CheckConstraint("held >= 0", name="held_not_negative"),
        CheckConstraint("debt >= 0", name="debt_not_negative"),
    )

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    credits: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    held: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    debt: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class Purchase(IdMixin, CreatedMixin, Base):
    """A credit pack bought through Stripe Checkout; its id is the receipt number. Kept for the accounting period
    after an erasure, without the user's id."""

    __tablename__ = "billing_purchases"

    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    pack: Mapped[str] = mapped_column(String(64), nullable=False)
    credits: Mapped[int] = mapped_column(Integer, nullable=False)
    amount: Mapped[int] = mapped_column(Integer, nullable=False)  # in the currency's smallest unit
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    checkout_session_id: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Credits taken back by refunds and disputes so far (never more than `credits`): each event takes the rest.
    clawed_back: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")


class LedgerEntry(IdMixin, CreatedMixin, Base):
    """One side of a movement: never updated or deleted by the service (erasure empties `user_id`, retention
    deletes whole movements once the accounting period has passed)."""

    __tablename__ = "billing_ledger"
    __table_args__ = (Index("ix_billing_ledger_user_id_created_at", "user_id", "created_at"),)

    txn_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    account: Mapped[str] = mapped_column(String(16), nullable=False)
    amount: Mapped[int] = mapped_column(Integer, nullable=False)  # signed: what this account gained
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # purchase, hold, settle, release, ...
    generation_id: Mapped[str | None] = mapped_column(String(32), index=True)
    purchase_id: Mapped[str | None] = mapped_column(ForeignKey("billing_purchases.id", ondelete="SET NULL"))
    memo: Mapped[str] = mapped_column(String(200), nullable=False, default="")


class Hold(Base):
    """Credits held for one generation from submit until it ends: settled (spent) or released, exactly once."""

    __tablename__ = "billing_holds"

    # Not a foreign key: deleting a generation must not drop its hold before it is released.
    generation_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credits: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="held")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StripeEvent(Base):
    """Stripe events already handled, by Stripe's event id: a replayed delivery changes nothing."""

    __tablename__ = "billing_stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class BillingCase(IdMixin, CreatedMixin, Base):
    """A refund or dispute for administrators to look at: what was clawed back and what the user still owes."""

    __tablename__ = "billing_cases"

    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    purchase_id: Mapped[str | None] = mapped_column(ForeignKey("billing_purchases.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    stripe_ref: Mapped[str] = mapped_column(String(255), nullable=False, default="")  # dispute or charge id
    clawed_back: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    debt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    summary: Mapped[str] = mapped_column(Text, nullable=False, default="")
