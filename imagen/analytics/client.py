"""The analytics client of the composition root: PostHog's SDK for events, httpx for person deletion.

Only `AnalyticsService` (service.py) calls `capture`, after it checked consent and GPC, and only with the event's
allowed properties. The person is a keyed hash of the account id (`distinct_id`), never the email; GeoIP lookup is
off (`disable_geoip`) and the SDK sends from its own thread in this process, so PostHog sees the server's address,
not the user's. `stop` flushes what is queued and ends that thread.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from typing import Any, Protocol

import httpx

from imagen.kit.config import Settings

log = logging.getLogger(__name__)


def distinct_id(secret: str, user_id: str) -> str:
    """The pseudonym PostHog knows an account by: keyed with the app secret, apart from every other hash we keep."""
    return hmac.new(secret.encode(), f"imagen-analytics:{user_id}".encode(), hashlib.sha256).hexdigest()


class Analytics(Protocol):
    enabled: bool

    def capture(self, user_id: str, event: str, properties: dict[str, Any]) -> None: ...

    def delete_person(self, distinct_id: str) -> None:
        """Ask the provider to delete the person and their events, or raise."""

    def flush(self) -> None: ...

    def stop(self) -> None: ...


class NoAnalytics:
    """`IMAGEN_ANALYTICS=off` (the default): nothing is captured or sent anywhere."""

    enabled = False

    def capture(self, user_id: str, event: str, properties: dict[str, Any]) -> None:
        return None

    def delete_person(self, distinct_id: str) -> None:
        return None

    def flush(self) -> None:
        return None

    def stop(self) -> None:
        return None


class PostHogAnalytics:
    """`IMAGEN_ANALYTICS=posthog`. The SDK's client (and its sending thread) starts at the first event."""

    enabled = True

    def __init__(self, *, api_key: str, host: str, secret: str, personal_api_key: str | None = None,
                 project_id: str = "", api_host: str = "", timeout: float = 10.0) -> None:
        self.api_key, self.host, self.secret = api_key, host.rstrip("/"), secret
        self.personal_api_key, self.project_id = personal_api_key, project_id
        self.api_host = (api_host or host).rstrip("/")
        self.timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def distinct_id(self, user_id: str) -> str:
        return distinct_id(self.secret, user_id)

    def _sdk(self) -> Any:
        with self._lock:
            if self._client is None:
                from posthog import Posthog

                # No feature flags, no exception autocapture, no GeoIP: events only.
                self._client = Posthog(self.api_key, host=self.host, disable_geoip=True,
                                       enable_exception_autocapture=False, timeout=self.timeout, max_retries=3)
            return self._client

    def capture(self, user_id: str, event: str, properties: dict[str, Any]) -> None:
        try:
            self._sdk().capture(event, distinct_id=self.distinct_id(user_id), properties=dict(properties),
                                disable_geoip=True)
        except Exception:  # analytics never breaks the request it describes
            log.exception("could not queue analytics event %s", event)

    def delete_person(self, distinct_id: str) -> None:
        if not (self.personal_api_key and self.project_id):
            raise RuntimeError("PostHog person deletion needs IMAGEN_POSTHOG_PERSONAL_API_KEY and "
                               "IMAGEN_POSTHOG_PROJECT_ID")
        response = httpx.post(
            f"{self.api_host}/api/projects/{self.project_id}/persons/bulk_delete/",
            json={"distinct_ids": [distinct_id], "delete_events": True},
            headers={"Authorization": f"Bearer {self.personal_api_key}"}, timeout=self.timeout)
        if response.status_code >= 300:
            raise RuntimeError(f"PostHog answered {response.status_code}: {response.text[:200]}")

    def flush(self) -> None:
        if self._client is not None:
            self._client.flush()

    def stop(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.shutdown()  # flushes the queue, then ends the sending thread


def make_analytics(settings: Settings) -> Analytics:
    if settings.analytics != "posthog":
        return NoAnalytics()
    return PostHogAnalytics(api_key=settings.posthog_api_key or "", host=settings.posthog_host,
                            secret=settings.resolved_secret_key(),
                            personal_api_key=settings.posthog_personal_api_key,
                            project_id=settings.posthog_project_id, api_host=settings.posthog_api_host)
