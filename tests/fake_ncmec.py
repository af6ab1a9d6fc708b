"""A local stand-in for the CyberTipline reporting API (/ispws): real HTTP on 127.0.0.1, run by uvicorn in a thread.

It speaks the real API's shapes and codes (its technical documentation, appendix D): HTTP Basic auth (a 401 with an
empty body otherwise), a `Request-ID` header, `reportResponse` with `responseCode` and `responseDescription` on
every answer ("Success" on 0), the upload's `fileId` and `hash` (MD5 of the bytes), `reportDoneResponse` on finish,
and the error codes 4100 (validation failed), 4110 (malformed XML), 4200 (malformed file), 5001 (no such report),
5002 (no such file in the report), 5101 (already retracted), 5102 (already finished), with HTTP 400.

It serves `ncmec_schema.xsd` (written from NCMEC's published rules) at /ispws/xsd and validates every `report` and
`fileDetails` document with it, plus the rules the XSD cannot say (IP addresses, times in the past), so a document
the real API would refuse is refused here: `validated` lists the documents that passed, `refusals` what it refused.
Its checks are its own (lxml on its own copy of the schema), not imagen.safety.ncmec's.

`fail` makes one operation answer an error: {"fileinfo": 500} (HTTP error) or {"upload": "4000"} (responseCode).
`lose_reply` makes operations happen but drop the connection before the answer arrives (a lost reply).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import itertools
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import uvicorn
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SCHEMA_PATH = Path(__file__).with_name("ncmec_schema.xsd")
DESCRIPTIONS = {0: "Success", 4000: "Invalid request", 4100: "Validation failed", 4110: "Malformed XML submittal",
                4200: "Malformed file submittal", 5001: "Report does not exist", 5002: "File does not exist",
                5101: "Report already retracted", 5102: "Report already finished"}
TIME_ELEMENTS = ("incidentDateTime", "dateTime", "uploadedToEspTimestamp")
TIME_ATTRIBUTES = ("disabledDate", "reenabledDate", "userNotifiedDate", "verificationDate")


@dataclass
class Call:
    operation: str
    username: str | None
    body: bytes = b""
    form: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeReport:
    xml: ET.Element
    files: dict[str, bytes] = field(default_factory=dict)
    file_details: dict[str, ET.Element] = field(default_factory=dict)
    state: str = "open"  # open → finished | retracted


class _LostReply(Response):
    """The operation happened, but its answer never arrives: the connection drops in the middle of the reply."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/xml"), (b"content-length", b"400")]})
        await send({"type": "http.response.body", "body": b"<?xml version=", "more_body": True})
        raise ConnectionResetError("fake CyberTipline: this reply is lost on purpose")


class _Refused(Exception):
    def __init__(self, code: int, detail: str = ""):
        super().__init__(detail)
        self.code, self.detail = code, detail


class FakeCyberTipline:
    def __init__(self, username: str = "esp-user", password: str = "esp-password", schema: bytes | None = None):
        self.username, self.password = username, password
        self.use_schema(schema if schema is not None else SCHEMA_PATH.read_bytes())
        self.calls: list[Call] = []
        self.reports: dict[str, FakeReport] = {}
        self.fail: dict[str, int | str] = {}
        self.lose_reply: set[str] = set()
        self.validated: list[str] = []  # root tags of the documents that passed the schema, in order
        self.refusals: list[tuple[str, int, str]] = []  # (operation, responseCode, responseDescription)
        self._ids = itertools.count(4564000)
        self.app = Starlette(routes=[
            Route("/ispws/status", self.status, methods=["GET"]),
            Route("/ispws/xsd", self.xsd, methods=["GET"]),
            Route("/ispws/submit", self.submit, methods=["POST"]),
            Route("/ispws/upload", self.upload, methods=["POST"]),
            Route("/ispws/fileinfo", self.fileinfo, methods=["POST"]),
            Route("/ispws/finish", self.finish, methods=["POST"]),
            Route("/ispws/retract", self.retract, methods=["POST"]),
        ])
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # Running

    def start(self) -> FakeCyberTipline:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="critical", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake CyberTipline did not start")
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{port}/ispws"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def use_schema(self, xsd: bytes) -> None:
        """Serve and validate with another schema from now on (NCMEC publishes a new one)."""
        self.schema_bytes = xsd
        self._schema = etree.XMLSchema(etree.fromstring(xsd))

    def operations(self) -> list[str]:
        return [call.operation for call in self.calls]

    def finished(self) -> list[str]:
        return [rid for rid, report in self.reports.items() if report.state == "finished"]

    # Answers

    @staticmethod
    def _xml(root: str, parts: list[str], status: int = 200) -> Response:
        body = f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><{root}>{"".join(parts)}</{root}>'
        return Response(body, status_code=status, media_type="application/xml",
                        headers={"Request-ID": uuid.uuid4().hex})

    def _answer(self, code: int = 0, description: str | None = None, *, report_id: str | None = None,
                **values: str) -> Response:
        description = description or DESCRIPTIONS.get(code, "Error")
        parts = [f"<responseCode>{code}</responseCode>",
                 f"<responseDescription>{escape(description)}</responseDescription>"]
        if report_id is not None:
            parts.append(f"<reportId>{escape(report_id)}</reportId>")
        parts += [f"<{tag}>{escape(value)}</{tag}>" for tag, value in values.items()]
        return self._xml("reportResponse", parts, 200 if code == 0 else 400)

    def _refuse(self, operation: str, refusal: _Refused, report_id: str | None = None) -> Response:
        description = DESCRIPTIONS.get(refusal.code, "Error") + (f": {refusal.detail}" if refusal.detail else "")
        self.refusals.append((operation, refusal.code, description))
        return self._answer(refusal.code, description, report_id=report_id)

    async def _enter(self, operation: str, request: Request) -> tuple[Call, Response | None]:
        call = Call(operation, None)
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            call.username = user
            if (user, password) != (self.username, self.password):
                header = ""
        self.calls.append(call)
        if not header.startswith("Basic "):  # as the real service: no XML, an empty body
            return call, Response(b"", status_code=401, headers={"WWW-Authenticate": 'Basic realm="ispws"',
                                                                 "Request-ID": uuid.uuid4().hex})
        if operation in self.fail:
            failure = self.fail[operation]
            if isinstance(failure, int):
                return call, Response("Internal Server Error", status_code=failure)
            return call, self._answer(int(failure), f"injected failure on {operation}")
        return call, None

    def _check_document(self, body: bytes, root_tag: str) -> ET.Element:
        """The schema, then what it leaves to prose: real IP addresses, times with a zone and not in the future."""
        try:
            document = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError as exc:
            raise _Refused(4110, str(exc)) from exc
        if document.tag != root_tag:
            raise _Refused(4110, f"expected <{root_tag}>, got <{document.tag}>")
        if not self._schema.validate(document):
            raise _Refused(4100, "; ".join(f"{e.path}: {e.message}" for e in self._schema.error_log))
        problems = []
        for node in document.iter("ipAddress"):
            try:
                ipaddress.ip_address((node.text or "").strip())
            except ValueError:
                problems.append(f"{document.getroottree().getpath(node)}: not an IP address")
        latest = datetime.now(UTC) + timedelta(minutes=5)
        stamps = [(node, node.text) for node in document.iter(*TIME_ELEMENTS)]
        stamps += [(node, node.get(a)) for node in document.iter() for a in TIME_ATTRIBUTES if node.get(a)]
        for node, value in stamps:
            moment = datetime.fromisoformat((value or "").strip().replace("Z", "+00:00"))
            if moment.tzinfo is None:
                problems.append(f"{document.getroottree().getpath(node)}: needs a time zone")
            elif moment > latest:
                problems.append(f"{document.getroottree().getpath(node)}: must be in the past")
        if problems:
            raise _Refused(4100, "; ".join(problems))
        self.validated.append(root_tag)
        return ET.fromstring(body)

    def _report_in_state(self, report_id: str, *, open_only: bool = True) -> FakeReport:
        report = self.reports.get(report_id)
        if report is None:
            raise _Refused(5001, f"report {report_id!r}")
        if open_only and report.state == "retracted":
            raise _Refused(5101)
        if open_only and report.state == "finished":
            raise _Refused(5102)
        return report

    # Endpoints

    async def status(self, request: Request) -> Response:
        call, refused = await self._enter("status", request)
        return refused or self._answer(0, f"Remote User : {call.username}, Remote Ip : 127.0.0.1")

    async def xsd(self, request: Request) -> Response:
        _, refused = await self._enter("xsd", request)
        return refused or Response(self.schema_bytes, media_type="application/xml")

    async def submit(self, request: Request) -> Response:
        call, refused = await self._enter("submit", request)
        call.body = await request.body()
        if refused:
            return refused
        try:
            if not request.headers.get("content-type", "").startswith("text/xml"):
                raise _Refused(4110, "expected Content-Type text/xml")
            root = self._check_document(call.body, "report")
        except _Refused as refusal:
            return self._refuse("submit", refusal)
        report_id = str(next(self._ids))
        self.reports[report_id] = FakeReport(root)
        return _LostReply() if "submit" in self.lose_reply else self._answer(report_id=report_id)

    async def upload(self, request: Request) -> Response:
        call, refused = await self._enter("upload", request)
        if refused:
            return refused
        form = await request.form()
        report_id = str(form.get("id", ""))
        call.form = {"id": report_id}
        upload = form.get("file")
        try:
            report = self._report_in_state(report_id)
            if upload is None or isinstance(upload, str):
                raise _Refused(4200, "no file part")
            content = await upload.read()
            if not content:
                raise _Refused(4200, "the file is empty")
        except _Refused as refusal:
            return self._refuse("upload", refusal, report_id)
        call.form["filename"] = upload.filename or ""
        file_id = uuid.uuid4().hex
        report.files[file_id] = content
        if "upload" in self.lose_reply:
            return _LostReply()
        return self._answer(report_id=report_id, fileId=file_id,
                            hash=hashlib.md5(content, usedforsecurity=False).hexdigest())

    async def fileinfo(self, request: Request) -> Response:
        call, refused = await self._enter("fileinfo", request)
        call.body = await request.body()
        if refused:
            return refused
        report_id = None
        try:
            root = self._check_document(call.body, "fileDetails")
            report_id = (root.findtext("reportId") or "").strip()
            report = self._report_in_state(report_id)
            file_id = (root.findtext("fileId") or "").strip()
            if file_id not in report.files:
                raise _Refused(5002, f"file {file_id!r} was not uploaded to report {report_id}")
            if file_id in report.file_details:
                raise _Refused(4100, f"details for file {file_id!r} were already submitted")
        except _Refused as refusal:
            return self._refuse("fileinfo", refusal, report_id)
        report.file_details[file_id] = root
        return _LostReply() if "fileinfo" in self.lose_reply else self._answer(report_id=report_id)

    async def _form_report(self, operation: str, request: Request) -> tuple[Call, FakeReport | Response]:
        """finish and retract: the `id` form field names an open report."""
        call, refused = await self._enter(operation, request)
        if refused:
            return call, refused
        call.form = {"id": str((await request.form()).get("id", ""))}
        try:
            return call, self._report_in_state(call.form["id"])
        except _Refused as refusal:
            return call, self._refuse(operation, refusal, call.form["id"])

    async def finish(self, request: Request) -> Response:
        call, report = await self._form_report("finish", request)
        if isinstance(report, Response):
            return report
        report.state = "finished"
        if "finish" in self.lose_reply:
            return _LostReply()
        files = "".join(f"<fileId>{fid}</fileId>" for fid in report.files)
        return self._xml("reportDoneResponse", ["<responseCode>0</responseCode>",
                                                f"<reportId>{call.form['id']}</reportId>", f"<files>{files}</files>"])

    async def retract(self, request: Request) -> Response:
        call, report = await self._form_report("retract", request)
        if isinstance(report, Response):
            return report
        report.state = "retracted"
        return _LostReply() if "retract" in self.lose_reply else self._answer(report_id=call.form["id"])
