"""Admin API for hash banks: list, import (JSON list or a multipart file), enable/disable."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from imagen.accounts.http import AdminUser
from imagen.kit.errors import Unprocessable, field_error
from imagen.kit.http import SessionDep
from imagen.kit.inputs import Line
from imagen.safety.bank_models import HashBank
from imagen.safety.banks import ImportReport, hash_bank_service

router = APIRouter(prefix="/api/v1/admin/hash-banks", tags=["safety"])


class HashBankOut(BaseModel):
    id: str
    name: str
    hash_type: str
    enabled: bool
    source: str
    description: str
    count: int
    created_at: datetime
    updated_at: datetime


class BadLineOut(BaseModel):
    line: int
    reason: str


class ImportOut(BaseModel):
    bank: HashBankOut
    added: int
    duplicates: int
    bad_count: int
    bad_lines: list[BadLineOut]


class HashBankImport(BaseModel):
    name: Line = Field(min_length=1, max_length=100)
    hash_type: Literal["pdq", "md5", "sha256"]
    source: str | None = Field(default=None, max_length=300)
    description: str | None = Field(default=None, max_length=1000)
    hashes: list[str] = Field(default_factory=list, description="hex hashes (or lines of a CSV with a hash column)")


class HashBankPatch(BaseModel):
    enabled: bool | None = None
    source: str | None = Field(default=None, max_length=300)
    description: str | None = Field(default=None, max_length=1000)


IMPORT_OPENAPI: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": HashBankImport.model_json_schema()},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["name", "hash_type", "file"],
        "properties": {
            "name": {"type": "string"}, "hash_type": {"type": "string", "enum": ["pdq", "md5", "sha256"]},
            "source": {"type": "string"}, "description": {"type": "string"},
            "file": {"type": "string", "format": "binary",
                     "description": "one hex hash per line, or a CSV/TSV with a hash column"},
        }}}}}}


def bank_out(bank: HashBank) -> HashBankOut:
    return HashBankOut.model_validate(bank, from_attributes=True)


def import_out(bank: HashBank, report: ImportReport) -> ImportOut:
    return ImportOut(bank=bank_out(bank), added=report.added, duplicates=report.duplicates,
                     bad_count=report.bad_count,
                     bad_lines=[BadLineOut(line=b.line, reason=b.reason) for b in report.bad_lines])


async def _read_import(request: Request) -> tuple[HashBankImport, Any]:
    """The import's fields and its lines, from JSON or from a multipart form with a file."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise field_error("file", "a file with one hash per line, or a CSV/TSV with a hash column")
        fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
        lines = io.TextIOWrapper(upload.file, encoding="utf-8-sig", errors="replace", newline="")
    else:
        try:
            fields = await request.json()
        except ValueError:
            raise Unprocessable("Send JSON {name, hash_type, hashes} or a multipart form with a file") from None
        lines = None
    try:
        body = HashBankImport.model_validate(fields)
    except ValidationError as exc:
        raise Unprocessable([{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                             for e in exc.errors(include_url=False)]) from None
    return body, (lines if lines is not None else body.hashes)


@router.get("", response_model=list[HashBankOut])
def list_banks(admin: AdminUser, session: SessionDep) -> list[HashBankOut]:
    return [bank_out(b) for b in hash_bank_service.list(session)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ImportOut, openapi_extra=IMPORT_OPENAPI)
async def import_bank(request: Request, admin: AdminUser, session: SessionDep) -> ImportOut:
    """Create a bank or add to one: hashes already in it are skipped; bad lines are reported and left out."""
    body, lines = await _read_import(request)
    bank, report = await run_in_threadpool(
        lambda: hash_bank_service.import_lines(session, name=body.name, hash_type=body.hash_type, lines=lines,
                                               source=body.source, description=body.description))
    if report.added == 0 and report.duplicates == 0 and report.bad_count:
        raise Unprocessable({"message": "No valid hash in the list", "bad_count": report.bad_count,
                             "bad_lines": [{"line": b.line, "reason": b.reason} for b in report.bad_lines[:20]]})
    return import_out(bank, report)


@router.patch("/{bank_id}", response_model=HashBankOut)
def update_bank(bank_id: str, body: HashBankPatch, admin: AdminUser, session: SessionDep) -> HashBankOut:
    return bank_out(hash_bank_service.update(session, bank_id=bank_id, enabled=body.enabled, source=body.source,
                                             description=body.description))
