"""ncmec_attempts: every CyberTipline submission attempt on a case, the retry time, the escalation reason; what
an evidence IP records

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

import imagen.kit.db

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("safety_cases", sa.Column("ncmec_attempts", sa.JSON(), nullable=True))
    op.add_column("safety_cases", sa.Column("ncmec_retry_at", imagen.kit.db.UTCDateTime(timezone=True),
                                            nullable=True))
    op.add_column("safety_cases", sa.Column("ncmec_escalation", sa.String(length=3000), nullable=True))
    op.add_column("safety_evidence", sa.Column("ip_event", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("safety_evidence") as batch:
        batch.drop_column("ip_event")
    with op.batch_alter_table("safety_cases") as batch:
        for column in ("ncmec_escalation", "ncmec_retry_at", "ncmec_attempts"):
            batch.drop_column(column)
