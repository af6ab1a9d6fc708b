"""Server-side product analytics (`IMAGEN_ANALYTICS=off|posthog`): consented users only, pseudonymous, no content."""
