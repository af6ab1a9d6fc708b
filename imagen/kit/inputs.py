"""Text that can be stored: control characters refused with a 422 naming the field, emails in one form.

Every request goes through `refuse_control_characters` (an app-wide dependency): path and query parameters, JSON
and form bodies. A NUL byte would otherwise reach PostgreSQL (which cannot store it in text) as a 500, and other
control characters would end up in pages, logs and mails. Tabs and line breaks stay allowed in bodies, where text
can be multi-line (prompts, details); fields that are one line use `Line`, which refuses them too.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator

from imagen.kit.limits import reads_own_body

# C0 controls but tab, LF and CR; DEL and the C1 controls; lone surrogates (no UTF-8 form, so not storable).
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# A line: no control characters at all (tab, LF and CR included).
LINE_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# A raw JSON body can only carry those as an escape (\u00XX, \uD8XX...) or as DEL / C1 bytes written out.
_MAYBE_CONTROL = re.compile(rb"\\u|\x7f|\xc2[\x80-\x9f]")
INT32_MAX = 2**31 - 1  # the largest value of an Integer column (PostgreSQL's integer)
MESSAGE = "must not contain control characters (such as NUL)"
_ISSUE_TYPE = "string_control_characters"


def _line(value: str) -> str:
    if LINE_CONTROL.search(value):
        raise ValueError("must be one line without control characters (such as NUL, tab or line breaks)")
    return value


Line = Annotated[str, AfterValidator(_line)]
"""A single-line text field: names, titles, identifiers."""


def normalize_email(email: str) -> str:
    """One form per address (NFKC, case-folded), so lookalikes such as fullwidth letters are the same account.

    NFKC again after case folding: folding can produce characters that compatibility normalisation maps further.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email.strip()).casefold())


def _bad_strings(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, str):
        if CONTROL.search(value):
            yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and CONTROL.search(key):
                yield (*loc, key), key
            yield from _bad_strings(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _bad_strings(item, (*loc, i))


def control_character_errors(where: str, values: dict[str, Any] | list[tuple[str, Any]],
                             ) -> list[dict[str, Any]]:
    items = values.items() if isinstance(values, dict) else values
    return [{"type": _ISSUE_TYPE, "loc": list(loc), "msg": f"Value {MESSAGE}", "input": bad[:40]}
            for name, value in items for loc, bad in _bad_strings(value, (where, name))]


async def refuse_control_characters(request: Request) -> None:
    """App-wide dependency: a 422 naming each field whose text carries a control character."""
    errors = control_character_errors("path", request.path_params)
    errors += control_character_errors("query", request.query_params.multi_items())
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if reads_own_body(request.scope):
        pass  # a streaming endpoint (uploads): its body is never held whole
    elif content_type == "application/json" or content_type.endswith("+json"):
        # FastAPI has read (within the body limit) and parsed this body already; parse again only when it may hold
        # a control character.
        body = await request.body()
        if _MAYBE_CONTROL.search(body):
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None  # invalid JSON: FastAPI's own 422 says so
            errors += control_character_errors("body", parsed if isinstance(parsed, dict) else {})
            if isinstance(parsed, list):
                errors += [{**e, "loc": ["body", *e["loc"][2:]]}
                           for e in control_character_errors("body", {"": parsed})]
    elif content_type == "application/x-www-form-urlencoded":
        form = await request.form()
        errors += control_character_errors("body", [(k, v) for k, v in form.multi_items() if isinstance(v, str)])
    if errors:
        raise RequestValidationError(errors)


MAX_ERRORS = 20
MAX_ECHO = 80  # characters of an input echoed back in a validation error


def _echo(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "…"
    if isinstance(value, dict | list | tuple):
        try:
            small = len(json.dumps(value, default=str)) <= MAX_ECHO
        except (TypeError, ValueError, RecursionError):
            small = False
        if small:
            return value
        return f"({type(value).__name__} of {len(value)} items, not echoed)"
    if value is None or isinstance(value, bool | int | float):
        return value
    return _echo(str(value))


def bounded_errors(errors: Any) -> Any:
    """Validation errors as sent back: at most MAX_ERRORS, each `input` and `ctx` value cut short, so a large or
    hostile body never comes back whole in the answer."""
    if not isinstance(errors, list | tuple):
        return errors
    out = []
    for error in list(errors)[:MAX_ERRORS]:
        if isinstance(error, dict):
            error = dict(error)
            if "input" in error:
                error["input"] = _echo(error["input"])
            if isinstance(error.get("ctx"), dict):
                error["ctx"] = {k: _echo(v) for k, v in error["ctx"].items()}
            error.pop("url", None)
        out.append(error)
    if len(errors) > MAX_ERRORS:
        out.append({"type": "too_many_errors", "loc": [], "msg": f"{len(errors) - MAX_ERRORS} more errors not shown"})
    return out
