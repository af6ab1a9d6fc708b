"""safety_banks: hash banks (PDQ, MD5, SHA-256 lists operators import) and their hashes

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa
import imagen.kit.db


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hash_banks",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("hash_type", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("updated_at", imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hash_banks")),
        sa.UniqueConstraint("name", name=op.f("uq_hash_banks_name")),
    )
    op.create_table(
        "bank_hashes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("bank_id", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["bank_id"], ["hash_banks.id"], name=op.f("fk_bank_hashes_bank_id_hash_banks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_hashes")),
        sa.UniqueConstraint("bank_id", "value", name=op.f("uq_bank_hashes_bank_id")),
    )
    op.create_index("ix_bank_hashes_value", "bank_hashes", ["value"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_bank_hashes_value", table_name="bank_hashes")
    op.drop_table("bank_hashes")
    op.drop_table("hash_banks")
