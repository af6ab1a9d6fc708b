"""Webhooks: users' endpoints told of their events, signed per the Standard Webhooks spec (docs/a1111.md)."""
