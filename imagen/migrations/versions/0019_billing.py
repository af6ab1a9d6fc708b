"""billing: balances, the double-entry ledger, holds, purchases (receipts), processed Stripe events, billing cases

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "billing_accounts",
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("held", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("debt", sa.Integer(), nullable=False, server_default="0"),
        _when("updated_at", nullable=False),
        sa.CheckConstraint("credits >= 0", name=op.f("ck_billing_accounts_credits_not_negative")),
        sa.CheckConstraint("held >= 0", name=op.f("ck_billing_accounts_held_not_negative")),
        sa.CheckConstraint("debt >= 0", name=op.f("ck_billing_accounts_debt_not_negative")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_billing_accounts_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_billing_accounts")),
    )
    op.create_table(
        "billing_purchases",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("pack", sa.String(64), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("checkout_session_id", sa.String(255), nullable=False),
        sa.Column("payment_intent_id", sa.String(255), nullable=True),
        _when("paid_at"),
        sa.Column("clawed_back", sa.Integer(), nullable=False, server_default="0"),
        _when("created_at", nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_billing_purchases_user_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_purchases")),
        sa.UniqueConstraint("checkout_session_id", name=op.f("uq_billing_purchases_checkout_session_id")),
    )
    op.create_index(op.f("ix_billing_purchases_user_id"), "billing_purchases", ["user_id"])
    op.create_index(op.f("ix_billing_purchases_payment_intent_id"), "billing_purchases", ["payment_intent_id"])
    op.create_table(
        "billing_ledger",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("txn_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("generation_id", sa.String(32), nullable=True),
        sa.Column("purchase_id", sa.String(32), nullable=True),
        sa.Column("memo", sa.String(200), nullable=False),
        _when("created_at", nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_billing_ledger_user_id_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["purchase_id"], ["billing_purchases.id"],
                                name=op.f("fk_billing_ledger_purchase_id_billing_purchases"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_ledger")),
    )
    op.create_index(op.f("ix_billing_ledger_txn_id"), "billing_ledger", ["txn_id"])
    op.create_index(op.f("ix_billing_ledger_generation_id"), "billing_ledger", ["generation_id"])
    op.create_index("ix_billing_ledger_user_id_created_at", "billing_ledger", ["user_id", "created_at"])
    op.create_table(
        "billing_holds",
        sa.Column("generation_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _when("created_at", nullable=False),
        _when("ended_at"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_billing_holds_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("generation_id", name=op.f("pk_billing_holds")),
    )
    op.create_index(op.f("ix_billing_holds_user_id"), "billing_holds", ["user_id"])
    op.create_table(
        "billing_stripe_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        _when("received_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_stripe_events")),
    )
    op.create_table(
        "billing_cases",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("purchase_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stripe_ref", sa.String(255), nullable=False),
        sa.Column("clawed_back", sa.Integer(), nullable=False),
        sa.Column("debt", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        _when("created_at", nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_billing_cases_user_id_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["purchase_id"], ["billing_purchases.id"],
                                name=op.f("fk_billing_cases_purchase_id_billing_purchases"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_cases")),
    )
    op.create_index(op.f("ix_billing_cases_user_id"), "billing_cases", ["user_id"])


def downgrade() -> None:
    for table in ("billing_cases", "billing_stripe_events", "billing_holds", "billing_ledger", "billing_purchases",
                  "billing_accounts"):
        op.drop_table(table)
