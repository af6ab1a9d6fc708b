"""Accounts: sign-up (18+), login sessions, API keys, the security log."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

import pycountry
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from zxcvbn import zxcvbn

from imagen.accounts.models import ApiKey, LoginSession, SecurityEvent, User
from imagen.accounts.schemas import SignupRequest
from imagen.accounts.security import hash_password, new_api_key, new_token, token_hash, verify_password
from imagen.consent.service import consent_service
from imagen.kit.db import utcnow
from imagen.kit.errors import Conflict, field_error
from imagen.kit.inputs import normalize_email
from imagen.kit.scoped import get_owned, owned

MINIMUM_AGE = 18
MIN_PASSWORD_LENGTH = 10
MIN_PASSWORD_SCORE = 3  # zxcvbn's 0-4; IMAGEN_PASSWORD_MIN_SCORE
ZXCVBN_MAX_LENGTH = 72  # zxcvbn refuses longer input; characters past it only add strength


@dataclass(frozen=True)
class ClientInfo:
    ip_address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class NewSession:
    token: str
    login_session: LoginSession


def age_on(dob: date, today: date) -> int:
    return today.year - dob.year - ((today.month, today.day) < (dob.month, dob.day))


def password_problem(password: str, email: str, *, min_score: int = MIN_PASSWORD_SCORE) -> str | None:
    """Why a password is refused: too short, or too easy to guess as zxcvbn scores it (the email and its parts count
    as known words), with zxcvbn's own advice."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Password must be at least {MIN_PASSWORD_LENGTH} characters long"
    local = email.split("@", 1)[0]
    result = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=[email, local, *re.split(r"[^a-zA-Z0-9]+", local)])
    if result["score"] >= min_score:
        return None
    feedback = result["feedback"]
    advice = " ".join(part for part in (feedback.get("warning"), *feedback.get("suggestions", ())) if part)
    return (f"Password is too easy to guess (strength {result['score']} of 4, at least {min_score} needed). "
            f"{advice or 'Use a longer phrase of uncommon words.'}").strip()


class AccountService:
    def log_event(
        self, session: Session, *, kind: str, client: ClientInfo, user_id: str | None = None,
        email: str | None = None,
    ) -> None:
        session.add(
            SecurityEvent(
                user_id=user_id, kind=kind, email=email,
                ip_address=client.ip_address, user_agent=(client.user_agent or "")[:512] or None,
            )
        )

    def get_by_email(self, session: Session, email: str) -> User | None:
        return session.scalars(select(User).where(User.email == normalize_email(email))).first()

    def list_users(self, session: Session, *, email_contains: str = "", after_email: str = "",
                   limit: int = 100) -> list[User]:
        """Accounts by email (admins' user list): a part of the email to look for, keyset pages after an email."""
        query = select(User).order_by(User.email).limit(limit)
        if email_contains.strip():  # autoescape: "%" and "_" in the search are plain characters
            query = query.where(User.email.contains(normalize_email(email_contains), autoescape=True))
        if after_email:
            query = query.where(User.email > after_email)
        return list(session.scalars(query))

    def first_admin(self, session: Session) -> User | None:
        """The operator's account: the oldest admin."""
        return session.scalars(select(User).where(User.role == "admin").order_by(User.created_at, User.id)).first()

    def signup(
        self, session: Session, *, data: SignupRequest, current_policy_version: str, client: ClientInfo,
        today: date | None = None, consent_defaults: frozenset[str] = frozenset(),
        analytics_cookie: bool | None = None, min_score: int = MIN_PASSWORD_SCORE,
    ) -> User:
        """Validate everything before writing anything: a refused sign-up stores nothing.

        A consent left out of the request takes the regional default (off in the EU/EEA, UK and Switzerland;
        `consent_defaults` elsewhere), recorded with source "signup_default". Analytics is recorded only when
        chosen, here or earlier in the cookie banner (`analytics_cookie`).
        """
        today = today or utcnow().date()
        email = normalize_email(data.email)  # fullwidth or other lookalikes: the same account
        if data.date_of_birth > today or data.date_of_birth.year < 1900:
            raise field_error("date_of_birth", "Date of birth is not a valid date")
        if age_on(data.date_of_birth, today) < MINIMUM_AGE:
            raise field_error(
                "date_of_birth", f"You must be {MINIMUM_AGE} or older to use IMAGEN; no account was created"
            )
        country = data.country.upper()
        if pycountry.countries.get(alpha_2=country) is None:
            raise field_error("country", f"{data.country!r} is not an ISO 3166-1 alpha-2 country code")
        if data.accept_policy_version != current_policy_version:
            raise field_error(
                "accept_policy_version",
                f"Policy version {data.accept_policy_version!r} is not the current version "
                f"{current_policy_version!r}; read and accept the current policy",
            )
        if problem := password_problem(data.password, email, min_score=min_score):
            raise field_error("password", problem)
        if self.get_by_email(session, email) is not None:
            raise Conflict("An account with this email already exists")

        user = User(
            email=email, password_hash=hash_password(data.password), date_of_birth=data.date_of_birth,
            country=country, role="user",
        )
        session.add(user)
        session.flush()
        record = consent_service.record
        record(session, user_id=user.id, purpose="policy_acceptance", granted=True,
               policy_version=current_policy_version, source="signup")
        for purpose in ("model_improvement", "marketing_emails"):
            chosen = getattr(data.consents, purpose)
            granted = chosen if chosen is not None else consent_service.default_for(
                country=country, purpose=purpose, elsewhere=consent_defaults)
            record(session, user_id=user.id, purpose=purpose, granted=granted, policy_version=current_policy_version,
                   source="signup" if chosen is not None else "signup_default")
        analytics = data.consents.analytics if data.consents.analytics is not None else analytics_cookie
        if analytics is not None:
            record(session, user_id=user.id, purpose="analytics", granted=analytics,
                   policy_version=current_policy_version,
                   source="signup" if data.consents.analytics is not None else "cookie_banner")
        self.log_event(session, kind="signup", client=client, user_id=user.id, email=email)
        return user

    def create_user(
        self, session: Session, *, email: str, password: str, role: str, date_of_birth: date,
        country: str, policy_version: str,
    ) -> User:
        """For operators (CLI): same password rules, no consent choices beyond policy acceptance."""
        email = normalize_email(email)
        if problem := password_problem(password, email):
            raise field_error("password", problem)
        if self.get_by_email(session, email) is not None:
            raise Conflict("An account with this email already exists")
        # The operator vouches for the address: no verification mail for accounts made on the command line.
        user = User(email=email, password_hash=hash_password(password), date_of_birth=date_of_birth,
                    country=country, role=role, email_verified_at=utcnow())
        session.add(user)
        session.flush()
        for purpose, granted in (("policy_acceptance", True), ("model_improvement", False),
                                 ("marketing_emails", False)):
            consent_service.record(session, user_id=user.id, purpose=purpose, granted=granted,
                                   policy_version=policy_version, source="admin_cli")
        return user

    def start_session(self, session: Session, *, user: User, client: ClientInfo, days: int) -> NewSession:
        token = new_token()
        login = LoginSession(
            user_id=user.id, token_hash=token_hash(token), csrf_token=new_token(24),
            expires_at=utcnow() + timedelta(days=days), ip_address=client.ip_address,
            user_agent=(client.user_agent or "")[:512] or None,
        )
        session.add(login)
        session.flush()
        return NewSession(token, login)

    def session_user(self, session: Session, token: str) -> tuple[LoginSession, User] | None:
        login = session.scalars(select(LoginSession).where(LoginSession.token_hash == token_hash(token))).first()
        if login is None or login.expires_at <= utcnow():
            return None
        user = session.get(User, login.user_id)
        if user is None or user.suspended_at is not None:
            return None
        return login, user

    def end_session(self, session: Session, *, login: LoginSession, client: ClientInfo) -> None:
        self.log_event(session, kind="logout", client=client, user_id=login.user_id)
        session.delete(login)

    def api_key_user(self, session: Session, key: str) -> User | None:
        api_key = session.scalars(select(ApiKey).where(ApiKey.key_hash == token_hash(key))).first()
        if api_key is None:
            return None
        user = session.get(User, api_key.user_id)
        if user is None or user.suspended_at is not None:
            return None
        now = utcnow()
        # Coarse on purpose: writing on every request would turn each authenticated read into a write.
        if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
            api_key.last_used_at = now
        return user

    def create_api_key(self, session: Session, *, user: User, name: str) -> tuple[ApiKey, str]:
        key = new_api_key()
        api_key = ApiKey(user_id=user.id, name=name.strip(), prefix=key[:8], key_hash=token_hash(key))
        session.add(api_key)
        session.flush()
        return api_key, key

    def list_api_keys(self, session: Session, *, user: User) -> list[ApiKey]:
        return list(session.scalars(owned(ApiKey, user.id).order_by(ApiKey.created_at)))

    def delete_api_key(self, session: Session, *, user: User, key_id: str) -> None:
        session.delete(get_owned(session, ApiKey, key_id, user.id, what="API key"))

    def change_password(self, session: Session, *, user: User, current: str, new: str, keep: LoginSession | None,
                        client: ClientInfo, min_score: int = MIN_PASSWORD_SCORE) -> int:
        """Check the current password, store the new one, and end every other session (a stolen cookie stops
        working); returns how many ended. API keys stay: they are revoked one by one on the account page."""
        if not verify_password(user.password_hash, current):
            self.log_event(session, kind="password_change_failed", client=client, user_id=user.id)
            raise field_error("current_password", "is not your current password")
        if problem := password_problem(new, user.email, min_score=min_score):
            raise field_error("new_password", problem)
        user.password_hash = hash_password(new)
        others = [s for s in self.list_sessions(session, user=user) if keep is None or s.id != keep.id]
        for other in others:
            session.delete(other)
        self.log_event(session, kind="password_changed", client=client, user_id=user.id)
        return len(others)

    def list_sessions(self, session: Session, *, user: User) -> list[LoginSession]:
        return list(session.scalars(owned(LoginSession, user.id).where(LoginSession.expires_at > utcnow())
                                    .order_by(LoginSession.created_at.desc())))

    def revoke_session(self, session: Session, *, user: User, session_id: str, client: ClientInfo) -> None:
        login = get_owned(session, LoginSession, session_id, user.id, what="Session")
        self.log_event(session, kind="session_revoked", client=client, user_id=user.id)
        session.delete(login)

    def count_users(self, session: Session) -> int:
        return session.scalar(select(func.count()).select_from(User)) or 0


account_service = AccountService()
