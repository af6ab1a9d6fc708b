"""Login throttling: failed sign-ins counted per account and per client address in a sliding window.

Once an account has `IMAGEN_LOGIN_MAX_FAILURES_PER_ACCOUNT` failures within `IMAGEN_LOGIN_WINDOW_MINUTES` every
attempt on it gets a 429 with Retry-After, whatever the password, until enough failures age out of the window;
the same for an address and `IMAGEN_LOGIN_MAX_FAILURES_PER_IP`. Throttled attempts are not counted as failures, so
the pause ends. The pauses grow for whoever keeps guessing: with 2, 3, 4... times the limit of failures in the last
day, the pause after the latest failure is 2, 4, 8... windows long (at most a day). The counters are rows
(`login_failures`), so every web process sees the same counts; they keep the address only as a keyed hash, and
retention deletes them after `IMAGEN_RETENTION_LOGIN_FAILURES_DAYS` (keep it at 1 day or more for the growth).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from imagen.accounts.models import LoginFailure
from imagen.accounts.security import keyed_hash
from imagen.kit.config import Settings
from imagen.kit.db import utcnow

GROWTH_HORIZON = timedelta(days=1)  # failures this old still lengthen the pause
MAX_LEVEL = 8  # rows read per check: at most this many times the limit


def address_hash(settings: Settings, ip_address: str | None) -> str | None:
    return keyed_hash(settings.resolved_secret_key(), "login-address", ip_address) if ip_address else None


class LoginThrottle:
    def _wait(self, session: Session, where: ColumnElement[bool], limit: int, window: timedelta,
              now: datetime) -> float:
        """Seconds until this account or address may try again (0: now): fewer than `limit` failures must remain in
        the window, and a repeat offender's growing pause must have passed."""
        recent = list(session.scalars(
            select(LoginFailure.created_at).where(where, LoginFailure.created_at > now - GROWTH_HORIZON)
            .order_by(LoginFailure.created_at.desc()).limit(limit * MAX_LEVEL)))
        in_window = [t for t in recent if t > now - window]
        wait = (in_window[limit - 1] + window - now).total_seconds() if len(in_window) >= limit else 0.0
        level = len(recent) // limit
        if level >= 2:
            pause = min(window * 2 ** (level - 1), GROWTH_HORIZON)
            wait = max(wait, (recent[0] + pause - now).total_seconds())
        return wait

    def retry_after(self, session: Session, *, settings: Settings, user_id: str | None,
                    ip_address: str | None) -> int | None:
        """Seconds the client must wait before this account or address may try again; None: it may try now."""
        now, window = utcnow(), timedelta(minutes=settings.login_window_minutes)
        waits = [0.0]
        if user_id is not None:
            waits.append(self._wait(session, LoginFailure.user_id == user_id,
                                    settings.login_max_failures_per_account, window, now))
        if ip_address:
            waits.append(self._wait(session, LoginFailure.ip_hash == address_hash(settings, ip_address),
                                    settings.login_max_failures_per_ip, window, now))
        wait = max(waits)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def record(self, session: Session, *, settings: Settings, user_id: str | None, ip_address: str | None) -> int:
        """Count a failure; returns the account's failures in the window, this one included (0 without one)."""
        session.add(LoginFailure(user_id=user_id, ip_hash=address_hash(settings, ip_address)))
        session.flush()
        if user_id is None:
            return 0
        since = utcnow() - timedelta(minutes=settings.login_window_minutes)
        return session.scalar(select(func.count()).select_from(LoginFailure)
                              .where(LoginFailure.user_id == user_id, LoginFailure.created_at > since)) or 0

    def forgive_account(self, session: Session, *, user_id: str) -> None:
        """After the owner proved their mailbox (a password reset): the account's pause ends; the failures still
        count against the addresses they came from."""
        session.execute(update(LoginFailure).where(LoginFailure.user_id == user_id).values(user_id=None))


login_throttle = LoginThrottle()
