"""privacy_core: exports and erasures (issue 4)

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa
import imagen.kit.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('erasures',
    sa.Column('user_id', sa.String(length=32), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('via', sa.String(length=64), nullable=False),
    sa.Column('subject_email_hash', sa.String(length=64), nullable=False),
    sa.Column('subject_id_hash', sa.String(length=64), nullable=False),
    sa.Column('due_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('canceled_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('hold_until', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_erasures_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_erasures'))
    )
    with op.batch_alter_table('erasures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_erasures_due_at'), ['due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_erasures_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_erasures_subject_email_hash'), ['subject_email_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_erasures_subject_id_hash'), ['subject_id_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_erasures_user_id'), ['user_id'], unique=False)

    op.create_table('exports',
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('requested_via', sa.String(length=64), nullable=False),
    sa.Column('blob_key', sa.String(length=300), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('finished_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('expires_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_exports_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exports'))
    )
    with op.batch_alter_table('exports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_exports_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_exports_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('exports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_exports_user_id'))
        batch_op.drop_index(batch_op.f('ix_exports_status'))

    op.drop_table('exports')
    with op.batch_alter_table('erasures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_erasures_user_id'))
        batch_op.drop_index(batch_op.f('ix_erasures_subject_id_hash'))
        batch_op.drop_index(batch_op.f('ix_erasures_subject_email_hash'))
        batch_op.drop_index(batch_op.f('ix_erasures_status'))
        batch_op.drop_index(batch_op.f('ix_erasures_due_at'))

    op.drop_table('erasures')
