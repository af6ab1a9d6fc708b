"""A fake of Postmark's email API (`POST /email`) on 127.0.0.1: checks the server token, keeps what it accepted,
refuses inactive (suppressed) recipients with ErrorCode 406 as Postmark does, and can be told to fail."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fake_http import Answer, FakeServer, Recorded

TOKEN = "pm-server-token-test"


class FakePostmark:
    def __init__(self) -> None:
        self.inactive: set[str] = set()
        self.fail_next = 0  # answer this many sends with a 500
        self.sent: list[dict[str, Any]] = []
        self.server = FakeServer(self.answer)

    def answer(self, request: Recorded) -> Answer:
        if request.method != "POST" or request.path != "/email":
            return 404, {"ErrorCode": 404, "Message": "Not found"}
        if request.headers.get("x-postmark-server-token") != TOKEN:
            return 401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."}
        if self.fail_next > 0:
            self.fail_next -= 1
            return 500, {"ErrorCode": 500, "Message": "Internal server error"}
        message = request.json
        if message["To"] in self.inactive:
            return 422, {"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been marked as "
                                                      "inactive."}
        self.sent.append(message)
        return 200, {"To": message["To"], "SubmittedAt": "2026-12-01T00:00:00Z", "MessageID": str(uuid.uuid4()),
                     "ErrorCode": 0, "Message": "OK"}

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def postmark() -> Iterator[FakePostmark]:
    fake = FakePostmark()
    fake.server.start()
    try:
        yield fake
    finally:
        fake.server.stop()


def postmark_settings(settings: Any, fake: FakePostmark, **extra: Any) -> Any:
    """The test's settings switched to the Postmark backend, talking to the fake."""
    return settings.model_copy(update={"mail_backend": "postmark", "postmark_server_token": TOKEN,
                                       "postmark_api_base": fake.url, "mail_retry_interval_seconds": 0, **extra})
