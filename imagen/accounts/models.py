from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, String, false
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
    """Sign-ups, logins, logouts and failed logins with IP and user agent (policy §1.2)."""

    __tablename__ = "security_events"

    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    email: Mapped[str | None] = mapped_column(String(320))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
