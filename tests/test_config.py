from __future__ import annotations

import pytest
from pydantic import ValidationError

from imagen.kit.config import Settings


def test_embedded_defaults(tmp_path):
    s = Settings(data_dir=tmp_path / "d")
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'd' / 'imagen.db').resolve()}"
    assert s.executor == "local" and s.storage == "local"
    assert s.resolved_models_dir == (tmp_path / "d" / "models").resolve()


def test_secret_key_is_generated_once_and_kept(tmp_path):
    s = Settings(data_dir=tmp_path / "d")
    key = s.resolved_secret_key()
    assert len(key) >= 32 and key == Settings(data_dir=tmp_path / "d").resolved_secret_key()
    assert oct((tmp_path / "d" / "secret_key").stat().st_mode)[-3:] == "600"


@pytest.mark.parametrize("key", [None, "changeme", "secret", "short-key"])
def test_placeholder_secret_refused_in_production(tmp_path, key):
    with pytest.raises(ValidationError, match="IMAGEN_SECRET_KEY"):
        Settings(env="production", data_dir=tmp_path, secret_key=key)
    operator = {"legal_entity": "Imagen Ltd", "postal_address": "1 Street", "contact_email": "p@imagen.test",
                "site_domain": "imagen.test"}  # production also needs these (tests/test_policy_truth.py)
    assert Settings(env="production", data_dir=tmp_path, secret_key="k" * 48, **operator).secret_key == "k" * 48


def test_settings_come_from_imagen_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGEN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IMAGEN_DATABASE_URL", "postgresql+psycopg://u@h/db")
    s = Settings()
    assert s.data_dir == tmp_path and s.resolved_database_url == "postgresql+psycopg://u@h/db"
