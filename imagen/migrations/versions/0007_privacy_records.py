"""privacy_records: breach register, legal-request log, business-transfer notices (issue 4)

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa
import imagen.kit.db


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('breaches',
    sa.Column('detected_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('consequences', sa.Text(), nullable=False),
    sa.Column('measures', sa.Text(), nullable=False),
    sa.Column('lookup', sa.JSON(), nullable=False),
    sa.Column('affected_count', sa.Integer(), nullable=False),
    sa.Column('regulator_notified_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('regulator_reference', sa.String(length=200), nullable=False),
    sa.Column('users_notified_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('recorded_by', sa.String(length=32), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['recorded_by'], ['users.id'], name=op.f('fk_breaches_recorded_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_breaches'))
    )
    with op.batch_alter_table('breaches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_breaches_detected_at'), ['detected_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_breaches_recorded_by'), ['recorded_by'], unique=False)

    op.create_table('legal_requests',
    sa.Column('received_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('authority', sa.String(length=300), nullable=False),
    sa.Column('instrument', sa.String(length=300), nullable=False),
    sa.Column('reference', sa.String(length=200), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('affected_count', sa.Integer(), nullable=False),
    sa.Column('decision', sa.String(length=24), nullable=False),
    sa.Column('decision_reason', sa.Text(), nullable=False),
    sa.Column('disclosed', sa.Text(), nullable=False),
    sa.Column('responded_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('recorded_by', sa.String(length=32), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['recorded_by'], ['users.id'], name=op.f('fk_legal_requests_recorded_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_legal_requests'))
    )
    with op.batch_alter_table('legal_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_legal_requests_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_legal_requests_recorded_by'), ['recorded_by'], unique=False)

    op.create_table('transfer_notices',
    sa.Column('acquirer', sa.String(length=300), nullable=False),
    sa.Column('effective_on', sa.Date(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('recipients', sa.Integer(), nullable=False),
    sa.Column('notified_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.String(length=32), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['recorded_by'], ['users.id'], name=op.f('fk_transfer_notices_recorded_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transfer_notices'))
    )
    with op.batch_alter_table('transfer_notices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_transfer_notices_recorded_by'), ['recorded_by'], unique=False)

    op.create_table('breach_affected_users',
    sa.Column('breach_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('notified_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['breach_id'], ['breaches.id'], name=op.f('fk_breach_affected_users_breach_id_breaches'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_breach_affected_users_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('breach_id', 'user_id', name=op.f('pk_breach_affected_users'))
    )
    with op.batch_alter_table('breach_affected_users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_breach_affected_users_user_id'), ['user_id'], unique=False)

    op.create_table('legal_request_users',
    sa.Column('legal_request_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['legal_request_id'], ['legal_requests.id'], name=op.f('fk_legal_request_users_legal_request_id_legal_requests'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_legal_request_users_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('legal_request_id', 'user_id', name=op.f('pk_legal_request_users'))
    )
    with op.batch_alter_table('legal_request_users', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_legal_request_users_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('legal_request_users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_legal_request_users_user_id'))

    op.drop_table('legal_request_users')
    with op.batch_alter_table('breach_affected_users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_breach_affected_users_user_id'))

    op.drop_table('breach_affected_users')
    with op.batch_alter_table('transfer_notices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_transfer_notices_recorded_by'))

    op.drop_table('transfer_notices')
    with op.batch_alter_table('legal_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_legal_requests_recorded_by'))
        batch_op.drop_index(batch_op.f('ix_legal_requests_received_at'))

    op.drop_table('legal_requests')
    with op.batch_alter_table('breaches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_breaches_recorded_by'))
        batch_op.drop_index(batch_op.f('ix_breaches_detected_at'))

    op.drop_table('breaches')
