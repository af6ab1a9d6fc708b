"""Policy versions and consent records. Services take the session first and never commit.

Consent records are append-only: a change is a new row, and the latest row per purpose is the user's
current choice. Withdrawal therefore applies to everything that reads the choice afterwards (a generation
submitted later is stamped with it).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imagen.consent.models import ConsentRecord, PolicyVersion
from imagen.kit.db import utcnow
from imagen.kit.errors import Conflict, Forbidden, field_error
from imagen.mail.outbox import Outbox

log = logging.getLogger(__name__)

PURPOSES = ("policy_acceptance", "model_improvement", "marketing_emails", "analytics")
# What a user chooses in the consent centre (policy acceptance is not a choice there).
CHOICES = ("model_improvement", "marketing_emails", "analytics")
# EU member states, the rest of the EEA, the United Kingdom and Switzerland: every purpose is opt-in there.
EXPLICIT_OPT_IN_COUNTRIES = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT", "LU",
    "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",  # EU
    "IS", "LI", "NO",  # EEA
    "GB", "CH",
})
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
# Writes that keep working before a changed policy is accepted: the user's own privacy functions
# (consents, export, erasure, notifications, the acceptance itself), signing in and out, operator duties.
POLICY_EXEMPT_PREFIXES = ("/api/v1/me/", "/api/v1/auth/", "/api/v1/admin/", "/api/v1/cookie-consent",
                          "/api/v1/minor-reports", "/api/v1/privacy-requests")


def explicit_opt_in(country: str) -> bool:
    return country.upper() in EXPLICIT_OPT_IN_COUNTRIES


def parse_defaults(value: str) -> frozenset[str]:
    """IMAGEN_CONSENT_DEFAULTS_ELSEWHERE: a comma-separated list of purposes."""
    return frozenset(p.strip() for p in value.split(",") if p.strip() in CHOICES)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class PolicyStatus:
    current: PolicyVersion
    accepted_version: str | None
    acceptance_required: bool


@dataclass(frozen=True)
class Choice:
    purpose: str
    granted: bool
    chosen: bool  # False: no record yet, the regional default applies
    source: str | None
    policy_version: str | None
    at: datetime | None


class ConsentService:
    # ---- policy versions ----
    def ensure_policy_version(self, session: Session, *, version: str, text: str) -> PolicyVersion:
        """Record the configured initial version (IMAGEN_POLICY_VERSION) when no version exists yet.

        Later versions are published with `publish` (CLI or admin API); the newest one is current.
        """
        row = session.get(PolicyVersion, version)
        if row is not None:
            return row
        if session.scalar(select(func.count()).select_from(PolicyVersion)):
            current = self.current_version(session)
            log.warning("IMAGEN_POLICY_VERSION=%s was never published; the current version is %s "
                        "(publish a new one with `imagen policy publish`)", version, current.version)
            return current
        row = PolicyVersion(version=version, published_at=utcnow(), material=True, text_sha256=text_sha256(text))
        session.add(row)
        session.flush()
        return row

    def current_version(self, session: Session) -> PolicyVersion:
        row = session.scalars(
            select(PolicyVersion).order_by(PolicyVersion.published_at.desc(), PolicyVersion.created_at.desc())
        ).first()
        if row is None:
            raise LookupError("no privacy policy version has been recorded yet")
        return row

    def list_versions(self, session: Session) -> list[PolicyVersion]:
        return list(session.scalars(select(PolicyVersion).order_by(PolicyVersion.published_at.desc())))

    def publish(
        self, session: Session, *, version: str, material: bool, summary: str | None, text: str,
        outbox: Outbox | None = None,
    ) -> tuple[PolicyVersion, int]:
        """Record a new current version; a material one notifies every user, who must accept it (→ count). With
        the app's `outbox` the notice is emailed too when mail really leaves the server (policy §11)."""
        from imagen.notifications.service import notification_service

        version = version.strip()
        if not VERSION_PATTERN.match(version):
            raise field_error("version", "use 1 to 32 letters, digits, dots, dashes or underscores, e.g. 2026-06-01")
        if session.get(PolicyVersion, version) is not None:
            raise Conflict(f"Policy version {version!r} is already published; versions are never changed")
        summary = (summary or "").strip() or None
        row = PolicyVersion(version=version, published_at=utcnow(), material=material,
                            text_sha256=text_sha256(text), summary=summary)
        session.add(row)
        session.flush()
        notified = 0
        if material:
            body = (f"{summary}\n\n" if summary else "") + (
                "Please read the updated policy and accept it to keep creating. Until then you can still view, "
                "export or delete your data and change your consent choices.")
            notified = notification_service.notify_all(
                session, kind="policy_changed", title=f"Our privacy policy has changed (version {version})",
                body=body, link="/privacy", outbox=outbox)
        return row, notified

    def policy_status(self, session: Session, *, user_id: str) -> PolicyStatus:
        current = self.current_version(session)
        latest_material = session.scalars(
            select(PolicyVersion).where(PolicyVersion.material.is_(True))
            .order_by(PolicyVersion.published_at.desc())
        ).first()
        accepted = (
            select(PolicyVersion.published_at)
            .join(ConsentRecord, ConsentRecord.policy_version == PolicyVersion.version)
            .where(ConsentRecord.user_id == user_id, ConsentRecord.purpose == "policy_acceptance",
                   ConsentRecord.granted.is_(True))
        )
        accepted_at = session.scalar(select(func.max(accepted.subquery().c.published_at)))
        last = self.current(session, user_id=user_id).get("policy_acceptance")
        required = latest_material is not None and (accepted_at is None or accepted_at < latest_material.published_at)
        return PolicyStatus(current=current, accepted_version=last.policy_version if last else None,
                            acceptance_required=required)

    def accept_policy(self, session: Session, *, user_id: str, version: str, source: str) -> ConsentRecord:
        current = self.current_version(session)
        if version != current.version:
            raise field_error("version", f"Policy version {version!r} is not the current version "
                                         f"{current.version!r}; read and accept the current policy")
        return self.record(session, user_id=user_id, purpose="policy_acceptance", granted=True,
                           policy_version=current.version, source=source)

    def require_policy_accepted(self, session: Session, *, user_id: str, method: str, path: str) -> None:
        """Refuse a write (403) while a material policy change is not accepted; reads, deletions and the
        privacy functions keep working."""
        if method not in ("POST", "PUT", "PATCH") or path == "/api/v1/me" or path.startswith(POLICY_EXEMPT_PREFIXES):
            return
        if path.endswith("/cancel"):  # stopping work already started is never blocked
            return
        status = self.policy_status(session, user_id=user_id)
        if status.acceptance_required:
            version = status.current.version
            raise Forbidden(
                f"The privacy policy has changed (version {version}). Read it at /privacy and accept it "
                f"(POST /api/v1/me/policy-acceptance with {{\"version\": \"{version}\"}}) to continue. Until then "
                "you can still view, export or delete your data and change your consents.")

    # ---- consent records ----
    def record(
        self, session: Session, *, user_id: str, purpose: str, granted: bool, policy_version: str, source: str
    ) -> ConsentRecord:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown consent purpose {purpose!r}")
        rec = ConsentRecord(
            user_id=user_id, purpose=purpose, granted=granted, policy_version=policy_version, source=source
        )
        session.add(rec)
        return rec

    def history(self, session: Session, *, user_id: str) -> list[ConsentRecord]:
        """Every record, oldest first."""
        return list(session.scalars(
            select(ConsentRecord).where(ConsentRecord.user_id == user_id)
            .order_by(ConsentRecord.created_at, ConsentRecord.id)
        ))

    def current(self, session: Session, *, user_id: str) -> dict[str, ConsentRecord]:
        """The latest record per purpose."""
        latest: dict[str, ConsentRecord] = {}
        for row in self.history(session, user_id=user_id):
            latest[row.purpose] = row
        return latest

    def is_granted(self, session: Session, *, user_id: str, purpose: str) -> bool:
        row = self.current(session, user_id=user_id).get(purpose)
        return bool(row and row.granted)

    def default_for(self, *, country: str, purpose: str, elsewhere: frozenset[str]) -> bool:
        """What applies before the user chooses: off in opt-in regions, the operator's default elsewhere."""
        return not explicit_opt_in(country) and purpose in elsewhere

    def choices(self, session: Session, *, user_id: str, country: str,
                elsewhere: frozenset[str]) -> dict[str, Choice]:
        current = self.current(session, user_id=user_id)
        out = {}
        for purpose in CHOICES:
            row = current.get(purpose)
            if row is None:
                out[purpose] = Choice(purpose, self.default_for(country=country, purpose=purpose, elsewhere=elsewhere),
                                      False, None, None, None)
            else:
                out[purpose] = Choice(purpose, row.granted, True, row.source, row.policy_version, row.created_at)
        return out

    def update_choices(self, session: Session, *, user_id: str, changes: dict[str, bool],
                       source: str) -> list[ConsentRecord]:
        """Append a record for each purpose whose choice changes (or is made for the first time)."""
        unknown = set(changes) - set(CHOICES)
        if unknown:
            raise ValueError(f"unknown consent purposes {sorted(unknown)}")
        current = self.current(session, user_id=user_id)
        version = self.current_version(session).version
        added = []
        for purpose in CHOICES:
            if purpose not in changes:
                continue
            row = current.get(purpose)
            if row is not None and row.granted == changes[purpose]:
                continue
            added.append(self.record(session, user_id=user_id, purpose=purpose, granted=changes[purpose],
                                     policy_version=version, source=source))
        session.flush()
        return added


consent_service = ConsentService()
