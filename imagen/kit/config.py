"""Settings from the environment (prefix IMAGEN_); one instance per process, replaceable in tests."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "changethis", "dev", "development", "test"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGEN_", env_file=None, extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("./imagen-data")
    database_url: str | None = None
    secret_key: str | None = None
    executor: Literal["local"] = "local"
    storage: Literal["local"] = "local"
    models_dir: Path | None = None  # defaults to <data_dir>/models

    # Web and sessions
    cookie_secure: bool = True
    session_days: int = 30
    base_url: str = "http://127.0.0.1:8000"

    # Inference
    device: str | None = None  # "cuda", "cpu"; auto when unset
    model_cache_bytes: int = 8 * 1024**3
    max_queued_per_user: int = 50

    # Uploads (assets)
    max_model_upload_bytes: int = 8 * 1024**3
    max_image_upload_bytes: int = 20 * 1024**2
    user_storage_quota_bytes: int = 20 * 1024**3

    # Operator details that fill the published policy's placeholders
    legal_entity: str = "[YOUR LEGAL ENTITY NAME]"
    postal_address: str = "[YOUR ADDRESS]"
    contact_email: str = "privacy@example.com"
    site_domain: str = "imagegen.reetche.com"
    policy_version: str = "2026-04-29"
    privacy_response_days: int = 30

    worker_autostart: bool = Field(default=True, description="start the in-process worker with the app")

    @model_validator(mode="after")
    def _refuse_placeholder_secret_in_production(self) -> Settings:
        if self.env == "production":
            key = (self.secret_key or "").strip()
            if key.lower() in PLACEHOLDER_SECRETS or len(key) < 32:
                raise ValueError(
                    "IMAGEN_SECRET_KEY must be set to a random value of at least 32 characters "
                    "when IMAGEN_ENV=production (generate one with: python -c "
                    "'import secrets; print(secrets.token_urlsafe(48))')"
                )
        return self

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'imagen.db').resolve()}"

    @property
    def blobs_dir(self) -> Path:
        return (self.data_dir / "blobs").resolve()

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once and kept in the data folder."""
        if self.secret_key:
            return self.secret_key
        self.ensure_data_dir()
        key_file = self.data_dir / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(48))
            key_file.chmod(0o600)
        return key_file.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
