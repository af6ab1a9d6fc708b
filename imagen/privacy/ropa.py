"""The record of processing activities (GDPR Art. 30), generated from the data map and the configuration."""

from __future__ import annotations

from typing import Any

from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.privacy.datamap import DATA_MAP, DataItem
from imagen.privacy.records.holdings import SETTING_NAME

# Provider ids as the data map uses them -> how the policy's §4.1 table names them. The provider registry
# (which of them this installation has configured) belongs to the policy page; this record lists recipients.
PROVIDERS = {
    "hosting": "Application hosting (AWS / hosting provider): account data, logs",
    "runpod": "RunPod: GPU inference",
    "cloudflare_r2": "Cloudflare (R2, CDN): storage and content delivery",
    "stripe": "Stripe: payment processing",
    "smtp": "Email delivery (Postmark / SMTP): service emails",
    "postmark": "Postmark (HTTP API): service emails and notices",
    "posthog": "PostHog: product analytics",
}

SECURITY_MEASURES = [
    "passwords hashed with argon2; login-session and API-key tokens stored only as SHA-256 hashes",
    "session cookie HttpOnly, Secure, SameSite=Lax; CSRF token required on cookie-authenticated writes",
    "owner-scoped reads: another user's object answers 404",
    "uploaded model files accepted as safetensors only (pickle refused); reference images re-encoded without "
    "metadata",
    "transient job inputs deleted when the job ends; data exports expire",
    "erasure verified by a residue scan over every table and the blob store",
    "one transaction per request; background work only after commit",
]


def _retention(item: DataItem, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"period": item.retention}
    keys = [k for k in (item.retention_setting, item.hold.setting if item.hold else None) if k]
    keys += [k for k in SETTING_NAME.findall(item.retention) if hasattr(settings, k)]  # e.g. the export link
    out["configured"] = {f"IMAGEN_{k.upper()}": getattr(settings, k, None) for k in dict.fromkeys(keys)}
    return out


def _erasure(item: DataItem) -> dict[str, Any]:
    out: dict[str, Any] = {"action": item.erasure}
    if item.anonymize:
        out["emptied"] = list(item.anonymize)
    if item.hold:
        out["legal_hold"] = {"reason": item.hold.reason, "period_setting": f"IMAGEN_{item.hold.setting.upper()}"}
    return out


def build_record(settings: Settings) -> dict[str, Any]:
    activities = []
    for item in DATA_MAP:
        activities.append({
            "name": item.name, "category": item.category, "description": item.description,
            "data_subjects": "users of the service (18 and older)", "source": item.source,
            "purpose": item.purpose, "legal_basis": item.legal_basis,
            "recipients": [{"id": p, "name": PROVIDERS.get(p, p)} for p in item.providers]
            + [{"id": "legal_obligation", "name": who} for who in item.disclosed_to],
            "retention": _retention(item, settings), "erasure": _erasure(item),
            "storage": {"table": item.table, "blobs": item.blob_prefix},
            "collected": item.collected, "note": item.note,
        })
    return {
        "title": "Record of processing activities (GDPR Art. 30)",
        "generated_at": utcnow().isoformat(timespec="seconds"),
        "controller": {"name": settings.legal_entity, "address": settings.postal_address,
                       "contact": settings.contact_email, "site": settings.site_domain},
        "policy_version": settings.policy_version,
        "rights_response_days": settings.privacy_response_days,
        "international_transfers": "providers may process data in the United States; Standard Contractual "
                                   "Clauses and the UK IDTA apply (policy §5)",
        "security_measures": SECURITY_MEASURES,
        "activities": activities,
    }


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(record: dict[str, Any]) -> str:
    c = record["controller"]
    lines = [
        f"# {record['title']}", "",
        f"Controller: {c['name']}, {c['address']}; contact {c['contact']} ({c['site']}).  ",
        f"Policy version {record['policy_version']}; generated {record['generated_at']} from the data map.  ",
        f"Rights requests answered within {record['rights_response_days']} days.  ",
        f"International transfers: {record['international_transfers']}.", "",
        "| category | data | source | purpose | legal basis | recipients | retention | on erasure |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in record["activities"]:
        configured = ", ".join(f"{k}={v}" for k, v in a["retention"]["configured"].items())
        retention = a["retention"]["period"] + (f" ({configured})" if configured else "")
        erasure = a["erasure"]["action"]
        if "emptied" in a["erasure"]:
            erasure += f" ({', '.join(a['erasure']['emptied'])} emptied)"
        if "legal_hold" in a["erasure"]:
            erasure += f": {a['erasure']['legal_hold']['reason']}"
        data = a["description"] + ("" if a["collected"] else f" (not collected: {a['note']})")
        recipients = "; ".join(r["name"] for r in a["recipients"]) or "none"
        lines.append("| " + " | ".join(_cell(x) for x in (
            a["category"], data, a["source"], a["purpose"], a["legal_basis"], recipients, retention, erasure)) + " |")
    lines += ["", "## Security measures (Art. 32)", ""] + [f"- {m}" for m in record["security_measures"]]
    return "\n".join(lines) + "\n"
