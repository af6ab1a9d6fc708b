"""TOTP two-factor sign-in (pyotp) with one-time recovery codes.

Enrolment is two steps: `begin` stores a new secret (encrypted) and shows it once as an otpauth:// URI; `confirm`
takes a code from the authenticator, turns 2FA on and returns ten recovery codes (only their HMACs are stored).
From then on login needs a current code or an unused recovery code. A code is accepted once (its 30-second step
is remembered) and one step of clock drift either way is allowed.
"""

from __future__ import annotations

import secrets

import pyotp
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from imagen.accounts.models import RecoveryCode, TotpCredential, User
from imagen.accounts.security import decrypt_secret, encrypt_secret, keyed_hash, verify_password
from imagen.accounts.service import ClientInfo, account_service
from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.kit.errors import BadRequest, field_error

RECOVERY_CODES = 10
ISSUER = "IMAGEN"


def recovery_hash(settings: Settings, user_id: str, code: str) -> str:
    normalized = "".join(code.split()).replace("-", "").lower()
    return keyed_hash(settings.resolved_secret_key(), f"recovery-code:{user_id}", normalized)


def new_recovery_code() -> str:
    raw = secrets.token_hex(5)  # 40 bits, shown as xxxxx-xxxxx
    return f"{raw[:5]}-{raw[5:]}"


class TwoFactorService:
    def enabled(self, session: Session, *, user_id: str) -> bool:
        cred = session.get(TotpCredential, user_id)
        return cred is not None and cred.confirmed_at is not None

    def _check_password(self, session: Session, *, user: User, password: str, client: ClientInfo) -> None:
        if not verify_password(user.password_hash, password):
            account_service.log_event(session, kind="2fa_password_failed", client=client, user_id=user.id)
            raise field_error("password", "is not your current password")

    def begin(self, session: Session, *, settings: Settings, user: User, password: str,
              client: ClientInfo) -> tuple[str, str]:
        """(secret, otpauth URI) of a new, not yet confirmed enrolment; refused while 2FA is on."""
        self._check_password(session, user=user, password=password, client=client)
        cred = session.get(TotpCredential, user.id)
        if cred is not None and cred.confirmed_at is not None:
            raise BadRequest("Two-factor authentication is already on; turn it off first to enrol a new device")
        secret = pyotp.random_base32()
        encrypted = encrypt_secret(settings.resolved_secret_key(), secret)
        if cred is None:
            session.add(TotpCredential(user_id=user.id, secret_encrypted=encrypted))
        else:
            cred.secret_encrypted, cred.last_step = encrypted, None
        session.flush()
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
        return secret, uri

    def confirm(self, session: Session, *, settings: Settings, user: User, code: str,
                client: ClientInfo) -> list[str]:
        cred = session.get(TotpCredential, user.id)
        if cred is None or cred.confirmed_at is not None:
            raise BadRequest("Start the enrolment first (POST /api/v1/me/2fa/setup)")
        if not self._accept_totp(settings, cred, code):
            raise field_error("code", "is not the current code of your authenticator")
        cred.confirmed_at = utcnow()
        account_service.log_event(session, kind="2fa_enabled", client=client, user_id=user.id)
        return self.new_recovery_codes(session, settings=settings, user=user)

    def new_recovery_codes(self, session: Session, *, settings: Settings, user: User) -> list[str]:
        """Ten fresh codes; the old ones stop working."""
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        session.add_all(RecoveryCode(user_id=user.id, code_hash=recovery_hash(settings, user.id, c)) for c in codes)
        session.flush()
        return codes

    def disable(self, session: Session, *, user: User, password: str, client: ClientInfo) -> None:
        self._check_password(session, user=user, password=password, client=client)
        session.execute(delete(TotpCredential).where(TotpCredential.user_id == user.id))
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        account_service.log_event(session, kind="2fa_disabled", client=client, user_id=user.id)

    def remaining_recovery_codes(self, session: Session, *, user_id: str) -> int:
        return session.scalar(select(func.count()).select_from(RecoveryCode).where(
            RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))) or 0

    def verify(self, session: Session, *, settings: Settings, user: User, code: str) -> str | None:
        """How a sign-in code was accepted ("totp" or "recovery_code"), or None. A recovery code is used up."""
        cred = session.get(TotpCredential, user.id)
        if cred is None or cred.confirmed_at is None:
            return None
        if self._accept_totp(settings, cred, code):
            return "totp"
        used = session.execute(update(RecoveryCode).where(
            RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None),
            RecoveryCode.code_hash == recovery_hash(settings, user.id, code)).values(used_at=utcnow())).rowcount
        return "recovery_code" if used else None

    def _accept_totp(self, settings: Settings, cred: TotpCredential, code: str) -> bool:
        code = "".join(code.split())
        if not (code.isdigit() and len(code) == 6):
            return False
        secret = decrypt_secret(settings.resolved_secret_key(), cred.secret_encrypted)
        if secret is None:
            return False
        totp = pyotp.TOTP(secret)
        now_step = totp.timecode(utcnow())
        for step in (now_step, now_step - 1, now_step + 1):
            if secrets.compare_digest(totp.generate_otp(step), code):
                if cred.last_step is not None and step <= cred.last_step:
                    return False  # already used (replay)
                cred.last_step = step
                return True
        return False


two_factor_service = TwoFactorService()
