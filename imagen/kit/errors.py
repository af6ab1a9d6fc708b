"""Domain errors that map to HTTP answers with a message saying what is wrong."""

from __future__ import annotations

from typing import Any


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


def field_error(field: str, message: str, *, where: str = "body") -> Unprocessable:
    """A 422 shaped like FastAPI's own validation errors, naming the field."""
    return Unprocessable([{"loc": [where, *field.split(".")], "msg": message, "type": "value_error"}])
