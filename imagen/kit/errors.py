"""Domain errors that map to HTTP answers with a message saying what is wrong."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ServiceError(Exception):
    status_code = 400

    def __init__(self, detail: Any) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def message(self) -> str:
        """The detail on one line (a validation list as "field: message; ..."), for the command line."""
        if isinstance(self.detail, list):
            return "; ".join(f"{'.'.join(map(str, d['loc'][1:]))}: {d['msg']}" for d in self.detail)
        return str(self.detail)


class BadRequest(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404

    def __init__(self, detail: Any = "Not found") -> None:
        super().__init__(detail)


class Conflict(ServiceError):
    status_code = 409


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class Unprocessable(ServiceError):
    status_code = 422


class TooManyRequests(ServiceError):
    status_code = 429

    def __init__(self, detail: Any, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after  # seconds, sent as Retry-After


class Unavailable(ServiceError):
    status_code = 503


def field_error(field: str, message: str, *, where: str = "body") -> Unprocessable:
    """A 422 shaped like FastAPI's own validation errors, naming the field."""
    return Unprocessable([{"loc": [where, *field.split(".")], "msg": message, "type": "value_error"}])


class ErrorOut(BaseModel):
    """Every error answer: a message, or a list of field problems (`loc` names the field) like FastAPI's own."""

    detail: str | list[dict[str, Any]] | dict[str, Any] = Field(description="what is wrong")


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}

# The error answers any operation may give through the shared plumbing (authentication, CSRF, policy acceptance,
# body limits, input checks, limits, storage or database down) or its service; included for every route.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text, **({"headers": _RETRY_AFTER} if code in (429, 503) else {})}
    for code, text in (
        (400, "Bad request"), (401, "Not logged in, or a bad API key"),
        (403, "Not allowed (role, CSRF token, or the current policy not yet accepted)"),
        (404, "Not found (another user's object is not found either)"), (409, "Conflicts with the current state"),
        (413, "Request body or upload too large (the limit is named)"), (415, "Unsupported media type"),
        (422, "Invalid input (`loc` names the field)"), (429, "Too many requests; see Retry-After"),
        (503, "Storage or database unavailable, or the server is busy; see Retry-After"),
    )
}
