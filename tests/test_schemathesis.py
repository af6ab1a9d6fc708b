"""Every operation of /openapi.json fuzzed by schemathesis against the ASGI app, as an admin with an API key.

No answer may be a 5xx, break its declared schema or carry a status code the operation doesn't declare. Bounded:
a few examples per operation, so a backend's run stays within a couple of minutes on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig
from sqlalchemy import update

from imagen.accounts.models import User
from imagen.app import create_app
from imagen.inference.runtime import Runtime
from imagen.kit.config import Settings
from tests.conftest import signup

MAX_EXAMPLES = 8

CONFIG = SchemathesisConfig.from_dict({
    "seed": 20260101,
    "generation": {"max-examples": MAX_EXAMPLES, "no-shrink": True, "database": "none"},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
    "checks": {"enabled": False, "not_a_server_error": {"enabled": True},
               "status_code_conformance": {"enabled": True}, "content_type_conformance": {"enabled": True},
               "response_schema_conformance": {"enabled": True},
               "response_headers_conformance": {"enabled": True}},
})


@pytest.fixture
def fuzz_app(settings: Settings, runtime: Runtime) -> FastAPI:
    # No worker: queued jobs stay queued, so the run spends the CPU on requests.
    return create_app(settings.model_copy(update={"worker_autostart": False}), run_migrations=False,
                      runtime=runtime)


@pytest.fixture
def admin_key(fuzz_app: FastAPI) -> Iterator[str]:
    with TestClient(fuzz_app, base_url="https://testserver") as client:
        signup(client, "root@example.com")
        with fuzz_app.state.services.db.transaction() as s:
            s.execute(update(User).where(User.email == "root@example.com").values(role="admin"))
        r = client.post("/api/v1/api-keys", json={"name": "fuzz"})
        assert r.status_code == 201, r.text
        yield r.json()["key"]


@pytest.fixture
def api_schema(fuzz_app: FastAPI, admin_key: str):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app, config=CONFIG)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 relabels the running test through `node._nodeid`, which pytest 9.2 no longer has.
    request.node._nodeid = request.node.nodeid


@schema.parametrize()
def test_api_conforms(case, admin_key: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_key}"})
