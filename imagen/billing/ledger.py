"""The credits ledger: append-only double entry, balances that never go negative, holds settled or released once.

Every movement is one transaction id whose entries sum to zero (`_post`). A user's three balances also live on
their `billing_accounts` row and change only by conditional UPDATEs (`credits >= n`), so simultaneous holds cannot
overdraw: PostgreSQL re-checks the condition on the row the earlier writer committed, SQLite has one writer at a
time. Settle and release move a hold out of `held` with `UPDATE ... WHERE status = 'held'`: whichever comes second
(a retry, a watchdog, a second worker) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.billing.models import USER_ACCOUNTS, BillingAccount, Hold, LedgerEntry
from imagen.kit.db import new_id, utcnow
from imagen.kit.errors import ServiceError
from imagen.kit.locks import lock_row


class PaymentRequired(ServiceError):
    status_code = 402


@dataclass(frozen=True)
class Balance:
    credits: int = 0
    held: int = 0
    debt: int = 0


class Ledger:
    # ---- reading ----
    def balance(self, session: Session, *, user_id: str) -> Balance:
        row = session.execute(select(BillingAccount.credits, BillingAccount.held, BillingAccount.debt)
                              .where(BillingAccount.user_id == user_id)).first()
        return Balance(*row) if row else Balance()

    def history(self, session: Session, *, user_id: str, limit: int, offset: int = 0) -> list[LedgerEntry]:
        """The user's own side of each movement (spendable, held, owed), newest first."""
        return list(session.scalars(
            select(LedgerEntry).where(LedgerEntry.user_id == user_id, LedgerEntry.account.in_(USER_ACCOUNTS))
            .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc()).limit(limit).offset(offset)))

    # ---- generation holds ----
    def hold(self, session: Session, *, user_id: str, generation_id: str, credits: int) -> None:
        """Hold `credits` for a job, or refuse it (402) when the balance is short. No row is written on refusal."""
        if credits <= 0:
            return
        took = session.execute(
            update(BillingAccount)
            .where(BillingAccount.user_id == user_id, BillingAccount.credits >= credits)
            .values(credits=BillingAccount.credits - credits, held=BillingAccount.held + credits, updated_at=utcnow())
            .execution_options(synchronize_session=False)).rowcount
        if not took:
            have = self.balance(session, user_id=user_id).credits
            raise PaymentRequired(f"This generation costs {credits} credit{'s' if credits != 1 else ''} and you have "
                                  f"{have}; buy credits on the billing page (/billing)")
        session.add(Hold(generation_id=generation_id, user_id=user_id, credits=credits, status="held"))
        self._post(session, kind="hold", user_id=user_id, generation_id=generation_id,
                   moves=(("user", -credits), ("user_hold", credits)))

    def settle(self, session: Session, *, generation_id: str) -> bool:
        """The job succeeded: its held credits are spent. True only the first time."""
        return self._end_hold(session, generation_id, "settled")

    def release(self, session: Session, *, generation_id: str) -> bool:
        """The job failed, was canceled or deleted: its held credits come back. True only the first time."""
        return self._end_hold(session, generation_id, "released")

    def _end_hold(self, session: Session, generation_id: str, status: str) -> bool:
        row = session.execute(select(Hold.user_id, Hold.credits)
                              .where(Hold.generation_id == generation_id, Hold.status == "held")).first()
        if row is None:  # billing off when it was submitted, or already ended
            return False
        ended = session.execute(
            update(Hold).where(Hold.generation_id == generation_id, Hold.status == "held")
            .values(status=status, ended_at=utcnow()).execution_options(synchronize_session=False)).rowcount
        if not ended:  # another transaction ended it first
            return False
        user_id, credits = row
        back = credits if status == "released" else 0
        session.execute(update(BillingAccount).where(BillingAccount.user_id == user_id).values(
            held=BillingAccount.held - credits, credits=BillingAccount.credits + back, updated_at=utcnow())
            .execution_options(synchronize_session=False))
        kind, to = ("release", "user") if status == "released" else ("settle", "revenue")
        self._post(session, kind=kind, user_id=user_id, generation_id=generation_id,
                   moves=(("user_hold", -credits), (to, credits)))
        return True

    # ---- purchases, grants, claw-backs ----
    def credit(self, session: Session, *, user_id: str, credits: int, kind: str, source: str,
               purchase_id: str | None = None, memo: str = "") -> int:
        """Add credits from `source` (stripe, grants); a debt is repaid first. Returns the credits now spendable."""
        self._lock_account(session, user_id)
        debt = self.balance(session, user_id=user_id).debt
        repay = min(debt, credits)
        session.execute(update(BillingAccount).where(BillingAccount.user_id == user_id).values(
            credits=BillingAccount.credits + (credits - repay), debt=BillingAccount.debt - repay, updated_at=utcnow())
            .execution_options(synchronize_session=False))
        self._post(session, kind=kind, user_id=user_id, purchase_id=purchase_id, memo=memo,
                   moves=((source, -credits), ("user_debt", repay), ("user", credits - repay)))
        return credits - repay

    def claw_back(self, session: Session, *, user_id: str, credits: int, kind: str, purchase_id: str | None,
                  memo: str = "") -> tuple[int, int]:
        """Take back credits Stripe returned to the payer. The balance never goes below zero: what was already spent
        becomes a debt (the `user_debt` account goes below zero, the row's `debt` above). Returns (taken, owed)."""
        self._lock_account(session, user_id)
        taken = min(self.balance(session, user_id=user_id).credits, credits)
        owed = credits - taken
        session.execute(update(BillingAccount).where(BillingAccount.user_id == user_id).values(
            credits=BillingAccount.credits - taken, debt=BillingAccount.debt + owed, updated_at=utcnow())
            .execution_options(synchronize_session=False))
        self._post(session, kind=kind, user_id=user_id, purchase_id=purchase_id, memo=memo,
                   moves=(("user", -taken), ("user_debt", -owed), ("stripe", credits)))
        return taken, owed

    def _lock_account(self, session: Session, user_id: str) -> None:
        """Lock the user (simultaneous writers of the same balance wait) and make sure their row exists."""
        lock_row(session, User.id, user_id, touch=User.role)
        if session.scalar(select(BillingAccount.user_id).where(BillingAccount.user_id == user_id)) is None:
            session.add(BillingAccount(user_id=user_id))
            session.flush()

    def _post(self, session: Session, *, kind: str, user_id: str | None, moves: Sequence[tuple[str, int]],
              generation_id: str | None = None, purchase_id: str | None = None, memo: str = "") -> str:
        if sum(amount for _, amount in moves) != 0:
            raise ValueError(f"unbalanced movement {moves}")
        txn, now = new_id(), utcnow()
        for account, amount in moves:
            if amount:
                session.add(LedgerEntry(txn_id=txn, user_id=user_id, account=account, amount=amount, kind=kind,
                                        generation_id=generation_id, purchase_id=purchase_id, memo=memo[:200],
                                        created_at=now))
        return txn


ledger = Ledger()
