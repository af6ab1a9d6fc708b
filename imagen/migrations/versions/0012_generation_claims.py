"""generations: attempt, claimed_by, served_turn (the Celery fleet: claim tokens, requeues, fairness across workers)

- attempt: incremented by every claim; the claim's token. A worker's writes (progress, outputs, its end) name the
  attempt they belong to, so a worker presumed dead whose job was requeued and claimed again cannot complete it.
- claimed_by: the worker running it (its queue and presence in Redis say whether it is alive).
- served_turn: a counter across all workers, set at each claim; a user's largest turn is when they were last served.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("served_turn", sa.BigInteger(), nullable=True))
    op.create_index("ix_generations_served_turn", "generations", ["served_turn"])
    op.create_index("ix_generations_user_id_served_turn", "generations", ["user_id", "served_turn"])


def downgrade() -> None:
    op.drop_index("ix_generations_user_id_served_turn", table_name="generations")
    op.drop_index("ix_generations_served_turn", table_name="generations")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("served_turn")
        batch.drop_column("claimed_by")
        batch.drop_column("attempt")
