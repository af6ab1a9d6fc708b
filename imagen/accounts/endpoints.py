from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from imagen.accounts.http import ClientDep, CurrentUser, PrincipalDep
from imagen.accounts.links import account_link_service
from imagen.accounts.login import login_service
from imagen.accounts.models import User
from imagen.accounts.schemas import (
    AccountOut,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    AuthResponse,
    LoginRequest,
    PasswordChange,
    SessionOut,
    SignupRequest,
    UserSettings,
)
from imagen.accounts.service import NewSession, account_service
from imagen.accounts.twofactor import two_factor_service
from imagen.analytics.service import analytics_service
from imagen.consent.cookies import cookie_choice
from imagen.consent.service import consent_service, parse_defaults
from imagen.kit.config import Settings
from imagen.kit.http import CSRF_COOKIE, SESSION_COOKIE, SessionDep, SettingsDep
from imagen.mail.http import OutboxDep

router = APIRouter(prefix="/api/v1", tags=["accounts"])


def account_out(session: Session, user: User, settings: Settings) -> AccountOut:
    current = consent_service.current(session, user_id=user.id)
    out = AccountOut.model_validate(user)
    out.consents = {p: r.granted for p, r in current.items() if p != "policy_acceptance"}
    accepted = current.get("policy_acceptance")
    out.policy_version_accepted = accepted.policy_version if accepted else None
    policy = consent_service.policy_status(session, user_id=user.id)
    out.policy_version_current = policy.current.version
    out.policy_acceptance_required = policy.acceptance_required
    out.email_verification_required = settings.email_verification_required and user.email_verified_at is None
    out.two_factor_enabled = two_factor_service.enabled(session, user_id=user.id)
    return out


def set_session_cookies(response: Response, new: NewSession, settings: Settings) -> None:
    max_age = settings.session_days * 86400
    response.set_cookie(SESSION_COOKIE, new.token, max_age=max_age, httponly=True,
                        secure=settings.cookie_secure, samesite="lax", path="/")
    # Readable by the page's script, which echoes it in the X-CSRF-Token header.
    response.set_cookie(CSRF_COOKIE, new.login_session.csrf_token, max_age=max_age, httponly=False,
                        secure=settings.cookie_secure, samesite="strict", path="/")


@router.post("/auth/signup", status_code=status.HTTP_201_CREATED, response_model=AuthResponse)
def signup(data: SignupRequest, session: SessionDep, settings: SettingsDep, client: ClientDep, outbox: OutboxDep,
           request: Request, response: Response) -> AuthResponse:
    user = account_service.signup(
        session, data=data, current_policy_version=consent_service.current_version(session).version,
        client=client, consent_defaults=parse_defaults(settings.consent_defaults_elsewhere),
        analytics_cookie=cookie_choice(request), min_score=settings.password_min_score)
    if settings.email_verification_required:
        account_link_service.send_verification(session, settings=settings, outbox=outbox, user=user)
    new = account_service.start_session(session, user=user, client=client, days=settings.session_days)
    set_session_cookies(response, new, settings)
    analytics_service.track(session, request, analytics=request.app.state.services.analytics, user=user,
                            event="signed_up")
    return AuthResponse(account=account_out(session, user, settings), csrf_token=new.login_session.csrf_token)


@router.post("/auth/login", response_model=AuthResponse)
def login(data: LoginRequest, session: SessionDep, settings: SettingsDep, client: ClientDep, outbox: OutboxDep,
          response: Response) -> AuthResponse | JSONResponse:
    """With two-factor on, send `code` too; without it the answer is 401 with `two_factor_required: true`. After too
    many failed sign-ins for the account or from the address: 429 with Retry-After, whatever the password."""
    outcome = login_service.sign_in(session, settings=settings, outbox=outbox, email=data.email,
                                    password=data.password, code=data.code, client=client)
    user = outcome.user
    if user is None:
        # Returned, not raised, so the failed attempt and its count stay in the security log.
        body: dict[str, object] = {"detail": outcome.problem}
        if outcome.two_factor_required:
            body["two_factor_required"] = True
        headers = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else None
        return JSONResponse(body, status_code=outcome.status_code, headers=headers)
    new = account_service.start_session(session, user=user, client=client, days=settings.session_days)
    set_session_cookies(response, new, settings)
    return AuthResponse(account=account_out(session, user, settings), csrf_token=new.login_session.csrf_token)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(principal: PrincipalDep, session: SessionDep, client: ClientDep, response: Response) -> None:
    if principal.login_session is not None:
        account_service.end_session(session, login=principal.login_session, client=client)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


@router.get("/me", response_model=AccountOut)
def me(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> AccountOut:
    return account_out(session, user, settings)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_api_key(data: ApiKeyCreate, user: CurrentUser, session: SessionDep) -> ApiKeyCreated:
    api_key, key = account_service.create_api_key(session, user=user, name=data.name)
    return ApiKeyCreated(**ApiKeyOut.model_validate(api_key).model_dump(), key=key)


@router.get("/api-keys", response_model=list[ApiKeyOut])
def list_api_keys(user: CurrentUser, session: SessionDep) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(k) for k in account_service.list_api_keys(session, user=user)]


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_api_key(key_id: str, user: CurrentUser, session: SessionDep) -> None:
    account_service.delete_api_key(session, user=user, key_id=key_id)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(data: PasswordChange, principal: PrincipalDep, session: SessionDep, client: ClientDep,
                    settings: SettingsDep) -> None:
    """Needs the current password; every other browser session of the account ends."""
    account_service.change_password(session, user=principal.user, current=data.current_password,
                                    new=data.new_password, keep=principal.login_session, client=client,
                                    min_score=settings.password_min_score)


@router.get("/me/sessions", response_model=list[SessionOut])
def list_sessions(principal: PrincipalDep, session: SessionDep) -> list[SessionOut]:
    current = principal.login_session.id if principal.login_session else None
    return [SessionOut(id=s.id, created_at=s.created_at, expires_at=s.expires_at, ip_address=s.ip_address,
                       user_agent=s.user_agent, current=s.id == current)
            for s in account_service.list_sessions(session, user=principal.user)]


@router.delete("/me/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_session(session_id: str, principal: PrincipalDep, session: SessionDep, client: ClientDep) -> None:
    """Signs that browser out (this one too, if it is this one's id)."""
    account_service.revoke_session(session, user=principal.user, session_id=session_id, client=client)


@router.get("/me/settings", response_model=UserSettings)
def get_settings(user: CurrentUser) -> UserSettings:
    return UserSettings.model_validate(user)


@router.put("/me/settings", response_model=UserSettings)
def put_settings(data: UserSettings, user: CurrentUser) -> UserSettings:
    user.embed_metadata = data.embed_metadata
    return UserSettings.model_validate(user)
