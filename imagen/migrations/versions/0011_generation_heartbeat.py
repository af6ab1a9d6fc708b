"""generations.heartbeat_at: when the worker running a job last reported (the watchdog fails jobs gone silent)

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

import imagen.kit.db

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("heartbeat_at", imagen.kit.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("heartbeat_at")
