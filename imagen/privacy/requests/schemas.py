from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

Kind = Literal["access", "deletion", "correction", "restriction", "objection", "opt_out"]
Status = Literal["received", "identity_unverified", "pending", "in_progress", "completed", "denied", "extended",
                 "canceled"]


class PublicRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    kind: Kind
    details: str = Field(default="", max_length=5000)


class AdminRequestCreate(PublicRequestCreate):
    channel: Literal["email", "letter", "phone"] = Field(description="how the request reached the operator")
    received_at: datetime | None = Field(default=None, description="when it was received (the deadline runs "
                                                                   "from here); now when omitted")
    send_code: bool = Field(default=True, description="email the requester a verification code")

    @field_validator("received_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """A time without a zone is taken as UTC."""
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=20)


class TransitionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status
    note: str | None = Field(default=None, max_length=5000,
                             description="required as the reason when denying or extending")
    days: int | None = Field(default=None, ge=1, le=366, description="extension only: days added to the due date")


class PublicRequestOut(BaseModel):
    id: str
    kind: str
    status: str
    received_at: datetime
    due_at: datetime
    verification: Literal["code_sent", "verified"]


class RequestEventOut(BaseModel):
    at: datetime
    actor: str
    actor_email: str | None
    from_status: str | None
    to_status: str
    note: str | None


class PrivacyRequestOut(BaseModel):
    id: str
    kind: str
    status: str
    email: str
    details: str
    channel: str
    user_id: str | None
    received_by: str | None
    received_at: datetime
    due_at: datetime
    days_left: int | None
    overdue: bool
    due_soon: bool
    verified_at: datetime | None
    closed_at: datetime | None
    extension_reason: str | None
    denial_reason: str | None
    resolution: str | None
    export_id: str | None
    allowed_transitions: list[str]


class PrivacyRequestDetail(PrivacyRequestOut):
    events: list[RequestEventOut]


class StatusChange(BaseModel):
    at: datetime
    status: str


class MyPrivacyRequestOut(BaseModel):
    id: str
    kind: str
    status: str
    details: str
    received_at: datetime
    due_at: datetime
    closed_at: datetime | None
    extension_reason: str | None
    denial_reason: str | None
    resolution: str | None
    export_id: str | None
    history: list[StatusChange]
