"""Client for the NCMEC CyberTipline reporting API: XML over HTTPS with HTTP Basic auth.

The documented flow: POST /submit (the `report` XML) answers a report id; POST /upload (multipart `id` + `file`)
answers a file id per file; POST /fileinfo (the `fileDetails` XML) describes each uploaded file; POST /finish (`id`)
closes the report and hands it to NCMEC. Until /finish the report can be withdrawn with POST /retract. Every answer
is a `reportResponse` (or `reportDoneResponse` for /finish) whose `responseCode` 0 means success.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from imagen.safety.ncmec import (
    ReportInput,
    ReportInvalid,
    build_file_details_xml,
    build_report_xml,
    check_xml,
    validate,
)

if TYPE_CHECKING:
    from imagen.kit.config import Settings

log = logging.getLogger(__name__)

TEST_URL = "https://exttest.cybertip.org/ispws"
PRODUCTION_URL = "https://report.cybertip.org/ispws"
XML_CONTENT_TYPE = "text/xml; charset=utf-8"


class CyberTiplineError(Exception):
    """A refusal (non-zero responseCode), an HTTP error or a network failure from one API call."""

    def __init__(self, operation: str, message: str, *, code: int | None = None, http_status: int | None = None):
        super().__init__(f"CyberTipline {operation} failed: {message}"
                         + (f" (responseCode {code})" if code is not None else "")
                         + (f" (HTTP {http_status})" if http_status is not None else ""))
        self.operation = operation
        self.description = message
        self.code = code
        self.http_status = http_status
        self.report_id: str | None = None  # set by submit_report when a report was opened
        self.retracted = False  # set by submit_report when that report was retracted after the failure


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


class CyberTiplineClient:
    def __init__(self, base_url: str, username: str, password: str, timeout: float = 60.0, *,
                 require_confirmation: bool = False, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.require_confirmation = require_confirmation
        self._http = httpx.Client(base_url=self.base_url, auth=httpx.BasicAuth(username, password),
                                  timeout=timeout, transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs) -> CyberTiplineClient:
        if not settings.ncmec_username or not settings.ncmec_password:
            raise ValueError("IMAGEN_NCMEC_USERNAME and IMAGEN_NCMEC_PASSWORD must be set to report to NCMEC")
        default = PRODUCTION_URL if settings.ncmec_environment == "production" else TEST_URL
        return cls(settings.ncmec_base_url or default, settings.ncmec_username, settings.ncmec_password,
                   settings.ncmec_timeout_seconds, require_confirmation=settings.ncmec_require_confirmation,
                   **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CyberTiplineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """Validate, then submit → upload and fileinfo per file → finish; retract the report if a step fails."""
        if self.require_confirmation and not confirmed_by:
            raise ConfirmationRequired("a moderator must confirm this NCMEC report before it is submitted")
        if problems := validate(report):
            raise ReportInvalid(problems)
        report_xml = build_report_xml(report)
        if problems := check_xml(report_xml, "report"):
            raise ReportInvalid(problems)

        report_id = self.submit(report_xml)
        result = SubmissionResult(report_id=report_id)
        log.info("NCMEC report %s opened (%d files)", report_id, len(report.files))
        try:
            for file in report.files:
                file_id = self.upload(report_id, file.filename, file.content)
                result.file_ids.append(file_id)
                details = build_file_details_xml(report_id, file_id, file)
                if problems := check_xml(details, "fileDetails"):
                    raise ReportInvalid(problems)
                self.file_info(details)
            self.finish(report_id)
        except Exception as exc:
            retracted = self._retract_quietly(report_id)
            if isinstance(exc, CyberTiplineError):
                exc.report_id, exc.retracted = report_id, retracted
            raise
        result.finished = True
        log.info("NCMEC report %s finished", report_id)
        return result

    def _retract_quietly(self, report_id: str) -> bool:
        try:
            self.retract(report_id)
        except CyberTiplineError:
            log.exception("NCMEC report %s could not be retracted after a failed submission", report_id)
            return False
        log.warning("NCMEC report %s retracted after a failed submission", report_id)
        return True

    def _call(self, operation: str, method: str, path: str, **kwargs) -> _Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CyberTiplineError(operation, f"{type(exc).__name__}: {exc}") from exc
        answer = _parse(response.content)
        if answer is not None and answer.code != 0:
            raise CyberTiplineError(operation, answer.description or "refused", code=answer.code,
                                    http_status=response.status_code if response.is_error else None)
        if response.status_code == 401:
            raise CyberTiplineError(operation, "authentication failed (check IMAGEN_NCMEC_USERNAME/PASSWORD)",
                                    http_status=401)
        if response.is_error:
            raise CyberTiplineError(operation, response.reason_phrase or "HTTP error",
                                    http_status=response.status_code)
        if answer is None:
            raise CyberTiplineError(operation, "the answer is not a CyberTipline response",
                                    http_status=response.status_code)
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
    )
