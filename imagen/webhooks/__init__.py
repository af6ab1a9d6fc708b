"""Webhooks: users' endpoints told of their events, signed per the Standard Webhooks spec (docs/api.md#webhooks)."""
