"""The published privacy policy: the policy text with the operator's configuration filled in.

The template (`privacy-policy.txt`) is kept as written; rendering
- fills the operator's placeholders (entity, address, contact email, domain) and the "Last updated" date;
- replaces the §4.1 table with the providers this installation really uses (`imagen.privacy.providers`),
  written as `Provider | Purpose | Data shared` rows;
- completes the lists the template introduces but leaves empty ("You may:"), from what the code does
  (`LISTS` below; the §6 cookie list comes from the cookie registry);
- leaves out the drafting notes meant for the operator ("[LAWYER] …", "Legal review required").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from importlib import resources
from typing import Any

from imagen.kit.config import Settings
from imagen.privacy.providers import configured_providers

TABLE_HEADER = "Provider Purpose Data shared"
PROVIDERS_INTRO = "We use third-party services to operate IMAGEN."
NO_PROVIDERS = ("This installation of IMAGEN currently uses no third-party service providers: your information "
                "is not shared with any processor. If that changes, this section is updated and a new policy "
                "version is published.")
DRAFTING_NOTES = ("[LAWYER]", "⚠️ Legal review required")


def _cookie_items(settings: Settings) -> list[str]:
    from imagen.consent.cookies import cookie_registry

    items = [f"Essential: {c.name}, which {c.purpose}; kept {c.lifetime}" for c in cookie_registry(settings)
             if c.category == "essential"]
    analytics = next((p for p in configured_providers(settings) if p.id == "posthog"), None)
    how = f"{analytics.name} product analytics" if analytics else "no analytics service is configured at present"
    items.append(f"Analytics: only after you accept them in the cookie banner or the consent centre, and never "
                 f"while your browser sends Global Privacy Control ({how}). No third-party cookies are set.")
    return items


def _deletion_items(settings: Settings) -> list[str]:
    grace = int(getattr(settings, "erasure_grace_days", 0) or 0)
    items = ["Your account, generations, images, uploaded files, presets, API keys and consent history are "
             "erased from our database and storage, and removed from model-improvement pipelines",
             "Records we must keep by law (for example payment records) are kept with the fewest details "
             "possible and deleted when their period ends"]
    if grace:
        items.insert(0, f"Erasure starts {grace} days after your request; you can cancel it until then")
    return items


def _security_items(settings: Settings) -> list[str]:
    items = ["Passwords stored only as Argon2 hashes; login-session and API-key tokens stored only as hashes",
             "Protection against cross-site request forgery on every change made from the browser",
             "Access checks that keep each user's generations, images and uploads private",
             "Uploaded model files accepted only in the safetensors format; other formats are refused"]
    if settings.cookie_secure:
        items.insert(1, "Login cookies sent only over encrypted connections")
    return items


# Intro line of the template → the list that follows it.
LISTS: dict[str, Callable[[Settings], list[str]]] = {
    "1.1 Information you provide directly": lambda s: [
        "Account details: email address, password (stored only as a hash), date of birth and country",
        "Your consent choices and the policy versions you accepted, with their dates",
        "What you create: prompts, generation parameters, saved presets, and the images generated for you",
        "Files you upload: checkpoints, LoRAs and reference images (reference images are stored re-encoded, "
        "without their metadata)",
        "What you send us: privacy requests, reports, and consent to use an image in our marketing",
    ],
    "1.2 Information collected automatically": lambda s: [
        "IP address, browser user agent and time of each sign-up, login, logout and failed login",
        "Technical data about each generation: timings, memory use, and the model files used (by content hash)",
        "Your cookie choice (see §6), and product analytics only if you consent to them",
    ],
    "We use collected information to:": lambda s: [
        "Provide the Service: run your generations and keep your images, models and settings for you",
        "Keep accounts and the Service secure, and prevent abuse",
        "Send service messages, and marketing emails only if you opted in",
        "Improve the Service as described in §3, only with your consent",
        "Meet our legal obligations and answer your privacy requests",
    ],
    "necessary to:": lambda s: [
        "Comply with a legal obligation",
        "Protect the rights, property or safety of IMAGEN, our users or the public",
        "Detect, prevent or address fraud, abuse, security or technical issues",
    ],
    "We use cookies and similar technologies for:": _cookie_items,
    "plus an additional period as required to:": lambda s: [
        "Comply with legal obligations, such as keeping payment records",
        "Resolve disputes and enforce our agreements",
    ],
    "When you delete your account:": _deletion_items,
    "You may:": lambda s: [
        "See and change your consent choices at any time in the consent centre (/privacy/consents)",
        "Get a copy of your data in a machine-readable export",
        "Delete your account and your data",
        "Ask us to correct information that is wrong",
    ],
    "In addition to the above, you have the right to:": lambda s: [
        "Object to our processing of your data, or ask us to restrict it",
        "Receive your data in a portable format",
        "Withdraw your consent at any time, without affecting processing that took place before",
        "Lodge a complaint with your data protection authority",
    ],
    "You have the right to:": lambda s: [
        "Know what personal information we collect, use and disclose",
        "Delete and correct your personal information",
        "Opt out of the sale or sharing of your personal information (we do neither; Global Privacy Control "
        "is honoured as an opt-out)",
        "Not be discriminated against for using these rights",
    ],
    "including:": _security_items,
}


# Start of a template paragraph → a paragraph added after it, saying how the code keeps that promise.
ADDED: dict[str, str] = {
    "The Service is for users 18 and older.": "You can also tell us without an account, using the \u201cReport a "
    "minor\u201d form at /report-minor. If we confirm the report, we erase the account.",
    "We may update this Privacy Policy from time to time.": "Every published version is listed with its date. "
    "After a material change you are asked to accept the new version at your next login; until you do, you can "
    "still view, export or delete your data and change your consent choices, but not create new content. The "
    "versions you accepted are kept in your consent history.",
}


def policy_template() -> str:
    return resources.files("imagen.privacy").joinpath("privacy-policy.txt").read_text()


def _bullets(items: list[str]) -> str:
    return "\n".join(f"  • {item}" for item in items)


def provider_table(settings: Settings) -> str | None:
    providers = configured_providers(settings)
    if not providers:
        return None
    rows = ["Provider | Purpose | Data shared"]
    rows += [f"{p.name} | {p.purpose} | {p.data}" for p in providers]
    return "\n".join(rows)


def _list_for(block: str) -> Callable[[Settings], list[str]] | None:
    for intro, items in LISTS.items():
        if block == intro or (intro.endswith(":") and block.endswith(intro)):
            return items
    return None


def render_policy(settings: Settings, *, updated: date | None = None, drafting_notes: bool = False) -> str:
    text = policy_template()
    replacements = {
        "[YOUR LEGAL ENTITY NAME]": settings.legal_entity,
        "[YOUR ADDRESS]": settings.postal_address,
        # The template's placeholder has a no-break space (as copied from a web page); accept both.
        "[email\u00a0protected]": settings.contact_email,
        "[email protected]": settings.contact_email,
        "imagegen.reetche.com": settings.site_domain,
    }
    for placeholder, value in replacements.items():
        text = text.replace(placeholder, value)
    table = provider_table(settings)
    out: list[str] = []
    for block in text.split("\n\n"):
        if not drafting_notes and block.startswith(DRAFTING_NOTES):
            continue
        if updated is not None and block.startswith("Last updated:"):
            block = f"Last updated: {updated:%B} {updated.day}, {updated.year}"
        if block.startswith(TABLE_HEADER):
            if table:
                out.append(table)
            continue
        if block.startswith(PROVIDERS_INTRO) and table is None:
            out.append(NO_PROVIDERS)
            continue
        out.append(block)
        if (items := _list_for(block)) is not None:
            out.append(_bullets(items(settings)))
        out.extend(text for start, text in ADDED.items() if block.startswith(start))
    return "\n\n".join(out)


def render_version(settings: Settings, versions: list[Any]) -> str:
    """The text of the newest of `versions` (newest first). The first version keeps the template's own "Last
    updated" date; a version published later shows its publication date."""
    return render_policy(settings, updated=versions[0].published_at.date() if len(versions) > 1 else None)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def policy_sha256(settings: Settings, *, updated: date | None = None) -> str:
    return text_sha256(render_policy(settings, updated=updated))
