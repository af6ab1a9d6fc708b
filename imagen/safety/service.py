"""Cases and enforcement: open a case with its evidence, suspend, the moderators' actions (audited), reports.

Services take the session first and never commit. A hash match on an upload is recorded after the request rolls
back (`checks.py`), a match on a generated output in the worker's own transaction.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from imagen.accounts.models import SecurityEvent, User
from imagen.kit.config import Settings
from imagen.kit.db import new_id, run_after_commit, run_after_rollback, utcnow
from imagen.kit.errors import Conflict, NotFound, field_error
from imagen.kit.tasks import TaskQueue, enqueue_after_commit
from imagen.safety.models import (
    CASE_ACTIONS,
    CaseAction,
    Evidence,
    PromptRefusalRecord,
    SafetyCase,
    UserReport,
)
from imagen.safety.quarantine import Quarantine
from imagen.safety.reporting import (
    build_report,
    reports_without_confirmation,
    submit_case_report,
)

log = logging.getLogger(__name__)

ROLES = ("user", "moderator", "admin")


@dataclass
class AccountFacts:
    user_id: str
    email: str | None
    ip_address: str | None
    event_time: datetime | None
    ip_event: str | None = None  # what the IP and time record (CyberTipline eventName): Upload, Login, Registration


SESSION_EVENTS = {"login": "Login", "signup": "Registration"}  # security events that start a session from an IP


def account_facts(session: Session, user_id: str, *, ip_address: str | None = None,
                  before: datetime | None = None) -> AccountFacts:
    """The account's email and an IP with its time: the request's (an upload), else the latest security event's
    with an address that started a session (a login or sign-up), up to `before` (a generation: the login its
    submit came from)."""
    user = session.get(User, user_id)
    now = utcnow()
    if ip_address:
        return AccountFacts(user_id, user.email if user else None, ip_address, now, "Upload")
    query = select(SecurityEvent).where(SecurityEvent.user_id == user_id, SecurityEvent.ip_address.is_not(None),
                                        SecurityEvent.kind.in_(SESSION_EVENTS))
    if before is not None:
        query = query.where(SecurityEvent.created_at <= before)
    event = session.scalars(query.order_by(SecurityEvent.created_at.desc()).limit(1)).first()
    return AccountFacts(user_id, user.email if user else None, event.ip_address if event else None,
                        event.created_at if event else now, SESSION_EVENTS[event.kind] if event else None)


class CaseService:
    # ---- opening ----
    def open_case(self, session: Session, *, kind: str, user_id: str | None, summary: str, settings: Settings,
                  subject_type: str | None = None, subject_id: str | None = None) -> SafetyCase:
        user = session.get(User, user_id) if user_id else None
        now = utcnow()
        case = SafetyCase(id=new_id(), kind=kind, status="open", user_id=user_id,
                          user_email=user.email if user else None, summary=summary[:1000],
                          subject_type=subject_type, subject_id=subject_id, created_at=now, updated_at=now,
                          hold_until=now + timedelta(days=settings.evidence_retention_days))
        session.add(case)
        case.actions.append(CaseAction(case_id=case.id, actor_id=None, action="open", note=summary[:2000]))
        session.flush()
        return case

    def add_evidence(self, session: Session, *, case: SafetyCase, facts: AccountFacts, source: str,
                     data: bytes | None, quarantine: Quarantine | None, quarantine_blob_key: str | None = None,
                     evidence_id: str | None = None, **fields: Any) -> Evidence:
        """Preserve one item. `data` is hashed and, unless it is already in quarantine, encrypted into it."""
        evidence_id = evidence_id or new_id()
        if data is not None:
            fields.setdefault("sha256", hashlib.sha256(data).hexdigest())
            fields.setdefault("md5", hashlib.md5(data, usedforsecurity=False).hexdigest())
            fields.setdefault("size_bytes", len(data))
            if quarantine_blob_key is None and quarantine is not None:
                quarantine_blob_key = quarantine.put(evidence_id, data)
                run_after_rollback(session, quarantine.delete, quarantine_blob_key)
        evidence = Evidence(id=evidence_id, case_id=case.id, source=source, user_id=facts.user_id,
                            user_email=facts.email, ip_address=facts.ip_address, ip_event=facts.ip_event,
                            event_time=facts.event_time,
                            quarantine_blob_key=quarantine_blob_key, **fields)
        case.evidence.append(evidence)
        return evidence

    def suspend(self, session: Session, *, user_id: str | None) -> bool:
        user = session.get(User, user_id) if user_id else None
        if user is None or user.suspended_at is not None:
            return False
        user.suspended_at = utcnow()  # sessions and API keys stop working at once (kit/http.py)
        return True

    def record_hash_match(self, session: Session, *, user_id: str, source: str, match: Any, settings: Settings,
                          quarantine: Quarantine | None, data: bytes | None, subject_type: str,
                          subject_id: str | None, ip_address: str | None = None, suspend: bool = True,
                          activity_at: datetime | None = None, tasks: TaskQueue | None = None,
                          **fields: Any) -> SafetyCase:
        """A match: a case with the evidence (legal hold), and the account suspended (unless `suspend` is off).

        `ip_address`: the upload request's; `activity_at`: when a generation was submitted."""
        facts = account_facts(session, user_id, ip_address=ip_address, before=activity_at)
        case = self.open_case(session, kind="hash_match", user_id=user_id, settings=settings,
                              subject_type=subject_type, subject_id=subject_id,
                              summary=f"{subject_type} matched a {match.hash_type} hash bank entry")
        self.add_evidence(session, case=case, facts=facts, source=source, data=data, quarantine=quarantine,
                          match={"bank_id": match.bank_id, "bank_name": match.bank_name,
                                 "hash_type": match.hash_type, "distance": match.distance,
                                 "matched_value": match.matched_value}, **fields)
        if suspend and self.suspend(session, user_id=user_id):
            case.actions.append(CaseAction(case_id=case.id, action="suspend", note="automatic, on a hash match"))
        if reports_without_confirmation(settings):  # none enqueued by the CLI: the scheduled pass reports it
            enqueue_after_commit(session, tasks, "safety.report_case", case.id)
        log.warning("hash match (%s, bank %s): case %s opened for account %s%s", match.hash_type,
                    match.bank_name, case.id, user_id, " (suspended)" if suspend else "")
        return case

    def record_refusal(self, session: Session, *, user_id: str, refusal: Any, prompt: str, negative_prompt: str,
                       settings: Settings) -> SafetyCase | None:
        """Keep the refusal; the N-th within 24 h opens a prompt_flag case (one open case per account)."""
        session.add(PromptRefusalRecord(
            user_id=user_id, rule_id=refusal.rule_id, category=refusal.category, field=refusal.field,
            prompt=prompt or "", negative_prompt=negative_prompt or ""))
        session.flush()
        since = utcnow() - timedelta(hours=24)
        count = session.scalar(select(func.count()).select_from(PromptRefusalRecord).where(
            PromptRefusalRecord.user_id == user_id, PromptRefusalRecord.created_at >= since)) or 0
        if count < settings.prompt_refusals_flag:
            return None
        if session.scalars(select(SafetyCase).where(SafetyCase.user_id == user_id, SafetyCase.kind == "prompt_flag",
                                                    SafetyCase.status == "open")).first():
            return None
        case = self.open_case(session, kind="prompt_flag", user_id=user_id, settings=settings,
                              summary=f"{count} prompts refused in 24 hours (latest: {refusal.category})")
        facts = account_facts(session, user_id)
        refused = session.scalars(select(PromptRefusalRecord).where(
            PromptRefusalRecord.user_id == user_id, PromptRefusalRecord.created_at >= since)).all()
        for row in refused:
            self.add_evidence(session, case=case, facts=facts, source="prompt", data=None, quarantine=None,
                              prompt=row.prompt, negative_prompt=row.negative_prompt,
                              match={"rule_id": row.rule_id, "category": row.category})
        return case

    def report_content(self, session: Session, *, reporter: User, output_id: str | None,
                       generation_id: str | None, reason: str, settings: Settings) -> SafetyCase:
        """"Report this image": any signed-in user, for an output they can see (their own, for now)."""
        from imagen.generation.models import Generation, Output

        if bool(output_id) == bool(generation_id):
            raise field_error("output_id", "give output_id or generation_id")
        if output_id:
            output = session.get(Output, output_id)
            if output is None or output.user_id != reporter.id:
                raise NotFound("Output not found")
            gen = session.get(Generation, output.generation_id)
        else:
            gen = session.get(Generation, generation_id)
            if gen is None or gen.user_id != reporter.id:
                raise NotFound("Generation not found")
        assert gen is not None
        case = self.open_case(session, kind="user_report", user_id=gen.user_id, settings=settings,
                              subject_type="output" if output_id else "generation",
                              subject_id=output_id or gen.id, summary=f"reported by a user: {reason}"[:1000])
        session.add(UserReport(case_id=case.id, reporter_id=reporter.id, output_id=output_id,
                               generation_id=gen.id, reason=reason[:2000]))
        facts = account_facts(session, gen.user_id)
        self.add_evidence(session, case=case, facts=facts, source="report", data=None, quarantine=None,
                          generation_id=gen.id, prompt=gen.params.get("prompt"),
                          negative_prompt=gen.params.get("negative_prompt"))
        return case

    # ---- moderation ----
    def list(self, session: Session, *, status: str | None = None, kind: str | None = None,
             limit: int = 100, before: str | None = None) -> list[SafetyCase]:
        """Newest first, `limit` at a time; `before`: the last case id of the previous page (keyset)."""
        query = select(SafetyCase).order_by(SafetyCase.created_at.desc(), SafetyCase.id.desc()).limit(limit)
        if before:
            last = self.get(session, case_id=before)
            query = query.where(or_(SafetyCase.created_at < last.created_at,
                                    and_(SafetyCase.created_at == last.created_at, SafetyCase.id < last.id)))
        if status:
            query = query.where(SafetyCase.status == status)
        if kind:
            query = query.where(SafetyCase.kind == kind)
        return list(session.scalars(query))

    def get(self, session: Session, *, case_id: str) -> SafetyCase:
        case = session.get(SafetyCase, case_id)
        if case is None:
            raise NotFound("Case not found")
        return case

    def act(self, session: Session, *, case_id: str, actor: User | None, action: str, note: str,
            settings: Settings, quarantine: Quarantine, blobs: Any, days: int | None = None) -> SafetyCase:
        """A moderator's action (`actor` None: the system's own, e.g. an automatic report), audited."""
        if action not in CASE_ACTIONS:
            raise field_error("action", f"must be one of {', '.join(CASE_ACTIONS)}")
        case = self.get(session, case_id=case_id)
        result = ""
        if action == "dismiss":
            case.status = "dismissed"
        elif action == "remove":
            result = self._remove(session, case, quarantine, blobs)
            case.status = "removed"
        elif action == "suspend":
            result = "suspended" if self.suspend(session, user_id=case.user_id) else "already suspended or erased"
            case.status = "suspended"
        elif action == "restore":
            user = session.get(User, case.user_id) if case.user_id else None
            if user is not None:
                user.suspended_at = None
            result = "restored" if user is not None else "the account no longer exists"
            case.status = "restored"
        elif action == "report":
            result = self._report(session, case, actor, settings, quarantine)
        elif action == "escalate":
            result = self._escalate(case, note)
        elif action == "preserve":
            if not days:
                raise field_error("days", "preserve needs the number of days to keep the case and its evidence")
            case.hold_until = max(case.hold_until, utcnow() + timedelta(days=days))
            result = f"held until {case.hold_until:%Y-%m-%d}"
        case.updated_at = utcnow()
        case.actions.append(CaseAction(case_id=case.id, actor_id=actor.id if actor else None,
                                       actor_email=actor.email if actor else None, action=action,
                                       note=note[:2000], result=result[:1000]))
        session.flush()
        return case

    def _remove(self, session: Session, case: SafetyCase, quarantine: Quarantine, blobs: Any) -> str:
        """Take reported content down: its bytes go to quarantine as evidence, the outputs are deleted."""
        from imagen.generation.models import Generation, Output

        gen_id = next((e.generation_id for e in case.evidence if e.generation_id), None)
        if case.subject_type == "output":
            output = session.get(Output, case.subject_id)
            outputs = [output] if output else []
        else:
            gen = session.get(Generation, gen_id) if gen_id else None
            outputs = list(gen.outputs) if gen else []
        if not outputs:
            return "nothing left to remove"
        facts = account_facts(session, case.user_id) if case.user_id else AccountFacts("", None, None, None)
        for output in outputs:
            try:
                data = blobs.get(output.blob_key)
            except Exception:
                data = None
            self.add_evidence(session, case=case, facts=facts, source="output", data=data, quarantine=quarantine,
                              generation_id=output.generation_id, filename=f"{output.id}.png",
                              content_type="image/png")
            run_after_commit(session, blobs.delete, output.blob_key)
            session.delete(output)
        return f"{len(outputs)} output(s) removed and quarantined"

    def _report(self, session: Session, case: SafetyCase, actor: User | None, settings: Settings,
                quarantine: Quarantine) -> str:
        return submit_case_report(session, case, actor, settings, quarantine)

    def build_report(self, case: SafetyCase, settings: Settings, quarantine: Quarantine,
                     session: Session | None = None) -> Any:
        """The CyberTipline package for a case (`reporting.build_report`; without a session, a generated image's
        time is when its evidence was recorded)."""
        return build_report(session, case, settings, quarantine)

    def _escalate(self, case: SafetyCase, note: str) -> str:
        """Ask NCMEC for high priority (`escalateToHighPriority`: an immediate risk to a child), with the reason."""
        if case.ncmec_report_id:
            raise Conflict(f"Already reported to NCMEC (report {case.ncmec_report_id}); call the CyberTipline to "
                           "escalate it")
        if not note.strip():
            raise field_error("note", "escalate needs the reason: what puts a child at immediate risk")
        case.ncmec_escalation = note.strip()[:3000]
        return "the NCMEC report will ask for high priority"

    def set_role(self, session: Session, *, user_id: str, role: str) -> User:
        if role not in ROLES:
            raise field_error("role", f"must be one of {', '.join(ROLES)}")
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("User not found")
        if user.role == "admin" and role != "admin" and session.scalar(
                select(func.count()).select_from(User).where(User.role == "admin")) == 1:
            raise Conflict("This is the only admin account; make another account admin first")
        user.role = role
        return user


case_service = CaseService()
