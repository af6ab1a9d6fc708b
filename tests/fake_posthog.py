"""A fake of PostHog on 127.0.0.1: the capture endpoint the SDK posts batches to (`/batch/`) and the private API's
person bulk deletion (`/api/projects/<id>/persons/bulk_delete/`), which can be told to fail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_http import Answer, FakeServer, Recorded

PROJECT_KEY, PERSONAL_KEY, PROJECT_ID = "phc_test_project_key", "phx_test_personal_key", "4242"


class FakePostHog:
    def __init__(self) -> None:
        self.fail_deletions = 0
        self.batches: list[Recorded] = []
        self.deletions: list[Recorded] = []
        self.server = FakeServer(self.answer)

    def answer(self, request: Recorded) -> Answer:
        if request.path.startswith("/batch"):
            self.batches.append(request)
            return 200, {"status": 1}
        if request.path == f"/api/projects/{PROJECT_ID}/persons/bulk_delete/":
            self.deletions.append(request)
            if request.headers.get("authorization") != f"Bearer {PERSONAL_KEY}":
                return 401, {"detail": "Invalid personal API key."}
            if self.fail_deletions > 0:
                self.fail_deletions -= 1
                return 503, {"detail": "Service unavailable"}
            return 202, {}
        return 404, {"detail": "Not found"}

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch.json["batch"]]


@pytest.fixture
def posthog() -> Iterator[FakePostHog]:
    fake = FakePostHog()
    fake.server.start()
    try:
        yield fake
    finally:
        fake.server.stop()


def posthog_settings(settings: Any, fake: FakePostHog, **extra: Any) -> Any:
    return settings.model_copy(update={
        "analytics": "posthog", "posthog_api_key": PROJECT_KEY, "posthog_host": fake.url,
        "posthog_personal_api_key": PERSONAL_KEY, "posthog_project_id": PROJECT_ID, **extra})
