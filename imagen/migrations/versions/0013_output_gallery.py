"""outputs: favorite, and an index for the gallery's keyset pages (user, newest first)

Thumbnails need no column: each output's WebP thumbnail lives at a key derived from the output
(`thumbs/{user_id}/{generation_id}/{index}.webp`, see generation/gallery.py).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outputs") as batch:
        batch.add_column(sa.Column("favorite", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_outputs_user_id_created_at_id", "outputs", ["user_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_outputs_user_id_created_at_id", table_name="outputs")
    with op.batch_alter_table("outputs") as batch:
        batch.drop_column("favorite")
