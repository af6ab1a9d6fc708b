"""The suppression list: addresses mail must not go to. Filled by Postmark's bounce and spam-complaint webhook
(`endpoints.py`) and by Postmark refusing an inactive recipient; read by the outbox before every delivery."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.kit.inputs import normalize_email
from imagen.mail.models import MailSuppression

# Bounce types after which Postmark itself deactivates the address (its `Inactive` flag says so too).
PERMANENT_BOUNCES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated", "SpamNotification",
                               "Blocked", "DMARCPolicy"})


class SuppressionService:
    def find(self, session: Session, email: str) -> MailSuppression | None:
        return session.scalar(select(MailSuppression).where(MailSuppression.email == normalize_email(email)))

    def suppress(self, session: Session, *, email: str, reason: str, detail: str | None = None) -> MailSuppression:
        """Add the address (again: the reason and detail are updated). Nothing here commits."""
        address = normalize_email(email)
        row = self.find(session, address)
        if row is None:
            user_id = session.scalar(select(User.id).where(User.email == address))
            row = MailSuppression(email=address, user_id=user_id, reason=reason)
            session.add(row)
        row.reason, row.detail = reason, (detail or "")[:500] or None
        session.flush()
        return row

    def lift(self, session: Session, *, email: str) -> bool:
        return bool(session.execute(delete(MailSuppression)
                                    .where(MailSuppression.email == normalize_email(email))).rowcount)

    def apply_postmark_event(self, session: Session, event: dict[str, Any]) -> str:
        """One Postmark webhook record → what was done ("suppressed", "lifted" or "ignored")."""
        kind, email = event.get("RecordType"), event.get("Email") or event.get("Recipient")
        if not isinstance(email, str) or "@" not in email:
            return "ignored"
        if kind == "SpamComplaint":
            self.suppress(session, email=email, reason="spam_complaint", detail=_text(event.get("Description")))
            return "suppressed"
        if kind == "Bounce":
            if event.get("Inactive") is True or event.get("Type") in PERMANENT_BOUNCES:
                self.suppress(session, email=email, reason="hard_bounce",
                              detail=_text(event.get("Description") or event.get("Name")))
                return "suppressed"
            return "ignored"  # soft bounces are retried by Postmark and by mail.retry
        if kind == "SubscriptionChange":
            if event.get("SuppressSending") is True:
                reason = "spam_complaint" if event.get("SuppressionReason") == "SpamComplaint" else "unsubscribed"
                self.suppress(session, email=email, reason=reason, detail=_text(event.get("SuppressionReason")))
                return "suppressed"
            if event.get("SuppressSending") is False:
                return "lifted" if self.lift(session, email=email) else "ignored"
        return "ignored"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


suppression_service = SuppressionService()
