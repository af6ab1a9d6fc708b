"""insight_records (the anonymous model-improvement store) and generations.insights_derived (derive once)

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insight_records",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.String(32)),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=False),
        sa.Column("pipeline", sa.String(16), nullable=False),
        sa.Column("model_family", sa.String(16), nullable=False),
        sa.Column("checkpoint_source", sa.String(16), nullable=False),
        sa.Column("lora_count", sa.Integer(), nullable=False),
        sa.Column("sampler", sa.String(32)),
        sa.Column("steps", sa.Integer()),
        sa.Column("guidance", sa.Float()),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("batch_size", sa.Integer()),
        sa.Column("queue_wait_seconds", sa.Float()),
        sa.Column("load_seconds", sa.Float()),
        sa.Column("inference_seconds", sa.Float()),
        sa.Column("cache_hit", sa.Boolean()),
        sa.Column("sharpness", sa.Float()),
        sa.Column("colourfulness", sa.Float()),
        sa.Column("nsfw_score", sa.Float()),
        sa.Column("embedding", sa.JSON()),
    )
    op.create_index("ix_insight_records_day", "insight_records", ["day"])
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("insights_derived", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("insights_derived")
    op.drop_index("ix_insight_records_day", table_name="insight_records")
    op.drop_table("insight_records")
