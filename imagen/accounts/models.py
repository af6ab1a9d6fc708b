from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from imagen.kit.db import Base, CreatedMixin, IdMixin, UTCDateTime


class User(IdMixin, CreatedMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    date_of_birth: Mapped[date] = mapped_column(Date, nullable=False)
    country: Mapped[str] = mapped_column(String(2), nullable=False)
    role: Mapped[str] = mapped_column(String(16), default="user", nullable=False)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Downloads carry A1111's `parameters` PNG text (prompt, seed, model): off unless the user turns it on (0015).
    embed_metadata: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)
    # Set when the user proves they read mail at this address (a verification link, a password reset) (0016).
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class LoginSession(IdMixin, CreatedMixin, Base):
    """A browser session: the cookie carries a random token, the table only its hash."""

    __tablename__ = "login_sessions"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    csrf_token: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))


class ApiKey(IdMixin, CreatedMixin, Base):
    __tablename__ = "api_keys"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SecurityEvent(IdMixin, CreatedMixin, Base):
    """Sign-ups, logins, logouts and failed logins with IP and user agent (policy §1.2); admins suspending,
    restoring or deleting an account (imagen/accounts/admin.py: one event on the account, one on the admin)."""

    __tablename__ = "security_events"

    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    email: Mapped[str | None] = mapped_column(String(320))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))


class AccountToken(IdMixin, CreatedMixin, Base):
    """An emailed link's token (verify an address, reset a password, confirm a new address): only its HMAC is
    stored; it expires and works once."""

    __tablename__ = "account_tokens"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(24), nullable=False)  # TokenPurpose
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    new_email: Mapped[str | None] = mapped_column(String(320))  # email_change: the address being confirmed
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TotpCredential(CreatedMixin, Base):
    """A user's TOTP secret, encrypted with a key derived from the app secret; `confirmed_at` once a code proved
    the authenticator has it (only then does login ask for codes)."""

    __tablename__ = "totp_credentials"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last 30-second step a code was accepted for: the same code cannot be used twice.
    last_step: Mapped[int | None] = mapped_column(Integer)


class RecoveryCode(IdMixin, CreatedMixin, Base):
    """One-time codes for a lost authenticator (hashed like tokens)."""

    __tablename__ = "recovery_codes"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LoginFailure(IdMixin, CreatedMixin, Base):
    """A refused sign-in (wrong password or code), counted per account and per address for throttling; purged by
    retention soon after its window. The address only as a keyed hash: counting needs equality, nothing more."""

    __tablename__ = "login_failures"

    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    ip_hash: Mapped[str | None] = mapped_column(String(64), index=True)
