"""Import every domain's tables so that metadata (and Alembic) sees them all."""

from imagen.a1111 import models as a1111_models
from imagen.accounts import models as accounts_models
from imagen.analytics import models as analytics_models
from imagen.assets import models as assets_models
from imagen.billing import models as billing_models
from imagen.consent import models as consent_models
from imagen.generation import models as generation_models
from imagen.insights import models as insights_models
from imagen.kit.db import Base
from imagen.mail import models as mail_models
from imagen.notifications import models as notifications_models
from imagen.privacy import minors as privacy_minors_models
from imagen.privacy import models as privacy_models
from imagen.privacy.records import models as privacy_records_models
from imagen.privacy.requests import models as privacy_requests_models
from imagen.safety import bank_models as safety_bank_models
from imagen.safety import models as safety_models
from imagen.webhooks import models as webhooks_models
from imagen.workflows import models as workflows_models

__all__ = [
    "Base", "a1111_models", "accounts_models", "analytics_models", "assets_models", "billing_models",
    "consent_models", "generation_models", "insights_models", "mail_models",
    "notifications_models", "privacy_minors_models", "privacy_models", "privacy_records_models",
    "privacy_requests_models", "safety_bank_models", "safety_models", "webhooks_models", "workflows_models",
]
