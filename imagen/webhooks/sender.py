"""One delivery attempt over HTTP: the Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature)
made by the `standardwebhooks` package, no redirect followed without checking its target first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx
from standardwebhooks import Webhook

from imagen.kit.db import utcnow
from imagen.webhooks.service import Attempt
from imagen.webhooks.targets import RefusedTarget, check_url

MAX_REDIRECTS = 3
USER_AGENT = "IMAGEN-Webhooks/1"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None
    error: str | None


def message_id(delivery_id: str) -> str:
    return f"msg_{delivery_id}"


def signed_request(attempt: Attempt) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(attempt.payload, separators=(",", ":"), sort_keys=True)
    now = utcnow()
    msg_id = message_id(attempt.delivery_id)
    signature = Webhook(attempt.secret).sign(msg_id, now, body)
    return body.encode(), {
        "content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature,
    }


def send(attempt: Attempt, *, allow_private: bool, timeout: float,
         transport: httpx.BaseTransport | None = None) -> Outcome:
    body, headers = signed_request(attempt)
    url = attempt.url
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, transport=transport) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                check_url(url, allow_private=allow_private)  # again: the name may point elsewhere by now
                response = client.post(url, content=body, headers=headers)
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.is_success:
                    return Outcome(True, response.status_code, None)
                return Outcome(False, response.status_code, f"HTTP {response.status_code}")
            return Outcome(False, None, f"more than {MAX_REDIRECTS} redirects")
    except RefusedTarget as exc:
        return Outcome(False, None, f"refused target {url}: {exc}")
    except httpx.HTTPError as exc:
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
