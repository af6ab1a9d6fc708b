"""Admin API for the breach register, the legal-request log and business-transfer notices."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy.orm import Session

from imagen.accounts.http import AdminUser
from imagen.kit.config import Settings
from imagen.kit.http import SessionDep, SettingsDep
from imagen.mail.http import OutboxDep
from imagen.privacy.records.models import Breach, LegalRequest, TransferNotice
from imagen.privacy.records.schemas import (
    AffectedLookup,
    BreachCreate,
    BreachOut,
    BreachUpdate,
    LegalRequestCreate,
    LegalRequestOut,
    LegalRequestUpdate,
    LookupOut,
    NotifyUsers,
    NotifyUsersOut,
    TransferNoticeCreate,
    TransferNoticeOut,
)
from imagen.privacy.records.service import records_service

router = APIRouter(prefix="/api/v1/admin", tags=["records"])


def breach_out(session: Session, breach: Breach, settings: Settings) -> BreachOut:
    deadline, passed, hours_left = records_service.deadline_status(breach, settings)
    return BreachOut(
        id=breach.id, detected_at=breach.detected_at, description=breach.description,
        categories=breach.categories, severity=breach.severity, consequences=breach.consequences,
        measures=breach.measures, lookup=breach.lookup, affected_count=breach.affected_count,
        affected_user_ids=records_service.affected_ids(session, breach.id),
        users_notified=records_service.notified_count(session, breach.id), regulator_deadline=deadline,
        deadline_passed=passed, hours_left=hours_left, regulator_notified_at=breach.regulator_notified_at,
        regulator_reference=breach.regulator_reference, users_notified_at=breach.users_notified_at,
        closed_at=breach.closed_at, created_at=breach.created_at,
    )


def legal_request_out(session: Session, request: LegalRequest) -> LegalRequestOut:
    return LegalRequestOut(
        id=request.id, received_at=request.received_at, authority=request.authority,
        instrument=request.instrument, reference=request.reference, scope=request.scope,
        affected_count=request.affected_count,
        affected_user_ids=records_service.legal_request_user_ids(session, request.id), decision=request.decision,
        decision_reason=request.decision_reason, disclosed=request.disclosed, responded_at=request.responded_at,
        created_at=request.created_at,
    )


def transfer_out(notice: TransferNotice) -> TransferNoticeOut:
    return TransferNoticeOut(id=notice.id, acquirer=notice.acquirer, effective_on=notice.effective_on,
                             summary=notice.summary, recipients=notice.recipients, notified_at=notice.notified_at)


# ---- breach register (policy §9) ----
@router.post("/breaches/lookup", response_model=LookupOut)
def lookup_affected(criteria: AffectedLookup, _admin: AdminUser, session: SessionDep,
                    settings: SettingsDep) -> LookupOut:
    """Preview which accounts a breach's criteria select."""
    ids = records_service.lookup(session, settings=settings, criteria=criteria)
    return LookupOut(count=len(ids), user_ids=ids)


@router.post("/breaches", status_code=status.HTTP_201_CREATED, response_model=BreachOut)
def create_breach(data: BreachCreate, admin: AdminUser, session: SessionDep, settings: SettingsDep) -> BreachOut:
    return breach_out(session, records_service.create_breach(session, settings=settings, admin=admin, data=data),
                      settings)


@router.get("/breaches", response_model=list[BreachOut])
def list_breaches(_admin: AdminUser, session: SessionDep, settings: SettingsDep) -> list[BreachOut]:
    return [breach_out(session, b, settings) for b in records_service.list_breaches(session)]


@router.get("/breaches/{breach_id}", response_model=BreachOut)
def get_breach(breach_id: str, _admin: AdminUser, session: SessionDep, settings: SettingsDep) -> BreachOut:
    return breach_out(session, records_service.get_breach(session, breach_id), settings)


@router.patch("/breaches/{breach_id}", response_model=BreachOut)
def update_breach(breach_id: str, data: BreachUpdate, _admin: AdminUser, session: SessionDep,
                  settings: SettingsDep) -> BreachOut:
    return breach_out(session, records_service.update_breach(session, breach_id=breach_id, data=data), settings)


@router.post("/breaches/{breach_id}/notify-users", response_model=NotifyUsersOut)
def notify_breach_users(breach_id: str, _admin: AdminUser, session: SessionDep, settings: SettingsDep,
                        outbox: OutboxDep, data: NotifyUsers | None = None) -> NotifyUsersOut:
    """An in-app notice (and an email when mail leaves the server) to each affected user not told yet (safe to
    repeat)."""
    data = data or NotifyUsers()
    notified, already = records_service.notify_breach_users(session, settings=settings, breach_id=breach_id,
                                                            title=data.title, body=data.body, outbox=outbox)
    breach = records_service.get_breach(session, breach_id)
    return NotifyUsersOut(notified=notified, already_notified=already, users_notified_at=breach.users_notified_at)


# ---- legal and law-enforcement requests (policy §4.2) ----
@router.post("/legal-requests", status_code=status.HTTP_201_CREATED, response_model=LegalRequestOut)
def create_legal_request(data: LegalRequestCreate, admin: AdminUser, session: SessionDep) -> LegalRequestOut:
    return legal_request_out(session, records_service.create_legal_request(session, admin=admin, data=data))


@router.get("/legal-requests", response_model=list[LegalRequestOut])
def list_legal_requests(_admin: AdminUser, session: SessionDep) -> list[LegalRequestOut]:
    return [legal_request_out(session, r) for r in records_service.list_legal_requests(session)]


@router.get("/legal-requests/{request_id}", response_model=LegalRequestOut)
def get_legal_request(request_id: str, _admin: AdminUser, session: SessionDep) -> LegalRequestOut:
    return legal_request_out(session, records_service.get_legal_request(session, request_id))


@router.patch("/legal-requests/{request_id}", response_model=LegalRequestOut)
def update_legal_request(request_id: str, data: LegalRequestUpdate, _admin: AdminUser,
                         session: SessionDep) -> LegalRequestOut:
    return legal_request_out(session, records_service.update_legal_request(session, request_id=request_id,
                                                                           data=data))


# ---- business transfers (policy §4.4) ----
@router.post("/transfer-notices", status_code=status.HTTP_201_CREATED, response_model=TransferNoticeOut)
def notify_transfer(data: TransferNoticeCreate, admin: AdminUser, session: SessionDep,
                    outbox: OutboxDep) -> TransferNoticeOut:
    """Notify every user (in-app, and by email when mail leaves the server) before their information is
    transferred to an acquirer."""
    return transfer_out(records_service.notify_transfer(session, data=data, admin=admin, outbox=outbox))


@router.get("/transfer-notices", response_model=list[TransferNoticeOut])
def list_transfer_notices(_admin: AdminUser, session: SessionDep) -> list[TransferNoticeOut]:
    return [transfer_out(n) for n in records_service.list_transfers(session)]
