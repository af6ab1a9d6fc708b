"""The consent centre API, the cookie choice, policy acceptance and publishing policy versions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.orm import Session

from imagen.accounts.http import AdminUser, OptionalPrincipalDep, PrincipalDep
from imagen.accounts.models import User
from imagen.consent.cookies import (
    ACCEPTED,
    DECLINED,
    analytics_state,
    cookie_registry,
    gpc,
    set_choice_cookie,
)
from imagen.consent.schemas import (
    ChoiceOut,
    ConsentRecordOut,
    ConsentsOut,
    ConsentUpdate,
    CookieConsentIn,
    CookieConsentOut,
    PolicyAcceptance,
    PolicyPublished,
    PolicyStatusOut,
    PolicyVersionIn,
    PolicyVersionOut,
)
from imagen.consent.service import consent_service, explicit_opt_in, parse_defaults
from imagen.kit.db import utcnow
from imagen.kit.errors import field_error
from imagen.kit.http import SessionDep, SettingsDep
from imagen.mail.http import OutboxDep
from imagen.privacy.policy import render_policy

router = APIRouter(prefix="/api/v1", tags=["consent"])


def policy_status_out(session: Session, user_id: str) -> PolicyStatusOut:
    st = consent_service.policy_status(session, user_id=user_id)
    return PolicyStatusOut(current_version=st.current.version, current_published_at=st.current.published_at,
                           current_summary=st.current.summary, accepted_version=st.accepted_version,
                           acceptance_required=st.acceptance_required)


def consents_out(session: Session, request: Request, user: User, *, record_gpc: bool = True) -> ConsentsOut:
    settings = request.app.state.settings
    state = analytics_state(session, request, user, record_gpc=record_gpc)
    choices = consent_service.choices(session, user_id=user.id, country=user.country,
                                      elsewhere=parse_defaults(settings.consent_defaults_elsewhere))
    history = consent_service.history(session, user_id=user.id)
    return ConsentsOut(
        current={p: c.granted for p, c in choices.items()},
        choices={p: ChoiceOut(granted=c.granted, chosen=c.chosen, source=c.source, policy_version=c.policy_version,
                              at=c.at) for p, c in choices.items()},
        country=user.country, explicit_opt_in=explicit_opt_in(user.country), gpc=state.gpc,
        analytics_allowed=state.allowed, policy=policy_status_out(session, user.id),
        history=[ConsentRecordOut.model_validate(r) for r in reversed(history)],
    )


@router.get("/me/consents", response_model=ConsentsOut)
def get_consents(principal: PrincipalDep, session: SessionDep, request: Request) -> ConsentsOut:
    return consents_out(session, request, principal.user)


@router.put("/me/consents", response_model=ConsentsOut)
def put_consents(data: ConsentUpdate, principal: PrincipalDep, session: SessionDep, settings: SettingsDep,
                 request: Request, response: Response) -> ConsentsOut:
    changes = data.model_dump(exclude_none=True)
    if not changes:
        raise field_error("model_improvement", "send at least one of model_improvement, marketing_emails, "
                                               "analytics")
    source = "consent_centre" if principal.via == "session" else "api"
    consent_service.update_choices(session, user_id=principal.user.id, changes=changes, source=source)
    if "analytics" in changes and principal.via == "session":
        # The browser's choice cookie follows the account's choice, so the banner does not ask again.
        set_choice_cookie(response, analytics=changes["analytics"], settings=settings)
    return consents_out(session, request, principal.user, record_gpc=False)


@router.post("/me/policy-acceptance", response_model=PolicyStatusOut)
def accept_policy(data: PolicyAcceptance, principal: PrincipalDep, session: SessionDep) -> PolicyStatusOut:
    consent_service.accept_policy(session, user_id=principal.user.id, version=data.version,
                                  source="re_acceptance" if principal.via == "session" else "api")
    return policy_status_out(session, principal.user.id)


def cookie_out(request: Request, state_choice: bool | None, gpc: bool, allowed: bool) -> CookieConsentOut:
    settings = request.app.state.settings
    return CookieConsentOut(
        choice=None if state_choice is None else ACCEPTED if state_choice else DECLINED, gpc=gpc,
        analytics_allowed=allowed,
        essential_cookies=[c.name for c in cookie_registry(settings) if c.category == "essential"])


@router.get("/cookie-consent", response_model=CookieConsentOut)
def get_cookie_consent(principal: OptionalPrincipalDep, session: SessionDep, request: Request) -> CookieConsentOut:
    state = analytics_state(session, request, principal.user if principal else None)
    choice = state.account_choice if state.account_choice is not None else state.cookie_choice
    return cookie_out(request, choice, state.gpc, state.allowed)


@router.post("/cookie-consent", response_model=CookieConsentOut)
def set_cookie_consent(data: CookieConsentIn, principal: OptionalPrincipalDep, session: SessionDep,
                       settings: SettingsDep, request: Request, response: Response) -> CookieConsentOut:
    """The cookie banner: remember the choice in the first-party cookie and, when logged in, as a record."""
    if principal is not None:
        consent_service.update_choices(session, user_id=principal.user.id, changes={"analytics": data.analytics},
                                       source="cookie_banner")
    set_choice_cookie(response, analytics=data.analytics, settings=settings)
    return cookie_out(request, data.analytics, gpc(request), data.analytics and not gpc(request))


@router.get("/policy-versions", response_model=list[PolicyVersionOut])
def list_policy_versions(session: SessionDep) -> list[PolicyVersionOut]:
    return [PolicyVersionOut.model_validate(v) for v in consent_service.list_versions(session)]


@router.post("/admin/policy-versions", status_code=status.HTTP_201_CREATED, response_model=PolicyPublished)
def publish_policy_version(data: PolicyVersionIn, admin: AdminUser, session: SessionDep,
                           settings: SettingsDep, outbox: OutboxDep) -> PolicyPublished:
    row, notified = consent_service.publish(session, version=data.version, material=data.material,
                                            summary=data.summary,
                                            text=render_policy(settings, session=session, updated=utcnow().date()),
                                            outbox=outbox)
    return PolicyPublished(**PolicyVersionOut.model_validate(row).model_dump(), notified=notified)
