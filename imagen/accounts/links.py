"""Emailed links: verify an address, reset a password, confirm a new address.

The link carries a random token as its `token` query parameter; the table keeps only its HMAC (keyed with the app
secret). A link expires, works once (a conditional update claims it, so two clicks cannot both win), and a newer
link of the same kind replaces the older ones. Mail is queued in the caller's transaction (imagen/mail/outbox.py).
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from urllib.parse import urlencode

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from imagen.accounts.models import AccountToken, LoginSession, User
from imagen.accounts.security import hash_password, keyed_hash, new_token
from imagen.accounts.service import ClientInfo, account_service, password_problem
from imagen.accounts.throttle import login_throttle
from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.kit.errors import BadRequest, Conflict, field_error
from imagen.kit.inputs import normalize_email
from imagen.mail.outbox import Outbox

RESETS_PER_HOUR = 3  # reset mails per account; more requests are answered the same, and send nothing


class LinkPurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"
    EMAIL_CHANGE = "email_change"


PAGES = {LinkPurpose.VERIFY_EMAIL: "/verify-email", LinkPurpose.EMAIL_CHANGE: "/verify-email",
         LinkPurpose.PASSWORD_RESET: "/reset-password"}


def link_hash(settings: Settings, token: str) -> str:
    return keyed_hash(settings.resolved_secret_key(), "account-link", token)


class AccountLinkService:
    # ---- issuing ---------------------------------------------------------------------------------------------------

    def issue(self, session: Session, *, settings: Settings, user: User, purpose: LinkPurpose, ttl: timedelta,
              new_email: str | None = None) -> str:
        """A new link's URL; older unused links of the same purpose stop working."""
        now = utcnow()
        session.execute(update(AccountToken).where(AccountToken.user_id == user.id, AccountToken.purpose == purpose,
                                                   AccountToken.used_at.is_(None), AccountToken.expires_at > now)
                        .values(expires_at=now))
        token = new_token()
        session.add(AccountToken(user_id=user.id, purpose=purpose, token_hash=link_hash(settings, token),
                                 new_email=new_email, expires_at=utcnow() + ttl))
        session.flush()
        return f"{settings.base_url.rstrip('/')}{PAGES[purpose]}?{urlencode({'token': token})}"

    def send_verification(self, session: Session, *, settings: Settings, outbox: Outbox, user: User) -> None:
        hours = settings.email_verification_ttl_hours
        url = self.issue(session, settings=settings, user=user, purpose=LinkPurpose.VERIFY_EMAIL,
                         ttl=timedelta(hours=hours))
        outbox.queue(session, to=user.email, user_id=user.id, kind="account.verify_email",
                     subject="Confirm your email address",
                     text=f"Confirm that this is your email address for IMAGEN by opening this link:\n\n{url}\n\n"
                          f"The link works once, for {hours:g} hours. If you did not sign up, ignore this email.")

    def send_password_reset(self, session: Session, *, settings: Settings, outbox: Outbox, email: str) -> bool:
        """The background half of a reset request (`accounts.password_reset`): the request itself answers the same
        for every address, so the lookup happens here. False when nothing was sent."""
        user = account_service.get_by_email(session, email)
        if user is None or user.suspended_at is not None:
            return False
        recent = session.scalar(select(func.count()).select_from(AccountToken).where(
            AccountToken.user_id == user.id, AccountToken.purpose == LinkPurpose.PASSWORD_RESET,
            AccountToken.created_at > utcnow() - timedelta(hours=1)))
        if (recent or 0) >= RESETS_PER_HOUR:
            return False
        minutes = settings.password_reset_ttl_minutes
        url = self.issue(session, settings=settings, user=user, purpose=LinkPurpose.PASSWORD_RESET,
                         ttl=timedelta(minutes=minutes))
        outbox.queue(session, to=user.email, user_id=user.id, kind="account.password_reset",
                     subject="Reset your IMAGEN password",
                     text=f"Someone asked to reset the password of your IMAGEN account. To choose a new password, "
                          f"open this link:\n\n{url}\n\nThe link works once, for {minutes:g} minutes. If it was not "
                          "you, ignore this email: your password stays as it is.")
        return True

    def request_email_change(self, session: Session, *, settings: Settings, outbox: Outbox, user: User,
                             new_email: str, client: ClientInfo) -> None:
        """Mail a confirmation link to the new address; the account keeps its address until it is opened."""
        new_email = normalize_email(new_email)
        if new_email == user.email:
            raise field_error("new_email", "is already your email address")
        if account_service.get_by_email(session, new_email) is not None:
            raise Conflict("An account with this email already exists")
        hours = settings.email_verification_ttl_hours
        url = self.issue(session, settings=settings, user=user, purpose=LinkPurpose.EMAIL_CHANGE,
                         ttl=timedelta(hours=hours), new_email=new_email)
        outbox.queue(session, to=new_email, user_id=user.id, kind="account.email_change",
                     subject="Confirm your new email address",
                     text=f"Confirm {new_email} as the new email address of your IMAGEN account by opening this "
                          f"link:\n\n{url}\n\nThe link works once, for {hours:g} hours. Until then your account "
                          "keeps its current address. If you did not ask for this, ignore this email.")
        account_service.log_event(session, kind="email_change_requested", client=client, user_id=user.id)

    # ---- using -----------------------------------------------------------------------------------------------------

    def valid(self, session: Session, *, settings: Settings, token: str, purposes: tuple[LinkPurpose, ...]
              ) -> AccountToken:
        """The link's row while it may still be used; a 400 saying why when it is unknown, used or expired."""
        row = session.scalars(select(AccountToken).where(AccountToken.token_hash == link_hash(settings, token))
                              ).first()
        if row is None or row.purpose not in purposes:
            raise BadRequest("This link is not valid (it may have been replaced by a newer one); ask for a new one")
        if row.used_at is not None:
            raise BadRequest("This link was already used; ask for a new one if you still need it")
        if row.expires_at <= utcnow():
            raise BadRequest("This link has expired; ask for a new one")
        return row

    def claim(self, session: Session, *, settings: Settings, token: str, purposes: tuple[LinkPurpose, ...]
              ) -> AccountToken:
        """`valid`, then used up: a conditional update, so of two requests with the same link one wins."""
        row = self.valid(session, settings=settings, token=token, purposes=purposes)
        claimed = session.execute(update(AccountToken).where(AccountToken.id == row.id, AccountToken.used_at.is_(None))
                                  .values(used_at=utcnow())).rowcount
        if not claimed:
            raise BadRequest("This link was already used; ask for a new one if you still need it")
        session.refresh(row)
        return row

    def verify_email(self, session: Session, *, settings: Settings, outbox: Outbox, token: str,
                     client: ClientInfo) -> User:
        """Open a verification or email-change link."""
        row = self.claim(session, settings=settings, token=token,
                         purposes=(LinkPurpose.VERIFY_EMAIL, LinkPurpose.EMAIL_CHANGE))
        user = session.get(User, row.user_id)
        assert user is not None  # tokens go with their user (ON DELETE CASCADE)
        if row.purpose == LinkPurpose.EMAIL_CHANGE and row.new_email:
            if account_service.get_by_email(session, row.new_email) is not None:
                raise Conflict("An account with this email already exists")
            old = user.email
            user.email = row.new_email
            outbox.queue(session, to=old, user_id=user.id, kind="account.email_changed",
                         subject="Your IMAGEN email address was changed",
                         text=f"The email address of your IMAGEN account was changed to {row.new_email}. If this "
                              f"was not you, write to {settings.contact_email} at once.")
            account_service.log_event(session, kind="email_changed", client=client, user_id=user.id)
        else:
            account_service.log_event(session, kind="email_verified", client=client, user_id=user.id)
        user.email_verified_at = utcnow()
        return user

    def reset_password(self, session: Session, *, settings: Settings, outbox: Outbox, token: str, password: str,
                       client: ClientInfo) -> User:
        """Set a new password from a reset link: every session ends, the account's login pause too, the owner is
        told. The password is checked before the link is used up, so a weak one can be corrected."""
        purposes = (LinkPurpose.PASSWORD_RESET,)
        user = session.get(User, self.valid(session, settings=settings, token=token, purposes=purposes).user_id)
        assert user is not None  # tokens go with their user (ON DELETE CASCADE)
        if problem := password_problem(password, user.email, min_score=settings.password_min_score):
            raise field_error("password", problem)
        self.claim(session, settings=settings, token=token, purposes=purposes)
        user.password_hash = hash_password(password)
        user.email_verified_at = user.email_verified_at or utcnow()  # the link reached this mailbox
        session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
        login_throttle.forgive_account(session, user_id=user.id)
        outbox.queue(session, to=user.email, user_id=user.id, kind="account.password_changed",
                     subject="Your IMAGEN password was changed",
                     text="The password of your IMAGEN account was reset with a link sent to this address, and "
                          "every signed-in browser was signed out. If this was not you, reset it again at once and "
                          f"write to {settings.contact_email}.")
        account_service.log_event(session, kind="password_reset", client=client, user_id=user.id)
        return user


account_link_service = AccountLinkService()
