"""Marketing use of outputs (policy §3): only with the owner's written consent for that output on record.

The owner gives (or withdraws) consent per output; the record keeps the exact text shown, the time and the
policy version. An admin can mark an output for marketing only while such a consent is current; withdrawing
ends the marking with it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.consent.models import OutputMarketingConsent
from imagen.consent.service import consent_service
from imagen.generation.models import Output
from imagen.kit.db import utcnow
from imagen.kit.errors import Conflict, NotFound, field_error
from imagen.kit.scoped import get_owned

CONSENT_TEXT = (
    "I allow {entity} to use this image, which I generated with IMAGEN, in its marketing materials (for example "
    "the website, social media and advertisements). I can withdraw this consent at any time; it then stops being "
    "used in new materials."
)


class MarketingService:
    def consent_text(self, *, legal_entity: str) -> str:
        return CONSENT_TEXT.format(entity=legal_entity)

    def current(self, session: Session, *, output_id: str) -> OutputMarketingConsent | None:
        return session.scalars(
            select(OutputMarketingConsent)
            .where(OutputMarketingConsent.output_id == output_id, OutputMarketingConsent.withdrawn_at.is_(None))
            .order_by(OutputMarketingConsent.created_at.desc())
        ).first()

    def owned_output(self, session: Session, *, user: User, output_id: str) -> Output:
        return get_owned(session, Output, output_id, user.id, what="Output")

    def give(self, session: Session, *, user: User, output_id: str, text_shown: str,
             agree: bool) -> tuple[OutputMarketingConsent, bool]:
        """(consent, created): an output that already has a current consent keeps it."""
        output = self.owned_output(session, user=user, output_id=output_id)
        if not agree:
            raise field_error("agree", "consent must be given explicitly: send agree=true (or do nothing)")
        if existing := self.current(session, output_id=output.id):
            return existing, False
        row = OutputMarketingConsent(output_id=output.id, user_id=user.id, text_shown=text_shown.strip(),
                                     policy_version=consent_service.current_version(session).version)
        session.add(row)
        session.flush()
        return row, True

    def withdraw(self, session: Session, *, user: User, output_id: str) -> OutputMarketingConsent:
        output = self.owned_output(session, user=user, output_id=output_id)
        row = self.current(session, output_id=output.id)
        if row is None:
            raise NotFound("This output has no marketing consent to withdraw")
        row.withdrawn_at = utcnow()
        return row

    def mark(self, session: Session, *, admin: User, output_id: str) -> OutputMarketingConsent:
        if session.get(Output, output_id) is None:
            raise NotFound("Output not found")
        row = self.current(session, output_id=output_id)
        if row is None:
            raise Conflict("This output cannot be used in marketing: its owner has not given written consent for "
                           "it (or withdrew it)")
        if row.marked_at is None:
            row.marked_at, row.marked_by = utcnow(), admin.id
        return row

    def unmark(self, session: Session, *, output_id: str) -> None:
        row = self.current(session, output_id=output_id)
        if row is not None:
            row.marked_at, row.marked_by = None, None

    def marked(self, session: Session, *, limit: int = 500) -> list[OutputMarketingConsent]:
        """Outputs marked for marketing whose consent is still current."""
        return list(session.scalars(
            select(OutputMarketingConsent)
            .where(OutputMarketingConsent.withdrawn_at.is_(None), OutputMarketingConsent.marked_at.is_not(None))
            .order_by(OutputMarketingConsent.marked_at.desc()).limit(limit)
        ))

    def for_user(self, session: Session, *, user_id: str) -> list[OutputMarketingConsent]:
        """The user's current consents (the consent centre lists them with a withdraw button)."""
        return list(session.scalars(
            select(OutputMarketingConsent)
            .where(OutputMarketingConsent.user_id == user_id, OutputMarketingConsent.withdrawn_at.is_(None))
            .order_by(OutputMarketingConsent.created_at.desc())
        ))


marketing_service = MarketingService()
