"""safety_cases: moderation cases, preserved evidence (legal hold), the action audit, user reports, prompt refusals

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa
import imagen.kit.db


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _id_created() -> list[sa.Column]:
    return [sa.Column("id", sa.String(length=32), nullable=False),
            sa.Column("created_at", imagen.kit.db.UTCDateTime(timezone=True), nullable=False)]


def _case_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["case_id"], ["safety_cases.id"], name=op.f(f"fk_{table}_case_id_safety_cases"),
                                   ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "safety_cases",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("user_email", sa.String(length=320), nullable=True),
        sa.Column("summary", sa.String(length=1000), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=True),
        sa.Column("subject_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("hold_until", imagen.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ncmec_report_id", sa.String(length=64), nullable=True),
        sa.Column("ncmec_error", sa.String(length=1000), nullable=True),
        sa.Column("reported_at", imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
        *_id_created(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safety_cases")),
    )
    for column in ("hold_until", "kind", "status", "user_id"):
        op.create_index(op.f(f"ix_safety_cases_{column}"), "safety_cases", [column], unique=False)

    op.create_table(
        "prompt_refusals",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("field", sa.String(length=32), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        *_id_created(),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_prompt_refusals_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_refusals")),
    )
    op.create_index(op.f("ix_prompt_refusals_user_id"), "prompt_refusals", ["user_id"], unique=False)

    op.create_table(
        "safety_case_actions",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("actor_id", sa.String(length=32), nullable=True),
        sa.Column("actor_email", sa.String(length=320), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("result", sa.String(length=1000), nullable=False),
        *_id_created(),
        _case_fk("safety_case_actions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safety_case_actions")),
    )
    op.create_index(op.f("ix_safety_case_actions_case_id"), "safety_case_actions", ["case_id"], unique=False)

    op.create_table(
        "safety_evidence",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("user_email", sa.String(length=320), nullable=True),
        sa.Column("ip_address", sa.String(length=64), nullable=True),
        sa.Column("event_time", imagen.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("filename", sa.String(length=300), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("md5", sa.String(length=32), nullable=True),
        sa.Column("pdq", sa.String(length=64), nullable=True),
        sa.Column("match", sa.JSON(), nullable=True),
        sa.Column("generation_id", sa.String(length=32), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("negative_prompt", sa.Text(), nullable=True),
        sa.Column("quarantine_blob_key", sa.String(length=300), nullable=True),
        *_id_created(),
        _case_fk("safety_evidence"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safety_evidence")),
    )
    op.create_index(op.f("ix_safety_evidence_case_id"), "safety_evidence", ["case_id"], unique=False)
    op.create_index(op.f("ix_safety_evidence_user_id"), "safety_evidence", ["user_id"], unique=False)

    op.create_table(
        "user_reports",
        sa.Column("case_id", sa.String(length=32), nullable=False),
        sa.Column("reporter_id", sa.String(length=32), nullable=True),
        sa.Column("output_id", sa.String(length=32), nullable=True),
        sa.Column("generation_id", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        *_id_created(),
        _case_fk("user_reports"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_reports")),
    )
    op.create_index(op.f("ix_user_reports_case_id"), "user_reports", ["case_id"], unique=False)
    op.create_index(op.f("ix_user_reports_reporter_id"), "user_reports", ["reporter_id"], unique=False)


def downgrade() -> None:
    for table in ("user_reports", "safety_evidence", "safety_case_actions", "prompt_refusals", "safety_cases"):
        op.drop_table(table)
