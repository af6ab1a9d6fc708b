"""The database as CLI commands open it: settings from the environment, migrated, the policy version recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagen.kit.config import Settings
    from imagen.kit.db import Database


@contextmanager
def migrated_database() -> Iterator[tuple[Database, Settings]]:
    """(db, settings) for one command; the engine is disposed afterwards."""
    from imagen.consent.service import consent_service
    from imagen.kit import migrate
    from imagen.kit.config import get_settings
    from imagen.kit.db import Database
    from imagen.privacy.policy import render_policy

    settings = get_settings()
    settings.ensure_data_dir()
    migrate.upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    try:
        with db.transaction() as session:
            consent_service.ensure_policy_version(session, version=settings.policy_version,
                                                  text=render_policy(settings, session=session))
        yield db, settings
    finally:
        db.dispose()
