"""The published privacy policy: the policy text with the operator's configuration filled in.

The template (`privacy-policy.txt`) is kept as written; rendering
- fills the operator's placeholders (entity, address, contact email, domain) and the "Last updated" date;
- replaces the §4.1 table with the providers this installation really uses (`imagen.privacy.providers`),
  written as `Provider | Purpose | Data shared` rows;
- completes the lists the template introduces but leaves empty ("You may:"), from what the code does
  (`LISTS` below; the §6 cookie list comes from the cookie registry);
- leaves out the drafting notes meant for the operator ("[LAWYER] …", "Legal review required");
- rewrites the sentences that are true only of some installations (`REWRITES` below) from what is configured or
  built: §3 model improvement (what the insights pipeline derives, or that none runs), §4.3 hash matching and
  NCMEC reporting (enabled hash banks, CyberTipline credentials), §4.4 and §11 notices (in-app, and by email when a
  real mail backend is configured: `Settings.mail_delivered`), §5 hosting country and transfer safeguards
  (IMAGEN_HOSTING_COUNTRY, IMAGEN_TRANSFER_SAFEGUARDS), §8.1 the response time.
What a sentence depends on beyond the settings (the banks in the database, what this build has) is `PolicyFacts`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from importlib import resources, util
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imagen.kit.config import Settings
from imagen.privacy.providers import configured_providers

TABLE_HEADER = "Provider Purpose Data shared"
PROVIDERS_INTRO = "We use third-party services to operate IMAGEN."
NO_PROVIDERS = ("This installation of IMAGEN currently uses no third-party service providers: your information "
                "is not shared with any processor. If that changes, this section is updated and a new policy "
                "version is published.")
DRAFTING_NOTES = ("[LAWYER]", "⚠️ Legal review required")

# The model-improvement (insights) pipeline (imagen/insights, docs/insights.md): §3 describes it when it is built,
# and says plainly that none runs when it is not.
MODEL_IMPROVEMENT_PIPELINE = util.find_spec("imagen.insights") is not None


def hash_banks_in_use(session: Session) -> bool:
    """An enabled hash bank holds at least one hash: uploads and outputs are really matched (policy §4.3)."""
    from imagen.safety.bank_models import HashBank

    return session.scalar(select(HashBank.id).where(HashBank.enabled.is_(True), HashBank.count > 0).limit(1)) \
        is not None


@dataclass(frozen=True)
class PolicyFacts:
    """What the conditional sentences depend on besides the settings."""

    hash_banks: bool = False  # see hash_banks_in_use
    model_improvement: bool = MODEL_IMPROVEMENT_PIPELINE

    @classmethod
    def read(cls, session: Session) -> PolicyFacts:
        return cls(hash_banks=hash_banks_in_use(session))


def ncmec_reporting(settings: Settings) -> bool:
    """Reports really reach NCMEC: credentials for the production CyberTipline (the test one files nothing)."""
    return bool(settings.ncmec_username and settings.ncmec_password) and settings.ncmec_environment == "production"


def _cookie_items(settings: Settings, _facts: PolicyFacts) -> list[str]:
    from imagen.consent.cookies import cookie_registry

    items = [f"Essential: {c.name}, which {c.purpose}; kept {c.lifetime}" for c in cookie_registry(settings)
             if c.category == "essential"]
    analytics = next((p for p in configured_providers(settings) if p.id == "posthog"), None)
    how = f"{analytics.name} product analytics" if analytics else "no analytics service is configured at present"
    items.append(f"Analytics: only after you accept them in the cookie banner or the consent centre, and never "
                 f"while your browser sends Global Privacy Control ({how}). No third-party cookies are set.")
    return items


def _deletion_items(settings: Settings, facts: PolicyFacts) -> list[str]:
    grace = int(getattr(settings, "erasure_grace_days", 0) or 0)
    pipelines = (", so nothing more is derived from them for model improvement (the anonymous records derived "
                 "earlier carry no link to you)") if facts.model_improvement else ""
    items = ["Your account, generations, images, uploaded files, presets, API keys and consent history are "
             f"erased from our database and storage{pipelines}",
             "Records we must keep by law (for example payment records) are kept with the fewest details "
             "possible and deleted when their period ends"]
    if grace:
        items.insert(0, f"Erasure starts {grace} days after your request; you can cancel it until then")
    return items


def _security_items(settings: Settings, _facts: PolicyFacts) -> list[str]:
    items = ["Passwords stored only as Argon2 hashes; login-session and API-key tokens stored only as hashes",
             "Protection against cross-site request forgery on every change made from the browser",
             "Access checks that keep each user's generations, images and uploads private",
             "Uploaded model files accepted only in the safetensors format; other formats are refused",
             # imagen/accounts: throttle.py, twofactor.py, links.py
             "Sign-ins paused after repeated failures for an account or from an address, and the account's owner "
             "told by email; passwords checked for strength",
             "Two-factor sign-in with an authenticator app and one-time recovery codes"
             + (", required for moderators and administrators" if settings.require_staff_2fa else ""),
             "Password-reset and address-confirmation links that work once and expire; a reset signs every "
             "browser out"]
    if settings.cookie_secure:
        items.insert(1, "Login cookies sent only over encrypted connections")
    return items


def _use_items(_settings: Settings, facts: PolicyFacts) -> list[str]:
    improve = ("Improve the Service as described in §3, only with your consent" if facts.model_improvement else
               "Keep your model-improvement choice for when such use begins (§3); none takes place at present")
    return ["Provide the Service: run your generations and keep your images, models and settings for you",
            "Keep accounts and the Service secure, and prevent abuse",
            "Send service messages, and marketing emails only if you opted in",
            improve,
            "Meet our legal obligations and answer your privacy requests"]


# Intro line of the template → the list that follows it.
LISTS: dict[str, Callable[[Settings, PolicyFacts], list[str]]] = {
    "1.1 Information you provide directly": lambda s, f: [
        "Account details: email address, password (stored only as a hash), date of birth and country",
        "Your consent choices and the policy versions you accepted, with their dates",
        "What you create: prompts, generation parameters, saved presets, and the images generated for you",
        "Files you upload: checkpoints, LoRAs and reference images (reference images are stored re-encoded, "
        "without their metadata)",
        "What you send us: privacy requests, reports, and consent to use an image in our marketing",
    ],
    "1.2 Information collected automatically": lambda s, f: [
        "IP address, browser user agent and time of each sign-up, login, logout and failed login",
        "Technical data about each generation: timings, memory use, and the model files used (by content hash)",
        "Your cookie choice (see §6), and product analytics only if you consent to them",
    ],
    "We use collected information to:": _use_items,
    "necessary to:": lambda s, f: [
        "Comply with a legal obligation",
        "Protect the rights, property or safety of IMAGEN, our users or the public",
        "Detect, prevent or address fraud, abuse, security or technical issues",
    ],
    "We use cookies and similar technologies for:": _cookie_items,
    "plus an additional period as required to:": lambda s, f: [
        "Comply with legal obligations, such as keeping payment records",
        "Resolve disputes and enforce our agreements",
    ],
    "When you delete your account:": _deletion_items,
    "You may:": lambda s, f: [
        "See and change your consent choices at any time in the consent centre (/privacy/consents)",
        "Get a copy of your data in a machine-readable export",
        "Delete your account and your data",
        "Ask us to correct information that is wrong",
    ],
    "In addition to the above, you have the right to:": lambda s, f: [
        "Object to our processing of your data, or ask us to restrict it",
        "Receive your data in a portable format",
        "Withdraw your consent at any time, without affecting processing that took place before",
        "Lodge a complaint with your data protection authority",
    ],
    "You have the right to:": lambda s, f: [
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


# ---- sentences true only of some installations: start of a template paragraph → its text here (None: left out)

def _model_improvement(block: str, settings: Settings, facts: PolicyFacts) -> str | None:
    if facts.model_improvement:
        noise = (f", and every count we show carries random noise (the Laplace mechanism, epsilon "
                 f"{settings.insights_epsilon:g})" if settings.insights_epsilon > 0 else "")
        return (f"{block}\n\n"
                "In practice: when a generation you made while you agreed ends, we derive one record from it: the "
                "workflow, the model family (and only whether the model is built in, published or a private upload, "
                "never which), the sampler, steps, guidance and size, how long it waited and ran, image statistics "
                "(sharpness and colourfulness) and a hashed numeric summary of the prompt. The record holds no "
                "account id, email, prompt text, image, IP address or upload hash, and its time is only the day. "
                f"Reports show only groups of at least {settings.insights_min_group} generations{noise}; prompt "
                "topics are shown as fixed example phrases, never as anyone's prompt. Your consent is read from each "
                "generation as it stood when you made it: withdrawing it applies from your next generation, and what "
                "was derived before is already unlinked from you, so it cannot be found, exported or erased as "
                "yours.")
    return ("This installation does not use your data, or anything derived from it, to improve the Service or any "
            "model: no model-improvement processing runs here. You can still give or withdraw your consent in the "
            "consent centre; your choice is recorded and stamped on each generation you make, so that if such "
            "processing is added, it can only use generations made while you agreed, and this section is updated "
            "first.")


def _your_control(block: str, _settings: Settings, facts: PolicyFacts) -> str | None:
    if facts.model_improvement:
        return ("  • You can turn model improvement on or off at any time in the consent centre (/privacy/consents); "
                "the change applies from your next generation\n"
                "  • You can delete your account at any time: your generations are erased, so nothing more is "
                "derived from them; what was derived before carries no link to you\n"
                "  • You can request data export and deletion as described in §8")
    return ("  • You can turn model improvement on or off at any time in the consent centre (/privacy/consents)\n"
            "  • You can request data export and deletion as described in §8")


def _csam(_block: str, settings: Settings, facts: PolicyFacts) -> str | None:
    if facts.hash_banks:
        parts = ["We check every uploaded image and model file, and every generated image, against lists of hashes "
                 "of known child sexual abuse material (CSAM) before it is stored. A match is refused, the account "
                 "is suspended, and the material is kept encrypted as evidence, with the account's details, for "
                 f"{settings.evidence_retention_days} days for review by our moderators."]
    else:
        parts = ["This installation does not currently check uploads or generated images against lists of known "
                 "child sexual abuse material (CSAM)."]
    if ncmec_reporting(settings):
        after = " once one of our moderators has reviewed it" if settings.ncmec_require_confirmation else ""
        parts.append("We report apparent CSAM to the National Center for Missing & Exploited Children (NCMEC) "
                     f"through its CyberTipline{after}, as U.S. federal law requires of online service providers.")
    else:
        parts.append("This installation is not connected to the CyberTipline of the National Center for Missing & "
                     "Exploited Children (NCMEC), so it sends no reports to NCMEC.")
    parts.append("We may also disclose information to law enforcement in cases involving credible threats of "
                 "violence or other serious harm.")
    return " ".join(parts)


def _business_transfer(block: str, settings: Settings, _facts: PolicyFacts) -> str | None:
    # The notice is in-app (`imagen records notify-transfer`), and emailed too when mail really leaves the server.
    how = ("by email and by a prominent notice in the Service" if settings.mail_delivered else
           "by a prominent notice in the Service")
    return block.replace("by email and/or prominent notice in the Service", how)


def _hosting(_block: str, settings: Settings, _facts: PolicyFacts) -> str | None:
    country = settings.hosting_country.strip()
    if not country:
        return ("This installation has not declared the country where its servers are located. Write to "
                f"{settings.contact_email} to ask where your information is stored and processed.")
    return (f"The Service operates from infrastructure in {country}. If you access the Service from outside "
            f"{country}, your information is transferred to and processed in {country}, where data protection laws "
            "may differ from those in your country.")


def _safeguards(_block: str, settings: Settings, _facts: PolicyFacts) -> str | None:
    safeguards = settings.transfer_safeguards.strip()
    if not safeguards:
        return None
    return ("For transfers of personal data from the European Economic Area (EEA), the United Kingdom or "
            f"Switzerland to countries without an adequacy decision, we rely on {safeguards}. You may request a "
            f"copy by emailing {settings.contact_email}.")


def _changes(_block: str, settings: Settings, _facts: PolicyFacts) -> str | None:
    # Re-acceptance is enforced (consent/service.py require_policy_accepted); a material change is emailed to every
    # user as well when mail really leaves the server (SMTP or Postmark), else the notice is in-app only.
    how = "by email and with a notice in the Service" if settings.mail_delivered else "with a notice in the Service"
    return (f"We may update this Privacy Policy from time to time. We tell you about a material change {how} and "
            "ask you to accept the new version; continuing to use the Service does not count as accepting it.")


def _response_time(block: str, settings: Settings, _facts: PolicyFacts) -> str | None:
    return block.replace("within 30 days", f"within {settings.privacy_response_days} days")


REWRITES: dict[str, Callable[[str, Settings, PolicyFacts], str | None]] = {
    "We use anonymized, aggregated data derived from generations": _model_improvement,
    "  • You can delete your account at any time, which removes your data from active": _your_control,
    "We are required by U.S. federal law to report": _csam,
    "If we are involved in a merger": _business_transfer,
    "The Service operates from infrastructure": _hosting,
    "For users in the European Economic Area (EEA)": _safeguards,
    "We may update this Privacy Policy from time to time.": _changes,
    "To exercise these rights, email": _response_time,
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


def _list_for(block: str) -> Callable[[Settings, PolicyFacts], list[str]] | None:
    for intro, items in LISTS.items():
        if block == intro or (intro.endswith(":") and block.endswith(intro)):
            return items
    return None


def render_policy(settings: Settings, *, session: Session | None = None, facts: PolicyFacts | None = None,
                  updated: date | None = None, drafting_notes: bool = False) -> str:
    """The policy for this configuration; `facts` (or those read through `session`), else an installation
    without hash banks."""
    facts = facts or (PolicyFacts.read(session) if session is not None else PolicyFacts())
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
        rewrite = next((fn for start, fn in REWRITES.items() if block.startswith(start)), None)
        if rewrite is not None and (block := rewrite(block, settings, facts)) is None:
            continue
        out.append(block)
        if (items := _list_for(block)) is not None:
            out.append(_bullets(items(settings, facts)))
        out.extend(text for start, text in ADDED.items() if block.startswith(start))
    return "\n\n".join(out)


def render_version(settings: Settings, versions: list[Any], *, session: Session | None = None) -> str:
    """The text of the newest of `versions` (newest first). The first version keeps the template's own "Last
    updated" date; a version published later shows its publication date."""
    return render_policy(settings, session=session,
                         updated=versions[0].published_at.date() if len(versions) > 1 else None)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def policy_sha256(settings: Settings, *, session: Session | None = None, updated: date | None = None) -> str:
    return text_sha256(render_policy(settings, session=session, updated=updated))
