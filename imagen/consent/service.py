"""Policy versions and consent records. Services take the session first and never commit."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from imagen.consent.models import ConsentRecord, PolicyVersion
from imagen.kit.db import utcnow

PURPOSES = ("policy_acceptance", "model_improvement", "marketing_emails")


class ConsentService:
    def ensure_policy_version(self, session: Session, *, version: str, text: str) -> PolicyVersion:
        row = session.get(PolicyVersion, version)
        if row is None:
            row = PolicyVersion(
                version=version,
                published_at=utcnow(),
                material=True,
                text_sha256=hashlib.sha256(text.encode()).hexdigest(),
            )
            session.add(row)
            session.flush()
        return row

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

    def current(self, session: Session, *, user_id: str) -> dict[str, ConsentRecord]:
        """The latest record per purpose."""
        rows = session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.user_id == user_id)
            .order_by(ConsentRecord.created_at, ConsentRecord.id)
        )
        latest: dict[str, ConsentRecord] = {}
        for row in rows:
            latest[row.purpose] = row
        return latest

    def is_granted(self, session: Session, *, user_id: str, purpose: str) -> bool:
        row = self.current(session, user_id=user_id).get(purpose)
        return bool(row and row.granted)


consent_service = ConsentService()
