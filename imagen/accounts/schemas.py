from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from imagen.kit.inputs import Line


class SignupConsents(BaseModel):
    """Left out: the regional default (always off in the EU/EEA, UK and Switzerland)."""

    model_config = ConfigDict(extra="forbid")

    model_improvement: bool | None = None
    marketing_emails: bool | None = None
    analytics: bool | None = None


class SignupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    password: str = Field(max_length=256)
    date_of_birth: date
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2 code")
    accept_policy_version: str
    consents: SignupConsents = SignupConsents()


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Line = Field(max_length=320)
    password: str = Field(max_length=256)
    code: Line | None = Field(default=None, max_length=64,
                              description="with two-factor on: the authenticator's 6-digit code or a recovery code")


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    country: str
    role: str
    created_at: datetime
    consents: dict[str, bool] = {}
    policy_version_accepted: str | None = None
    # After a material policy change: writes are refused until the current version is accepted
    # (POST /api/v1/me/policy-acceptance).
    policy_version_current: str | None = None
    policy_acceptance_required: bool = False
    email_verified_at: datetime | None = None
    # Generation and uploads wait for a verified address (IMAGEN_REQUIRE_EMAIL_VERIFICATION).
    email_verification_required: bool = False
    two_factor_enabled: bool = False


class AuthResponse(BaseModel):
    account: AccountOut
    csrf_token: str


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Line = Field(min_length=1, max_length=100)


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="Shown once; only its hash is stored")


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256)


class SessionOut(BaseModel):
    id: str
    created_at: datetime
    expires_at: datetime
    ip_address: str | None
    user_agent: str | None
    current: bool  # the session making this request


class UserSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

    embed_metadata: bool = Field(description="write A1111's `parameters` text (prompt, seed, model) into downloaded "
                                             "PNGs; off by default")


# ---- emailed links and two-factor (imagen/accounts/links.py, twofactor.py) ---------------------------------------


class PasswordResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Line = Field(min_length=3, max_length=320)


class PasswordResetConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Line = Field(min_length=1, max_length=200, description="the `token` query parameter of the emailed link")
    password: str = Field(max_length=256)


class LinkToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Line = Field(min_length=1, max_length=200, description="the `token` query parameter of the emailed link")


class EmailChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    new_email: EmailStr
    current_password: str = Field(max_length=256)


class PasswordConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(max_length=256, description="your current password")


class TwoFactorCode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Line = Field(min_length=1, max_length=64)


class TwoFactorSetup(BaseModel):
    secret: str = Field(description="base32; enter it in the authenticator, or scan otpauth_uri as a QR code")
    otpauth_uri: str


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(description="shown once; each signs in once without the authenticator")


class TwoFactorStatus(BaseModel):
    enabled: bool
    recovery_codes_left: int
    required: bool = Field(description="this account's role needs it (IMAGEN_REQUIRE_STAFF_2FA)")


class Message(BaseModel):
    detail: str
