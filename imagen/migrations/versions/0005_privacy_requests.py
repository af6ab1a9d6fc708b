"""privacy_requests: privacy requests (policy §8), their audit trail, and the outbound email outbox

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa
import imagen.kit.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outbound_emails',
    sa.Column('user_id', sa.String(length=32), nullable=True),
    sa.Column('to_address', sa.String(length=320), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('kind', sa.String(length=48), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('backend', sa.String(length=16), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('sent_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_outbound_emails_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbound_emails'))
    )
    with op.batch_alter_table('outbound_emails', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbound_emails_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbound_emails_to_address'), ['to_address'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbound_emails_user_id'), ['user_id'], unique=False)

    op.create_table('privacy_requests',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=True),
    sa.Column('received_by_id', sa.String(length=32), nullable=True),
    sa.Column('received_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('due_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=True),
    sa.Column('code_sent_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('code_expires_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('code_attempts', sa.Integer(), nullable=False),
    sa.Column('codes_sent', sa.Integer(), nullable=False),
    sa.Column('verified_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('extension_reason', sa.Text(), nullable=True),
    sa.Column('denial_reason', sa.Text(), nullable=True),
    sa.Column('resolution', sa.Text(), nullable=True),
    sa.Column('export_id', sa.String(length=32), nullable=True),
    sa.Column('closed_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['received_by_id'], ['users.id'], name=op.f('fk_privacy_requests_received_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_privacy_requests_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_privacy_requests'))
    )
    with op.batch_alter_table('privacy_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_privacy_requests_closed_at'), ['closed_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_privacy_requests_due_at'), ['due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_privacy_requests_email'), ['email'], unique=False)
        batch_op.create_index(batch_op.f('ix_privacy_requests_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_privacy_requests_user_id'), ['user_id'], unique=False)

    op.create_table('privacy_request_events',
    sa.Column('request_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('actor', sa.String(length=16), nullable=False),
    sa.Column('actor_id', sa.String(length=32), nullable=True),
    sa.Column('from_status', sa.String(length=24), nullable=True),
    sa.Column('to_status', sa.String(length=24), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_privacy_request_events_actor_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['request_id'], ['privacy_requests.id'], name=op.f('fk_privacy_request_events_request_id_privacy_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_privacy_request_events'))
    )
    with op.batch_alter_table('privacy_request_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_privacy_request_events_request_id'), ['request_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('privacy_request_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_privacy_request_events_request_id'))

    op.drop_table('privacy_request_events')
    with op.batch_alter_table('privacy_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_privacy_requests_user_id'))
        batch_op.drop_index(batch_op.f('ix_privacy_requests_status'))
        batch_op.drop_index(batch_op.f('ix_privacy_requests_email'))
        batch_op.drop_index(batch_op.f('ix_privacy_requests_due_at'))
        batch_op.drop_index(batch_op.f('ix_privacy_requests_closed_at'))

    op.drop_table('privacy_requests')
    with op.batch_alter_table('outbound_emails', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbound_emails_user_id'))
        batch_op.drop_index(batch_op.f('ix_outbound_emails_to_address'))
        batch_op.drop_index(batch_op.f('ix_outbound_emails_status'))

    op.drop_table('outbound_emails')
