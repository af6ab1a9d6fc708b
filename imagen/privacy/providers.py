"""The service providers (processors) IMAGEN can use, and which of them this installation has configured.

Policy §4.1 lists exactly the enabled ones; the data map (`datamap.py`) names them by `id`. A provider is enabled
by the setting that switches IMAGEN to it (`enabled_by` says which, for the documentation); settings that a
later build adds are read with getattr, so a provider stays off until its setting exists and is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from imagen.kit.config import Settings


def _setting(settings: Settings, name: str) -> str:
    value = getattr(settings, name, None)
    return "" if value is None else str(value).strip()


def _host(value: str) -> str:
    return (urlparse(value).hostname or "") if "://" in value else value.split(":")[0]


def _storage_name(settings: Settings) -> str:
    host = _host(_setting(settings, "s3_endpoint_url")).lower()
    if host.endswith("r2.cloudflarestorage.com"):
        return "Cloudflare (R2)"
    if not host or host.endswith("amazonaws.com"):
        return "Amazon Web Services (S3)"
    if "backblazeb2.com" in host:
        return "Backblaze (B2)"
    return f"S3-compatible storage ({host})"


def _mail_name(settings: Settings) -> str:
    host = _host(_setting(settings, "smtp_host")).lower()
    for needle, name in (("postmarkapp.com", "Postmark"), ("amazonaws.com", "Amazon Web Services (SES)"),
                         ("mailgun", "Mailgun"), ("sendgrid", "SendGrid"), ("brevo", "Brevo"),
                         ("sparkpost", "SparkPost"), ("mailjet", "Mailjet")):
        if needle in host:
            return name
    return f"Email delivery ({host})" if host else "Email delivery (SMTP)"


def _local_host(value: str) -> bool:
    host = _host(value).lower()
    return host in ("", "localhost", "127.0.0.1", "::1") or host.endswith(".local")


@dataclass(frozen=True)
class Provider:
    id: str
    purpose: str
    data: str
    enabled_by: str
    enabled: Callable[[Settings], bool]
    name: Callable[[Settings], str]


PROVIDERS: tuple[Provider, ...] = (
    Provider("hosting", "Application hosting", "Account data, generations, uploads, logs",
             "IMAGEN_HOSTING_PROVIDER", lambda s: bool(_setting(s, "hosting_provider")),
             lambda s: _setting(s, "hosting_provider")),
    Provider("runpod", "GPU inference", "Generation parameters, model files, transient inputs/outputs",
             "IMAGEN_EXECUTOR=runpod", lambda s: _setting(s, "executor") == "runpod", lambda s: "RunPod"),
    Provider("cloudflare_r2", "Storage and content delivery", "Uploaded assets, generated outputs",
             "IMAGEN_STORAGE=s3", lambda s: _setting(s, "storage") == "s3", _storage_name),
    Provider("smtp", "Service emails", "Email address, message content",
             "IMAGEN_MAIL_BACKEND=smtp (to a host other than this machine)",
             lambda s: _setting(s, "mail_backend") == "smtp" and not _local_host(_setting(s, "smtp_host")),
             _mail_name),
    Provider("postmark", "Service emails and notices", "Email address, message content",
             "IMAGEN_MAIL_BACKEND=postmark", lambda s: _setting(s, "mail_backend") == "postmark",
             lambda s: "Postmark"),
    Provider("stripe", "Payment processing", "Email, billing details, transaction data",
             "IMAGEN_BILLING=stripe", lambda s: _setting(s, "billing") == "stripe", lambda s: "Stripe"),
    Provider("posthog", "Product analytics (only with your consent)",
             "Pseudonymous usage events (no email, prompt, IP address or file name)",
             "IMAGEN_ANALYTICS=posthog", lambda s: _setting(s, "analytics") == "posthog", lambda s: "PostHog"),
)


@dataclass(frozen=True)
class ConfiguredProvider:
    id: str
    name: str
    purpose: str
    data: str


def configured_providers(settings: Settings) -> list[ConfiguredProvider]:
    """The providers this installation really uses, in the policy's order."""
    return [ConfiguredProvider(p.id, p.name(settings), p.purpose, p.data) for p in PROVIDERS if p.enabled(settings)]
