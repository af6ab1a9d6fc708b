"""A local stand-in for the CyberTipline reporting API (/ispws): real HTTP on 127.0.0.1, run by uvicorn in a thread.

It checks HTTP Basic auth (401 otherwise, like the real service), parses the XML it is sent, keeps reports and
uploaded files, refuses a fileinfo that names a file id not uploaded to that report, and records every call. Its
checks are its own (not imagen.safety.ncmec's), so the tests catch a client that disagrees with them.
`fail` makes one operation answer an error: {"fileinfo": 500} (HTTP error) or {"upload": "4000"} (responseCode).
"""

from __future__ import annotations

import base64
import itertools
import socket
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

REPORT_CHILDREN = ("incidentSummary", "reporter", "personOrUserReported", "additionalInfo")
FILE_CHILDREN = ("reportId", "fileId", "fileName", "originalFileName", "uploadedToEspTimestamp", "locationOfFile",
                 "fileViewedByEsp", "publiclyAvailable", "fileAnnotations", "industryClassification",
                 "originalFileHash", "ipCaptureEvent", "additionalInfo")


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


class FakeCyberTipline:
    def __init__(self, username: str = "esp-user", password: str = "esp-password"):
        self.username, self.password = username, password
        self.calls: list[Call] = []
        self.reports: dict[str, FakeReport] = {}
        self.fail: dict[str, int | str] = {}
        self._ids = itertools.count(1000)
        self.app = Starlette(routes=[
            Route("/ispws/status", self.status, methods=["GET"]),
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
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
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

    def operations(self) -> list[str]:
        return [call.operation for call in self.calls]

    # Answers

    @staticmethod
    def _answer(code: int = 0, description: str = "", root: str = "reportResponse", **values: str) -> Response:
        parts = [f"<responseCode>{code}</responseCode>"]
        if description:
            parts.append(f"<responseDescription>{escape(description)}</responseDescription>")
        parts += [f"<{tag}>{escape(value)}</{tag}>" for tag, value in values.items()]
        body = f'<?xml version="1.0" encoding="UTF-8"?><{root}>{"".join(parts)}</{root}>'
        return Response(body, media_type="text/xml")

    def _error(self, code: int, description: str) -> Response:
        return self._answer(code, description)

    async def _enter(self, operation: str, request: Request) -> tuple[Call, Response | None]:
        call = Call(operation, None)
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            call.username = user
            if (user, password) != (self.username, self.password):
                header = ""
        self.calls.append(call)
        if not header.startswith("Basic "):
            return call, Response("<html><body>401 Unauthorized</body></html>", status_code=401,
                                  media_type="text/html", headers={"WWW-Authenticate": 'Basic realm="ispws"'})
        if operation in self.fail:
            failure = self.fail[operation]
            if isinstance(failure, int):
                return call, Response("Internal Server Error", status_code=failure)
            return call, self._error(int(failure), f"injected failure on {operation}")
        return call, None

    def _open_report(self, report_id: str) -> FakeReport | Response:
        report = self.reports.get(report_id)
        if report is None:
            return self._error(4001, f"unknown report {report_id}")
        if report.state != "open":
            return self._error(4002, f"report {report_id} is {report.state}")
        return report

    async def status(self, request: Request) -> Response:
        _, refused = await self._enter("status", request)
        return refused or self._answer()

    async def submit(self, request: Request) -> Response:
        call, refused = await self._enter("submit", request)
        call.body = await request.body()
        if refused:
            return refused
        if not request.headers.get("content-type", "").startswith("text/xml"):
            return self._error(4100, "expected text/xml")
        try:
            root = ET.fromstring(call.body)
        except ET.ParseError as exc:
            return self._error(4100, f"XML parse error: {exc}")
        names = [child.tag for child in root]
        if root.tag != "report" or root.find("incidentSummary/incidentType") is None \
                or root.find("incidentSummary/incidentDateTime") is None \
                or root.find("reporter/reportingPerson") is None:
            return self._error(4100, "schema: report needs incidentSummary (type, time) and reporter")
        known = [REPORT_CHILDREN.index(n) for n in names if n in REPORT_CHILDREN]
        if known != sorted(known):
            return self._error(4100, "schema: report children out of order")
        report_id = str(next(self._ids))
        self.reports[report_id] = FakeReport(root)
        return self._answer(reportId=report_id)

    async def upload(self, request: Request) -> Response:
        call, refused = await self._enter("upload", request)
        if refused:
            return refused
        form = await request.form()
        report_id = str(form.get("id", ""))
        call.form = {"id": report_id}
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return self._error(4200, "no file part")
        report = self._open_report(report_id)
        if isinstance(report, Response):
            return report
        content = await upload.read()
        call.form["filename"] = upload.filename or ""
        file_id = f"f{next(self._ids)}"
        report.files[file_id] = content
        return self._answer(reportId=report_id, fileId=file_id)

    async def fileinfo(self, request: Request) -> Response:
        call, refused = await self._enter("fileinfo", request)
        call.body = await request.body()
        if refused:
            return refused
        try:
            root = ET.fromstring(call.body)
        except ET.ParseError as exc:
            return self._error(4100, f"XML parse error: {exc}")
        if root.tag != "fileDetails":
            return self._error(4100, "expected fileDetails")
        known = [FILE_CHILDREN.index(child.tag) for child in root if child.tag in FILE_CHILDREN]
        if known != sorted(known):
            return self._error(4100, "schema: fileDetails children out of order")
        report = self._open_report((root.findtext("reportId") or "").strip())
        if isinstance(report, Response):
            return report
        file_id = (root.findtext("fileId") or "").strip()
        if file_id not in report.files:
            return self._error(4300, f"file {file_id!r} was not uploaded to this report")
        report.file_details[file_id] = root
        return self._answer()

    async def _report_from_form(self, operation: str, request: Request) -> tuple[Call, FakeReport | Response]:
        """finish and retract: the `id` form field names an open report."""
        call, refused = await self._enter(operation, request)
        if refused:
            return call, refused
        call.form = {"id": str((await request.form()).get("id", ""))}
        return call, self._open_report(call.form["id"])

    async def finish(self, request: Request) -> Response:
        call, report = await self._report_from_form("finish", request)
        if isinstance(report, Response):
            return report
        report.state = "finished"
        files = "".join(f"<fileId>{fid}</fileId>" for fid in report.files)
        body = (f'<?xml version="1.0" encoding="UTF-8"?><reportDoneResponse><responseCode>0</responseCode>'
                f'<reportId>{call.form["id"]}</reportId><files>{files}</files></reportDoneResponse>')
        return Response(body, media_type="text/xml")

    async def retract(self, request: Request) -> Response:
        call, report = await self._report_from_form("retract", request)
        if isinstance(report, Response):
            return report
        report.state = "retracted"
        return self._answer(reportId=call.form["id"])
