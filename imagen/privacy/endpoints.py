from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imagen.kit.http import SettingsDep
from imagen.privacy.policy import policy_sha256, render_policy

router = APIRouter(prefix="/api/v1", tags=["privacy"])


@router.get("/policy")
def get_policy(settings: SettingsDep) -> dict[str, Any]:
    return {
        "version": settings.policy_version,
        "sha256": policy_sha256(settings),
        "text": render_policy(settings),
        "contact_email": settings.contact_email,
    }
