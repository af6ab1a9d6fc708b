"""CyberTipline reports of real cases, end to end (issue 18): a hash-matched upload (not AI) and a hash-matched
generated image (AI), each reported by a moderator's confirmation and automatically, against the fake API, which
validates every document with its schema (written from NCMEC's published rules) and refuses what the real one
would; what the report says and where it comes from; a lost /finish answer followed by 5102 files one report;
a refusal stops the retries and shows the reason on the case; transient failures back off; the scheduled pass
reports a case a restart left open; a moderator's escalation.
"""

from __future__ import annotations

import hashlib
import io
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from imagen.generation.models import Generation
from imagen.kit.db import utcnow
from imagen.safety.matcher import pdq_hex
from imagen.safety.models import CaseAction, SafetyCase
from imagen.safety.tasks import retry_automatic_reports
from tests.conftest import TINY, signup
from tests.fake_ncmec import SCHEMA_PATH, FakeCyberTipline
from tests.test_safety_cases import cases, encode, import_bank, make_role, photo, upload_image

TEMPLATE = "Legal process: legal@imagen.test. Data kept 365 days. 24-hour emergency line: +1 555 0100."
TERMS = "https://imagen.test/terms"


@pytest.fixture
def ncmec(settings) -> Iterator[FakeCyberTipline]:
    """The fake API, and the settings pointing at it (moderator's confirmation on, as by default)."""
    fake = FakeCyberTipline().start()
    settings.ncmec_base_url, settings.ncmec_username, settings.ncmec_password = \
        fake.base_url, fake.username, fake.password
    settings.ncmec_reporter_first_name, settings.ncmec_reporter_last_name = "Tess", "Safety"
    settings.ncmec_terms_of_service_url, settings.ncmec_company_template = TERMS, TEMPLATE
    settings.ncmec_timeout_seconds = 10
    yield fake
    fake.stop()


@pytest.fixture
def moderator(app, new_client) -> TestClient:
    mod = new_client()
    signup(mod, "mod@example.com")
    make_role(app, "mod@example.com", "moderator")
    return mod


def browser(app, ip: str) -> TestClient:
    return TestClient(app, base_url="https://testserver", client=(ip, 4000))


def stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def eventually(what: Callable[[], list[SafetyCase]], timeout: float = 120) -> SafetyCase:
    deadline = time.monotonic() + timeout
    while not (found := what()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found, "timed out"
    return found[0]


def report_it(app, moderator: TestClient, mode: str, case: SafetyCase) -> SafetyCase:
    """The moderator's confirmation (the `report` action), or wait for the automatic report."""
    if mode == "moderator":
        r = moderator.post(f"/api/v1/admin/cases/{case.id}/actions", json={"action": "report", "note": "CSAM"})
        assert r.status_code == 200, r.text
    return eventually(lambda: cases(app, id=case.id, status="reported"), timeout=60)


def shift(app, case_id: str, **moves: timedelta) -> None:
    """Moves evidence and generation times back, as if the case had been opened later than the incident."""
    with app.state.services.db.transaction() as s:
        case = s.get(SafetyCase, case_id)
        for ev in case.evidence:
            ev.event_time -= moves.get("event", timedelta())
            if ev.generation_id and "generation" in moves:
                gen = s.get(Generation, ev.generation_id)
                gen.finished_at = utcnow() - moves["generation"]


def sent(fake: FakeCyberTipline, case: SafetyCase) -> tuple[ET.Element, ET.Element, bytes]:
    """The report NCMEC has for the case: its report document, its one file's details, the file's bytes."""
    stored = fake.reports[case.ncmec_report_id]
    assert stored.state == "finished"
    [(file_id, content)] = stored.files.items()
    return stored.xml, stored.file_details[file_id], content


def check_common(report: ET.Element, case: SafetyCase, settings) -> None:
    """What every case report carries: the reporter's settings, the account, its suspension."""
    assert report.findtext("incidentSummary/incidentType").startswith("Child Pornography")
    assert report.findtext("incidentSummary/platform") == settings.legal_entity
    assert report.find("incidentSummary/escalateToHighPriority") is None
    reporter = report.find("reporter")
    assert reporter.findtext("reportingPerson/firstName") == "Tess"
    assert reporter.findtext("reportingPerson/email") == settings.contact_email
    assert (reporter.findtext("legalURL"), reporter.findtext("companyTemplate")) == (TERMS, TEMPLATE)
    assert reporter.find("termsOfService") is None
    person = report.find("personOrUserReported")
    assert person.findtext("espIdentifier") == case.user_id
    assert person.findtext("espService") == settings.legal_entity
    assert person.findtext("personOrUserReportedPerson/email") == "eve@example.com"
    [suspended] = [a for a in case.actions if a.action == "suspend"]  # the automatic suspension on the match
    disabled = person.find("accountTemporarilyDisabled")
    assert disabled.text == "true" and disabled.get("disabledDate") == stamp(suspended.created_at)
    assert f"IMAGEN case {case.id}" in report.findtext("additionalInfo")
    attempts = case.ncmec_attempts
    assert [(a["report_id"], a["state"]) for a in attempts] == [(case.ncmec_report_id, "finished")]
    assert case.ncmec_error is None and case.ncmec_retry_at is None and case.reported_at is not None
    [audit] = [a for a in case.actions if a.action == "report"]
    assert audit.result.startswith(f"NCMEC report {case.ncmec_report_id} (1 files)")


@pytest.mark.parametrize("mode", ["moderator", "automatic"])
def test_a_hash_matched_upload_is_reported_end_to_end(app, client, settings, ncmec, moderator, mode):
    original = encode(photo())
    import_bank(app, "csam-pdq", "pdq", [pdq_hex(photo())[0]])
    settings.ncmec_require_confirmation = mode == "moderator"
    eve = browser(app, "198.51.100.7")
    user_id = signup(eve, "eve@example.com")["account"]["id"]
    assert upload_image(eve, original, "beach.png").status_code == 422
    case = eventually(lambda: cases(app, kind="hash_match"))
    if mode == "moderator":  # the upload three hours before the case: the report gives the upload's time
        shift(app, case.id, event=timedelta(hours=3))
    case = report_it(app, moderator, mode, case)

    assert ncmec.validated == ["report", "fileDetails"] and ncmec.refusals == []  # the fake's schema: all valid
    assert ncmec.operations() == ["xsd", "submit", "upload", "fileinfo", "finish"]
    report, details, content = sent(ncmec, case)
    [ev] = case.evidence
    assert case.user_id == user_id and content == original
    check_common(report, case, settings)
    assert ev.event_time < case.created_at - timedelta(hours=2) or mode == "automatic"
    assert report.findtext("incidentSummary/incidentDateTime") == stamp(ev.event_time)  # the upload, not the case
    assert "uploaded" in report.findtext("incidentSummary/incidentDateTimeDescription")
    events = [(e.findtext("ipAddress"), e.findtext("eventName"), e.findtext("dateTime"))
              for e in report.iter("ipCaptureEvent")]
    assert events == [("198.51.100.7", "Upload", stamp(ev.event_time))]

    assert details.findtext("originalFileName") == "beach.png"
    assert details.findtext("uploadedToEspTimestamp") == stamp(ev.event_time)
    assert details.find("fileAnnotations") is None  # not AI-generated: no annotation, never a "false"
    assert details.find("locationOfFile") is None  # never served anywhere: no URL
    assert details.findtext("fileViewedByEsp") == "false"
    assert {h.get("hashType"): h.text for h in details.findall("originalFileHash")} == {
        "MD5": hashlib.md5(original).hexdigest(), "SHA256": hashlib.sha256(original).hexdigest()}
    [pdq] = details.findall("details")
    with Image.open(io.BytesIO(original)) as image:
        assert (pdq.get("type"), pdq.findtext("nameValuePair/name"), pdq.findtext("nameValuePair/value")) == (
            "HASH", "PDQ", pdq_hex(image)[0])
    assert (details.findtext("ipCaptureEvent/ipAddress"), details.findtext("ipCaptureEvent/eventName")) == (
        "198.51.100.7", "Upload")
    assert "csam-pdq" in details.findtext("additionalInfo")
    assert details.find("additionalInfo").text.count("Prompt") == 0


@pytest.mark.parametrize("mode", ["moderator", "automatic"])
def test_a_hash_matched_output_is_reported_end_to_end(app, client, settings, ncmec, moderator, runtime,
                                                      monkeypatch, mode):
    png = encode(photo())  # what the model "generates": a picture in the bank
    real_run = runtime.run

    def run(spec, **kwargs):
        result = real_run(spec, **kwargs)
        result.images[:] = [replace(image, png=png) for image in result.images]
        return result

    monkeypatch.setattr(runtime, "run", run)
    import_bank(app, "csam-pdq", "pdq", [pdq_hex(photo())[0]])
    settings.ncmec_require_confirmation = mode == "moderator"
    eve = browser(app, "198.51.100.1")
    signup(eve, "eve@example.com")  # the session the generation is submitted from: a registration
    gen = eve.post("/api/v1/generations", json={"workflow": "txt2img", "params": {
        "prompt": "a lighthouse", "negative_prompt": "blurry", **TINY}})
    assert gen.status_code == 202, gen.text
    case = eventually(lambda: cases(app, kind="hash_match"))
    if mode == "moderator":  # generated two hours before the case was opened
        shift(app, case.id, generation=timedelta(hours=2))
    case = report_it(app, moderator, mode, case)

    assert ncmec.validated == ["report", "fileDetails"] and ncmec.refusals == []
    report, details, content = sent(ncmec, case)
    [ev] = case.evidence
    assert ev.source == "output" and content == png
    check_common(report, case, settings)
    with app.state.services.db.transaction() as s:
        finished = s.get(Generation, gen.json()["id"]).finished_at
    assert report.findtext("incidentSummary/incidentDateTime") == stamp(finished)  # when it was generated
    assert finished < case.created_at - timedelta(hours=1) or mode == "automatic"
    assert "generated" in report.findtext("incidentSummary/incidentDateTimeDescription")
    # The address is the session's, labelled as what it is (the sign-up), at its own time.
    events = [(e.findtext("ipAddress"), e.findtext("eventName"), e.findtext("dateTime"))
              for e in report.iter("ipCaptureEvent")]
    assert events == [("198.51.100.1", "Registration", stamp(ev.event_time))]

    assert [(c.tag, c.text) for c in details.find("fileAnnotations")] == [("generativeAi", "true")]
    assert details.find("originalFileName") is None and details.find("uploadedToEspTimestamp") is None
    assert details.find("locationOfFile") is None
    assert {h.get("hashType"): h.text for h in details.findall("originalFileHash")} == {
        "MD5": hashlib.md5(png).hexdigest(), "SHA256": hashlib.sha256(png).hexdigest()}
    assert details.findtext("details/nameValuePair/value") == pdq_hex(photo())[0]
    assert details.findtext("ipCaptureEvent/eventName") == "Registration"
    notes = [e.text for e in details.findall("additionalInfo")]
    assert "Prompt: a lighthouse" in notes and "Negative prompt: blurry" in notes


def upload_match(app, client, settings) -> SafetyCase:
    import_bank(app, "csam-pdq", "pdq", [pdq_hex(photo())[0]])
    signup(client, "eve@example.com")
    assert upload_image(client, encode(photo())).status_code == 422
    return eventually(lambda: cases(app, kind="hash_match"))


def test_a_lost_finish_answer_then_5102_files_one_report(app, client, settings, ncmec):
    settings.ncmec_require_confirmation = False
    ncmec.lose_reply.add("finish")  # NCMEC files the report, but its answer never arrives
    import_bank(app, "csam-pdq", "pdq", [pdq_hex(photo())[0]])
    signup(client, "eve@example.com")
    assert upload_image(client, encode(photo())).status_code == 422
    case = eventually(lambda: cases(app, status="report_failed"), timeout=60)
    [attempt] = case.ncmec_attempts
    filed = attempt["report_id"]
    assert attempt["state"] == "finish_unconfirmed" and ncmec.reports[filed].state == "finished"
    assert "retract" not in ncmec.operations()  # it may be filed: not withdrawn on a guess
    assert case.ncmec_report_id is None and case.ncmec_retry_at is not None
    ncmec.lose_reply.clear()

    db, quarantine = app.state.services.db, app.state.services.safety.quarantine
    assert retry_automatic_reports(db, quarantine, settings) == []  # backing off
    assert retry_automatic_reports(db, quarantine, settings, now=case.ncmec_retry_at + timedelta(seconds=1)) == [
        filed]
    [case] = cases(app)
    assert (case.status, case.ncmec_report_id) == ("reported", filed)
    assert ncmec.operations().count("submit") == 1 and ncmec.finished() == [filed]  # one report, not two
    assert ncmec.refusals == [("finish", 5102, "Report already finished")]
    [attempt] = case.ncmec_attempts
    assert (attempt["report_id"], attempt["state"]) == (filed, "finished") and attempt["settled_at"]
    results = [a.result for a in case.actions if a.action == "report"]
    assert len(results) == 2 and results[1].startswith(f"NCMEC report {filed} (an earlier attempt")
    later = case.ncmec_retry_at or utcnow() + timedelta(days=1)
    assert retry_automatic_reports(db, quarantine, settings, now=later + timedelta(days=30)) == []
    assert ncmec.operations().count("submit") == 1


def test_a_lost_finish_answer_then_a_moderators_second_report_files_one(app, client, settings, ncmec, moderator):
    ncmec.lose_reply.add("finish")
    case = upload_match(app, client, settings)
    url = f"/api/v1/admin/cases/{case.id}/actions"
    first = moderator.post(url, json={"action": "report"}).json()
    assert first["status"] == "report_failed" and first["ncmec_attempts"][0]["state"] == "finish_unconfirmed"
    ncmec.lose_reply.clear()
    second = moderator.post(url, json={"action": "report"}).json()
    filed = first["ncmec_attempts"][0]["report_id"]
    assert (second["status"], second["ncmec_report_id"]) == ("reported", filed)
    assert ncmec.operations().count("submit") == 1 and ncmec.finished() == [filed]
    assert moderator.post(url, json={"action": "report"}).status_code == 409


def test_a_validation_refusal_stops_retries_and_shows_the_reason(app, client, settings, ncmec, moderator):
    settings.ncmec_require_confirmation = False
    ncmec.fail["fileinfo"] = "4100"  # NCMEC refuses the file details
    import_bank(app, "csam-pdq", "pdq", [pdq_hex(photo())[0]])
    signup(client, "eve@example.com")
    assert upload_image(client, encode(photo())).status_code == 422
    case = eventually(lambda: cases(app, status="report_refused"), timeout=60)
    assert "NCMEC refused the report" in case.ncmec_error and "responseCode 4100" in case.ncmec_error
    assert "injected failure on fileinfo" in case.ncmec_error and "A moderator must" in case.ncmec_error
    assert case.ncmec_retry_at is None and case.ncmec_report_id is None
    [attempt] = case.ncmec_attempts
    assert (attempt["state"], attempt["code"]) == ("retracted", 4100)
    assert ncmec.reports[attempt["report_id"]].state == "retracted"

    # No automatic retry, however long we wait.
    db, quarantine = app.state.services.db, app.state.services.safety.quarantine
    assert retry_automatic_reports(db, quarantine, settings, now=utcnow() + timedelta(days=30)) == []
    assert ncmec.operations().count("submit") == 1

    # The reason, for the moderator: the API and the case page.
    detail = moderator.get(f"/api/v1/admin/cases/{case.id}").json()
    assert detail["status"] == "report_refused" and detail["ncmec_error"] == case.ncmec_error
    assert detail["ncmec_attempts"][0]["report_id"] == attempt["report_id"]
    page = moderator.get(f"/admin/cases/{case.id}")
    assert page.status_code == 200 and "report_refused" in page.text and "responseCode 4100" in page.text
    assert attempt["report_id"] in page.text
    assert "report_refused" in moderator.get("/admin/cases?status=report_refused").text

    # Fixed (here: NCMEC accepts again), the moderator reports; both attempts stay on the case.
    ncmec.fail.clear()
    done = moderator.post(f"/api/v1/admin/cases/{case.id}/actions", json={"action": "report"}).json()
    assert done["status"] == "reported"
    assert [a["state"] for a in done["ncmec_attempts"]] == ["retracted", "finished"]
    assert ncmec.finished() == [done["ncmec_report_id"]]


def test_a_package_the_schema_refuses_is_not_sent_and_the_case_says_why(app, client, settings, ncmec, moderator):
    case = upload_match(app, client, settings)
    url = f"/api/v1/admin/cases/{case.id}/actions"
    # NCMEC now serves a schema that allows a 5-character platform: the report fails it before anything is sent.
    ncmec.use_schema(SCHEMA_PATH.read_bytes().replace(
        b'<xs:element name="platform" type="text256" minOccurs="0"/>',
        b'<xs:element name="platform" minOccurs="0"><xs:simpleType><xs:restriction base="xs:string">'
        b'<xs:maxLength value="5"/></xs:restriction></xs:simpleType></xs:element>'))
    refused = moderator.post(url, json={"action": "report"}).json()
    assert refused["status"] == "report_refused" and refused["ncmec_retry_at"] is None
    assert "/report/incidentSummary/platform" in refused["ncmec_error"] and "maxLength" in refused["ncmec_error"]
    assert ncmec.operations() == ["xsd"] and ncmec.reports == {}
    # Our own rules too: a company name longer than espService allows.
    ncmec.use_schema(SCHEMA_PATH.read_bytes())
    settings.ncmec_reporter_company = "C" * 101
    refused = moderator.post(url, json={"action": "report"}).json()
    assert "reporter.company: 101 characters, at most 100 allowed" in refused["ncmec_error"]
    assert ncmec.reports == {} and [a["state"] for a in refused["ncmec_attempts"]] == ["not_sent", "not_sent"]


def test_transient_failures_back_off(app, client, settings):
    import socket

    with socket.socket() as closed:  # nothing listens: NCMEC unreachable
        closed.bind(("127.0.0.1", 0))
        settings.ncmec_base_url = f"http://127.0.0.1:{closed.getsockname()[1]}/ispws"
    settings.ncmec_username, settings.ncmec_password, settings.ncmec_timeout_seconds = "esp", "pw", 2
    settings.ncmec_reporter_first_name = settings.ncmec_reporter_last_name = "Tess"
    settings.ncmec_require_confirmation = False
    case = upload_match(app, client, settings)
    case = eventually(lambda: cases(app, id=case.id, status="report_failed"), timeout=60)
    db, quarantine = app.state.services.db, app.state.services.safety.quarantine
    delays = []
    for _ in range(3):
        last = case.ncmec_attempts[-1]
        delays.append(case.ncmec_retry_at - datetime.fromisoformat(last["at"]))
        assert retry_automatic_reports(db, quarantine, settings, now=case.ncmec_retry_at - timedelta(minutes=1)) == []
        [case] = cases(app, id=case.id)
        assert case.ncmec_attempts[-1] == last  # not due: not tried
        assert retry_automatic_reports(db, quarantine, settings, now=case.ncmec_retry_at) == []
        [case] = cases(app, id=case.id)
        assert len(case.ncmec_attempts) == len(delays) + 1 and case.status == "report_failed"
    assert delays == [timedelta(hours=1), timedelta(hours=2), timedelta(hours=4)]
    assert all(a["state"] == "not_sent" and a["code"] is None for a in case.ncmec_attempts)


def test_the_scheduled_pass_reports_a_match_a_restart_left_open(app, client, settings, ncmec):
    case = upload_match(app, client, settings)  # confirmation on: nothing queued
    settings.ncmec_require_confirmation = False  # restarted in automatic mode; the after-commit job never ran
    db, quarantine = app.state.services.db, app.state.services.safety.quarantine
    assert retry_automatic_reports(db, quarantine, settings) == []  # younger than the grace period
    assert ncmec.calls == []
    [report_id] = retry_automatic_reports(db, quarantine, settings, now=utcnow() + timedelta(minutes=11))
    [case] = cases(app, id=case.id)
    assert (case.status, case.ncmec_report_id) == ("reported", report_id) and ncmec.finished() == [report_id]
    assert retry_automatic_reports(db, quarantine, settings, now=utcnow() + timedelta(days=1)) == []


def test_a_moderator_escalates_and_the_report_asks_for_high_priority(app, client, settings, ncmec, moderator):
    case = upload_match(app, client, settings)
    url = f"/api/v1/admin/cases/{case.id}/actions"
    missing = moderator.post(url, json={"action": "escalate"})
    assert missing.status_code == 422 and "reason" in missing.text
    reason = "The uploader wrote that the child is with them now (message in the case notes)."
    escalated = moderator.post(url, json={"action": "escalate", "note": reason}).json()
    assert escalated["ncmec_escalation"] == reason and escalated["status"] == "open"
    assert moderator.post(url, json={"action": "report"}).json()["status"] == "reported"
    [case] = cases(app, id=case.id)
    report, _, _ = sent(ncmec, case)
    assert report.findtext("incidentSummary/escalateToHighPriority") == reason
    assert moderator.post(url, json={"action": "escalate", "note": "again"}).status_code == 409
    with app.state.services.db.transaction() as s:
        actions = [a.action for a in s.scalars(select(CaseAction).where(CaseAction.case_id == case.id)
                                               .order_by(CaseAction.created_at))]
    assert actions == ["open", "suspend", "escalate", "report"]
