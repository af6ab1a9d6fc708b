"""Privacy requests (policy §8): record, verify the requester, move through explicit states, keep the audit trail.

Services take the session first and never commit. Mail is queued in the caller's transaction through the outbox and
delivered after the commit. Completing an access or deletion request for a linked account runs the same export and
erasure code as self-service.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.accounts.service import account_service
from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.kit.errors import Conflict, NotFound, TooManyRequests, field_error
from imagen.kit.inputs import normalize_email
from imagen.kit.tasks import JobControl, TaskQueue
from imagen.mail.outbox import Outbox
from imagen.notifications.service import notification_service
from imagen.privacy.requests import mails
from imagen.privacy.requests.models import CLOSED_STATUSES, STATUSES, PrivacyRequest, PrivacyRequestEvent

# The only legal moves. "identity_unverified" = a code was sent; "pending" = identity verified.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "received": ("identity_unverified", "pending", "denied", "canceled"),
    "identity_unverified": ("pending", "denied", "canceled"),
    "pending": ("in_progress", "completed", "denied", "extended", "canceled"),
    "in_progress": ("completed", "denied", "extended", "canceled"),
    "extended": ("in_progress", "completed", "denied", "extended", "canceled"),
    "completed": (),
    "denied": (),
    "canceled": (),
}
# Kinds whose completion for a linked account runs code; the others need a note saying what was done.
AUTOMATED_KINDS = ("access", "deletion")
QUEUE_FILTERS = ("open", "closed", "all", *STATUSES)


@dataclass(frozen=True)
class Deadline:
    days_left: int | None  # calendar days (UTC) until the due date; negative when overdue; None once closed
    overdue: bool
    due_soon: bool


@dataclass(frozen=True)
class VerifyProblem:
    """A refused code. Returned rather than raised, so the counted attempt is committed."""

    status_code: int
    detail: object


def code_hash(settings: Settings, request_id: str, code: str) -> str:
    key = settings.resolved_secret_key().encode()
    return hmac.new(key, f"privacy-request:{request_id}:{code}".encode(), hashlib.sha256).hexdigest()


def deadline(req: PrivacyRequest, settings: Settings, now: datetime | None = None) -> Deadline:
    if req.status in CLOSED_STATUSES:
        return Deadline(days_left=None, overdue=False, due_soon=False)
    now = now or utcnow()
    overdue = now > req.due_at
    due_soon = not overdue and req.due_at - now <= timedelta(days=settings.privacy_due_soon_days)
    return Deadline(days_left=(req.due_at.date() - now.date()).days, overdue=overdue, due_soon=due_soon)


class PrivacyRequestService:
    # ---- creating ----------------------------------------------------------------------------------------------

    def submit(self, session: Session, *, outbox: Outbox, settings: Settings, email: str, kind: str, details: str,
               signed_in: User | None = None) -> PrivacyRequest:
        """The public form. A signed-in account holder asking about their own address is verified at once."""
        email = normalize_email(email)
        now = utcnow()
        recent = session.scalar(select(func.count()).select_from(PrivacyRequest).where(
            PrivacyRequest.email == email, PrivacyRequest.channel == "web_form",
            PrivacyRequest.created_at > now - timedelta(days=1)))
        if recent >= settings.privacy_public_requests_per_day:
            raise TooManyRequests("Too many requests for this email address today; try again tomorrow or write to "
                                  f"{settings.contact_email}")
        req = self._create(session, settings=settings, email=email, kind=kind, details=details, channel="web_form",
                           received_at=now, actor="requester", actor_id=signed_in.id if signed_in else None)
        if signed_in is not None and signed_in.email == email:
            self._move(session, req, "pending", actor="requester", actor_id=signed_in.id,
                       note="identity verified: signed in to the account with this email address")
            self._verified(session, req, user=signed_in, now=now)
            subject, text = mails.received_mail(settings, req)
            outbox.queue(session, to=req.email, subject=subject, text=text, kind="privacy_request.received",
                         user_id=req.user_id)
        else:
            self._send_code(session, req, outbox=outbox, settings=settings, actor="system", now=now)
        return req

    def record(self, session: Session, *, outbox: Outbox, settings: Settings, admin: User, email: str, kind: str,
               details: str, channel: str, received_at: datetime | None = None,
               send_code: bool = True) -> PrivacyRequest:
        """A request that reached the operator by email, letter or phone; the deadline runs from its receipt."""
        now = utcnow()
        received_at = received_at or now
        if received_at > now + timedelta(minutes=5):
            raise field_error("received_at", "must not be in the future")
        req = self._create(session, settings=settings, email=normalize_email(email), kind=kind, details=details,
                           channel=channel, received_at=received_at, actor="admin", actor_id=admin.id,
                           received_by_id=admin.id)
        if send_code:
            self._send_code(session, req, outbox=outbox, settings=settings, actor="admin", actor_id=admin.id, now=now)
        else:
            subject, text = mails.received_mail(settings, req)
            outbox.queue(session, to=req.email, subject=subject, text=text, kind="privacy_request.received")
        return req

    def _create(self, session: Session, *, settings: Settings, email: str, kind: str, details: str, channel: str,
                received_at: datetime, actor: str, actor_id: str | None,
                received_by_id: str | None = None) -> PrivacyRequest:
        req = PrivacyRequest(
            kind=kind, status="received", email=email, details=details.strip(), channel=channel,
            received_by_id=received_by_id, received_at=received_at,
            due_at=received_at + timedelta(days=settings.privacy_response_days), code_attempts=0, codes_sent=0,
        )
        session.add(req)
        session.flush()
        self._event(session, req, actor=actor, actor_id=actor_id, from_status=None, to_status="received",
                    note=f"received by {channel.replace('_', ' ')}")
        return req

    # ---- identity verification -----------------------------------------------------------------------------------

    def resend_code(self, session: Session, *, outbox: Outbox, settings: Settings, request_id: str,
                    admin: User | None = None) -> PrivacyRequest:
        """A new code (the old one stops working). The public resend is rate limited; an admin's is not."""
        req = self.get(session, request_id=request_id)
        if req.status not in ("received", "identity_unverified"):
            raise Conflict(f"This request is {req.status}; a code can only be sent before identity is verified")
        now = utcnow()
        if admin is None:
            if req.code_sent_at and now - req.code_sent_at < timedelta(seconds=settings.privacy_code_resend_seconds):
                wait = settings.privacy_code_resend_seconds - int((now - req.code_sent_at).total_seconds())
                raise TooManyRequests(f"A code was sent moments ago; wait {max(wait, 1)} seconds")
            if req.codes_sent >= settings.privacy_code_max_attempts:
                raise TooManyRequests(f"Too many codes sent for this request; write to {settings.contact_email}")
        self._send_code(session, req, outbox=outbox, settings=settings, actor="admin" if admin else "requester",
                        actor_id=admin.id if admin else None, now=now)
        return req

    def _send_code(self, session: Session, req: PrivacyRequest, *, outbox: Outbox, settings: Settings, actor: str,
                   now: datetime, actor_id: str | None = None) -> None:
        code = f"{secrets.randbelow(10**6):06d}"
        req.code_hash = code_hash(settings, req.id, code)
        req.code_sent_at = now
        req.code_expires_at = now + timedelta(hours=settings.privacy_code_ttl_hours)
        req.code_attempts = 0
        req.codes_sent += 1
        note = "verification code sent by email" + (" (new code)" if req.codes_sent > 1 else "")
        if req.status == "received":
            self._move(session, req, "identity_unverified", actor=actor, actor_id=actor_id, note=note)
        else:
            self._event(session, req, actor=actor, actor_id=actor_id, from_status=req.status, to_status=req.status,
                        note=note)
        subject, text = mails.code_mail(settings, req, code, req.code_expires_at)
        outbox.queue(session, to=req.email, subject=subject, text=text, kind="privacy_request.code")

    def verify(self, session: Session, *, settings: Settings, request_id: str,
               code: str) -> tuple[PrivacyRequest, VerifyProblem | None]:
        """Check the emailed code. Right: pending, linked to the account with that email (if any)."""
        req = self.get(session, request_id=request_id)
        if req.status != "identity_unverified" or req.code_hash is None:
            raise Conflict(f"This request is {req.status}; there is no code to verify")
        now = utcnow()
        if req.code_expires_at is None or now > req.code_expires_at:
            return req, VerifyProblem(422, [{"loc": ["body", "code"], "type": "value_error",
                                              "msg": "This code has expired; ask for a new one"}])
        # Counted atomically, so parallel guesses cannot pass the limit.
        counted = session.execute(
            update(PrivacyRequest)
            .where(PrivacyRequest.id == req.id, PrivacyRequest.code_attempts < settings.privacy_code_max_attempts)
            .values(code_attempts=PrivacyRequest.code_attempts + 1)
        ).rowcount
        session.refresh(req)
        if not counted:
            return req, VerifyProblem(429, "Too many wrong codes; ask for a new one")
        if not hmac.compare_digest(req.code_hash, code_hash(settings, req.id, "".join(code.split()))):
            left = settings.privacy_code_max_attempts - req.code_attempts
            msg = f"Wrong code; {left} attempt{'s' if left != 1 else ''} left" if left else \
                "Wrong code; no attempts left, ask for a new one"
            return req, VerifyProblem(422, [{"loc": ["body", "code"], "type": "value_error", "msg": msg}])
        req.code_hash = None
        req.code_expires_at = None
        self._move(session, req, "pending", actor="requester", note="identity verified by emailed code")
        self._verified(session, req, user=account_service.get_by_email(session, req.email), now=now)
        return req, None

    def _verified(self, session: Session, req: PrivacyRequest, *, user: User | None, now: datetime) -> None:
        req.verified_at = now
        if user is not None and req.user_id is None:
            req.user_id = user.id
            self._event(session, req, actor="system", from_status=req.status, to_status=req.status,
                        note="linked to the account with this email address")

    # ---- the operator's moves ------------------------------------------------------------------------------------

    def transition(self, session: Session, *, outbox: Outbox, settings: Settings, admin: User, request_id: str,
                   to: str, note: str | None = None, days: int | None = None, tasks: TaskQueue | None = None,
                   jobs: JobControl | None = None) -> PrivacyRequest:
        """`tasks` carries out a completed access (export) or deletion (erasure) request; `jobs` stops the account's
        running generations."""
        req = self.get(session, request_id=request_id)
        allowed = TRANSITIONS[req.status]
        if to not in allowed:
            moves = ", ".join(allowed) if allowed else "none (it is closed)"
            raise Conflict(f"A {req.status} request cannot become {to}; allowed: {moves}")
        note = (note or "").strip() or None
        now = utcnow()
        if to == "identity_unverified":
            self._send_code(session, req, outbox=outbox, settings=settings, actor="admin", actor_id=admin.id, now=now)
            return req
        if to == "pending" and note is None:
            raise field_error("note", "Say how the requester's identity was verified")
        if to == "denied" and note is None:
            raise field_error("note", "A reason is required to deny a request")
        if to == "extended":
            self._extend(req, settings=settings, note=note, days=days)
        if to == "completed":
            self._complete(session, req, admin=admin, note=note, settings=settings, tasks=tasks, jobs=jobs)
        if to == "denied":
            req.denial_reason = note
        if to in CLOSED_STATUSES:
            req.closed_at = now
            req.code_hash = None
        self._move(session, req, to, actor="admin", actor_id=admin.id, note=note)
        if to == "pending":
            self._verified(session, req, user=account_service.get_by_email(session, req.email), now=now)
        self._tell_requester(session, req, outbox=outbox, settings=settings)
        return req

    def _extend(self, req: PrivacyRequest, *, settings: Settings, note: str | None, days: int | None) -> None:
        if note is None:
            raise field_error("note", "A reason is required to extend the deadline")
        latest = req.received_at + timedelta(days=settings.privacy_max_response_days)
        room = (latest - req.due_at).days
        if room <= 0:
            raise Conflict(f"The deadline is already at the legal maximum of {settings.privacy_max_response_days} "
                           "days from receipt")
        if days is None:
            raise field_error("days", f"Say by how many days to extend (at most {room})")
        if days > room:
            raise field_error("days", f"At most {room} more days: the legal maximum is "
                                      f"{settings.privacy_max_response_days} days from receipt")
        req.due_at = req.due_at + timedelta(days=days)
        req.extension_reason = note

    def _complete(self, session: Session, req: PrivacyRequest, *, admin: User, note: str | None, settings: Settings,
                  tasks: TaskQueue | None, jobs: JobControl | None) -> None:
        user = session.get(User, req.user_id) if req.user_id else None
        if req.kind == "access" and user is not None:
            from imagen.privacy.exports import export_service

            export = export_service.request(session, user_id=user.id, requested_via="privacy_request", tasks=tasks)
            req.export_id = getattr(export, "id", None)
            req.resolution = note or ("Your data export is being prepared. Sign in to your account to download it; "
                                      "you will be notified when it is ready.")
        elif req.kind == "deletion" and user is not None:
            from imagen.privacy.erasure import erasure_service

            req.resolution = note or "Your account and the data it held have been erased."
            erasure_service.request(session, user=user, via="privacy_request", grace=False, settings=settings,
                                    tasks=tasks, jobs=jobs)
        elif note is None:
            why = "no account is linked to this request" if req.kind in AUTOMATED_KINDS else "this kind of request"
            raise field_error("note", f"Say what was done ({why} runs no automatic action)")
        else:
            req.resolution = note

    def _tell_requester(self, session: Session, req: PrivacyRequest, *, outbox: Outbox, settings: Settings) -> None:
        message = mails.outcome_mail(settings, req)
        if message is None:
            return
        subject, text = message
        erased = req.kind == "deletion" and req.status == "completed"
        outbox.queue(session, to=req.email, subject=subject, text=text, kind=f"privacy_request.{req.status}",
                     user_id=None if erased else req.user_id)
        if req.user_id is not None and not erased:
            notification_service.notify(session, user_id=req.user_id, kind="privacy_request", title=subject,
                                        body=text)

    # ---- reading -------------------------------------------------------------------------------------------------

    def get(self, session: Session, *, request_id: str) -> PrivacyRequest:
        req = session.get(PrivacyRequest, request_id)
        if req is None:
            raise NotFound("Privacy request not found")
        return req

    def queue(self, session: Session, *, status: str = "open") -> list[PrivacyRequest]:
        """The operator's queue, soonest deadline first."""
        if status not in QUEUE_FILTERS:
            raise field_error("status", f"one of {', '.join(QUEUE_FILTERS)}", where="query")
        query = select(PrivacyRequest).order_by(PrivacyRequest.due_at, PrivacyRequest.received_at,
                                                PrivacyRequest.id)
        if status == "open":
            query = query.where(PrivacyRequest.status.not_in(CLOSED_STATUSES))
        elif status == "closed":
            query = query.where(PrivacyRequest.status.in_(CLOSED_STATUSES))
        elif status != "all":
            query = query.where(PrivacyRequest.status == status)
        return list(session.scalars(query))

    def list_for_user(self, session: Session, *, user_id: str) -> list[PrivacyRequest]:
        return list(session.scalars(select(PrivacyRequest).where(PrivacyRequest.user_id == user_id)
                                    .order_by(PrivacyRequest.received_at.desc(), PrivacyRequest.id)))

    # ---- the audit trail -----------------------------------------------------------------------------------------

    def _move(self, session: Session, req: PrivacyRequest, to: str, *, actor: str, actor_id: str | None = None,
              note: str | None = None) -> None:
        from_status, req.status = req.status, to
        self._event(session, req, actor=actor, actor_id=actor_id, from_status=from_status, to_status=to, note=note)

    def _event(self, session: Session, req: PrivacyRequest, *, actor: str, from_status: str | None, to_status: str,
               actor_id: str | None = None, note: str | None = None) -> None:
        seq = len(req.events) + 1
        req.events.append(PrivacyRequestEvent(seq=seq, actor=actor, actor_id=actor_id, from_status=from_status,
                                              to_status=to_status, note=note))
        session.flush()


privacy_request_service = PrivacyRequestService()
