"""The data map: the one declaration of every table and blob kind that holds personal data.

Export (`exports.py`), erasure (`erasure.py`), the residue scan (`residue.py`), the processing record (`ropa.py`),
retention and the privacy centre all read it. A test walks the metadata and fails when a table that references a
user (or another personal table), or has a user-identifying column, is declared neither here nor in NOT_PERSONAL.

Adding a table: append a `DataItem` to DATA_MAP (or a `NotPersonal` to NOT_PERSONAL) and run
`tests/test_privacy_core.py`. `name` is the export's JSON section; `retention_setting`, `hold.setting` name
Settings attributes (days); `providers` are provider ids as the policy's §4.1 table lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import MetaData

Source = Literal["provided", "automatic", "generated"]
Action = Literal["delete", "anonymize", "legal_hold"]
ACCOUNT_LIFETIME = "account lifetime"
IDENTIFYING_COLUMNS = frozenset({"user_id", "email", "ip_address", "user_agent"})


@dataclass(frozen=True)
class LegalHold:
    """Why rows are kept after erasure, and for how long (`setting`: days, counted from `clock`)."""

    reason: str
    setting: str
    clock: str = "created_at"


@dataclass(frozen=True)
class DataItem:
    name: str  # unique; the section of data.json in an export
    category: str
    description: str
    source: Source
    purpose: str
    legal_basis: str
    retention: str  # in words; "account lifetime" allowed
    erasure: Action
    table: str | None = None
    user_column: str | None = None  # the column holding the user's id
    email_column: str | None = None  # rows that name the user by email only are the user's too
    only: tuple[str, tuple[str, ...]] | None = None  # (column, values): the part of the table this entry covers
    blob_prefix: str | None = None  # "outputs/{user_id}/": blobs of this kind
    file_column: str | None = None  # a row's blob key: exported as a file, deleted on erasure
    export_files: bool = False
    export_exclude: tuple[str, ...] = ()  # never exported (hashes of secrets)
    anonymize: tuple[str, ...] = ()  # emptied on erasure (anonymize, legal_hold)
    hold: LegalHold | None = None
    retention_setting: str | None = None
    providers: tuple[str, ...] = ()
    # Recipients that are not our processors, to whom the law makes us disclose (named in the processing record).
    disclosed_to: tuple[str, ...] = ()
    collected: bool = True  # False: this build stores none; the export says so in an empty section
    note: str = ""
    # Set when the law restricts the subject's access (GDPR Art. 23): the export and the privacy centre name the
    # category and this reason, and leave its rows out.
    withheld: str = ""

    def prefix_for(self, user_id: str) -> str | None:
        return self.blob_prefix.format(user_id=user_id) if self.blob_prefix else None


@dataclass(frozen=True)
class NotPersonal:
    table: str
    reason: str


_CONTRACT = "contract (GDPR Art. 6(1)(b))"
_SECURITY = "legitimate interests in keeping accounts and the service secure (GDPR Art. 6(1)(f))"
_FAILED = "failed and canceled ones: retention_failed_generations_days"

# Safety cases and their evidence (imagen/safety): one hold, and one reason the person is not shown them.
EVIDENCE_HOLD = LegalHold("evidence a provider must preserve after a report to NCMEC (18 U.S.C. §2258A(h), one year "
                          "under the REPORT Act)", "evidence_retention_days")
NCMEC_RECIPIENT = "NCMEC's CyberTipline, when a case is reported (18 U.S.C. §2258A; policy §4.3)"
INVESTIGATION_WITHHELD = ("telling a person about an investigation of child sexual abuse material could obstruct it "
                          "(18 U.S.C. §2258A; GDPR Art. 23(1)(d))")

DATA_MAP: list[DataItem] = [
    DataItem(
        "account", "account", "email address, hashed password, date of birth, country, role", "provided",
        "provide the account: sign-in, service messages, the 18+ requirement (policy §1.1, §10)",
        f"{_CONTRACT}; age check: legal obligation (Art. 6(1)(c))", ACCOUNT_LIFETIME, "delete",
        table="users", user_column="id", export_exclude=("password_hash",),
        providers=("hosting", "smtp", "stripe")),
    DataItem(
        "login_sessions", "credentials", "signed-in browsers: IP address, browser, expiry (tokens only hashed)",
        "automatic", "keep the user signed in", _CONTRACT,
        "until logout or expiry, then retention_expired_sessions_days", "delete",
        table="login_sessions", user_column="user_id", export_exclude=("token_hash", "csrf_token"),
        retention_setting="retention_expired_sessions_days", providers=("hosting",)),
    DataItem(
        "api_keys", "credentials", "API keys' names, prefixes and last use (the keys only hashed)", "provided",
        "API access", _CONTRACT, "until revoked or the account is deleted", "delete",
        table="api_keys", user_column="user_id", export_exclude=("key_hash",), providers=("hosting",)),
    DataItem(
        "security_events", "security log", "sign-ups, logins, logouts, failed logins with IP address and browser",
        "automatic", "secure accounts, detect abuse (policy §1.2, §9)", _SECURITY,
        "retention_security_log_days", "anonymize",
        table="security_events", user_column="user_id", email_column="email",
        anonymize=("user_id", "email", "ip_address", "user_agent"),
        retention_setting="retention_security_log_days", providers=("hosting",),
        note="on erasure the events stay as anonymous counts (kind and time only)"),
    DataItem(
        "consents", "consent history", "every consent choice (policy acceptance, model improvement, marketing) "
        "with time, policy version and where it was made", "provided",
        "record the user's choices and prove consent (GDPR Art. 7(1))",
        "legal obligation (GDPR Art. 6(1)(c), Art. 7(1))", ACCOUNT_LIFETIME, "delete",
        table="consent_records", user_column="user_id", providers=("hosting",)),
    DataItem(
        "generations", "generation parameters and prompts", "prompts, parameters, models used (by content hash), "
        "the consent stamp, status, timings", "provided",
        "run the generations the user asks for and keep their history; model improvement only from generations "
        "stamped with consent (policy §3)", f"{_CONTRACT}; model improvement: consent (Art. 6(1)(a))",
        f"{ACCOUNT_LIFETIME} or until the user deletes them; {_FAILED}", "delete",
        table="generations", user_column="user_id", retention_setting="retention_failed_generations_days",
        providers=("hosting", "runpod")),
    DataItem(
        "outputs", "generated images", "the generated PNGs and their size and seed", "generated",
        "deliver the images the user generated", _CONTRACT,
        f"{ACCOUNT_LIFETIME} or until the user deletes the generation", "delete",
        table="outputs", user_column="user_id", file_column="blob_key", export_files=True,
        blob_prefix="outputs/{user_id}/", providers=("runpod", "cloudflare_r2")),
    DataItem(
        "transient_inputs", "generation inputs", "img2img/inpaint input images and masks of queued or running jobs",
        "provided", "run img2img and inpaint jobs (policy §4.1: transient inputs)", _CONTRACT,
        "until the job ends", "delete",
        blob_prefix="inputs/{user_id}/", export_files=True, providers=("runpod", "cloudflare_r2")),
    DataItem(
        "uploaded_models", "uploaded models", "checkpoints and LoRAs the user uploaded, with their metadata",
        "provided", "run the user's generations with their own models; never used for training (policy §3)",
        _CONTRACT, f"{ACCOUNT_LIFETIME} or until the user deletes them", "delete",
        table="assets", user_column="user_id", only=("kind", ("checkpoint", "lora")), file_column="blob_key",
        export_files=True, blob_prefix="assets/{user_id}/", providers=("runpod", "cloudflare_r2")),
    DataItem(
        "reference_images", "reference images", "reference images (stored re-encoded, without metadata)",
        "provided", "img2img and inpaint inputs the user keeps; never used for training (policy §3)", _CONTRACT,
        f"{ACCOUNT_LIFETIME} or until the user deletes them", "delete",
        table="assets", user_column="user_id", only=("kind", ("reference_image",)), file_column="blob_key",
        export_files=True, blob_prefix="assets/{user_id}/", providers=("runpod", "cloudflare_r2")),
    DataItem(
        "presets", "presets", "saved workflow defaults", "provided", "prefill the generate form", _CONTRACT,
        f"{ACCOUNT_LIFETIME} or until the user deletes them", "delete",
        table="presets", user_column="user_id", providers=("hosting",)),
    DataItem(
        "published_workflows", "published workflows", "workflow versions an administrator published",
        "provided", "the shared workflow library; versions never change so every generation can be reproduced",
        "legitimate interests in a reproducible workflow library (GDPR Art. 6(1)(f))",
        "the workflow stays; the publisher's id is removed when their account is erased", "anonymize",
        table="published_workflows", user_column="published_by", anonymize=("published_by",),
        providers=("hosting",)),
    DataItem(
        "notifications", "notifications", "in-app notices (export ready, policy changes, request updates)",
        "generated", "tell the user about their account", _CONTRACT,
        f"{ACCOUNT_LIFETIME}; read ones retention_read_notifications_days after reading", "delete",
        table="notifications", user_column="user_id", retention_setting="retention_read_notifications_days",
        providers=("hosting",)),
    DataItem(
        "exports", "exports", "the user's data exports: when, status, expiry (the ZIPs themselves are not "
        "included in a later export)", "generated", "answer access and portability requests (GDPR Art. 15, 20)",
        "legal obligation (GDPR Art. 6(1)(c), Art. 15, 20)",
        "the ZIP until export_expiry_days; the record retention_exports_days after that", "delete",
        table="exports", user_column="user_id", blob_prefix="exports/{user_id}/",
        retention_setting="export_expiry_days", providers=("cloudflare_r2",)),
    DataItem(
        "erasure_requests", "erasure log", "account deletion requests; after erasure only salted hashes of the "
        "email and id, times, how it was requested and counts", "automatic",
        "carry out account deletion and prove that it was done", "legal obligation (GDPR Art. 6(1)(c), Art. 17)",
        "retention_erasure_log_days after the erasure", "legal_hold",
        table="erasures", user_column="user_id", anonymize=("user_id",),
        hold=LegalHold("proof that the erasure was carried out (GDPR Art. 5(2) accountability, Art. 17; "
                       "CCPA regulations §7101: records of consumer requests for 24 months)",
                       "retention_erasure_log_days", "completed_at"),
        retention_setting="retention_erasure_log_days", providers=("hosting",)),
    DataItem(
        "privacy_requests", "privacy requests", "rights requests (access, deletion, correction, ...) with the "
        "requester's email, status history and answer", "provided",
        "answer rights requests within the deadline and prove it (policy §8)",
        "legal obligation (GDPR Art. 6(1)(c), Art. 12, 15-22)",
        "retention_privacy_requests_days after the request is closed", "legal_hold",
        table="privacy_requests", user_column="user_id", email_column="email",
        export_exclude=("code_hash",), anonymize=("user_id", "code_hash"),
        hold=LegalHold("proof that the request was answered in time (GDPR Art. 5(2), 12(3); CCPA regulations "
                       "§7101: 24 months)", "retention_privacy_requests_days", "closed_at"),
        retention_setting="retention_privacy_requests_days", providers=("hosting", "smtp")),
    DataItem(
        "privacy_request_events", "privacy requests", "the audit trail of privacy requests: who moved a request "
        "(the acting administrator), when, from which state to which, and the note", "generated",
        "prove how and when each request was handled (policy §8)", "legal obligation (GDPR Art. 6(1)(c), Art. 5(2))",
        "as long as its request (deleted with it)", "legal_hold",
        table="privacy_request_events", user_column="actor_id", anonymize=("actor_id",),
        hold=LegalHold("proof of how each request was handled (GDPR Art. 5(2), 12(3); CCPA regulations §7101)",
                       "retention_privacy_requests_days"),
        retention_setting="retention_privacy_requests_days", providers=("hosting",),
        note="the user here is the administrator who acted; a requester's trail goes with their request"),
    DataItem(
        "privacy_request_emails", "emails", "emails to a privacy requester: verification codes, receipts and "
        "outcomes with their reasons (address, subject, text, delivery status)", "generated",
        "verify the requester and tell them the outcome (policy §8)", "legal obligation (GDPR Art. 6(1)(c), 12)",
        "retention_outbound_emails_days", "legal_hold",
        table="outbound_emails", user_column="user_id", email_column="to_address",
        only=("kind", ("privacy_request.code", "privacy_request.received", "privacy_request.completed",
                       "privacy_request.denied", "privacy_request.extended", "privacy_request.canceled")),
        anonymize=("user_id",),
        hold=LegalHold("proof that the requester was told the outcome, also of a deletion (GDPR Art. 5(2), 12(3))",
                       "retention_outbound_emails_days"),
        retention_setting="retention_outbound_emails_days", providers=("smtp",)),
    # Records (policy §9, §4.2, §4.4; imagen/privacy/records): the recorder is the acting administrator.
    DataItem(
        "breach_register", "records kept by administrators", "breaches, legal requests and business-transfer "
        "notices the user recorded as an administrator", "provided",
        "the breach register (GDPR Art. 33(5)), the legal-request log (policy §4.2), transfer notices (§4.4)",
        "legal obligation (GDPR Art. 6(1)(c), Art. 5(2), 33(5))",
        "kept as the register; the recorder's id is removed when their account is erased", "anonymize",
        table="breaches", user_column="recorded_by", anonymize=("recorded_by",), providers=("hosting",)),
    DataItem(
        "legal_request_log", "records kept by administrators", "legal requests the user logged as an administrator",
        "provided", "the legal-request log (policy §4.2)", "legal obligation (GDPR Art. 6(1)(c), Art. 5(2))",
        "kept as the log; the recorder's id is removed when their account is erased", "anonymize",
        table="legal_requests", user_column="recorded_by", anonymize=("recorded_by",), providers=("hosting",)),
    DataItem(
        "transfer_notices", "records kept by administrators", "business-transfer notices the user sent",
        "provided", "prove that users were told before a transfer (policy §4.4)",
        "legitimate interests in proving notice (GDPR Art. 6(1)(f))",
        "kept as the record; the recorder's id is removed when their account is erased", "anonymize",
        table="transfer_notices", user_column="recorded_by", anonymize=("recorded_by",), providers=("hosting",)),
    DataItem(
        "breach_notices", "security incidents", "breaches that affected the user and when the user was told",
        "generated", "tell affected users about a breach (policy §9; GDPR Art. 34)",
        "legal obligation (GDPR Art. 6(1)(c), Art. 34)",
        f"{ACCOUNT_LIFETIME}; on erasure the breach keeps only its number of affected users", "delete",
        table="breach_affected_users", user_column="user_id", providers=("hosting",)),
    DataItem(
        "legal_request_subjects", "legal requests", "legal or law-enforcement requests that named the user",
        "generated", "record what was asked of us and disclosed about whom (policy §4.2)",
        "legal obligation (GDPR Art. 6(1)(c))",
        f"{ACCOUNT_LIFETIME}; on erasure the request keeps only its number of accounts", "delete",
        table="legal_request_users", user_column="user_id", providers=("hosting",),
        withheld="an authority's request may come with an order not to tell the person it concerns "
                 "(GDPR Art. 23(1)(d)); ask us in writing and we will say what we can"),
    # Consent and policy (imagen/consent, imagen/privacy/minors.py).
    DataItem(
        "marketing_consents", "consent history", "written consents to use one of the user's images in marketing: "
        "the text shown, when, the policy version, withdrawal, and whether an administrator marked the image",
        "provided", "use an image in marketing only with its owner's written consent (policy §3)",
        "consent (GDPR Art. 6(1)(a), Art. 7(1))", f"{ACCOUNT_LIFETIME} or until the image is deleted", "delete",
        table="output_marketing_consents", user_column="user_id", export_exclude=("marked_by",),
        providers=("hosting",),
        note="marked_by is the marking administrator's id; it becomes empty when that account is erased"),
    DataItem(
        "minor_reports", "reports about a minor", "reports that the account belongs to someone under 18: the "
        "account's email or an image/generation id as reported, the reporter's details, the decision",
        "provided", "find and delete accounts of minors (policy §10)",
        "legal obligation and legitimate interests in keeping minors off the service (GDPR Art. 6(1)(c), (f))",
        "until decided; confirming erases the account and empties what identified it, the decision stays",
        "anonymize", table="minor_reports", user_column="subject_user_id", email_column="subject_email",
        export_exclude=("reporter_email", "details", "resolved_by"),
        anonymize=("subject_user_id", "subject_email", "subject_reference", "details"), providers=("hosting",),
        note="the reporter's email and words are a third party's and are not exported to the reported user; "
             "resolved_by is the deciding administrator's id, emptied when that account is erased"),
    DataItem(
        "analytics_events", "analytics events", "product analytics events", "automatic",
        "product analytics, only with consent (policy §6)", "consent (GDPR Art. 6(1)(a))", "not collected",
        "delete", collected=False,
        note="this build collects no product analytics: no events are stored and none are sent to any provider"),
    DataItem(
        "insights", "model-improvement insights", "signals derived from generations for model improvement",
        "generated", "improve the service from anonymized, aggregated signals (policy §3)",
        "consent (GDPR Art. 6(1)(a))", "not collected", "delete", collected=False,
        note="this build derives no insight rows; each generation's consent stamp is kept for when it does"),
    # Trust and safety (imagen/safety, docs/safety.md): preserved evidence is a legal hold that outlives erasure.
    DataItem(
        "safety_cases", "safety cases", "moderation cases about the account (hash match, user report, flagged "
        "prompts): kind, status, the account's id and email, the NCMEC report id", "generated",
        "act on child sexual abuse material and abuse of the service, and report to NCMEC (policy §4.3, §10)",
        "legal obligation (18 U.S.C. §2258A; GDPR Art. 6(1)(c)) and legitimate interests (Art. 6(1)(f))",
        "evidence_retention_days from the case (longer if preserved), also after account erasure", "legal_hold",
        table="safety_cases", user_column="user_id", email_column="user_email",
        hold=EVIDENCE_HOLD,
        retention_setting="evidence_retention_days", providers=("hosting",), disclosed_to=(NCMEC_RECIPIENT,),
        withheld=INVESTIGATION_WITHHELD),
    DataItem(
        "safety_evidence", "safety cases", "evidence preserved with a case: the matched file (encrypted, in "
        "quarantine), its hashes and the match, the account's id, email, IP and time, the prompt", "generated",
        "preserve evidence for NCMEC and law enforcement (policy §4.3)",
        "legal obligation (18 U.S.C. §2258A(h); GDPR Art. 6(1)(c))",
        "evidence_retention_days from the case (longer if preserved), also after account erasure", "legal_hold",
        table="safety_evidence", user_column="user_id", email_column="user_email",
        hold=EVIDENCE_HOLD,
        retention_setting="evidence_retention_days", providers=("hosting",), disclosed_to=(NCMEC_RECIPIENT,),
        withheld=INVESTIGATION_WITHHELD),
    DataItem(
        "safety_case_actions", "safety cases", "the audit trail of moderation: the moderator who acted, when, "
        "the action and note", "generated", "prove how each case was handled (policy §4.3)",
        "legal obligation and legitimate interests (GDPR Art. 6(1)(c), (f))", "as long as its case (deleted with it)",
        "legal_hold", table="safety_case_actions", user_column="actor_id", email_column="actor_email",
        hold=LegalHold("proof of how each case was handled, kept with the case", "evidence_retention_days"),
        retention_setting="evidence_retention_days", providers=("hosting",),
        note="the user here is the moderator who acted"),
    DataItem(
        "user_reports", "reports you made", "images you reported to the moderators and why", "provided",
        "let users report abusive images (policy §4.3)", "legitimate interests (GDPR Art. 6(1)(f))",
        "as long as its case; your id is removed when your account is erased", "anonymize",
        table="user_reports", user_column="reporter_id", anonymize=("reporter_id",), providers=("hosting",)),
    DataItem(
        "prompt_refusals", "refused prompts", "prompts the prompt rules refused: rule, category, the prompt",
        "provided", "flag repeated attempts to generate forbidden content for review (policy §4.3, §10)",
        "legitimate interests in keeping the service safe (GDPR Art. 6(1)(f))", "prompt_refusals_retention_days",
        "delete", table="prompt_refusals", user_column="user_id",
        retention_setting="prompt_refusals_retention_days", providers=("hosting",)),
]

NOT_PERSONAL: list[NotPersonal] = [
    NotPersonal("policy_versions", "the published versions of the privacy policy; no user data"),
]


def item(name: str) -> DataItem:
    return next(i for i in DATA_MAP if i.name == name)


def personal_tables(metadata: MetaData) -> set[str]:
    """Tables that reference a user (directly or through another such table) or carry an identifying column."""
    found = {"users"} if "users" in metadata.tables else set()
    found |= {t.name for t in metadata.tables.values() if IDENTIFYING_COLUMNS & set(t.c.keys())}
    changed = True
    while changed:
        changed = False
        for table in metadata.tables.values():
            if table.name not in found and any(fk.column.table.name in found for fk in table.foreign_keys):
                found.add(table.name)
                changed = True
    return found


def undeclared_tables(metadata: MetaData) -> list[str]:
    declared = {i.table for i in DATA_MAP if i.table} | {n.table for n in NOT_PERSONAL}
    return sorted(personal_tables(metadata) - declared)


def problems(metadata: MetaData, settings_fields: set[str]) -> list[str]:
    """What is wrong with the declarations themselves (columns that don't exist, unknown settings, ...)."""
    out: list[str] = []
    names = [i.name for i in DATA_MAP]
    out += [f"duplicate name {n!r}" for n in sorted({n for n in names if names.count(n) > 1})]
    for i in DATA_MAP:
        if i.collected and not (i.table or i.blob_prefix):
            out.append(f"{i.name}: collected but names no table or blob prefix")
        if i.erasure == "legal_hold" and i.hold is None:
            out.append(f"{i.name}: legal_hold without a LegalHold")
        for key in (i.retention_setting, i.hold.setting if i.hold else None):
            if key and key not in settings_fields:
                out.append(f"{i.name}: unknown setting {key!r}")
        table = metadata.tables.get(i.table) if i.table else None
        if table is None:
            continue  # declared ahead of its table (another part of the domain): checked once it exists
        columns = [i.user_column, i.email_column, i.file_column, *i.export_exclude, *i.anonymize,
                   i.only[0] if i.only else None, i.hold.clock if i.hold else None]
        out += [f"{i.name}: {table.name} has no column {c!r}" for c in columns if c and c not in table.c]
        out += [f"{i.name}: cannot empty NOT NULL column {table.name}.{c}" for c in i.anonymize
                if c in table.c and not table.c[c].nullable]
        if i.user_column is None:
            out.append(f"{i.name}: a table entry needs user_column")
    return out
