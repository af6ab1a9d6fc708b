"""NCMEC CyberTipline report packages: the input a moderation case hands over, validation, the XML, the schema check.

No database here: the case service builds a `ReportInput`, calls `validate` (a list of problems, empty when the
report can go), and `ncmec_client.CyberTiplineClient.submit_report` checks every document against the XSD that
NCMEC's API serves (`ReportSchema`) before sending it. Element names and their order follow that XSD (`report`,
`fileDetails`); `validate` adds what the XSD leaves to prose: the documented length limits, URLs, times in the past.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lxml import etree

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
# `originalFileHash`: a binary hash of the bytes as the user sent them. Perceptual hashes (PDQ) are not that: they
# go in `details type="HASH"`.
ORIGINAL_HASH_TYPES = ("MD5", "SHA1", "SHA256")
DETAIL_HASH_TYPES = ("PDQ",)
HEX_LENGTHS = {"MD5": 32, "SHA1": 40, "SHA256": 64, "PDQ": 64}
# `fileAnnotations` children: each is declared `fixed="true"`, so one is present only to say yes.
FILE_ANNOTATIONS = ("animeDrawingVirtualHentai", "potentialMeme", "viral", "possibleSelfProduction", "physicalHarm",
                    "violenceGore", "bestiality", "liveStreaming", "infant", "generativeAi")
# The documented limits (characters) the XSD does not state; each is checked by `validate`.
MAX_PLATFORM, MAX_ESP_SERVICE, MAX_NAME, MAX_EMAIL, MAX_EMAIL_LOCAL, MAX_PHONE = 256, 100, 100, 255, 64, 50
MAX_ESP_IDENTIFIER, MAX_SCREEN_NAME, MAX_ORIGINAL_FILE_NAME, MAX_URL, MAX_TEXT_3000 = 255, 256, 2056, 2083, 3000
CLOCK_SKEW = timedelta(minutes=5)  # a time this far ahead of our clock still passes as "not in the future"
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>.]{2,}$")
PHONE_RE = re.compile(r"^\+?[0-9 ().\-]{5,30}$")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass
class Reporter:
    """The ESP and the person at the ESP who files the report (`reporter`)."""

    company: str  # ESP name; also `incidentSummary/platform` and `personOrUserReported/espService`
    first_name: str
    last_name: str
    email: str
    phone: str = ""
    legal_url: str = ""  # the terms of service page (`reporter/legalURL`: a URL)
    company_template: str = ""  # standing text: legal process, retention, emergency contact (`companyTemplate`)


@dataclass
class IpEvent:
    ip: str
    event: str  # one of IP_EVENT_NAMES, saying what happened at that address: "Upload", "Login", ...
    time: datetime


@dataclass
class ReportedPerson:
    esp_identifier: str | None  # our user id; None: not known (the element is left out, never made up)
    email: str | None = None
    screen_name: str | None = None
    ip_events: list[IpEvent] = field(default_factory=list)
    email_verified: bool | None = None
    disabled_at: datetime | None = None  # when the account was suspended (`accountTemporarilyDisabled`)
    reenabled_at: datetime | None = None  # when a moderator restored it


@dataclass
class ReportFile:
    filename: str  # the name the file is uploaded under
    content: bytes
    original_filename: str | None = None  # the user's name for an upload; None for a generated output
    viewed_by_esp: bool | None = None  # must be stated: did a person at the ESP look at the file
    publicly_available: bool = False
    industry_classification: str | None = None  # A1/A2/B1/B2
    annotations: frozenset[str] = frozenset()  # the FILE_ANNOTATIONS that are true; the others are left out
    prompt: str | None = None
    negative_prompt: str | None = None
    location_of_file: str | None = None  # the URL the file was at; None when it had none
    uploaded_at: datetime | None = None  # when the user uploaded it (not for generated images)
    ip_event: IpEvent | None = None  # the address the file came from: an upload's, or a generation's login
    original_hashes: dict[str, str] = field(default_factory=dict)  # {"SHA256": hex, "MD5": hex} of the bytes
    detail_hashes: dict[str, str] = field(default_factory=dict)  # {"PDQ": hex}: `details type="HASH"`
    notes: list[str] = field(default_factory=list)  # `additionalInfo`, one element each

    @property
    def generative_ai(self) -> bool:
        return "generativeAi" in self.annotations


@dataclass
class ReportInput:
    incident_time: datetime  # when the upload or the generation happened
    summary: str
    reporter: Reporter
    reported_person: ReportedPerson | None
    files: list[ReportFile]
    additional_info: str = ""
    incident_type: str = CHILD_PORNOGRAPHY
    incident_time_description: str = ""
    escalate_reason: str | None = None  # only for an immediate risk to a child (`escalateToHighPriority`)


class ReportInvalid(ValueError):
    """The package breaks a rule (ours or the schema's): it is not sent; `problems` says what to fix."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems
        self.report_id: str | None = None  # set when a report was already open (then retracted if `retracted`)
        self.retracted = False


def reporter_from_settings(settings: Settings) -> Reporter:
    return Reporter(
        company=settings.ncmec_reporter_company or settings.legal_entity,
        first_name=settings.ncmec_reporter_first_name,
        last_name=settings.ncmec_reporter_last_name,
        email=settings.ncmec_reporter_email or settings.contact_email,
        phone=settings.ncmec_reporter_phone,
        legal_url=settings.ncmec_terms_of_service_url,
        company_template=settings.ncmec_company_template,
    )


# Validation


def _check_time(problems: list[str], where: str, value: object, now: datetime) -> None:
    if not isinstance(value, datetime):
        problems.append(f"{where}: required (a datetime)")
    elif value.tzinfo is None or value.utcoffset() is None:
        problems.append(f"{where}: must be timezone-aware")
    elif value > now + CLOCK_SKEW:
        problems.append(f"{where}: is in the future")


def _check_length(problems: list[str], where: str, value: str | None, limit: int, element: str) -> None:
    if value and len(value) > limit:
        problems.append(f"{where}: {len(value)} characters, at most {limit} allowed ({element})")


def _check_email(problems: list[str], where: str, value: str | None, *, required: bool) -> None:
    if not value or not value.strip():
        if required:
            problems.append(f"{where}: required")
        return
    value = value.strip()
    if not EMAIL_RE.match(value):
        problems.append(f"{where}: not a valid email address")
    _check_length(problems, where, value, MAX_EMAIL, "email")
    if len(value.partition("@")[0]) > MAX_EMAIL_LOCAL:
        problems.append(f"{where}: the part before @ is longer than {MAX_EMAIL_LOCAL} characters (email)")


def _check_url(problems: list[str], where: str, value: str, element: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        problems.append(f"{where}: not a URL ({element} must be an http(s) URL)")
    _check_length(problems, where, value, MAX_URL, element)


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


def _check_hashes(problems: list[str], where: str, hashes: dict[str, str], kinds: tuple[str, ...]) -> None:
    for kind, value in hashes.items():
        if kind not in kinds:
            problems.append(f"{where}: {kind!r} is not one of {', '.join(kinds)}")
        elif not re.fullmatch(f"[0-9a-fA-F]{{{HEX_LENGTHS[kind]}}}", value or ""):
            problems.append(f"{where}[{kind}]: not {HEX_LENGTHS[kind]} hex digits")


def _check_reporter(problems: list[str], rep: Reporter) -> None:
    for name in ("company", "first_name", "last_name"):
        _required(problems, f"reporter.{name}", getattr(rep, name))
    # The company name is sent as both `platform` (256) and `espService` (100).
    _check_length(problems, "reporter.company", rep.company, min(MAX_PLATFORM, MAX_ESP_SERVICE),
                  "incidentSummary/platform, personOrUserReported/espService")
    _check_length(problems, "reporter.first_name", rep.first_name, MAX_NAME, "reportingPerson/firstName")
    _check_length(problems, "reporter.last_name", rep.last_name, MAX_NAME, "reportingPerson/lastName")
    _check_email(problems, "reporter.email", rep.email, required=True)
    if rep.phone and not PHONE_RE.match(rep.phone):
        problems.append("reporter.phone: not a phone number")
    _check_length(problems, "reporter.phone", rep.phone, MAX_PHONE, "reportingPerson/phone")
    if rep.legal_url:
        _check_url(problems, "reporter.legal_url", rep.legal_url, "reporter/legalURL")


def _check_person(problems: list[str], person: ReportedPerson, now: datetime) -> None:
    if person.esp_identifier is not None:
        _required(problems, "reported_person.esp_identifier", person.esp_identifier)
        _check_length(problems, "reported_person.esp_identifier", person.esp_identifier, MAX_ESP_IDENTIFIER,
                      "personOrUserReported/espIdentifier")
    _check_email(problems, "reported_person.email", person.email, required=False)
    _check_length(problems, "reported_person.screen_name", person.screen_name, MAX_SCREEN_NAME,
                  "personOrUserReported/screenName")
    for i, event in enumerate(person.ip_events):
        _check_ip_event(problems, f"reported_person.ip_events[{i}]", event, now)
    if person.disabled_at is not None:
        _check_time(problems, "reported_person.disabled_at", person.disabled_at, now)
    if person.reenabled_at is not None:
        _check_time(problems, "reported_person.reenabled_at", person.reenabled_at, now)
        if person.disabled_at is None or person.reenabled_at <= person.disabled_at:
            problems.append("reported_person.reenabled_at: must come after disabled_at")


def _check_file(problems: list[str], where: str, f: ReportFile, now: datetime) -> None:
    _required(problems, f"{where}.filename", f.filename)
    if not f.content:
        problems.append(f"{where}.content: empty")
    if not isinstance(f.viewed_by_esp, bool):
        problems.append(f"{where}.viewed_by_esp: must be stated (true or false)")
    _check_length(problems, f"{where}.original_filename", f.original_filename, MAX_ORIGINAL_FILE_NAME,
                  "fileDetails/originalFileName")
    if f.industry_classification is not None and f.industry_classification not in INDUSTRY_CLASSIFICATIONS:
        problems.append(f"{where}.industry_classification: {f.industry_classification!r} is not one of "
                        f"{', '.join(INDUSTRY_CLASSIFICATIONS)}")
    if unknown := sorted(set(f.annotations) - set(FILE_ANNOTATIONS)):
        problems.append(f"{where}.annotations: {', '.join(unknown)} not among {', '.join(FILE_ANNOTATIONS)}")
    if (f.prompt or f.negative_prompt) and not f.generative_ai:
        problems.append(f"{where}.annotations: a file with a prompt must be annotated generativeAi")
    if f.location_of_file is not None:
        _check_url(problems, f"{where}.location_of_file", f.location_of_file, "fileDetails/locationOfFile")
    if f.uploaded_at is not None:
        _check_time(problems, f"{where}.uploaded_at", f.uploaded_at, now)
    if f.ip_event is not None:
        _check_ip_event(problems, f"{where}.ip_event", f.ip_event, now)
    _check_hashes(problems, f"{where}.original_hashes", f.original_hashes, ORIGINAL_HASH_TYPES)
    _check_hashes(problems, f"{where}.detail_hashes", f.detail_hashes, DETAIL_HASH_TYPES)


def validate(report: ReportInput, *, now: datetime | None = None) -> list[str]:
    """Every problem that would make NCMEC refuse the report or make it useless; empty when it can be sent."""
    now = now or datetime.now(UTC)
    problems: list[str] = []
    if report.incident_type not in INCIDENT_TYPES:
        problems.append(f"incident_type: {report.incident_type!r} is not a CyberTipline incident type")
    _check_time(problems, "incident_time", report.incident_time, now)
    _check_length(problems, "incident_time_description", report.incident_time_description, MAX_TEXT_3000,
                  "incidentSummary/incidentDateTimeDescription")
    _required(problems, "summary", report.summary)
    if report.escalate_reason is not None:
        _required(problems, "escalate_reason", report.escalate_reason)
        _check_length(problems, "escalate_reason", report.escalate_reason, MAX_TEXT_3000,
                      "incidentSummary/escalateToHighPriority")
    _check_reporter(problems, report.reporter)
    if report.reported_person is not None:
        _check_person(problems, report.reported_person, now)

    if not report.files:
        problems.append("files: at least one file is required")
    seen: set[str] = set()
    for i, f in enumerate(report.files):
        if f.filename in seen:
            problems.append(f"files[{i}].filename: {f.filename!r} is used twice")
        seen.add(f.filename)
        _check_file(problems, f"files[{i}]", f, now)
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


def _reported_person(root: ET.Element, person: ReportedPerson, company: str) -> None:
    reported = _sub(root, "personOrUserReported")
    if person.email:
        attrs = {} if person.email_verified is None else {"verified": _bool(person.email_verified)}
        _sub(_sub(reported, "personOrUserReportedPerson"), "email", person.email, **attrs)
    if person.esp_identifier:
        _sub(reported, "espIdentifier", person.esp_identifier)
    _sub(reported, "espService", company)
    if person.screen_name:
        _sub(reported, "screenName", person.screen_name)
    for event in person.ip_events:
        _ip_event(reported, event)
    if person.disabled_at is not None:
        attrs = {"disabledDate": _time(person.disabled_at)}
        if person.reenabled_at is not None:
            attrs["reenabledDate"] = _time(person.reenabled_at)
        _sub(reported, "accountTemporarilyDisabled", "true", **attrs)


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
    if report.incident_time_description:
        _sub(summary, "incidentDateTimeDescription", report.incident_time_description)

    reporter = _sub(root, "reporter")
    reporting = _sub(reporter, "reportingPerson")
    _sub(reporting, "firstName", rep.first_name)
    _sub(reporting, "lastName", rep.last_name)
    if rep.phone:
        _sub(reporting, "phone", rep.phone, type="Business")
    _sub(reporting, "email", rep.email, type="Business")
    if rep.company_template.strip():
        _sub(reporter, "companyTemplate", rep.company_template.strip())
    if rep.legal_url:
        _sub(reporter, "legalURL", rep.legal_url)

    # Left out when we know nothing about the account (the schema allows none).
    if person is not None and (person.esp_identifier or person.email or person.ip_events):
        _reported_person(root, person, rep.company)

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
    if true_ones := [name for name in FILE_ANNOTATIONS if name in file.annotations]:
        annotations = _sub(root, "fileAnnotations")
        for name in true_ones:  # present means yes; a "false" would be refused (fixed="true")
            _sub(annotations, name, "true")
    if file.industry_classification:
        _sub(root, "industryClassification", file.industry_classification)
    for kind, value in file.original_hashes.items():
        _sub(root, "originalFileHash", value.lower(), hashType=kind)
    if file.ip_event is not None:
        _ip_event(root, file.ip_event)
    if file.detail_hashes:
        details = _sub(root, "details", type="HASH")
        for kind, value in file.detail_hashes.items():
            pair = _sub(details, "nameValuePair")
            _sub(pair, "name", kind)
            _sub(pair, "value", value.lower())
    for note in file.notes:
        _sub(root, "additionalInfo", note)
    if file.prompt:
        _sub(root, "additionalInfo", f"Prompt: {file.prompt}")
    if file.negative_prompt:
        _sub(root, "additionalInfo", f"Negative prompt: {file.negative_prompt}")
    return _serialize(root)


# The schema


class SchemaUnusable(ValueError):
    """What /xsd answered is not an XML schema."""


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class ReportSchema:
    """NCMEC's XSD as its API serves it (GET /xsd), compiled once; `problems` lists what it refuses in a document."""

    def __init__(self, xsd: bytes):
        try:
            self._schema = etree.XMLSchema(etree.fromstring(xsd, _safe_parser()))
        except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
            raise SchemaUnusable(f"the CyberTipline schema could not be read: {exc}") from exc
        self.source = xsd

    def problems(self, document: bytes, root_tag: str) -> list[str]:
        """Empty when `document` is a valid `root_tag`; else the validator's messages, each with its element path."""
        try:
            root = etree.fromstring(document, _safe_parser())
        except etree.XMLSyntaxError as exc:
            return [f"not well-formed XML: {exc}"]
        if root.tag != root_tag:
            return [f"root element is <{root.tag}>, expected <{root_tag}>"]
        if self._schema.validate(root):
            return []
        return [f"{entry.path}: {entry.message}" if entry.path else entry.message
                for entry in self._schema.error_log]
