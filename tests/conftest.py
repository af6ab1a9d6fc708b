"""Test fixtures: every API test runs on SQLite and on PostgreSQL, against migrations, with the real runtime.

IMAGEN_TEST_DATABASES (default "sqlite,postgresql") picks the backends; IMAGEN_TEST_POSTGRES_URL points
at a server (default: the local one on 127.0.0.1:5432, database imagen_test, created when missing);
IMAGEN_TEST_MODELS_TEMPLATE names a folder of prebuilt tiny models to start from (mutation runs).
Under pytest-xdist (the test command runs two workers) each worker gets its own database, `<name>_gw0`, ...
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Workers share the machine's cores: one math thread each (read by torch at import, inherited by the servers
    # and workers the tests start) instead of every process spinning a thread per core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from imagen.app import create_app
from imagen.inference.runtime import Runtime
from imagen.kit import migrate
from imagen.kit.config import Settings
from imagen.kit.db import Database
from imagen.models import Base
from imagen.storage.local import LocalBlobStore

BACKENDS = [b.strip() for b in os.environ.get("IMAGEN_TEST_DATABASES", "sqlite,postgresql").split(",") if b.strip()]
POSTGRES_URL = os.environ.get(
    "IMAGEN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/imagen_test")
if worker := os.environ.get("PYTEST_XDIST_WORKER"):  # each pytest-xdist worker has a database of its own
    POSTGRES_URL = f"{POSTGRES_URL}_{worker}"
POLICY_VERSION = "2026-04-29"
PASSWORD = "a-Long-enough-passphrase-7"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    # Mutation runs (.ci/mutation) start a session per mutant: copying prebuilt tiny models saves ~5 s each.
    template = os.environ.get("IMAGEN_TEST_MODELS_TEMPLATE")
    if template and Path(template).is_dir():
        shutil.copytree(template, path, dirs_exist_ok=True)
    return path


@pytest.fixture(scope="session")
def runtime(models_dir: Path) -> Runtime:
    """One runtime for the whole run, so the tiny pipeline is built and loaded once."""
    rt = Runtime(models_dir, device="cpu")
    rt.checkpoints.list()
    return rt


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "imagen.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_migrated() -> str:
    server_url, _, dbname = POSTGRES_URL.rpartition("/")
    admin = create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{dbname}"'))
    admin.dispose()
    migrate.upgrade(POSTGRES_URL)
    return POSTGRES_URL


def _truncate_postgres(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "imagen.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_migrated")
        _truncate_postgres(url)
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The database alone, for tests that call services directly without the app."""
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def settings(tmp_path: Path, database_url: str, models_dir: Path) -> Settings:
    return Settings(
        env="test", data_dir=tmp_path / "data", database_url=database_url, models_dir=models_dir,
        secret_key="x" * 40, policy_version=POLICY_VERSION, contact_email="privacy@imagen.test",
        legal_entity="Imagen Test Ltd", postal_address="1 Test Street, Testville",
    )


@pytest.fixture
def app(settings: Settings, runtime: Runtime) -> FastAPI:
    return create_app(settings, run_migrations=False, runtime=runtime)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver") as c:
        yield c


@pytest.fixture
def new_client(app: FastAPI, client: TestClient):
    """More browsers on the same running app (the first client owns the lifespan)."""
    return lambda: TestClient(app, base_url="https://testserver")


def signup_payload(email: str = "ada@example.com", **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "email": email, "password": PASSWORD, "date_of_birth": "1990-05-17", "country": "GB",
        "accept_policy_version": POLICY_VERSION,
        "consents": {"model_improvement": False, "marketing_emails": False},
    }
    payload.update(overrides)
    return payload


def signup(client: TestClient, email: str = "ada@example.com", **overrides: Any) -> dict[str, Any]:
    """Sign up and make later writes from this client carry the CSRF header."""
    r = client.post("/api/v1/auth/signup", json=signup_payload(email, **overrides))
    assert r.status_code == 201, r.text
    body = r.json()
    client.headers["X-CSRF-Token"] = body["csrf_token"]
    return body


@pytest.fixture
def cli_env(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI reads settings from the environment: point it at a fresh data folder (SQLite) and the shared models."""
    from imagen.kit.config import get_settings

    monkeypatch.setenv("IMAGEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMAGEN_MODELS_DIR", str(models_dir))
    monkeypatch.delenv("IMAGEN_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def user_client(client: TestClient) -> TestClient:
    signup(client)
    return client


# The random-weight tiny model, fast; the workflows default to imagen-demo, which tests/test_demo_model.py exercises.
TINY = {"steps": 2, "width": 64, "height": 64, "seed": 42, "checkpoint": "imagen-tiny"}


def wait_for(client: TestClient, gen_id: str, statuses: tuple[str, ...] = ("succeeded", "failed", "canceled"),
             timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/generations/{gen_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise AssertionError(f"generation {gen_id} did not reach {statuses}; last: {body}")
