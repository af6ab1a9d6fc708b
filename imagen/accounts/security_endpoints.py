"""Emailed links (verification, password reset, email change) and two-factor enrolment."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from imagen.accounts.http import STAFF_ROLES, ClientDep, CurrentUser
from imagen.accounts.links import account_link_service
from imagen.accounts.schemas import (
    EmailChange,
    LinkToken,
    Message,
    PasswordConfirm,
    PasswordResetConfirm,
    PasswordResetRequest,
    RecoveryCodes,
    TwoFactorCode,
    TwoFactorSetup,
    TwoFactorStatus,
)
from imagen.accounts.security import verify_password
from imagen.accounts.twofactor import two_factor_service
from imagen.kit.errors import field_error
from imagen.kit.http import ServicesDep, SessionDep, SettingsDep, limit_sender
from imagen.kit.inputs import normalize_email
from imagen.kit.tasks import enqueue_after_commit
from imagen.mail.http import OutboxDep

router = APIRouter(prefix="/api/v1", tags=["accounts"])

RESET_ANSWER = ("If an account uses this address, a link to choose a new password is on its way; it works once, "
                "for a limited time")


@router.post("/auth/password-reset", status_code=status.HTTP_202_ACCEPTED, response_model=Message)
def request_password_reset(data: PasswordResetRequest, request: Request, session: SessionDep,
                           services: ServicesDep) -> Message:
    """Always 202, whether or not an account uses the address: the lookup and the mail happen in the background
    (`accounts.password_reset`), so known and unknown addresses take the same path here."""
    limit_sender(request, "password_reset", email=data.email)
    enqueue_after_commit(session, services.tasks, "accounts.password_reset", normalize_email(data.email))
    return Message(detail=RESET_ANSWER)


@router.post("/auth/password-reset/confirm", status_code=status.HTTP_204_NO_CONTENT)
def confirm_password_reset(data: PasswordResetConfirm, session: SessionDep, settings: SettingsDep,
                           outbox: OutboxDep, client: ClientDep) -> None:
    """Set the new password; every signed-in browser is signed out and the owner is told by email."""
    account_link_service.reset_password(session, settings=settings, outbox=outbox, token=data.token,
                                        password=data.password, client=client)


@router.post("/auth/verify-email", response_model=Message)
def verify_email(data: LinkToken, session: SessionDep, settings: SettingsDep, outbox: OutboxDep,
                 client: ClientDep) -> Message:
    """Open a verification link, or the link that confirms a new address (the old one is told)."""
    user = account_link_service.verify_email(session, settings=settings, outbox=outbox, token=data.token,
                                             client=client)
    return Message(detail=f"{user.email} is confirmed as your email address")


@router.post("/me/verify-email", status_code=status.HTTP_202_ACCEPTED, response_model=Message)
def resend_verification(user: CurrentUser, request: Request, session: SessionDep, settings: SettingsDep,
                        outbox: OutboxDep) -> Message:
    """A new verification link (the older ones stop working)."""
    if user.email_verified_at is not None:
        return Message(detail=f"{user.email} is already confirmed")
    limit_sender(request, "verify_email", email=user.email)
    account_link_service.send_verification(session, settings=settings, outbox=outbox, user=user)
    return Message(detail=f"A new confirmation link was sent to {user.email}")


@router.post("/me/email", status_code=status.HTTP_202_ACCEPTED, response_model=Message)
def change_email(data: EmailChange, user: CurrentUser, request: Request, session: SessionDep,
                 settings: SettingsDep, outbox: OutboxDep, client: ClientDep) -> Message:
    """Needs the current password; the new address is used once its emailed link is opened."""
    if not verify_password(user.password_hash, data.current_password):
        raise field_error("current_password", "is not your current password")
    limit_sender(request, "email_change", email=user.email)
    account_link_service.request_email_change(session, settings=settings, outbox=outbox, user=user,
                                              new_email=str(data.new_email), client=client)
    return Message(detail=f"Open the link we sent to {normalize_email(str(data.new_email))} to confirm it")


# ---- two-factor ----------------------------------------------------------------------------------------------------


@router.get("/me/2fa", response_model=TwoFactorStatus)
def two_factor_status(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> TwoFactorStatus:
    return TwoFactorStatus(enabled=two_factor_service.enabled(session, user_id=user.id),
                           recovery_codes_left=two_factor_service.remaining_recovery_codes(session, user_id=user.id),
                           required=settings.require_staff_2fa and user.role in STAFF_ROLES)


@router.post("/me/2fa/setup", response_model=TwoFactorSetup)
def two_factor_setup(data: PasswordConfirm, user: CurrentUser, session: SessionDep, settings: SettingsDep,
                     client: ClientDep) -> TwoFactorSetup:
    """Step 1: a new secret for the authenticator (needs the password); 2FA is on only after step 2."""
    secret, uri = two_factor_service.begin(session, settings=settings, user=user, password=data.password,
                                           client=client)
    return TwoFactorSetup(secret=secret, otpauth_uri=uri)


@router.post("/me/2fa/confirm", response_model=RecoveryCodes)
def two_factor_confirm(data: TwoFactorCode, user: CurrentUser, session: SessionDep, settings: SettingsDep,
                       client: ClientDep) -> RecoveryCodes:
    """Step 2: a current code turns 2FA on; the answer holds the recovery codes, shown this once."""
    codes = two_factor_service.confirm(session, settings=settings, user=user, code=data.code, client=client)
    return RecoveryCodes(recovery_codes=codes)


@router.post("/me/2fa/recovery-codes", response_model=RecoveryCodes)
def two_factor_new_codes(data: TwoFactorCode, user: CurrentUser, session: SessionDep,
                         settings: SettingsDep) -> RecoveryCodes:
    """Ten new recovery codes for a current authenticator code; the old ones stop working."""
    if two_factor_service.verify(session, settings=settings, user=user, code=data.code) != "totp":
        raise field_error("code", "is not the current code of your authenticator")
    return RecoveryCodes(recovery_codes=two_factor_service.new_recovery_codes(session, settings=settings, user=user))


@router.post("/me/2fa/disable", status_code=status.HTTP_204_NO_CONTENT)
def two_factor_disable(data: PasswordConfirm, user: CurrentUser, session: SessionDep, client: ClientDep) -> None:
    two_factor_service.disable(session, user=user, password=data.password, client=client)
