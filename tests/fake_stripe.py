"""A fake of the few Stripe API calls IMAGEN makes, on 127.0.0.1, and signed webhook events to send back.

The real `stripe` SDK talks to it (IMAGEN_STRIPE_API_BASE). It records each Checkout Session it creates, as the SDK
sent it (form fields such as `metadata[credits]`), and builds the events Stripe would send about them, signed with
the webhook secret the way Stripe signs them (`Stripe-Signature: t=...,v1=...`).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import stripe

SECRET_KEY = "sk_test_fake"
WEBHOOK_SECRET = "whsec_fake_secret"


class FakeStripe:
    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []  # method, path, form, headers
        self.failures = 0  # answer this many requests with a 500 (the SDK retries some itself)
        self.url = ""

    # ---- the API ----
    def handle(self, method: str, path: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, dict]:
        self.requests.append((method, path, form, headers))
        if headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return 401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
        if self.failures > 0:
            self.failures -= 1
            return 500, {"error": {"type": "api_error", "message": "Something went wrong"}}
        if (method, path) == ("POST", "/v1/checkout/sessions"):
            cs_id = "cs_test_" + secrets.token_hex(12)
            session = {
                "id": cs_id, "object": "checkout.session", "mode": form.get("mode"),
                "url": f"https://checkout.stripe.test/c/pay/{cs_id}",
                "client_reference_id": form.get("client_reference_id"),
                "metadata": {k[len("metadata["):-1]: v for k, v in form.items() if k.startswith("metadata[")},
                "amount_total": int(form.get("line_items[0][price_data][unit_amount]", "0")),
                "currency": form.get("line_items[0][price_data][currency]"),
                "payment_status": "unpaid", "status": "open", "payment_intent": None,
            }
            self.sessions[cs_id] = session
            return 200, session
        return 404, {"error": {"type": "invalid_request_error", "message": f"Unrecognized request URL {path}"}}

    # ---- webhook events ----
    def event(self, event_type: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
        return json.dumps({
            "id": event_id or "evt_" + secrets.token_hex(12), "object": "event", "api_version": "2026-01-01",
            "created": int(time.time()), "type": event_type, "livemode": False, "data": {"object": obj},
        }).encode()

    def completed(self, cs_id: str) -> bytes:
        """`checkout.session.completed` for a session this fake created, now paid."""
        session = self.sessions[cs_id]
        session.update(payment_status="paid", status="complete",
                       payment_intent=session["payment_intent"] or "pi_" + secrets.token_hex(12))
        return self.event("checkout.session.completed", dict(session))

    def refunded(self, cs_id: str, refunded_fraction: float = 1.0) -> bytes:
        s = self.sessions[cs_id]
        return self.event("charge.refunded", {
            "id": "ch_" + secrets.token_hex(8), "object": "charge", "payment_intent": s["payment_intent"],
            "amount": s["amount_total"], "amount_refunded": round(s["amount_total"] * refunded_fraction),
            "refunded": refunded_fraction >= 1})

    def disputed(self, cs_id: str) -> bytes:
        s = self.sessions[cs_id]
        return self.event("charge.dispute.created", {
            "id": "dp_" + secrets.token_hex(8), "object": "dispute", "payment_intent": s["payment_intent"],
            "amount": s["amount_total"], "reason": "fraudulent", "status": "needs_response"})


def sign(payload: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), secret)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


@contextmanager
def running() -> Iterator[FakeStripe]:
    fake = FakeStripe()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self._answer("POST")

        def do_GET(self) -> None:
            self._answer("GET")

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(parse_qsl(self.rfile.read(length).decode())) if length else {}
            headers = {k.lower(): v for k, v in self.headers.items()}
            code, body = fake.handle(method, self.path.split("?")[0], form, headers)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-stripe", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
