"""NCMEC CyberTipline report packages: the input a moderation case hands over, validation, and the XML.

No database here: the case service builds a `ReportInput`, calls `validate` (a list of problems, empty when the
report can go), and `ncmec_client.CyberTiplineClient.submit_report` sends it. Element names and their order follow
the CyberTipline reporting API's XSD (`report`, `fileDetails`, `reportResponse`); `check_xml` re-reads what we built
and checks it is well formed, in schema order and carries the required elements.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagen.kit.config import Settings

CHILD_PORNOGRAPHY = "Child Pornography (possession, manufacture, and distribution)"
INCIDENT_TYPES = (
    CHILD_PORNOGRAPHY,
    "Child Sex Trafficking",
    "Child Sex Tourism",
    "Child Sexual Molestation",
    "Misleading Domain Name",
    "Misleading Words or Digital Images on the Internet",
    "Online Enticement of Children for Sexual Acts",
    "Unsolicited Obscene Material Sent to a Child",
)
IP_EVENT_NAMES = ("Login", "Registration", "Purchase", "Upload", "Other", "Unknown")
INDUSTRY_CLASSIFICATIONS = ("A1", "A2", "B1", "B2")  # only with the Industry Hash Sharing MOU
HASH_TYPES = ("MD5", "SHA1", "SHA256", "PDQ", "PHOTODNA")
CLOCK_SKEW = timedelta(minutes=5)  # a time this far ahead of our clock still passes as "not in the future"
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>.]{2,}$")
PHONE_RE = re.compile(r"^\+?[0-9 ().\-]{5,30}$")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

# Child order of each element we emit (xs:sequence in the XSD), and the children that must be present.
SCHEMA_ORDER: dict[str, tuple[str, ...]] = {
    "report": ("batchedReport", "incidentSummary", "internetDetails", "lawEnforcement", "reporter",
               "personOrUserReported", "intendedRecipient", "victim", "additionalInfo"),
    "incidentSummary": ("incidentType", "platform", "escalateToHighPriority", "reportAnnotations",
                        "incidentDateTime", "incidentDateTimeDescription"),
    "reporter": ("reportingPerson", "contactPerson", "companyTemplate", "termsOfService", "legalURL"),
    "reportingPerson": ("firstName", "lastName", "phone", "email", "address", "age", "dateOfBirth"),
    "personOrUserReportedPerson": ("firstName", "lastName", "phone", "email", "address", "age", "dateOfBirth"),
    "personOrUserReported": ("personOrUserReportedPerson", "vehicleDescription", "espIdentifier", "espService",
                             "compromisedAccount", "screenName", "displayName", "profileUrl", "profileBio",
                             "ipCaptureEvent", "deviceId", "thirdPartyUserReported", "priorCTReports",
                             "groupIdentifier", "accountTemporarilyDisabled", "accountPermanentlyDisabled",
                             "estimatedLocation", "allEmailsReported", "associatedAccount", "additionalInfo"),
    "ipCaptureEvent": ("ipAddress", "eventName", "dateTime", "possibleProxy", "port"),
    "fileDetails": ("reportId", "fileId", "fileName", "originalFileName", "uploadedToEspTimestamp",
                    "locationOfFile", "fileViewedByEsp", "exifViewedByEsp", "publiclyAvailable", "fileRelevance",
                    "potentialMeme", "fileAnnotations", "industryClassification", "originalFileHash",
                    "ipCaptureEvent", "deviceId", "details", "additionalInfo"),
    "fileAnnotations": ("animeDrawingVirtualHentai", "potentialMeme", "viral", "possibleSelfProduction",
                        "physicalHarm", "violenceGore", "bestiality", "liveStreaming", "infant", "generativeAi"),
}
SCHEMA_REQUIRED: dict[str, tuple[str, ...]] = {
    "report": ("incidentSummary", "reporter"),
    "incidentSummary": ("incidentType", "incidentDateTime"),
    "reporter": ("reportingPerson",),
    "ipCaptureEvent": ("ipAddress",),
    "fileDetails": ("reportId", "fileId"),
}


@dataclass
class Reporter:
    """The ESP and the person at the ESP who files the report (`reporter/reportingPerson`)."""

    company: str  # ESP name; also `incidentSummary/platform` and `personOrUserReported/espService`
    first_name: str
    last_name: str
    email: str
    phone: str = ""
    terms_of_service: str = ""  # text or URL of the terms the user broke (`reporter/termsOfService`)


@dataclass
class IpEvent:
    ip: str
    event: str  # one of IP_EVENT_NAMES: "Login", "Upload", ...
    time: datetime


@dataclass
class ReportedPerson:
    esp_identifier: str  # our user id
    email: str | None = None
    screen_name: str | None = None
    ip_events: list[IpEvent] = field(default_factory=list)
    email_verified: bool | None = None
    disabled_at: datetime | None = None  # when the account was suspended (`accountTemporarilyDisabled`)


@dataclass
class ReportFile:
    filename: str  # the name the file is uploaded under
    content: bytes
    original_filename: str | None = None  # the user's name for an upload; None for a generated output
    viewed_by_esp: bool | None = None  # must be stated: did a person at the ESP look at the file
    publicly_available: bool = False
    industry_classification: str | None = None  # A1/A2/B1/B2
    generative_ai: bool = False
    prompt: str | None = None
    negative_prompt: str | None = None
    location_of_file: str | None = None  # e.g. "upload", "generated output", or a URL
    uploaded_at: datetime | None = None
    upload_ip: IpEvent | None = None
    original_hashes: dict[str, str] = field(default_factory=dict)  # {"SHA256": hex, "MD5": hex} before any change


@dataclass
class ReportInput:
    incident_time: datetime
    summary: str
    reporter: Reporter
    reported_person: ReportedPerson
    files: list[ReportFile]
    additional_info: str = ""
    incident_type: str = CHILD_PORNOGRAPHY
    escalate_reason: str | None = None  # only for an immediate risk to a child (`escalateToHighPriority`)


class ReportInvalid(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def reporter_from_settings(settings: Settings) -> Reporter:
    return Reporter(
        company=settings.ncmec_reporter_company or settings.legal_entity,
        first_name=settings.ncmec_reporter_first_name,
        last_name=settings.ncmec_reporter_last_name,
        email=settings.ncmec_reporter_email or settings.contact_email,
        phone=settings.ncmec_reporter_phone,
        terms_of_service=settings.ncmec_terms_of_service_url,
    )


# Validation


def _check_time(problems: list[str], where: str, value: object, now: datetime) -> None:
    if not isinstance(value, datetime):
        problems.append(f"{where}: required (a datetime)")
    elif value.tzinfo is None or value.utcoffset() is None:
        problems.append(f"{where}: must be timezone-aware")
    elif value > now + CLOCK_SKEW:
        problems.append(f"{where}: is in the future")


def _check_email(problems: list[str], where: str, value: str | None, *, required: bool) -> None:
    if not value or not value.strip():
        if required:
            problems.append(f"{where}: required")
    elif not EMAIL_RE.match(value.strip()):
        problems.append(f"{where}: not a valid email address")


def _required(problems: list[str], where: str, value: str | None) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: required")


def _check_ip_event(problems: list[str], where: str, event: IpEvent, now: datetime) -> None:
    try:
        ipaddress.ip_address(event.ip)
    except (ValueError, TypeError):
        problems.append(f"{where}.ip: not an IP address ({event.ip!r})")
    if event.event not in IP_EVENT_NAMES:
        problems.append(f"{where}.event: {event.event!r} is not one of {', '.join(IP_EVENT_NAMES)}")
    _check_time(problems, f"{where}.time", event.time, now)


def validate(report: ReportInput, *, now: datetime | None = None) -> list[str]:
    """Every problem that would make NCMEC refuse the report or make it useless; empty when it can be sent."""
    now = now or datetime.now(UTC)
    problems: list[str] = []
    if report.incident_type not in INCIDENT_TYPES:
        problems.append(f"incident_type: {report.incident_type!r} is not a CyberTipline incident type")
    _check_time(problems, "incident_time", report.incident_time, now)
    _required(problems, "summary", report.summary)

    rep = report.reporter
    for name in ("company", "first_name", "last_name"):
        _required(problems, f"reporter.{name}", getattr(rep, name))
    _check_email(problems, "reporter.email", rep.email, required=True)
    if rep.phone and not PHONE_RE.match(rep.phone):
        problems.append("reporter.phone: not a phone number")

    person = report.reported_person
    _required(problems, "reported_person.esp_identifier", person.esp_identifier)
    _check_email(problems, "reported_person.email", person.email, required=False)
    for i, event in enumerate(person.ip_events):
        _check_ip_event(problems, f"reported_person.ip_events[{i}]", event, now)
    if person.disabled_at is not None:
        _check_time(problems, "reported_person.disabled_at", person.disabled_at, now)

    if not report.files:
        problems.append("files: at least one file is required")
    seen: set[str] = set()
    for i, f in enumerate(report.files):
        where = f"files[{i}]"
        _required(problems, f"{where}.filename", f.filename)
        if f.filename in seen:
            problems.append(f"{where}.filename: {f.filename!r} is used twice")
        seen.add(f.filename)
        if not f.content:
            problems.append(f"{where}.content: empty")
        if not isinstance(f.viewed_by_esp, bool):
            problems.append(f"{where}.viewed_by_esp: must be stated (true or false)")
        if f.industry_classification is not None and f.industry_classification not in INDUSTRY_CLASSIFICATIONS:
            problems.append(f"{where}.industry_classification: {f.industry_classification!r} is not one of "
                            f"{', '.join(INDUSTRY_CLASSIFICATIONS)}")
        if (f.prompt or f.negative_prompt) and not f.generative_ai:
            problems.append(f"{where}.generative_ai: a file with a prompt must be marked generative AI")
        if f.uploaded_at is not None:
            _check_time(problems, f"{where}.uploaded_at", f.uploaded_at, now)
        if f.upload_ip is not None:
            _check_ip_event(problems, f"{where}.upload_ip", f.upload_ip, now)
        for kind, value in f.original_hashes.items():
            if kind not in HASH_TYPES:
                problems.append(f"{where}.original_hashes: unknown hash type {kind!r}")
            elif not value:
                problems.append(f"{where}.original_hashes[{kind}]: empty")
    return problems


# XML


def _text(value: str) -> str:
    return _XML_INVALID.sub("", value)


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = _text(text)
    return child


def _ip_event(parent: ET.Element, event: IpEvent) -> None:
    node = _sub(parent, "ipCaptureEvent")
    _sub(node, "ipAddress", event.ip)
    _sub(node, "eventName", event.event)
    _sub(node, "dateTime", _time(event.time))


def _serialize(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def build_report_xml(report: ReportInput) -> bytes:
    """The `report` document for POST /submit."""
    rep, person = report.reporter, report.reported_person
    root = ET.Element("report")
    summary = _sub(root, "incidentSummary")
    _sub(summary, "incidentType", report.incident_type)
    _sub(summary, "platform", rep.company)
    if report.escalate_reason:
        _sub(summary, "escalateToHighPriority", report.escalate_reason)
    _sub(summary, "incidentDateTime", _time(report.incident_time))

    reporter = _sub(root, "reporter")
    reporting = _sub(reporter, "reportingPerson")
    _sub(reporting, "firstName", rep.first_name)
    _sub(reporting, "lastName", rep.last_name)
    if rep.phone:
        _sub(reporting, "phone", rep.phone, type="Business")
    _sub(reporting, "email", rep.email, type="Business")
    if rep.terms_of_service:
        _sub(reporter, "termsOfService", rep.terms_of_service)

    reported = _sub(root, "personOrUserReported")
    if person.email:
        attrs = {} if person.email_verified is None else {"verified": _bool(person.email_verified)}
        _sub(_sub(reported, "personOrUserReportedPerson"), "email", person.email, **attrs)
    _sub(reported, "espIdentifier", person.esp_identifier)
    _sub(reported, "espService", rep.company)
    if person.screen_name:
        _sub(reported, "screenName", person.screen_name)
    for event in person.ip_events:
        _ip_event(reported, event)
    if person.disabled_at is not None:
        _sub(reported, "accountTemporarilyDisabled", "true", disabledDate=_time(person.disabled_at))

    info = "\n\n".join(part.strip() for part in (report.summary, report.additional_info) if part and part.strip())
    if info:
        _sub(root, "additionalInfo", info)
    return _serialize(root)


def build_file_details_xml(report_id: str, file_id: str, file: ReportFile) -> bytes:
    """The `fileDetails` document for POST /fileinfo, after the file was uploaded as `file_id`."""
    root = ET.Element("fileDetails")
    _sub(root, "reportId", str(report_id))
    _sub(root, "fileId", file_id)
    _sub(root, "fileName", file.filename)
    if file.original_filename:
        _sub(root, "originalFileName", file.original_filename)
    if file.uploaded_at is not None:
        _sub(root, "uploadedToEspTimestamp", _time(file.uploaded_at))
    if file.location_of_file:
        _sub(root, "locationOfFile", file.location_of_file)
    _sub(root, "fileViewedByEsp", _bool(bool(file.viewed_by_esp)))
    _sub(root, "publiclyAvailable", _bool(file.publicly_available))
    _sub(_sub(root, "fileAnnotations"), "generativeAi", _bool(file.generative_ai))
    if file.industry_classification:
        _sub(root, "industryClassification", file.industry_classification)
    for kind, value in file.original_hashes.items():
        _sub(root, "originalFileHash", value, hashType=kind)
    if file.upload_ip is not None:
        _ip_event(root, file.upload_ip)
    if file.prompt:
        _sub(root, "additionalInfo", f"Prompt: {file.prompt}")
    if file.negative_prompt:
        _sub(root, "additionalInfo", f"Negative prompt: {file.negative_prompt}")
    return _serialize(root)


def check_xml(document: bytes, root_tag: str) -> list[str]:
    """Well-formedness, the root element, schema child order and required children; empty when all hold."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        return [f"not well-formed XML: {exc}"]
    if root.tag != root_tag:
        return [f"root element is <{root.tag}>, expected <{root_tag}>"]
    problems: list[str] = []

    def walk(node: ET.Element, path: str) -> None:
        order = SCHEMA_ORDER.get(node.tag)
        names = [child.tag for child in node]
        for required in SCHEMA_REQUIRED.get(node.tag, ()):
            if required not in names:
                problems.append(f"{path}: missing <{required}>")
        if order is not None:
            last = -1
            for name in names:
                if name not in order:
                    problems.append(f"{path}: unexpected <{name}>")
                    continue
                position = order.index(name)
                if position < last:
                    problems.append(f"{path}: <{name}> is out of schema order")
                last = max(last, position)
        for child in node:
            if len(child):
                walk(child, f"{path}/{child.tag}")
            elif not (child.text or "").strip() and not child.attrib:
                problems.append(f"{path}/{child.tag}: empty")

    walk(root, root.tag)
    return problems
