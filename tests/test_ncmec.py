"""NCMEC CyberTipline report packages: build, validate, the schema check, and the submit/upload/fileinfo/finish flow
against a fake that speaks the real API's codes and validates every document with its schema (tests/fake_ncmec.py).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from imagen.kit.config import Settings
from imagen.safety.ncmec import (
    IpEvent,
    ReportedPerson,
    Reporter,
    ReportFile,
    ReportInput,
    ReportInvalid,
    ReportSchema,
    build_file_details_xml,
    build_report_xml,
    reporter_from_settings,
    validate,
)
from imagen.safety.ncmec_client import (
    PRODUCTION_URL,
    TEST_URL,
    ConfirmationRequired,
    CyberTiplineClient,
    CyberTiplineError,
)
from tests.fake_ncmec import SCHEMA_PATH, FakeCyberTipline

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
UPLOAD_BYTES, OUTPUT_BYTES = b"\x89PNG upload", b"\x89PNG output"


def stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_input(**changes) -> ReportInput:
    report = ReportInput(
        incident_time=NOW - timedelta(hours=2),
        incident_time_description="When the file was uploaded",
        summary="Upload matched a hash bank entry; the file was quarantined and the account suspended.",
        reporter=Reporter(company="Example Images Ltd", first_name="Dana", last_name="Moderator",
                          email="safety@example.com", phone="+1 555 010 0000",
                          legal_url="https://images.example.com/terms",
                          company_template="Legal process: legal@example.com. Data kept 1 year. 24h: +1 555 0100"),
        reported_person=ReportedPerson(
            esp_identifier="user-42", email="someone@example.org", screen_name="someone",
            ip_events=[IpEvent("203.0.113.7", "Login", NOW - timedelta(hours=3)),
                       IpEvent("2001:db8::1", "Upload", NOW - timedelta(hours=2))],
            disabled_at=NOW - timedelta(hours=1)),
        files=[
            ReportFile(filename="evidence-1.png", content=UPLOAD_BYTES, original_filename="holiday.png",
                       viewed_by_esp=False, industry_classification="A1", uploaded_at=NOW - timedelta(hours=2),
                       ip_event=IpEvent("2001:db8::1", "Upload", NOW - timedelta(hours=2)),
                       original_hashes={"SHA256": hashlib.sha256(UPLOAD_BYTES).hexdigest(),
                                        "MD5": hashlib.md5(UPLOAD_BYTES).hexdigest()},
                       detail_hashes={"PDQ": "f0" * 32}, notes=["matched a PDQ hash list entry"]),
            ReportFile(filename="evidence-2.png", content=OUTPUT_BYTES, viewed_by_esp=True,
                       annotations=frozenset({"generativeAi"}), prompt="a <prompt> & more\x00",
                       negative_prompt="blurry", ip_event=IpEvent("203.0.113.7", "Login", NOW - timedelta(hours=3))),
        ],
        additional_info="Case 17.",
    )
    return replace(report, **changes)


@pytest.fixture(scope="module")
def schema() -> ReportSchema:
    return ReportSchema(SCHEMA_PATH.read_bytes())


@pytest.fixture
def fake() -> Iterator[FakeCyberTipline]:
    server = FakeCyberTipline().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake: FakeCyberTipline) -> Iterator[CyberTiplineClient]:
    with CyberTiplineClient(fake.base_url, fake.username, fake.password, timeout=10) as c:
        yield c


# The package


def test_report_package_carries_what_each_field_means(schema: ReportSchema) -> None:
    report = make_input()
    assert validate(report, now=NOW) == []

    document = build_report_xml(report)
    assert schema.problems(document, "report") == []
    root = ET.fromstring(document)
    assert [c.tag for c in root] == ["incidentSummary", "reporter", "personOrUserReported", "additionalInfo"]
    assert root.findtext("incidentSummary/incidentType") == report.incident_type
    assert root.findtext("incidentSummary/incidentDateTime") == stamp(NOW - timedelta(hours=2))
    assert root.findtext("incidentSummary/incidentDateTimeDescription") == "When the file was uploaded"
    assert root.find("incidentSummary/escalateToHighPriority") is None  # only when a moderator escalates
    reporter = root.find("reporter")
    assert [c.tag for c in reporter] == ["reportingPerson", "companyTemplate", "legalURL"]
    assert reporter.findtext("legalURL") == "https://images.example.com/terms"  # a URL, not the terms' text
    assert reporter.find("termsOfService") is None
    assert reporter.findtext("companyTemplate").startswith("Legal process")
    person = root.find("personOrUserReported")
    assert person.findtext("personOrUserReportedPerson/email") == "someone@example.org"
    assert person.findtext("espIdentifier") == "user-42"
    assert person.findtext("screenName") == "someone"
    events = [(e.findtext("ipAddress"), e.findtext("eventName")) for e in person.iter("ipCaptureEvent")]
    assert events == [("203.0.113.7", "Login"), ("2001:db8::1", "Upload")]
    suspended = person.find("accountTemporarilyDisabled")
    assert suspended.text == "true" and suspended.get("disabledDate") == stamp(NOW - timedelta(hours=1))
    assert root.findtext("additionalInfo").endswith("Case 17.")

    upload, output = report.files
    details = build_file_details_xml("1001", "f1", upload)
    assert schema.problems(details, "fileDetails") == []
    first = ET.fromstring(details)
    assert first.findtext("originalFileName") == "holiday.png"
    assert first.findtext("fileViewedByEsp") == "false"
    assert first.findtext("industryClassification") == "A1"
    assert first.find("fileAnnotations") is None  # no annotation is true: the element is left out
    assert first.find("locationOfFile") is None  # no URL to give
    assert {h.get("hashType"): h.text for h in first.findall("originalFileHash")} == upload.original_hashes
    [pdq] = first.findall("details")
    assert pdq.get("type") == "HASH"
    assert (pdq.findtext("nameValuePair/name"), pdq.findtext("nameValuePair/value")) == ("PDQ", "f0" * 32)
    assert first.findtext("ipCaptureEvent/eventName") == "Upload"
    assert [e.text for e in first.findall("additionalInfo")] == ["matched a PDQ hash list entry"]

    details = build_file_details_xml("1001", "f2", output)
    assert schema.problems(details, "fileDetails") == []
    second = ET.fromstring(details)
    assert [(c.tag, c.text) for c in second.find("fileAnnotations")] == [("generativeAi", "true")]
    assert second.find("originalFileName") is None and second.find("uploadedToEspTimestamp") is None
    assert second.findtext("ipCaptureEvent/eventName") == "Login"
    assert [e.text for e in second.findall("additionalInfo")] == ["Prompt: a <prompt> & more",
                                                                  "Negative prompt: blurry"]


def test_an_unknown_account_is_left_out_never_made_up(schema: ReportSchema) -> None:
    no_id = make_input(reported_person=ReportedPerson(esp_identifier=None, email="someone@example.org"))
    assert validate(no_id, now=NOW) == []
    root = ET.fromstring(build_report_xml(no_id))
    assert root.find("personOrUserReported/espIdentifier") is None
    assert "unknown" not in build_report_xml(no_id).decode().lower()
    nobody = make_input(reported_person=ReportedPerson(esp_identifier=None))
    document = build_report_xml(nobody)
    assert ET.fromstring(document).find("personOrUserReported") is None
    assert schema.problems(document, "report") == []


def test_broken_input_lists_each_problem() -> None:
    report = make_input(
        incident_type="Something else",
        incident_time=NOW.replace(tzinfo=None),  # naive
        summary=" ",
        reporter=Reporter(company="", first_name="Dana", last_name="M", email="not-an-email", phone="call me",
                          legal_url="see our terms"),
        reported_person=ReportedPerson(esp_identifier="", email="x@", ip_events=[
            IpEvent("300.1.1.1", "Visit", NOW + timedelta(days=1))]),
        files=[ReportFile(filename="a.png", content=b"", industry_classification="C3", prompt="p",
                          location_of_file="upload", original_hashes={"PDQ": "ab" * 32},
                          annotations=frozenset({"cartoon"})),
               ReportFile(filename="a.png", content=b"x", viewed_by_esp=True, original_hashes={"MD5": "xyz"},
                          detail_hashes={"SHA256": "ab" * 32})],
    )
    problems = validate(report, now=NOW)
    for expected in (
        "incident_type:", "incident_time: must be timezone-aware", "summary: required", "reporter.company: required",
        "reporter.email: not a valid email", "reporter.phone:", "reporter.legal_url: not a URL",
        "reported_person.esp_identifier: required", "reported_person.email: not a valid email",
        "ip_events[0].ip: not an IP", "ip_events[0].event:", "ip_events[0].time: is in the future",
        "files[0].content: empty", "files[0].viewed_by_esp: must be stated", "files[0].industry_classification:",
        "files[0].annotations: a file with a prompt must be annotated generativeAi",
        "files[0].annotations: cartoon not among", "files[0].location_of_file: not a URL",
        "files[0].original_hashes: 'PDQ' is not one of MD5, SHA1, SHA256",
        "files[1].filename: 'a.png' is used twice", "files[1].original_hashes[MD5]: not 32 hex digits",
        "files[1].detail_hashes: 'SHA256' is not one of PDQ",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    assert "files: at least one file is required" in validate(make_input(files=[]), now=NOW)
    assert validate(make_input(incident_time=NOW + timedelta(hours=1)), now=NOW) == [
        "incident_time: is in the future"]


def test_documented_length_limits_are_checked_naming_the_field() -> None:
    long_local = "a" * 65 + "@example.org"
    report = make_input(
        escalate_reason="x" * 3001,
        incident_time_description="d" * 3001,
        reporter=Reporter(company="C" * 101, first_name="F" * 101, last_name="L" * 101,
                          email="s" * 250 + "@example.com", phone="1" * 51,
                          legal_url="https://example.com/" + "t" * 2100),
        reported_person=ReportedPerson(esp_identifier="u" * 256, email=long_local, screen_name="s" * 257),
        files=[replace(make_input().files[0], original_filename="n" * 2057)],
    )
    problems = validate(report, now=NOW)
    for expected in (
        "escalate_reason: 3001 characters, at most 3000 allowed (incidentSummary/escalateToHighPriority)",
        "incident_time_description: 3001 characters, at most 3000",
        "reporter.company: 101 characters, at most 100 allowed (incidentSummary/platform, "
        "personOrUserReported/espService)",
        "reporter.first_name: 101 characters, at most 100 allowed (reportingPerson/firstName)",
        "reporter.last_name: 101 characters, at most 100",
        "reporter.email: 262 characters, at most 255 allowed (email)",
        "reporter.phone: 51 characters, at most 50 allowed (reportingPerson/phone)",
        "reporter.legal_url: 2120 characters, at most 2083 allowed (reporter/legalURL)",
        "reported_person.esp_identifier: 256 characters, at most 255 allowed (personOrUserReported/espIdentifier)",
        "reported_person.email: the part before @ is longer than 64 characters",
        "reported_person.screen_name: 257 characters, at most 256 allowed (personOrUserReported/screenName)",
        "files[0].original_filename: 2057 characters, at most 2056 allowed (fileDetails/originalFileName)",
    ):
        assert any(p.startswith(expected) for p in problems), (expected, problems)
    at_limits = make_input(reporter=replace(make_input().reporter, company="C" * 100, first_name="F" * 100),
                           reported_person=ReportedPerson(esp_identifier="u" * 255, screen_name="s" * 256))
    assert validate(at_limits, now=NOW) == []


# The schema (the fake's, written from NCMEC's published rules)


def test_schema_refuses_what_the_real_api_refuses(schema: ReportSchema) -> None:
    upload, output = make_input().files
    details = build_file_details_xml("1001", "f1", output)
    report = build_report_xml(make_input())
    assert schema.problems(details, "fileDetails") == schema.problems(report, "report") == []

    # generativeAi=false: an annotation is present only to say yes.
    [problem] = schema.problems(details.replace(b"<generativeAi>true", b"<generativeAi>false"), "fileDetails")
    assert problem.startswith("/fileDetails/fileAnnotations/generativeAi:") and "fixed value" in problem
    # An over-long field.
    [problem] = schema.problems(report.replace(b"<firstName>Dana<", b"<firstName>" + b"D" * 101 + b"<"), "report")
    assert problem.startswith("/report/reporter/reportingPerson/firstName:") and "maxLength" in problem
    # Wrong order.
    swapped = details.replace(b"<fileViewedByEsp>true</fileViewedByEsp><publiclyAvailable>false</publiclyAvailable>",
                              b"<publiclyAvailable>false</publiclyAvailable><fileViewedByEsp>true</fileViewedByEsp>")
    assert swapped != details
    [problem] = schema.problems(swapped, "fileDetails")
    assert problem.startswith("/fileDetails/fileViewedByEsp:") and "not expected" in problem
    # Bad enumerations: an IP event, an incident type, a perceptual hash sent as an original file hash.
    [problem] = schema.problems(report.replace(b">Login<", b">Visit<"), "report")
    assert "/ipCaptureEvent[1]/eventName:" in problem and "enumeration" in problem
    [problem] = schema.problems(report.replace(b">Child Pornography (", b">Child Porn ("), "report")
    assert problem.startswith("/report/incidentSummary/incidentType:")
    pdq_as_original = build_file_details_xml("1001", "f1", replace(upload, original_hashes={"PDQ": "f0" * 32}))
    [problem] = schema.problems(pdq_as_original, "fileDetails")
    assert "hashType" in problem and "PDQ" in problem
    # A location that is not a URL; a time without its zone; a required element missing.
    location = build_file_details_xml("1001", "f1", replace(upload, location_of_file="upload"))
    assert schema.problems(location, "fileDetails")[0].startswith("/fileDetails/locationOfFile:")
    assert schema.problems(report.replace(b"Z</incidentDateTime>", b"</incidentDateTime>"), "report")
    no_email = report.replace(b'<email type="Business">safety@example.com</email>', b"")
    assert "Missing child element(s)" in schema.problems(no_email, "report")[0]
    assert schema.problems(b"<report><incidentSummary>", "report")[0].startswith("not well-formed XML")
    assert schema.problems(details, "report") == ["root element is <fileDetails>, expected <report>"]


# The client against the fake


def test_client_completes_the_flow_against_the_fake(fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    client.status()
    result = client.submit_report(make_input())

    assert result.finished
    assert fake.operations() == ["status", "xsd", "submit", "upload", "fileinfo", "upload", "fileinfo", "finish"]
    assert fake.validated == ["report", "fileDetails", "fileDetails"] and fake.refusals == []
    assert {call.username for call in fake.calls} == {fake.username}
    stored = fake.reports[result.report_id]
    assert stored.state == "finished"
    assert list(stored.files) == result.file_ids
    assert list(stored.files.values()) == [UPLOAD_BYTES, OUTPUT_BYTES]
    assert set(stored.file_details) == set(result.file_ids)
    assert [c.form["filename"] for c in fake.calls if c.operation == "upload"] == ["evidence-1.png", "evidence-2.png"]
    assert stored.xml.findtext("personOrUserReported/espIdentifier") == "user-42"
    upload = stored.file_details[result.file_ids[0]]
    assert upload.find("fileAnnotations") is None and upload.findtext("reportId") == result.report_id
    generated = stored.file_details[result.file_ids[1]]
    assert generated.findtext("fileAnnotations/generativeAi") == "true"


def test_the_fake_answers_in_the_real_shapes_and_codes(fake: FakeCyberTipline) -> None:
    auth = (fake.username, fake.password)
    with httpx.Client(base_url=fake.base_url, auth=auth, timeout=10) as http:
        status = ET.fromstring(http.get("/status").content)
        assert status.findtext("responseCode") == "0" and "Remote User : esp-user" in status.findtext(
            "responseDescription")
        assert http.get("/xsd").content == SCHEMA_PATH.read_bytes()
        opened = http.post("/submit", content=build_report_xml(make_input()), headers={"Content-Type": "text/xml"})
        answer = ET.fromstring(opened.content)
        assert opened.headers["Request-ID"]
        assert (answer.findtext("responseCode"), answer.findtext("responseDescription")) == ("0", "Success")
        report_id = answer.findtext("reportId")
        uploaded = ET.fromstring(http.post("/upload", data={"id": report_id},
                                           files={"file": ("a.png", b"bytes")}).content)
        assert uploaded.findtext("responseDescription") == "Success" and uploaded.findtext("fileId")
        assert uploaded.findtext("hash") == hashlib.md5(b"bytes").hexdigest()

        def code(response: httpx.Response) -> tuple[int, int]:
            root = ET.fromstring(response.content)
            return int(root.findtext("responseCode")), response.status_code

        invalid = build_file_details_xml(report_id, uploaded.findtext("fileId"), make_input().files[1]).replace(
            b"<generativeAi>true", b"<generativeAi>false")
        assert code(http.post("/fileinfo", content=invalid, headers={"Content-Type": "text/xml"})) == (4100, 400)
        assert "generativeAi" in fake.refusals[-1][2]
        assert code(http.post("/fileinfo", content=b"<fileDetails>", headers={"Content-Type": "text/xml"}))[0] == 4110
        other_file = build_file_details_xml(report_id, "not-uploaded", make_input().files[0])
        assert code(http.post("/fileinfo", content=other_file, headers={"Content-Type": "text/xml"}))[0] == 5002
        assert code(http.post("/upload", data={"id": report_id}, files={"file": ("e", b"")}))[0] == 4200
        assert code(http.post("/finish", data={"id": "999"}))[0] == 5001
        done = ET.fromstring(http.post("/finish", data={"id": report_id}).content)
        assert done.tag == "reportDoneResponse" and done.findtext("responseCode") == "0"
        assert [f.text for f in done.iter("fileId")] == [uploaded.findtext("fileId")]
        assert code(http.post("/finish", data={"id": report_id}))[0] == 5102
        assert code(http.post("/retract", data={"id": report_id}))[0] == 5102
    assert fake.validated == ["report", "fileDetails"]  # the 5002 one passed the schema, then named no file


def test_the_client_checks_every_document_against_the_schema_the_api_serves(tmp_path: Path) -> None:
    # An API whose schema allows a 5-character platform: the client refuses the report before sending anything.
    strict = SCHEMA_PATH.read_bytes().replace(
        b'<xs:element name="platform" type="text256" minOccurs="0"/>',
        b'<xs:element name="platform" minOccurs="0"><xs:simpleType><xs:restriction base="xs:string">'
        b'<xs:maxLength value="5"/></xs:restriction></xs:simpleType></xs:element>')
    fake = FakeCyberTipline(schema=strict).start()
    try:
        with CyberTiplineClient(fake.base_url, fake.username, fake.password, timeout=10,
                                schema_cache=tmp_path / "ncmec.xsd") as c, pytest.raises(ReportInvalid) as err:
            c.submit_report(make_input())
        [problem] = err.value.problems
        assert problem.startswith("report: /report/incidentSummary/platform:") and "maxLength" in problem
        assert fake.operations() == ["xsd"]  # nothing was sent
        assert (tmp_path / "ncmec.xsd").read_bytes() == strict
    finally:
        fake.stop()


def test_the_schema_is_fetched_once_and_a_copy_stands_in_when_xsd_is_down(
        fake: FakeCyberTipline, tmp_path: Path) -> None:
    cache = tmp_path / "ncmec" / "test.xsd"
    with CyberTiplineClient(fake.base_url, fake.username, fake.password, timeout=10, schema_cache=cache) as c:
        c.submit_report(make_input())
        c.submit_report(make_input())
    assert fake.operations().count("xsd") == 1 and cache.read_bytes() == SCHEMA_PATH.read_bytes()

    fake.fail["xsd"] = 503
    with CyberTiplineClient(fake.base_url, fake.username, fake.password, timeout=10, schema_cache=cache) as c:
        assert c.submit_report(make_input()).finished
    with CyberTiplineClient(fake.base_url, fake.username, fake.password, timeout=10,
                            schema_cache=tmp_path / "none.xsd") as c, pytest.raises(CyberTiplineError) as err:
        c.submit_report(make_input())
    assert err.value.operation == "xsd" and err.value.http_status == 503 and not err.value.permanent
    assert fake.operations().count("submit") == 3


def test_fake_refuses_fileinfo_for_a_file_not_uploaded(fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    report_id = client.submit(build_report_xml(make_input()))
    with pytest.raises(CyberTiplineError) as err:
        client.file_info(build_file_details_xml(report_id, "f-never-uploaded", make_input().files[0]))
    assert err.value.code == 5002 and err.value.operation == "fileinfo" and err.value.http_status == 400


def test_wrong_password_is_an_error(fake: FakeCyberTipline) -> None:
    with CyberTiplineClient(fake.base_url, fake.username, "wrong", timeout=10) as bad, \
            pytest.raises(CyberTiplineError) as err:
        bad.submit_report(make_input())
    assert err.value.http_status == 401 and err.value.operation == "xsd" and not err.value.permanent
    with CyberTiplineClient(fake.base_url, fake.username, "wrong", timeout=10) as bad, \
            pytest.raises(CyberTiplineError) as err:
        bad.status()
    assert err.value.http_status == 401 and "authentication failed" in str(err.value)
    assert fake.reports == {}


def test_server_error_midway_retracts_the_report(fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    fake.fail["fileinfo"] = 500
    with pytest.raises(CyberTiplineError) as err:
        client.submit_report(make_input())
    assert err.value.http_status == 500 and err.value.operation == "fileinfo" and not err.value.permanent
    assert err.value.retracted and err.value.report_id
    assert fake.operations() == ["xsd", "submit", "upload", "fileinfo", "retract"]
    assert fake.reports[err.value.report_id].state == "retracted"


def test_validation_refusal_is_permanent_and_the_report_retracted(
        fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    fake.fail["fileinfo"] = "4100"
    with pytest.raises(CyberTiplineError) as err:
        client.submit_report(make_input())
    assert err.value.code == 4100 and err.value.permanent and err.value.retracted
    assert fake.reports[err.value.report_id].state == "retracted"


def test_refusal_code_is_reported_and_failed_retract_does_not_hide_it(
        fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    fake.fail.update({"finish": "1000", "retract": 503})
    with pytest.raises(CyberTiplineError) as err:
        client.submit_report(make_input())
    assert err.value.code == 1000 and "injected failure on finish" in str(err.value)
    assert not err.value.retracted and not err.value.finish_unconfirmed
    assert fake.operations()[-2:] == ["finish", "retract"]


def test_a_lost_finish_answer_is_not_retracted_and_settles_as_filed(
        fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    fake.lose_reply.add("finish")
    with pytest.raises(CyberTiplineError) as err:
        client.submit_report(make_input())
    assert err.value.finish_unconfirmed and err.value.code is None and err.value.report_id
    assert "retract" not in fake.operations()  # it may be filed: withdrawing it is not ours to guess
    assert fake.reports[err.value.report_id].state == "finished"
    fake.lose_reply.clear()
    assert client.settle(err.value.report_id, finish_sent=True) == "finished"  # 5102: already finished
    assert fake.refusals[-1][:2] == ("finish", 5102)

    # A /finish that never arrived: finishing now completes the report (every file is already in it).
    report_id = client.submit(build_report_xml(make_input()))
    client.upload(report_id, "a.png", b"bytes")
    assert client.settle(report_id, finish_sent=True) == "finished" and fake.reports[report_id].state == "finished"
    # An open attempt is withdrawn; one already withdrawn or unknown to NCMEC is settled as such.
    opened = client.submit(build_report_xml(make_input()))
    assert client.settle(opened, finish_sent=False) == "retracted"
    assert client.settle(opened, finish_sent=True) == "retracted"  # 5101
    assert client.settle("999", finish_sent=True) == "gone"  # 5001
    assert len(fake.finished()) == 2


def test_invalid_report_is_not_sent(fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    with pytest.raises(ReportInvalid) as err:
        client.submit_report(make_input(files=[]))
    assert err.value.problems == ["files: at least one file is required"]
    assert fake.calls == []


def test_network_failure_is_a_cybertipline_error() -> None:
    with CyberTiplineClient("http://127.0.0.1:9/ispws", "u", "p", timeout=2) as c, \
            pytest.raises(CyberTiplineError) as err:
        c.status()
    assert err.value.code is None and err.value.operation == "status" and not err.value.permanent


def test_settings_pick_the_endpoint_and_confirmation(fake: FakeCyberTipline, tmp_path: Path) -> None:
    base = {"ncmec_username": "esp-user", "ncmec_password": "esp-password", "data_dir": tmp_path}
    assert CyberTiplineClient.from_settings(Settings(**base)).base_url == TEST_URL
    production = Settings(**base, ncmec_environment="production")
    assert CyberTiplineClient.from_settings(production).base_url == PRODUCTION_URL
    assert CyberTiplineClient.from_settings(production).schema_cache == tmp_path / "ncmec" / "production.xsd"
    with pytest.raises(ValueError, match="IMAGEN_NCMEC_USERNAME"):
        CyberTiplineClient.from_settings(Settings())

    settings = Settings(**base, ncmec_base_url=fake.base_url, legal_entity="Example Images Ltd",
                        ncmec_reporter_first_name="Dana", ncmec_reporter_last_name="Moderator",
                        ncmec_terms_of_service_url="https://images.example.com/terms",
                        ncmec_company_template="Serve legal process on legal@example.com.")
    with CyberTiplineClient.from_settings(settings) as c:
        assert c.require_confirmation
        report = make_input(reporter=reporter_from_settings(settings))
        with pytest.raises(ConfirmationRequired):
            c.submit_report(report)
        assert fake.calls == []
        result = c.submit_report(report, confirmed_by="moderator-7")
        assert result.finished
    assert report.reporter.company == "Example Images Ltd"
    assert report.reporter.email == settings.contact_email
    sent = fake.reports[result.report_id].xml
    assert sent.findtext("reporter/legalURL") == "https://images.example.com/terms"
    assert sent.findtext("reporter/companyTemplate") == "Serve legal process on legal@example.com."
    assert (tmp_path / "ncmec" / "test.xsd").is_file()
