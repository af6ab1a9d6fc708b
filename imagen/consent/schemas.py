from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ConsentUpdate(BaseModel):
    """PUT /api/v1/me/consents: any subset of the choices."""

    model_config = ConfigDict(extra="forbid")

    model_improvement: bool | None = None
    marketing_emails: bool | None = None
    analytics: bool | None = None


class ChoiceOut(BaseModel):
    granted: bool
    chosen: bool = Field(description="false: not chosen yet, the regional default applies")
    source: str | None
    policy_version: str | None
    at: datetime | None


class ConsentRecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    purpose: str
    granted: bool
    source: str
    policy_version: str
    at: datetime = Field(validation_alias="created_at")


class PolicyStatusOut(BaseModel):
    current_version: str
    current_published_at: datetime
    current_summary: str | None
    accepted_version: str | None
    acceptance_required: bool


class ConsentsOut(BaseModel):
    current: dict[str, bool] = Field(description="model_improvement, marketing_emails, analytics")
    choices: dict[str, ChoiceOut]
    country: str
    explicit_opt_in: bool = Field(description="EU/EEA, UK, Switzerland: nothing is on until you choose")
    gpc: bool = Field(description="this request carried Sec-GPC: 1")
    analytics_allowed: bool
    policy: PolicyStatusOut
    history: list[ConsentRecordOut] = Field(description="every record, newest first; including policy acceptance")


class PolicyAcceptance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(max_length=32)


class CookieConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    analytics: bool


class CookieConsentOut(BaseModel):
    choice: str | None = Field(description="accepted, declined, or null before the visitor chooses")
    gpc: bool
    analytics_allowed: bool
    essential_cookies: list[str]


class PolicyVersionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=32)
    material: bool = Field(description="true: notify every user and ask them to accept it at their next login")
    summary: str | None = Field(default=None, max_length=2000, description="what changed, shown in the notice")


class PolicyVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: str
    published_at: datetime
    material: bool
    summary: str | None
    text_sha256: str


class PolicyPublished(PolicyVersionOut):
    notified: int = Field(description="users who received the in-app notice")


class MarketingConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text_shown: str = Field(min_length=20, max_length=5000, description="the consent text exactly as shown")
    agree: bool


class MarketingConsentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    output_id: str
    user_id: str
    text_shown: str
    policy_version: str
    created_at: datetime
    withdrawn_at: datetime | None
    marked_at: datetime | None


class MarketingStatusOut(BaseModel):
    output_id: str
    consented: bool
    marked_for_marketing: bool
    consent: MarketingConsentOut | None
    text: str = Field(description="the consent text to show before asking")
