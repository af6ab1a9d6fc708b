"""`IMAGEN_MAIL_BACKEND=postmark`: Postmark's HTTP API (`POST /email`) through httpx.

Postmark publishes no well-kept official Python SDK (the community packages lag its API), and one JSON request is
all sending takes, so this calls the API directly. A message goes on the transactional stream, or on the broadcast
stream for notices sent to every user (`broadcast=True`), as Postmark asks of bulk messages.
"""

from __future__ import annotations

import httpx

# Postmark's ErrorCode when the recipient is on the server's suppression list (a hard bounce or spam complaint).
INACTIVE_RECIPIENT = 406


class PostmarkError(RuntimeError):
    """Postmark refused or could not take the message (retried later by `mail.retry`)."""


class RecipientSuppressed(PostmarkError):
    """Postmark will not send to this address: it bounced or complained before (never retried)."""


class PostmarkMailer:
    name = "postmark"

    def __init__(self, *, server_token: str, sender: str, api_base: str = "https://api.postmarkapp.com",
                 transactional_stream: str = "outbound", broadcast_stream: str = "broadcast",
                 timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self.sender = sender
        self.transactional_stream, self.broadcast_stream = transactional_stream, broadcast_stream
        self.client = httpx.Client(
            base_url=api_base.rstrip("/"), timeout=timeout, transport=transport,
            headers={"Accept": "application/json", "X-Postmark-Server-Token": server_token})

    def payload(self, to: str, subject: str, text: str, *, message_id: str | None = None,
                broadcast: bool = False) -> dict[str, object]:
        headers = [{"Name": "Auto-Submitted", "Value": "auto-generated"}]
        if message_id:
            headers.append({"Name": "Message-ID", "Value": message_id})
        return {"From": self.sender, "To": to, "Subject": subject, "TextBody": text, "Headers": headers,
                "MessageStream": self.broadcast_stream if broadcast else self.transactional_stream,
                "TrackOpens": False, "TrackLinks": "None"}

    def send(self, to: str, subject: str, text: str, *, message_id: str | None = None,
             broadcast: bool = False) -> None:
        response = self.client.post("/email", json=self.payload(to, subject, text, message_id=message_id,
                                                                broadcast=broadcast))
        try:
            body = response.json()
        except ValueError:
            body = {}
        code = body.get("ErrorCode", -1) if isinstance(body, dict) else -1
        if response.status_code == 200 and code == 0:
            return
        message = body.get("Message", response.text[:200]) if isinstance(body, dict) else response.text[:200]
        if code == INACTIVE_RECIPIENT:
            raise RecipientSuppressed(f"Postmark: {message}")
        raise PostmarkError(f"Postmark answered {response.status_code} (ErrorCode {code}): {message}")

    def close(self) -> None:
        self.client.close()
