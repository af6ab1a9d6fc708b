"""mail_suppressions (Postmark bounces and spam complaints) and analytics_deletions (PostHog person deletions)

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

from imagen.kit.db import UTCDateTime

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mail_suppressions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(500)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_mail_suppressions_user_id", "mail_suppressions", ["user_id"])
    op.create_table(
        "analytics_deletions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("distinct_id", sa.String(64), nullable=False, unique=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("last_attempt_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("analytics_deletions")
    op.drop_index("ix_mail_suppressions_user_id", table_name="mail_suppressions")
    op.drop_table("mail_suppressions")
