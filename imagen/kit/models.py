"""Import every domain's tables so that metadata (and Alembic) sees them all."""

from imagen.accounts import models as accounts_models
from imagen.assets import models as assets_models
from imagen.consent import models as consent_models
from imagen.generation import models as generation_models
from imagen.kit.db import Base
from imagen.notifications import models as notifications_models
from imagen.workflows import models as workflows_models

__all__ = [
    "Base", "accounts_models", "assets_models", "consent_models", "generation_models", "notifications_models",
    "workflows_models",
]
