"""Reporting a case to NCMEC's CyberTipline: the package built from the case, the submission and what its outcome
does to the case (every attempt kept), the automatic mode and its scheduled retries.

`submit_case_report` is the `report` action (`service.CaseService.act`); it takes the session and never commits.
Outcomes: filed → `reported`; NCMEC unreachable or an error that may pass → `report_failed`, retried by the
scheduled pass with a growing delay (automatic mode); the package refused (the schema check before sending, or
NCMEC's 4100/4110/4200) → `report_refused`, never retried on its own: a moderator reads `ncmec_error` and reports
again. Each attempt's report id is kept in `ncmec_attempts`; an attempt whose /finish answer was lost is settled
(finished, or found finished: 5102) before a new report is opened, so the same material is never filed twice.
"""

from __future__ import annotations

import io
import ipaddress
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.kit.errors import BadRequest, Conflict
from imagen.safety.models import Evidence, SafetyCase
from imagen.safety.ncmec import IpEvent, ReportedPerson, ReportFile, ReportInput, ReportInvalid, reporter_from_settings
from imagen.safety.quarantine import Quarantine

log = logging.getLogger(__name__)

AUTO_REPORT_RETRY = timedelta(hours=1)  # the first retry of a failed automatic report; each next waits twice that
AUTO_REPORT_RETRY_MAX = timedelta(hours=24)  # ... up to this
AUTO_REPORT_GRACE = timedelta(minutes=10)  # an open case younger than this is still in the after-commit pool
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}
UNSETTLED = ("open", "finish_unconfirmed")  # attempts whose report may still be open or filed at NCMEC


def reports_without_confirmation(settings: Settings) -> bool:
    """The operator turned the moderator's confirmation off and gave NCMEC credentials."""
    return (not settings.ncmec_require_confirmation) and bool(settings.ncmec_username and settings.ncmec_password)


def retry_delay(failures: int) -> timedelta:
    """How long the scheduled pass waits after the `failures`-th failed attempt in a row: 1 h, 2 h, 4 h ... 24 h."""
    return min(AUTO_REPORT_RETRY * 2 ** max(failures - 1, 0), AUTO_REPORT_RETRY_MAX)


# The package


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _pdq(content: bytes) -> str | None:
    """The file's own PDQ hash (a perceptual hash: `details type="HASH"`), or None when it is not an image."""
    from PIL import Image

    from imagen.safety.matcher import pdq_hex

    try:
        with Image.open(io.BytesIO(content)) as image:
            return pdq_hex(image)[0]
    except Exception:  # not an image, or one PIL cannot read: there is no PDQ to give
        return None


def _happened_at(session: Session | None, ev: Evidence) -> datetime:
    """When the upload or the generation took place (the incident), not when the case was opened."""
    if ev.source != "output":
        return ev.event_time or ev.created_at  # an upload's evidence time is its request's
    if session is None:
        return ev.created_at  # recorded as the worker checked the output (a removal: as it was removed)
    from imagen.generation.models import Generation

    gen = session.get(Generation, ev.generation_id) if ev.generation_id else None
    return (gen.finished_at or gen.started_at or ev.created_at) if gen else ev.created_at


def _match_note(ev: Evidence) -> str | None:
    match = ev.match or {}
    if not match.get("hash_type"):
        return None
    distance = f", Hamming distance {match['distance']}" if match.get("distance") is not None else ""
    return (f"Detected automatically: it matched an entry of the hash list {match.get('bank_name') or '?'} "
            f"({str(match['hash_type']).upper()}{distance}). No person at the ESP viewed the file.")


def _suspension(case: SafetyCase) -> tuple[datetime | None, datetime | None]:
    """When the account was suspended for this case and, if a moderator restored it, when (from the audit)."""
    disabled = next((a.created_at for a in case.actions
                     if a.action == "suspend" and a.result != "already suspended or erased"), None)
    if disabled is None:
        return None, None
    restored = next((a.created_at for a in case.actions
                     if a.action == "restore" and a.result == "restored" and a.created_at > disabled), None)
    return disabled, restored


def build_report(session: Session | None, case: SafetyCase, settings: Settings, quarantine: Quarantine) -> ReportInput:
    """The CyberTipline package for a case: its quarantined files with what each field means (docs/safety.md)."""
    files: list[ReportFile] = []
    person_events: list[IpEvent] = []
    times: list[datetime] = []
    generated_any = uploaded_any = False
    for i, ev in enumerate(e for e in case.evidence if e.quarantine_blob_key):
        generated = ev.source == "output"
        generated_any, uploaded_any = generated_any or generated, uploaded_any or not generated
        content = quarantine.get(ev.quarantine_blob_key)
        happened = _happened_at(session, ev)
        times.append(happened)
        ip_event = None
        if ev.ip_address and _is_ip(ev.ip_address) and ev.event_time:
            # What the address was captured at: an upload's request, or the login a generation was submitted from.
            ip_event = IpEvent(ev.ip_address, ev.ip_event or ("Unknown" if generated else "Upload"), ev.event_time)
            if all((e.ip, e.event, e.time) != (ip_event.ip, ip_event.event, ip_event.time) for e in person_events):
                person_events.append(ip_event)
        suffix = EXTENSIONS.get(ev.content_type or "", "")
        if not suffix and ev.filename and "." in ev.filename:
            suffix = "." + ev.filename.rsplit(".", 1)[1][:8].lower()
        pdq = None if ev.source == "model_upload" else _pdq(content)  # images only; model files have none
        files.append(ReportFile(
            filename=f"evidence-{i + 1}{suffix or '.bin'}", content=content,
            original_filename=None if generated else ev.filename, viewed_by_esp=False,
            annotations=frozenset({"generativeAi"}) if generated else frozenset(),
            prompt=ev.prompt if generated else None, negative_prompt=ev.negative_prompt if generated else None,
            uploaded_at=None if generated else happened, ip_event=ip_event,
            original_hashes={k: v for k, v in (("MD5", ev.md5), ("SHA256", ev.sha256)) if v},
            detail_hashes={"PDQ": pdq} if pdq else {},
            notes=[note] if (note := _match_note(ev)) else []))
    if not files:
        raise BadRequest("This case holds no preserved file to report")
    disabled_at, reenabled_at = _suspension(case)
    person = ReportedPerson(esp_identifier=case.user_id, email=case.user_email, ip_events=person_events,
                            disabled_at=disabled_at, reenabled_at=reenabled_at)
    company = settings.ncmec_reporter_company or settings.legal_entity
    what = ("generated with the service" if not uploaded_any else
            "uploaded to the service" if not generated_any else "uploaded to or generated with the service")
    return ReportInput(
        incident_time=min(times), incident_time_description=f"When the file was {what} ({company})",
        summary=case.summary, reporter=reporter_from_settings(settings), reported_person=person, files=files,
        additional_info=f"IMAGEN case {case.id}, kind {case.kind}", escalate_reason=case.ncmec_escalation)


# Submitting


def _describe(exc: Exception) -> str:
    from imagen.safety.ncmec_client import CyberTiplineError

    if isinstance(exc, ReportInvalid):
        return "Not sent: the report does not satisfy the CyberTipline schema or its rules: " + "; ".join(exc.problems)
    if isinstance(exc, CyberTiplineError) and exc.permanent:
        return f"NCMEC refused the report: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _is_permanent(exc: Exception) -> bool:
    """Sending the same package again cannot help: a moderator (or the operator's settings) must change something."""
    from imagen.safety.ncmec_client import ConfirmationRequired, CyberTiplineError

    if isinstance(exc, CyberTiplineError):
        return exc.permanent
    return isinstance(exc, (ValueError, ConfirmationRequired, BadRequest))  # ReportInvalid, credentials unset


def _settle_earlier(client: Any, attempts: list[dict[str, Any]], now: datetime) -> str | None:
    """Asks NCMEC what became of earlier attempts that may be open or filed; the report id of a filed one."""
    from imagen.safety.ncmec_client import CyberTiplineError

    for attempt in attempts:
        if attempt.get("state") not in UNSETTLED or not attempt.get("report_id"):
            continue
        report_id = attempt["report_id"]
        try:
            outcome = client.settle(report_id, finish_sent=attempt["state"] == "finish_unconfirmed")
        except CyberTiplineError as exc:
            if not exc.permanent:
                raise
            outcome = client.settle(report_id, finish_sent=False)  # it cannot be finished: withdraw it
        attempt.update(state=outcome, settled_at=now.isoformat())
        log.info("NCMEC report %s of an earlier attempt: %s", report_id, outcome)
        if outcome == "finished":
            return report_id
    return None


def submit_case_report(session: Session, case: SafetyCase, actor: User | None, settings: Settings,
                       quarantine: Quarantine) -> str:
    """The `report` action: settle earlier attempts, else build, check and submit; the outcome goes on the case.
    Returns the audit result. A moderator's action (`actor`) is the confirmation IMAGEN_NCMEC_REQUIRE_CONFIRMATION
    asks for; `actor` None is the automatic mode."""
    from imagen.safety.ncmec_client import ConfirmationRequired, CyberTiplineClient, CyberTiplineError

    if case.ncmec_report_id:
        raise Conflict(f"Already reported to NCMEC (report {case.ncmec_report_id})")
    now = utcnow()
    attempts = [dict(a) for a in case.ncmec_attempts or []]
    attempt: dict[str, Any] = {"at": now.isoformat(), "by": "moderator" if actor else "automatic",
                               "report_id": None, "state": "not_sent", "code": None, "error": None}
    files = 0
    try:
        report = build_report(session, case, settings, quarantine)
        with CyberTiplineClient.from_settings(settings) as client:
            if client.require_confirmation and actor is None:
                raise ConfirmationRequired("a moderator must confirm this NCMEC report before it is submitted")
            report_id = _settle_earlier(client, attempts, now)
            if report_id is None:
                result = client.submit_report(report, confirmed_by=actor.email if actor else "automatic")
                report_id, files = result.report_id, len(result.file_ids)
                attempt.update(report_id=report_id, state="finished")
                attempts.append(attempt)
    except BadRequest:
        if actor is not None:  # a moderator's request that cannot work: answer it (nothing was sent)
            raise
        attempt["error"] = "This case holds no preserved file to report"
        return _failed(case, [*attempts, attempt], attempt, permanent=True, now=now)
    except Exception as exc:  # every failure is kept on the case; nothing escapes half-recorded
        attempt["error"] = _describe(exc)[:4000]
        if isinstance(exc, (CyberTiplineError, ReportInvalid)) and exc.report_id:
            unconfirmed = isinstance(exc, CyberTiplineError) and exc.finish_unconfirmed
            attempt.update(report_id=exc.report_id,
                           state="finish_unconfirmed" if unconfirmed else "retracted" if exc.retracted else "open")
        if isinstance(exc, CyberTiplineError):
            attempt["code"] = exc.code
        return _failed(case, [*attempts, attempt], attempt, permanent=_is_permanent(exc), now=now)
    case.ncmec_attempts = attempts
    case.status, case.ncmec_report_id, case.ncmec_error, case.ncmec_retry_at = "reported", report_id, None, None
    case.reported_at = now
    if files:
        return f"NCMEC report {report_id} ({files} files)"
    return f"NCMEC report {report_id} (an earlier attempt's report: NCMEC has it filed)"


def _failed(case: SafetyCase, attempts: list[dict[str, Any]], attempt: dict[str, Any], *, permanent: bool,
            now: datetime) -> str:
    case.ncmec_attempts = attempts
    if permanent:
        case.status, case.ncmec_retry_at = "report_refused", None
        case.ncmec_error = f"{attempt['error']} A moderator must fix this and report again."[:1000]
    else:
        failures = sum(1 for a in attempts if a.get("state") != "finished")
        case.status, case.ncmec_retry_at = "report_failed", now + retry_delay(failures)
        case.ncmec_error = f"{attempt['error']}"[:1000]
    log.warning("NCMEC report for case %s %s: %s", case.id, "refused" if permanent else "failed", attempt["error"])
    return case.ncmec_error
