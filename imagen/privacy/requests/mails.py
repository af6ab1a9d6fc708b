"""What the requester is told by email, as (subject, text). Plain text; no tracking, no links to third parties."""

from __future__ import annotations

from datetime import datetime

from imagen.kit.config import Settings
from imagen.privacy.requests.models import PrivacyRequest

KIND_LABELS = {
    "access": "a copy of your data (access / export)",
    "deletion": "deletion of your data",
    "correction": "correction of your data",
    "restriction": "restriction of processing",
    "objection": "an objection to processing",
    "opt_out": "an opt-out of sale, sharing or marketing",
}


def _day(value: datetime) -> str:
    return value.strftime("%d %B %Y")


def _footer(settings: Settings, req: PrivacyRequest) -> str:
    return (f"\n\nRequest reference: {req.id}\n"
            f"Questions: {settings.contact_email}\n{settings.legal_entity}, {settings.postal_address}\n")


def code_mail(settings: Settings, req: PrivacyRequest, code: str, expires_at: datetime) -> tuple[str, str]:
    link = f"{settings.base_url.rstrip('/')}/privacy/request?id={req.id}"
    text = (
        f"We received a privacy request for {KIND_LABELS[req.kind]} from this email address on "
        f"{_day(req.received_at)}.\n\n"
        f"To confirm it was you, enter this code:\n\n    {code}\n\n"
        f"at {link}\n\n"
        f"The code is valid until {expires_at.strftime('%d %B %Y %H:%M')} UTC. If you did not make this request, "
        "ignore this message: nothing happens until the code is entered.\n"
        f"We will respond by {_day(req.due_at)}."
    )
    return "Confirm your privacy request", text + _footer(settings, req)


def received_mail(settings: Settings, req: PrivacyRequest) -> tuple[str, str]:
    text = (f"We received your privacy request for {KIND_LABELS[req.kind]} on {_day(req.received_at)}.\n"
            f"We will respond by {_day(req.due_at)}.")
    return "We received your privacy request", text + _footer(settings, req)


def outcome_mail(settings: Settings, req: PrivacyRequest) -> tuple[str, str] | None:
    """The message for a request that was completed, denied, canceled or extended; None for other states."""
    what = KIND_LABELS[req.kind]
    if req.status == "completed":
        subject = "Your privacy request is complete"
        text = f"We have completed your request for {what}.\n\n{req.resolution}"
    elif req.status == "denied":
        subject = "Your privacy request was declined"
        text = (f"We cannot act on your request for {what}.\n\nReason: {req.denial_reason}\n\n"
                "You may lodge a complaint with your data protection authority.")
    elif req.status == "extended":
        subject = "We need more time for your privacy request"
        text = (f"We need more time to respond to your request for {what}. "
                f"We will respond by {_day(req.due_at)}.\n\nReason: {req.extension_reason}")
    elif req.status == "canceled":
        subject = "Your privacy request was canceled"
        text = f"Your request for {what} was canceled and will not be processed."
    else:
        return None
    return subject, text + _footer(settings, req)
