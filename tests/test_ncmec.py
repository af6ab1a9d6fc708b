"""NCMEC CyberTipline report packages: build, validate, and the submit/upload/fileinfo/finish flow against a fake."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from imagen.kit.config import Settings
from imagen.safety.ncmec import (
    IpEvent,
    ReportedPerson,
    Reporter,
    ReportFile,
    ReportInput,
    ReportInvalid,
    build_file_details_xml,
    build_report_xml,
    check_xml,
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
from tests.fake_ncmec import FakeCyberTipline

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


def stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_input(**changes) -> ReportInput:
    report = ReportInput(
        incident_time=NOW - timedelta(hours=2),
        summary="Upload matched a hash bank entry; the file was quarantined and the account suspended.",
        reporter=Reporter(company="Example Images Ltd", first_name="Dana", last_name="Moderator",
                          email="safety@example.com", phone="+1 555 010 0000"),
        reported_person=ReportedPerson(
            esp_identifier="user-42", email="someone@example.org", screen_name="someone",
            ip_events=[IpEvent("203.0.113.7", "Login", NOW - timedelta(hours=3)),
                       IpEvent("2001:db8::1", "Upload", NOW - timedelta(hours=2))],
            disabled_at=NOW - timedelta(hours=1)),
        files=[
            ReportFile(filename="evidence-1.png", content=b"\x89PNG upload", original_filename="holiday.png",
                       viewed_by_esp=False, industry_classification="A1", location_of_file="upload",
                       uploaded_at=NOW - timedelta(hours=2),
                       upload_ip=IpEvent("2001:db8::1", "Upload", NOW - timedelta(hours=2)),
                       original_hashes={"SHA256": "ab" * 32}),
            ReportFile(filename="evidence-2.png", content=b"\x89PNG output", viewed_by_esp=True,
                       generative_ai=True, prompt="a <prompt> & more\x00", negative_prompt="blurry",
                       location_of_file="generated output"),
        ],
        additional_info="Case 17.",
    )
    return replace(report, **changes)


@pytest.fixture
def fake() -> Iterator[FakeCyberTipline]:
    server = FakeCyberTipline().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake: FakeCyberTipline) -> Iterator[CyberTiplineClient]:
    with CyberTiplineClient(fake.base_url, fake.username, fake.password, timeout=10) as c:
        yield c


def test_report_package_builds_and_validates() -> None:
    report = make_input()
    assert validate(report, now=NOW) == []

    document = build_report_xml(report)
    assert check_xml(document, "report") == []
    root = ET.fromstring(document)
    assert [c.tag for c in root] == ["incidentSummary", "reporter", "personOrUserReported", "additionalInfo"]
    assert root.findtext("incidentSummary/incidentType") == report.incident_type
    assert root.findtext("incidentSummary/incidentDateTime") == stamp(NOW - timedelta(hours=2))
    assert root.findtext("reporter/reportingPerson/email") == "safety@example.com"
    person = root.find("personOrUserReported")
    assert person.findtext("personOrUserReportedPerson/email") == "someone@example.org"
    assert person.findtext("espIdentifier") == "user-42"
    assert person.findtext("screenName") == "someone"
    events = [(e.findtext("ipAddress"), e.findtext("eventName")) for e in person.iter("ipCaptureEvent")]
    assert events == [("203.0.113.7", "Login"), ("2001:db8::1", "Upload")]
    assert person.find("accountTemporarilyDisabled").get("disabledDate") == stamp(NOW - timedelta(hours=1))
    assert root.findtext("additionalInfo").endswith("Case 17.")

    upload, output = report.files
    first = ET.fromstring(build_file_details_xml("1001", "f1", upload))
    assert first.findtext("originalFileName") == "holiday.png"
    assert first.findtext("fileViewedByEsp") == "false"
    assert first.findtext("industryClassification") == "A1"
    assert first.find("originalFileHash").get("hashType") == "SHA256"
    assert first.findtext("fileAnnotations/generativeAi") == "false"

    details = build_file_details_xml("1001", "f2", output)
    assert check_xml(details, "fileDetails") == []
    second = ET.fromstring(details)
    assert second.findtext("fileAnnotations/generativeAi") == "true"
    assert [e.text for e in second.findall("additionalInfo")] == ["Prompt: a <prompt> & more",
                                                                  "Negative prompt: blurry"]


def test_broken_input_lists_each_problem() -> None:
    report = make_input(
        incident_type="Something else",
        incident_time=NOW.replace(tzinfo=None),  # naive
        summary=" ",
        reporter=Reporter(company="", first_name="Dana", last_name="M", email="not-an-email", phone="call me"),
        reported_person=ReportedPerson(esp_identifier="", email="x@", ip_events=[
            IpEvent("300.1.1.1", "Visit", NOW + timedelta(days=1))]),
        files=[ReportFile(filename="a.png", content=b"", industry_classification="C3", prompt="p"),
               ReportFile(filename="a.png", content=b"x", viewed_by_esp=True)],
    )
    problems = validate(report, now=NOW)
    for expected in (
        "incident_type:", "incident_time: must be timezone-aware", "summary: required", "reporter.company: required",
        "reporter.email: not a valid email", "reporter.phone:", "reported_person.esp_identifier: required",
        "reported_person.email: not a valid email", "ip_events[0].ip: not an IP", "ip_events[0].event:",
        "ip_events[0].time: is in the future", "files[0].content: empty", "files[0].viewed_by_esp: must be stated",
        "files[0].industry_classification:", "files[0].generative_ai:", "files[1].filename: 'a.png' is used twice",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    assert "files: at least one file is required" in validate(make_input(files=[]), now=NOW)
    assert validate(make_input(incident_time=NOW + timedelta(hours=1)), now=NOW) == [
        "incident_time: is in the future"]


def test_xml_check_catches_malformed_and_out_of_order() -> None:
    assert check_xml(b"<report><incidentSummary>", "report")[0].startswith("not well-formed XML")
    assert check_xml(b"<fileDetails/>", "report") == ["root element is <fileDetails>, expected <report>"]
    swapped = (b"<report><reporter><reportingPerson><firstName>A</firstName></reportingPerson></reporter>"
               b"<incidentSummary><incidentDateTime>2026-01-01T00:00:00Z</incidentDateTime>"
               b"<incidentType>Child Sex Tourism</incidentType></incidentSummary></report>")
    problems = check_xml(swapped, "report")
    assert "report: <incidentSummary> is out of schema order" in problems
    assert "report/incidentSummary: <incidentType> is out of schema order" in problems
    assert "fileDetails: missing <fileId>" in check_xml(b"<fileDetails><reportId>1</reportId></fileDetails>",
                                                        "fileDetails")


def test_client_completes_the_flow_against_the_fake(fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    client.status()
    result = client.submit_report(make_input())

    assert result.finished
    assert fake.operations() == ["status", "submit", "upload", "fileinfo", "upload", "fileinfo", "finish"]
    assert {call.username for call in fake.calls} == {fake.username}
    stored = fake.reports[result.report_id]
    assert stored.state == "finished"
    assert list(stored.files) == result.file_ids
    assert list(stored.files.values()) == [b"\x89PNG upload", b"\x89PNG output"]
    assert set(stored.file_details) == set(result.file_ids)
    assert [c.form["filename"] for c in fake.calls if c.operation == "upload"] == ["evidence-1.png", "evidence-2.png"]
    assert stored.xml.findtext("personOrUserReported/espIdentifier") == "user-42"
    generated = stored.file_details[result.file_ids[1]]
    assert generated.findtext("fileAnnotations/generativeAi") == "true"


def test_fake_refuses_fileinfo_for_a_file_not_uploaded(fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    report_id = client.submit(build_report_xml(make_input()))
    with pytest.raises(CyberTiplineError) as err:
        client.file_info(build_file_details_xml(report_id, "f-never-uploaded", make_input().files[0]))
    assert err.value.code == 4300 and err.value.operation == "fileinfo"


def test_wrong_password_is_an_error(fake: FakeCyberTipline) -> None:
    with CyberTiplineClient(fake.base_url, fake.username, "wrong", timeout=10) as bad, \
            pytest.raises(CyberTiplineError) as err:
        bad.submit_report(make_input())
    assert err.value.http_status == 401 and err.value.operation == "submit"
    assert fake.reports == {}


def test_server_error_midway_retracts_the_report(fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    fake.fail["fileinfo"] = 500
    with pytest.raises(CyberTiplineError) as err:
        client.submit_report(make_input())
    assert err.value.http_status == 500 and err.value.operation == "fileinfo"
    assert err.value.retracted and err.value.report_id
    assert fake.operations() == ["submit", "upload", "fileinfo", "retract"]
    assert fake.reports[err.value.report_id].state == "retracted"


def test_refusal_code_is_reported_and_failed_retract_does_not_hide_it(
        fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    fake.fail.update({"finish": "5001", "retract": 503})
    with pytest.raises(CyberTiplineError) as err:
        client.submit_report(make_input())
    assert err.value.code == 5001 and "injected failure on finish" in str(err.value)
    assert not err.value.retracted
    assert fake.operations()[-2:] == ["finish", "retract"]


def test_invalid_report_is_not_sent(fake: FakeCyberTipline, client: CyberTiplineClient) -> None:
    with pytest.raises(ReportInvalid) as err:
        client.submit_report(make_input(files=[]))
    assert err.value.problems == ["files: at least one file is required"]
    assert fake.calls == []


def test_network_failure_is_a_cybertipline_error() -> None:
    with CyberTiplineClient("http://127.0.0.1:9/ispws", "u", "p", timeout=2) as c, \
            pytest.raises(CyberTiplineError) as err:
        c.status()
    assert err.value.code is None and err.value.operation == "status"


def test_settings_pick_the_endpoint_and_confirmation(fake: FakeCyberTipline) -> None:
    base = {"ncmec_username": "esp-user", "ncmec_password": "esp-password"}
    assert CyberTiplineClient.from_settings(Settings(**base)).base_url == TEST_URL
    production = Settings(**base, ncmec_environment="production")
    assert CyberTiplineClient.from_settings(production).base_url == PRODUCTION_URL
    with pytest.raises(ValueError, match="IMAGEN_NCMEC_USERNAME"):
        CyberTiplineClient.from_settings(Settings())

    settings = Settings(**base, ncmec_base_url=fake.base_url, legal_entity="Example Images Ltd",
                        ncmec_reporter_first_name="Dana", ncmec_reporter_last_name="Moderator")
    with CyberTiplineClient.from_settings(settings) as c:
        assert c.require_confirmation
        report = make_input(reporter=reporter_from_settings(settings))
        with pytest.raises(ConfirmationRequired):
            c.submit_report(report)
        assert fake.calls == []
        assert c.submit_report(report, confirmed_by="moderator-7").finished
    assert report.reporter.company == "Example Images Ltd"
    assert report.reporter.email == settings.contact_email
