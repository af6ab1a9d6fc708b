"""Client for the NCMEC CyberTipline reporting API: XML over HTTPS with HTTP Basic auth.

The documented flow: POST /submit (the `report` XML) answers a report id; POST /upload (multipart `id` + `file`)
answers a file id and the MD5 of what arrived; POST /fileinfo (the `fileDetails` XML) describes each uploaded file;
POST /finish (`id`) closes the report and hands it to NCMEC. Until /finish the report can be withdrawn with POST
/retract. Every answer is a `reportResponse` (or `reportDoneResponse` for /finish) whose `responseCode` 0 means
success. GET /xsd serves the schema every document must satisfy: the client fetches it once per client (a copy on
disk stands in when /xsd does not answer) and checks each document with it before sending anything.
"""

from __future__ import annotations

import hashlib
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from imagen.safety.ncmec import (
    ReportInput,
    ReportInvalid,
    ReportSchema,
    SchemaUnusable,
    build_file_details_xml,
    build_report_xml,
    validate,
)

if TYPE_CHECKING:
    from imagen.kit.config import Settings

log = logging.getLogger(__name__)

TEST_URL = "https://exttest.cybertip.org/ispws"
PRODUCTION_URL = "https://report.cybertip.org/ispws"
XML_CONTENT_TYPE = "text/xml; charset=utf-8"
# The document or file itself is wrong: sending it again unchanged gets the same answer.
PERMANENT_CODES = {4100: "validation failed", 4110: "malformed XML", 4200: "malformed file"}
REPORT_DOES_NOT_EXIST, FILE_DOES_NOT_EXIST, ALREADY_RETRACTED, ALREADY_FINISHED = 5001, 5002, 5101, 5102


class CyberTiplineError(Exception):
    """A refusal (non-zero responseCode), an HTTP error or a network failure from one API call."""

    def __init__(self, operation: str, message: str, *, code: int | None = None, http_status: int | None = None,
                 request_id: str | None = None):
        super().__init__(f"CyberTipline {operation} failed: {message}"
                         + (f" (responseCode {code})" if code is not None else "")
                         + (f" (HTTP {http_status})" if http_status is not None else "")
                         + (f" (Request-ID {request_id})" if request_id else ""))
        self.operation = operation
        self.description = message
        self.code = code
        self.http_status = http_status
        self.request_id = request_id
        self.report_id: str | None = None  # set by submit_report when a report was opened
        self.retracted = False  # set by submit_report when that report was retracted after the failure
        self.finish_unconfirmed = False  # /finish was sent and no answer came back: the report may be filed

    @property
    def permanent(self) -> bool:
        """NCMEC refused the content (4100/4110/4200): retrying the same package cannot succeed."""
        return self.code in PERMANENT_CODES

    @property
    def answered(self) -> bool:
        """NCMEC read the request and answered with a code (as opposed to no answer, or a bare HTTP error)."""
        return self.code is not None


class ConfirmationRequired(PermissionError):
    """The operator requires a moderator's confirmation before a report leaves the server."""


@dataclass
class SubmissionResult:
    report_id: str
    file_ids: list[str] = field(default_factory=list)
    finished: bool = False


@dataclass
class _Response:
    code: int
    description: str
    report_id: str | None
    file_id: str | None
    file_ids: list[str]
    md5: str | None


class CyberTiplineClient:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 60.0, *,
                 require_confirmation: bool = False, schema_cache: Path | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.require_confirmation = require_confirmation
        self.schema_cache = schema_cache  # the last schema /xsd served, used when it does not answer
        self._schema: ReportSchema | None = None
        self._http = httpx.Client(base_url=self.base_url, auth=httpx.BasicAuth(username, password),
                                  timeout=timeout, transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs) -> CyberTiplineClient:
        if not settings.ncmec_username or not settings.ncmec_password:
            raise ValueError("IMAGEN_NCMEC_USERNAME and IMAGEN_NCMEC_PASSWORD must be set to report to NCMEC")
        default = PRODUCTION_URL if settings.ncmec_environment == "production" else TEST_URL
        kwargs.setdefault("schema_cache", settings.data_dir / "ncmec" / f"{settings.ncmec_environment}.xsd")
        return cls(settings.ncmec_base_url or default, settings.ncmec_username, settings.ncmec_password,
                   settings.ncmec_timeout_seconds, require_confirmation=settings.ncmec_require_confirmation,
                   **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CyberTiplineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The schema

    def schema(self) -> ReportSchema:
        """NCMEC's XSD: fetched from /xsd once per client; the copy on disk when /xsd cannot be reached."""
        if self._schema is not None:
            return self._schema
        try:
            response = self._http.get("/xsd")
            if response.status_code == 401:
                raise CyberTiplineError("xsd", "authentication failed (check IMAGEN_NCMEC_USERNAME/PASSWORD)",
                                        http_status=401)
            if response.is_error:
                raise CyberTiplineError("xsd", response.reason_phrase or "HTTP error",
                                        http_status=response.status_code)
            schema = ReportSchema(response.content)
        except (httpx.HTTPError, CyberTiplineError, SchemaUnusable) as exc:
            cached = self._cached_schema()
            if cached is None:
                if isinstance(exc, CyberTiplineError):
                    raise
                raise CyberTiplineError("xsd", f"{type(exc).__name__}: {exc}") from exc
            log.warning("CyberTipline /xsd unavailable (%s); using the copy in %s", exc, self.schema_cache)
            schema = cached
        else:
            self._store_schema(response.content)
        self._schema = schema
        return schema

    def _cached_schema(self) -> ReportSchema | None:
        if self.schema_cache is None or not self.schema_cache.is_file():
            return None
        try:
            return ReportSchema(self.schema_cache.read_bytes())
        except (OSError, SchemaUnusable):
            return None

    def _store_schema(self, xsd: bytes) -> None:
        if self.schema_cache is None:
            return
        try:
            self.schema_cache.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.schema_cache.with_suffix(".tmp")
            temporary.write_bytes(xsd)
            temporary.replace(self.schema_cache)
        except OSError:
            log.warning("could not keep a copy of the CyberTipline schema in %s", self.schema_cache)

    def check(self, document: bytes, root_tag: str) -> None:
        """ReportInvalid with the validator's messages unless `document` satisfies the schema."""
        if problems := self.schema().problems(document, root_tag):
            raise ReportInvalid([f"{root_tag}: {p}" for p in problems])

    # One call each

    def status(self) -> None:
        """Checks that the service answers and the credentials work (GET /status)."""
        self._call("status", "GET", "/status")

    def submit(self, report_xml: bytes) -> str:
        answer = self._call("submit", "POST", "/submit", content=report_xml,
                            headers={"Content-Type": XML_CONTENT_TYPE})
        if not answer.report_id:
            raise CyberTiplineError("submit", "no reportId in the answer")
        return answer.report_id

    def upload(self, report_id: str, filename: str, content: bytes) -> str:
        answer = self._call("upload", "POST", "/upload", data={"id": report_id},
                            files={"file": (filename, content, "application/octet-stream")})
        if not answer.file_id:
            raise CyberTiplineError("upload", "no fileId in the answer")
        sent = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if answer.md5 and answer.md5.lower() != sent:  # the API answers the MD5 of what arrived
            raise CyberTiplineError("upload", f"the file arrived damaged (MD5 {answer.md5}, sent {sent})")
        return answer.file_id

    def file_info(self, file_details_xml: bytes) -> None:
        self._call("fileinfo", "POST", "/fileinfo", content=file_details_xml,
                   headers={"Content-Type": XML_CONTENT_TYPE})

    def finish(self, report_id: str) -> list[str]:
        return self._call("finish", "POST", "/finish", data={"id": report_id}).file_ids

    def retract(self, report_id: str) -> None:
        self._call("retract", "POST", "/retract", data={"id": report_id})

    # The whole flow

    def submit_report(self, report: ReportInput, *, confirmed_by: str | None = None) -> SubmissionResult:
        """Validate and check every document against the schema, then submit → upload and fileinfo per file →
        finish. A failure before /finish retracts the report; a /finish whose answer is lost is left alone
        (`finish_unconfirmed`): the report may be filed, and `settle` finds out which."""
        if self.require_confirmation and not confirmed_by:
            raise ConfirmationRequired("a moderator must confirm this NCMEC report before it is submitted")
        if problems := validate(report):
            raise ReportInvalid(problems)
        report_xml = build_report_xml(report)
        self.check(report_xml, "report")
        for file in report.files:  # before anything is sent: a report is not opened to be refused halfway
            self.check(build_file_details_xml("1", "pending", file), "fileDetails")

        report_id = self.submit(report_xml)
        result = SubmissionResult(report_id=report_id)
        log.info("NCMEC report %s opened (%d files)", report_id, len(report.files))
        try:
            for file in report.files:
                file_id = self.upload(report_id, file.filename, file.content)
                result.file_ids.append(file_id)
                details = build_file_details_xml(report_id, file_id, file)
                self.check(details, "fileDetails")
                self.file_info(details)
        except (CyberTiplineError, ReportInvalid) as exc:
            exc.report_id = report_id
            exc.retracted = self._retract_after_failure(report_id) == "retracted"
            raise
        try:
            self.finish(report_id)
        except CyberTiplineError as exc:
            exc.report_id = report_id
            if not exc.answered:  # no answer: it may have been finished; `settle` asks on the next attempt
                exc.finish_unconfirmed = True
                log.warning("NCMEC report %s: /finish got no answer; settled on the next attempt", report_id)
                raise
            outcome = "finished" if exc.code == ALREADY_FINISHED else self._retract_after_failure(report_id)
            if outcome != "finished":
                exc.retracted = outcome == "retracted"
                raise
        result.finished = True
        log.info("NCMEC report %s finished", report_id)
        return result

    def settle(self, report_id: str, *, finish_sent: bool) -> str:
        """What became of an earlier attempt's report: "finished", "retracted" or "gone" (NCMEC no longer has it).

        After a lost /finish answer the report is finished again (every file was already added, so finishing is
        what was asked; 5102 says it already was); otherwise it is retracted. Raises CyberTiplineError when NCMEC
        cannot be asked (try later)."""
        try:
            if finish_sent:
                self.finish(report_id)
                return "finished"
            self.retract(report_id)
            return "retracted"
        except CyberTiplineError as exc:
            outcome = {ALREADY_FINISHED: "finished", ALREADY_RETRACTED: "retracted",
                       REPORT_DOES_NOT_EXIST: "gone"}.get(exc.code or 0)
            if outcome is None:
                raise
            return outcome

    def _retract_after_failure(self, report_id: str) -> str:
        """"retracted", "finished" (5102: NCMEC has it filed after all) or "open" (the retract failed)."""
        try:
            outcome = self.settle(report_id, finish_sent=False)
        except CyberTiplineError:
            log.exception("NCMEC report %s could not be retracted after a failed submission", report_id)
            return "open"
        log.warning("NCMEC report %s after a failed submission: %s", report_id, outcome)
        return "retracted" if outcome == "gone" else outcome

    def _call(self, operation: str, method: str, path: str, **kwargs) -> _Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CyberTiplineError(operation, f"{type(exc).__name__}: {exc}") from exc
        request_id = response.headers.get("Request-ID")
        answer = _parse(response.content)
        if answer is not None and answer.code != 0:
            raise CyberTiplineError(operation, answer.description or "refused", code=answer.code,
                                    http_status=response.status_code if response.is_error else None,
                                    request_id=request_id)
        if response.status_code == 401:  # the API answers 401 with an empty body
            raise CyberTiplineError(operation, "authentication failed (check IMAGEN_NCMEC_USERNAME/PASSWORD)",
                                    http_status=401, request_id=request_id)
        if response.is_error:
            raise CyberTiplineError(operation, response.reason_phrase or "HTTP error",
                                    http_status=response.status_code, request_id=request_id)
        if answer is None:
            raise CyberTiplineError(operation, "the answer is not a CyberTipline response",
                                    http_status=response.status_code, request_id=request_id)
        return answer


def _parse(body: bytes) -> _Response | None:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    if root.tag not in ("reportResponse", "reportDoneResponse"):
        return None
    code_text = (root.findtext("responseCode") or "").strip()
    try:
        code = int(code_text)
    except ValueError:
        return None
    file_ids = [(e.text or "").strip() for e in root.iter("fileId") if (e.text or "").strip()]
    return _Response(
        code=code,
        description=(root.findtext("responseDescription") or "").strip(),
        report_id=(root.findtext("reportId") or "").strip() or None,
        file_id=file_ids[0] if root.tag == "reportResponse" and file_ids else None,
        file_ids=file_ids,
        md5=(root.findtext("hash") or "").strip() or None,
    )
