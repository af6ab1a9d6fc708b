"""The published privacy policy: the policy text with the operator's configuration filled in."""

from __future__ import annotations

import hashlib
from importlib import resources

from imagen.kit.config import Settings


def policy_template() -> str:
    return resources.files("imagen.privacy").joinpath("privacy-policy.txt").read_text()


def render_policy(settings: Settings) -> str:
    text = policy_template()
    replacements = {
        "[YOUR LEGAL ENTITY NAME]": settings.legal_entity,
        "[YOUR ADDRESS]": settings.postal_address,
        "[email protected]": settings.contact_email,
        "imagegen.reetche.com": settings.site_domain,
    }
    for placeholder, value in replacements.items():
        text = text.replace(placeholder, value)
    return text


def policy_sha256(settings: Settings) -> str:
    return hashlib.sha256(render_policy(settings).encode()).hexdigest()
