"""consent_policy: policy version summaries, marketing consent per output, minor reports (issue 4)

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa
import imagen.kit.db


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('minor_reports',
    sa.Column('reporter_email', sa.String(length=320), nullable=True),
    sa.Column('subject_email', sa.String(length=320), nullable=True),
    sa.Column('subject_reference', sa.String(length=64), nullable=True),
    sa.Column('subject_user_id', sa.String(length=32), nullable=True),
    sa.Column('details', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('resolved_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=32), nullable=True),
    sa.Column('resolution', sa.Text(), nullable=True),
    sa.Column('erasure_ref', sa.String(length=64), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['resolved_by'], ['users.id'], name=op.f('fk_minor_reports_resolved_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['subject_user_id'], ['users.id'], name=op.f('fk_minor_reports_subject_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_minor_reports'))
    )
    with op.batch_alter_table('minor_reports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_minor_reports_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_minor_reports_subject_user_id'), ['subject_user_id'], unique=False)

    op.create_table('output_marketing_consents',
    sa.Column('output_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('text_shown', sa.Text(), nullable=False),
    sa.Column('policy_version', sa.String(length=32), nullable=False),
    sa.Column('withdrawn_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('marked_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('marked_by', sa.String(length=32), nullable=True),
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['marked_by'], ['users.id'], name=op.f('fk_output_marketing_consents_marked_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['output_id'], ['outputs.id'], name=op.f('fk_output_marketing_consents_output_id_outputs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['policy_version'], ['policy_versions.version'], name=op.f('fk_output_marketing_consents_policy_version_policy_versions')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_output_marketing_consents_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_output_marketing_consents'))
    )
    with op.batch_alter_table('output_marketing_consents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_output_marketing_consents_output_id'), ['output_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_output_marketing_consents_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('summary', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.drop_column('summary')

    with op.batch_alter_table('output_marketing_consents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_output_marketing_consents_user_id'))
        batch_op.drop_index(batch_op.f('ix_output_marketing_consents_output_id'))

    op.drop_table('output_marketing_consents')
    with op.batch_alter_table('minor_reports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_minor_reports_subject_user_id'))
        batch_op.drop_index(batch_op.f('ix_minor_reports_status'))

    op.drop_table('minor_reports')
