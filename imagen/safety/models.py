"""Moderation: cases, the evidence they preserve, the audit trail of actions, user reports, prompt refusals.

Cases and evidence are a legal hold: they name the account by a plain id and a copied email (no foreign key to
`users`), so they outlive an account erasure until `hold_until`, when the retention run purges them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime, utcnow

CASE_KINDS = ("hash_match", "user_report", "prompt_flag", "nsfw")
# report_failed: NCMEC could not be reached or answered an error; tried again later (automatic mode, backing off).
# report_refused: the package itself was refused (by the schema check or NCMEC: 4100/4110/4200); a moderator fixes
# what `ncmec_error` names and reports again. Nothing retries it on its own.
CASE_STATUSES = ("open", "dismissed", "removed", "suspended", "restored", "reported", "report_failed",
                 "report_refused")
CASE_ACTIONS = ("dismiss", "remove", "suspend", "restore", "report", "preserve", "escalate")


class SafetyCase(IdMixin, CreatedMixin, Base):
    __tablename__ = "safety_cases"

    kind: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(16), default="open", nullable=False, index=True)
    user_id: Mapped[str | None] = mapped_column(String(32), index=True)  # the account concerned; no FK (hold)
    user_email: Mapped[str | None] = mapped_column(String(320))
    summary: Mapped[str] = mapped_column(String(1000), default="", nullable=False)
    subject_type: Mapped[str | None] = mapped_column(String(32))  # asset_upload, model_upload, output, generation
    subject_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    hold_until: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    ncmec_report_id: Mapped[str | None] = mapped_column(String(64))
    ncmec_error: Mapped[str | None] = mapped_column(String(1000))
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Every submission attempt, oldest first: {"at", "by", "report_id", "state", "code", "error"}; "state" is
    # finished, retracted, open (a retract failed), finish_unconfirmed (the /finish answer was lost), not_sent,
    # gone (NCMEC dropped it). A later attempt settles an earlier open or unconfirmed one first (never two reports).
    ncmec_attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    ncmec_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the scheduled pass's next try
    ncmec_escalation: Mapped[str | None] = mapped_column(String(3000))  # escalateToHighPriority: the reason

    evidence: Mapped[list[Evidence]] = relationship(
        back_populates="case", cascade="all, delete-orphan", passive_deletes=True, order_by="Evidence.created_at")
    actions: Mapped[list[CaseAction]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="CaseAction.created_at")


class Evidence(IdMixin, CreatedMixin, Base):
    """One preserved item: the account data at the time, the hashes, the match, and the encrypted bytes."""

    __tablename__ = "safety_evidence"

    case_id: Mapped[str] = mapped_column(ForeignKey("safety_cases.id", ondelete="CASCADE"), nullable=False,
                                         index=True)
    source: Mapped[str] = mapped_column(String(32), nullable=False)  # upload, model_upload, output, report, prompt
    user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    user_email: Mapped[str | None] = mapped_column(String(320))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    # What ip_address/event_time record: "Upload" (the upload's own request), "Login" or "Registration" (the
    # session a generation was submitted from); None on evidence recorded before this was kept.
    ip_event: Mapped[str | None] = mapped_column(String(16))
    event_time: Mapped[datetime | None] = mapped_column(UTCDateTime())  # of the upload, or of that login
    filename: Mapped[str | None] = mapped_column(String(300))
    content_type: Mapped[str | None] = mapped_column(String(100))
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    md5: Mapped[str | None] = mapped_column(String(32))
    pdq: Mapped[str | None] = mapped_column(String(64))
    match: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    generation_id: Mapped[str | None] = mapped_column(String(32))
    prompt: Mapped[str | None] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    quarantine_blob_key: Mapped[str | None] = mapped_column(String(300))  # encrypted (quarantine.py)

    case: Mapped[SafetyCase] = relationship(back_populates="evidence")


class CaseAction(IdMixin, CreatedMixin, Base):
    """The audit trail: every moderator action on a case (and what the system did when it opened)."""

    __tablename__ = "safety_case_actions"

    case_id: Mapped[str] = mapped_column(ForeignKey("safety_cases.id", ondelete="CASCADE"), nullable=False,
                                         index=True)
    actor_id: Mapped[str | None] = mapped_column(String(32))  # None: the system
    actor_email: Mapped[str | None] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    note: Mapped[str] = mapped_column(String(2000), default="", nullable=False)
    result: Mapped[str] = mapped_column(String(1000), default="", nullable=False)


class UserReport(IdMixin, CreatedMixin, Base):
    """"Report this image": who reported what, and why."""

    __tablename__ = "user_reports"

    case_id: Mapped[str] = mapped_column(ForeignKey("safety_cases.id", ondelete="CASCADE"), nullable=False,
                                         index=True)
    reporter_id: Mapped[str | None] = mapped_column(String(32), index=True)
    output_id: Mapped[str | None] = mapped_column(String(32))
    generation_id: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(2000), default="", nullable=False)


class PromptRefusalRecord(IdMixin, CreatedMixin, Base):
    """A prompt the prompt rules refused; repeated refusals open a prompt_flag case."""

    __tablename__ = "prompt_refusals"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    rule_id: Mapped[str] = mapped_column(String(100), nullable=False)
    category: Mapped[str] = mapped_column(String(100), nullable=False)
    field: Mapped[str] = mapped_column(String(32), nullable=False)
    prompt: Mapped[str] = mapped_column(Text, default="", nullable=False)
    negative_prompt: Mapped[str] = mapped_column(Text, default="", nullable=False)
