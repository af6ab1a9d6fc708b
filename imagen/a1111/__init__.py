"""The AUTOMATIC1111-compatible API (`/sdapi/v1`) over the generation service (docs/a1111.md)."""
