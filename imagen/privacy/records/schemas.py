from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

Severity = Literal["low", "medium", "high", "critical"]
Decision = Literal["pending", "complied", "partially_complied", "refused"]


class AffectedLookup(BaseModel):
    """Who a breach affected: listed ids, or everyone matching all the criteria given."""

    user_ids: list[str] | None = Field(default=None, description="exactly these accounts")
    all_users: bool = Field(default=False, description="every account")
    categories: list[str] = Field(default_factory=list, description="users with data in any of these categories")
    created_from: AwareDatetime | None = None
    created_to: AwareDatetime | None = None
    active_from: AwareDatetime | None = Field(default=None, description="logged in or generated in the window")
    active_to: AwareDatetime | None = None


class LookupOut(BaseModel):
    count: int
    user_ids: list[str]


class BreachCreate(BaseModel):
    detected_at: AwareDatetime
    description: str = Field(min_length=1, max_length=20_000)
    categories: list[str] = Field(min_length=1, description="data categories involved")
    severity: Severity
    consequences: str = ""
    measures: str = ""
    affected: AffectedLookup = Field(default_factory=AffectedLookup)


class BreachUpdate(BaseModel):
    description: str | None = Field(default=None, min_length=1)
    severity: Severity | None = None
    consequences: str | None = None
    measures: str | None = None
    regulator_notified_at: AwareDatetime | None = None
    regulator_reference: str | None = Field(default=None, max_length=200)
    users_notified_at: AwareDatetime | None = None
    closed_at: AwareDatetime | None = None


class BreachOut(BaseModel):
    id: str
    detected_at: datetime
    description: str
    categories: list[str]
    severity: str
    consequences: str
    measures: str
    lookup: dict[str, Any]
    affected_count: int
    affected_user_ids: list[str]
    users_notified: int
    regulator_deadline: datetime
    deadline_passed: bool
    hours_left: float | None
    regulator_notified_at: datetime | None
    regulator_reference: str
    users_notified_at: datetime | None
    closed_at: datetime | None
    created_at: datetime


class NotifyUsers(BaseModel):
    title: str | None = Field(default=None, max_length=200)
    body: str | None = Field(default=None, max_length=5000)


class NotifyUsersOut(BaseModel):
    notified: int
    already_notified: int
    users_notified_at: datetime | None


# Text the log cannot do without: blank (or only spaces) is refused.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Scope = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]


class LegalRequestCreate(BaseModel):
    received_at: AwareDatetime
    authority: Name
    instrument: Name = Field(description="legal basis: subpoena, court order, ...")
    reference: str = Field(default="", max_length=200)
    scope: Scope = Field(description="what was asked for")
    user_ids: list[str] = Field(default_factory=list)
    decision: Decision = "pending"
    decision_reason: str = ""
    disclosed: str = ""
    responded_at: AwareDatetime | None = None


class LegalRequestUpdate(BaseModel):
    decision: Decision | None = None
    decision_reason: str | None = None
    disclosed: str | None = None
    responded_at: AwareDatetime | None = None


class LegalRequestOut(BaseModel):
    id: str
    received_at: datetime
    authority: str
    instrument: str
    reference: str
    scope: str
    affected_count: int
    affected_user_ids: list[str]
    decision: str
    decision_reason: str
    disclosed: str
    responded_at: datetime | None
    created_at: datetime


class TransferNoticeCreate(BaseModel):
    acquirer: str = Field(min_length=1, max_length=300)
    effective_on: date
    summary: str = Field(default="", max_length=5000)


class TransferNoticeOut(BaseModel):
    id: str
    acquirer: str
    effective_on: date
    summary: str
    recipients: int
    notified_at: datetime
