"""The breach register, the legal-request log and business-transfer notices. Nothing here commits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.kit.errors import Conflict, NotFound, field_error
from imagen.mail.outbox import Outbox
from imagen.notifications.service import notification_service
from imagen.privacy.records import holdings
from imagen.privacy.records.models import (
    Breach,
    BreachAffectedUser,
    LegalRequest,
    LegalRequestUser,
    TransferNotice,
)
from imagen.privacy.records.schemas import (
    AffectedLookup,
    BreachCreate,
    BreachUpdate,
    LegalRequestCreate,
    LegalRequestUpdate,
    TransferNoticeCreate,
)

ACTIVE_EVENT_KINDS = ("signup", "login")
REASON_NEEDED = ("partially_complied", "refused")


class RecordsService:
    # ---- affected-user lookup ----
    def lookup(self, session: Session, *, settings: Settings, criteria: AffectedLookup) -> list[str]:
        """Accounts a breach affected: listed ids, everyone, or everyone matching all the criteria given."""
        if criteria.user_ids is not None:
            return self._known_users(session, criteria.user_ids, field="affected.user_ids")
        query = select(User.id)
        given = criteria.all_users
        if criteria.categories:
            items = holdings.holdings(settings)
            known = holdings.category_names(items)
            if unknown := [c for c in criteria.categories if c not in known]:
                raise field_error("affected.categories", f"unknown categories {unknown}; known: {known}")
            query = query.where(User.id.in_(holdings.users_with_data(session, items, criteria.categories)))
            given = True
        if criteria.created_from or criteria.created_to:
            query = query.where(*self._window(User.created_at, criteria.created_from, criteria.created_to))
            given = True
        if criteria.active_from or criteria.active_to:
            query = query.where(self._active(criteria.active_from, criteria.active_to))
            given = True
        if not given:
            return []
        return list(session.scalars(query.order_by(User.id)))

    @staticmethod
    def _window(column: Any, start: datetime | None, end: datetime | None) -> list[Any]:
        return [c for c in (column >= start if start else None, column < end if end else None) if c is not None]

    def _active(self, start: datetime | None, end: datetime | None) -> Any:
        from imagen.accounts.models import SecurityEvent
        from imagen.generation.models import Generation

        logged_in = exists().where(SecurityEvent.user_id == User.id, SecurityEvent.kind.in_(ACTIVE_EVENT_KINDS),
                                   *self._window(SecurityEvent.created_at, start, end))
        generated = exists().where(Generation.user_id == User.id, *self._window(Generation.created_at, start, end))
        return or_(logged_in, generated)

    def _known_users(self, session: Session, user_ids: Iterable[str], *, field: str) -> list[str]:
        wanted = list(dict.fromkeys(user_ids))
        found = set(session.scalars(select(User.id).where(User.id.in_(wanted)))) if wanted else set()
        if missing := [u for u in wanted if u not in found]:
            raise field_error(field, f"no accounts with the ids {missing}")
        return wanted

    # ---- breaches ----
    def create_breach(self, session: Session, *, settings: Settings, admin: User, data: BreachCreate) -> Breach:
        user_ids = self.lookup(session, settings=settings, criteria=data.affected)
        breach = Breach(
            detected_at=data.detected_at, description=data.description, categories=list(data.categories),
            severity=data.severity, consequences=data.consequences, measures=data.measures,
            lookup=data.affected.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
            affected_count=len(user_ids), recorded_by=admin.id,
        )
        session.add(breach)
        session.flush()
        session.add_all(BreachAffectedUser(breach_id=breach.id, user_id=u) for u in user_ids)
        session.flush()
        return breach

    def list_breaches(self, session: Session) -> list[Breach]:
        return list(session.scalars(select(Breach).order_by(Breach.detected_at.desc(), Breach.id)))

    def get_breach(self, session: Session, breach_id: str) -> Breach:
        breach = session.get(Breach, breach_id)
        if breach is None:
            raise NotFound("Breach not found")
        return breach

    def update_breach(self, session: Session, *, breach_id: str, data: BreachUpdate) -> Breach:
        breach = self.get_breach(session, breach_id)
        changes = data.model_dump(exclude_unset=True)
        for key in ("description", "severity", "consequences", "measures", "regulator_reference"):
            if key in changes and changes[key] is None:
                raise field_error(key, "may not be null")
        for key in ("regulator_notified_at", "users_notified_at", "closed_at"):
            if changes.get(key) and changes[key] < breach.detected_at:
                raise field_error(key, "must not be before detected_at")
        for key, value in changes.items():
            setattr(breach, key, value)
        return breach

    def affected_ids(self, session: Session, breach_id: str) -> list[str]:
        return list(session.scalars(select(BreachAffectedUser.user_id)
                                    .where(BreachAffectedUser.breach_id == breach_id)
                                    .order_by(BreachAffectedUser.user_id)))

    def notified_count(self, session: Session, breach_id: str) -> int:
        return session.scalar(select(func.count()).select_from(BreachAffectedUser).where(
            BreachAffectedUser.breach_id == breach_id, BreachAffectedUser.notified_at.is_not(None))) or 0

    def deadline(self, breach: Breach, settings: Settings) -> datetime:
        return breach.detected_at + timedelta(hours=settings.breach_regulator_hours)

    def deadline_status(self, breach: Breach, settings: Settings, now: datetime | None = None
                        ) -> tuple[datetime, bool, float | None]:
        """(regulator deadline, whether it passed before the regulator was told, hours left while not told)."""
        now = now or utcnow()
        deadline = self.deadline(breach, settings)
        told = breach.regulator_notified_at
        passed = (told or now) > deadline
        hours_left = None if told else round((deadline - now).total_seconds() / 3600, 1)
        return deadline, passed, hours_left

    def notify_breach_users(self, session: Session, *, settings: Settings, breach_id: str,
                            title: str | None = None, body: str | None = None,
                            outbox: Outbox | None = None) -> tuple[int, int]:
        """An in-app notice (and an email, with a delivering `outbox`) to every affected user not told yet;
        (newly notified, already notified)."""
        breach = self.get_breach(session, breach_id)
        rows = list(session.scalars(select(BreachAffectedUser).where(BreachAffectedUser.breach_id == breach.id)))
        title = title or "A security incident may have affected your data"
        body = body or self._breach_notice(breach, settings)
        now = utcnow()
        fresh = [r for r in rows if r.notified_at is None]
        for row in fresh:
            notification_service.notify(session, user_id=row.user_id, kind="breach", title=title, body=body,
                                        link="/privacy/centre", outbox=outbox)
            row.notified_at = now
        if fresh:
            breach.users_notified_at = now
        session.flush()
        return len(fresh), len(rows) - len(fresh)

    @staticmethod
    def _breach_notice(breach: Breach, settings: Settings) -> str:
        parts = [f"On {breach.detected_at:%Y-%m-%d} we detected a security incident involving: "
                 f"{', '.join(breach.categories)}.", breach.description]
        if breach.consequences:
            parts.append(f"Likely consequences: {breach.consequences}")
        if breach.measures:
            parts.append(f"What we have done: {breach.measures}")
        parts.append(f"Questions: {settings.contact_email}.")
        return "\n\n".join(parts)

    # ---- legal and law-enforcement requests ----
    def create_legal_request(self, session: Session, *, admin: User, data: LegalRequestCreate) -> LegalRequest:
        self._check_decision(data.decision, data.decision_reason, data.responded_at, data.received_at)
        user_ids = self._known_users(session, data.user_ids, field="user_ids")
        request = LegalRequest(
            received_at=data.received_at, authority=data.authority, instrument=data.instrument,
            reference=data.reference, scope=data.scope, affected_count=len(user_ids), decision=data.decision,
            decision_reason=data.decision_reason, disclosed=data.disclosed, responded_at=data.responded_at,
            recorded_by=admin.id,
        )
        session.add(request)
        session.flush()
        session.add_all(LegalRequestUser(legal_request_id=request.id, user_id=u) for u in user_ids)
        session.flush()
        return request

    def update_legal_request(self, session: Session, *, request_id: str, data: LegalRequestUpdate) -> LegalRequest:
        request = self.get_legal_request(session, request_id)
        changes = data.model_dump(exclude_unset=True)
        for key in ("decision", "decision_reason", "disclosed"):
            if key in changes and changes[key] is None:
                raise field_error(key, "may not be null")
        merged = {"decision": request.decision, "decision_reason": request.decision_reason,
                  "responded_at": request.responded_at, **changes}
        self._check_decision(merged["decision"], merged["decision_reason"], merged["responded_at"],
                             request.received_at)
        for key, value in changes.items():
            setattr(request, key, value)
        return request

    @staticmethod
    def _check_decision(decision: str, reason: str, responded_at: datetime | None, received_at: datetime) -> None:
        if decision in REASON_NEEDED and not reason.strip():
            raise field_error("decision_reason", f"a reason is required when the decision is {decision}")
        if responded_at is not None and decision == "pending":
            raise field_error("decision", "record the decision along with responded_at")
        if responded_at is not None and responded_at < received_at:
            raise field_error("responded_at", "must not be before received_at")

    def list_legal_requests(self, session: Session) -> list[LegalRequest]:
        return list(session.scalars(select(LegalRequest).order_by(LegalRequest.received_at.desc(),
                                                                  LegalRequest.id)))

    def get_legal_request(self, session: Session, request_id: str) -> LegalRequest:
        request = session.get(LegalRequest, request_id)
        if request is None:
            raise NotFound("Legal request not found")
        return request

    def legal_request_user_ids(self, session: Session, request_id: str) -> list[str]:
        return list(session.scalars(select(LegalRequestUser.user_id)
                                    .where(LegalRequestUser.legal_request_id == request_id)
                                    .order_by(LegalRequestUser.user_id)))

    # ---- business transfers ----
    def notify_transfer(self, session: Session, *, data: TransferNoticeCreate, admin: User | None = None,
                        today: date | None = None, outbox: Outbox | None = None) -> TransferNotice:
        """Tell every user before their data moves to an acquirer (policy §4.4), and record that we did."""
        today = today or utcnow().date()
        if data.effective_on <= today:
            raise field_error("effective_on", "users must be told before the transfer: use a date after today")
        duplicate = session.scalar(select(TransferNotice.id).where(and_(
            TransferNotice.acquirer == data.acquirer, TransferNotice.effective_on == data.effective_on)))
        if duplicate:
            raise Conflict(f"Users were already notified of the transfer to {data.acquirer} on {data.effective_on}")
        body = (f"On {data.effective_on:%B %d, %Y}, your information will be transferred to {data.acquirer} "
                "and may become subject to a different privacy policy.")
        if data.summary:
            body += "\n\n" + data.summary
        body += ("\n\nBefore then you can download your data or delete your account from the privacy centre.")
        recipients = notification_service.notify_all(
            session, kind="business_transfer", title=f"Your data will be transferred to {data.acquirer}",
            body=body, link="/privacy/centre", outbox=outbox)
        notice = TransferNotice(acquirer=data.acquirer, effective_on=data.effective_on, summary=data.summary,
                                recipients=recipients, notified_at=utcnow(),
                                recorded_by=admin.id if admin else None)
        session.add(notice)
        session.flush()
        return notice

    def list_transfers(self, session: Session) -> list[TransferNotice]:
        return list(session.scalars(select(TransferNotice).order_by(TransferNotice.notified_at.desc())))


records_service = RecordsService()
