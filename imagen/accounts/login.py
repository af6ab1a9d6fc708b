"""Signing in: throttling (imagen/accounts/throttle.py), the password, suspension, then the second factor."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.accounts.security import verify_password
from imagen.accounts.service import ClientInfo, account_service
from imagen.accounts.throttle import login_throttle
from imagen.accounts.twofactor import two_factor_service
from imagen.kit.config import Settings
from imagen.mail.outbox import Outbox

INCORRECT = "Email or password is incorrect"


@dataclass(frozen=True)
class LoginOutcome:
    user: User | None = None
    problem: str | None = None
    status_code: int = 200  # 401, or 429 with retry_after
    retry_after: int | None = None
    two_factor_required: bool = False


class LoginService:
    def sign_in(self, session: Session, *, settings: Settings, outbox: Outbox, email: str, password: str,
                code: str | None, client: ClientInfo) -> LoginOutcome:
        """Failures are returned, not raised, so the security log and the failure counts commit."""
        user = account_service.get_by_email(session, email)
        user_id = user.id if user else None
        wait = login_throttle.retry_after(session, settings=settings, user_id=user_id, ip_address=client.ip_address)
        if wait is not None:
            # Whatever the password: while paused, guessing gains nothing.
            account_service.log_event(session, kind="login_throttled", client=client, user_id=user_id)
            return LoginOutcome(problem=f"Too many failed sign-ins; try again in {wait} seconds", status_code=429,
                                retry_after=wait)
        password_ok = verify_password(user.password_hash if user else None, password)  # same cost either way
        if user is None or not password_ok:
            # An address with no account is not kept: it may be an erased user's, or someone else's typo.
            account_service.log_event(session, kind="login_failed", client=client, user_id=user_id,
                                      email=user.email if user else None)
            self._failed(session, settings=settings, outbox=outbox, user=user, client=client)
            return LoginOutcome(problem=INCORRECT, status_code=401)
        if user.suspended_at is not None:
            account_service.log_event(session, kind="login_refused_suspended", client=client, user_id=user.id)
            return LoginOutcome(problem="This account is suspended", status_code=401)
        if two_factor_service.enabled(session, user_id=user.id):
            if not code:
                return LoginOutcome(problem="Enter the 6-digit code of your authenticator app (or a recovery code)",
                                    status_code=401, two_factor_required=True)
            how = two_factor_service.verify(session, settings=settings, user=user, code=code)
            if how is None:
                account_service.log_event(session, kind="login_2fa_failed", client=client, user_id=user.id)
                self._failed(session, settings=settings, outbox=outbox, user=user, client=client)
                return LoginOutcome(problem="The two-factor code is incorrect", status_code=401,
                                    two_factor_required=True)
            if how == "recovery_code":
                account_service.log_event(session, kind="login_recovery_code", client=client, user_id=user.id)
        account_service.log_event(session, kind="login", client=client, user_id=user.id)
        return LoginOutcome(user=user)

    def _failed(self, session: Session, *, settings: Settings, outbox: Outbox, user: User | None,
                client: ClientInfo) -> None:
        count = login_throttle.record(session, settings=settings, user_id=user.id if user else None,
                                      ip_address=client.ip_address)
        if user is not None and count == settings.login_max_failures_per_account:
            # Told once per pause: the failure that starts it.
            minutes = settings.login_window_minutes
            outbox.queue(session, to=user.email, user_id=user.id, kind="account.login_paused",
                         subject="Sign-ins to your IMAGEN account were paused",
                         text=f"There were {count} failed attempts to sign in to your IMAGEN account within "
                              f"{minutes:g} minutes, the last from the address {client.ip_address or 'unknown'}. "
                              f"Sign-ins are paused for up to {minutes:g} minutes. If this was not you, choose a new "
                              "password (\"Forgot your password?\" on the sign-in page) and turn on two-factor "
                              "authentication on your account page.")


login_service = LoginService()
