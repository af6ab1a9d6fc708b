"""The data map: the one declaration of every table and blob kind that holds personal data.

Export (`exports.py`), erasure (`erasure.py`), the residue scan (`residue.py`), the processing record (`ropa.py`),
retention (`retention.py`: its purge rules are generated from `period` and `hold`) and the privacy centre all read
it. A test walks the metadata and fails when a table that references a user (or another personal table), or has a
user-identifying column, is declared neither here nor in NOT_PERSONAL.

Adding a table: append a `DataItem` (keyword arguments only) to DATA_MAP, or a `NotPersonal` to NOT_PERSONAL, and
run `tests/test_privacy_core.py`. `name` is the export's JSON section; `period.setting` and `hold.setting` name
Settings attributes (days) and are the only place a retention period is tied to its data; `identifiers` names the
columns whose values identify the person besides their id and email (IP addresses, browsers, payment or device
ids): erasure gathers them before it deletes anything and the residue scan searches for them; `providers` are
provider ids as the policy's §4.1 table lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import ColumnElement, MetaData, Table, func, or_

Source = Literal["provided", "automatic", "generated"]
Action = Literal["delete", "anonymize", "legal_hold"]
ACCOUNT_LIFETIME = "account lifetime"
IDENTIFYING_COLUMNS = frozenset({"user_id", "email", "ip_address", "user_agent"})
# Columns that identify a person by value rather than by reference: an entry whose table has one must name it in
# `identifiers` (so erasure gathers it and the residue scan searches for it). This build stores only the first two;
# the others are here so the table that brings one (billing, devices, profiles) cannot forget to declare it.
IDENTIFYING_VALUES = frozenset({"ip_address", "user_agent", "full_name", "display_name", "phone",
                                "stripe_customer_id", "payment_method_id", "device_id"})
Only = tuple[str, tuple[str, ...]]  # (column, values): a part of a table


@dataclass(frozen=True, kw_only=True)
class Period:
    """A retention period (policy §7): a row goes `setting` days after its `clock` column; a row whose clock is
    empty has not started its period (an unread notice, a running job). `only`: the rows it applies to; `blank`:
    empty these columns instead of deleting the row."""

    setting: str
    what: str  # what goes, as the retention plan shows it
    clock: str = "created_at"
    only: Only | None = None
    blank: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LegalHold:
    """Why rows are kept after erasure, and until when: `setting` days after the first of the `clock` columns that
    is set (none set: the period has not started, e.g. an open request). `until` names a column holding the end
    itself (a hold extended per row), used where set; `follows` names the column pointing at the row this one is
    kept with: the hold is that row's, and ends when its ends or it is gone. The retention run deletes held rows
    once their hold ends, and the residue scan calls a finding in such a row residue."""

    reason: str
    setting: str
    clock: str | tuple[str, ...] = "created_at"
    until: str | None = None
    follows: str | None = None

    @property
    def clocks(self) -> tuple[str, ...]:
        return (self.clock,) if isinstance(self.clock, str) else self.clock


@dataclass(frozen=True, kw_only=True)
class DataItem:
    name: str  # unique; the section of data.json in an export
    category: str
    description: str
    source: Source
    purpose: str
    legal_basis: str
    retention: str  # in words; "account lifetime" allowed; setting names become the configured periods
    erasure: Action
    table: str | None = None
    user_column: str | None = None  # the column holding the user's id
    email_column: str | None = None  # rows that name the user by email only are the user's too
    only: Only | None = None  # the part of the table this entry covers
    blob_prefix: str | None = None  # "outputs/{user_id}/": blobs of this kind
    file_column: str | None = None  # a row's blob key: exported as a file, deleted on erasure
    export_files: bool = False
    export_exclude: tuple[str, ...] = ()  # never exported (hashes of secrets)
    anonymize: tuple[str, ...] = ()  # emptied on erasure (anonymize, legal_hold)
    identifiers: tuple[str, ...] = ()  # columns whose values identify the person (see the module docstring)
    period: Period | None = None  # retention while the account exists (and of what erasure leaves)
    hold: LegalHold | None = None
    providers: tuple[str, ...] = ()
    # Recipients that are not our processors, to whom the law makes us disclose (named in the processing record).
    disclosed_to: tuple[str, ...] = ()
    collected: bool = True  # False: this build stores none; the export says so in an empty section
    note: str = ""
    # Set when the law restricts the subject's access (GDPR Art. 23): the export and the privacy centre name the
    # category and this reason, and leave its rows out.
    withheld: str = ""

    @property
    def retention_setting(self) -> str | None:
        return self.period.setting if self.period else None

    def prefix_for(self, user_id: str) -> str | None:
        return self.blob_prefix.format(user_id=user_id) if self.blob_prefix else None

    def rows_of(self, table: Table, user_id: str, email: str | None) -> ColumnElement[bool]:
        """This entry's rows of one user: by id, or by email where the entry has an email column."""
        cond = table.c[self.user_column] == user_id
        if self.email_column and email:
            cond = or_(cond, func.lower(table.c[self.email_column]) == email.strip().lower())
        if self.only:
            cond = cond & table.c[self.only[0]].in_(self.only[1])
        return cond


@dataclass(frozen=True, kw_only=True)
class NotPersonal:
    table: str
    reason: str


_CONTRACT = "contract (GDPR Art. 6(1)(b))"
_SECURITY = "legitimate interests in keeping accounts and the service secure (GDPR Art. 6(1)(f))"
_FAILED = "failed and canceled ones: retention_failed_generations_days"
_NOTICE_MAIL_KINDS = ("notice.export_ready", "notice.policy_changed", "notice.breach", "notice.business_transfer")
_PRIVACY_MAIL_KINDS = ("privacy_request.code", "privacy_request.received", "privacy_request.completed",
                       "privacy_request.denied", "privacy_request.extended", "privacy_request.canceled")
# imagen/accounts/links.py, login.py: mail about the account itself.
ACCOUNT_MAIL_KINDS = ("account.verify_email", "account.password_reset", "account.password_changed",
                      "account.email_change", "account.email_changed", "account.login_paused")

# Safety cases and their evidence (imagen/safety): one hold, and one reason the person is not shown them.
EVIDENCE_REASON = ("evidence a provider must preserve after a report to NCMEC (18 U.S.C. §2258A(h), one year "
                   "under the REPORT Act)")
# A case's hold ends at its hold_until (a moderator's `preserve` extends it); its evidence and audit follow it.
EVIDENCE_HOLD = LegalHold(reason=EVIDENCE_REASON, setting="evidence_retention_days", until="hold_until")
NCMEC_RECIPIENT = "NCMEC's CyberTipline, when a case is reported (18 U.S.C. §2258A; policy §4.3)"
INVESTIGATION_WITHHELD = ("telling a person about an investigation of child sexual abuse material could obstruct it "
                          "(18 U.S.C. §2258A; GDPR Art. 23(1)(d))")

# Billing records (imagen/billing): kept for the accounting period, also after an erasure, without the user's id.
_BOOKKEEPING = "legal obligation to keep accounting records (GDPR Art. 6(1)(c); e.g. UK CA 2006 s.388, HGB §257)"
BILLING_HOLD = LegalHold(reason="accounting records the law requires us to keep (e.g. 6 years in the UK, up to 10 "
                                "in Germany; IMAGEN_BILLING_RECORDS_RETENTION_DAYS)",
                         setting="billing_records_retention_days")

DATA_MAP: list[DataItem] = [
    DataItem(
        name="account", category="account", source="provided",
        description="email address, hashed password, date of birth, country, role",
        purpose="provide the account: sign-in, service messages, the 18+ requirement (policy §1.1, §10)",
        legal_basis=f"{_CONTRACT}; age check: legal obligation (Art. 6(1)(c))", retention=ACCOUNT_LIFETIME,
        erasure="delete", table="users", user_column="id", export_exclude=("password_hash",),
        providers=("hosting", "smtp", "postmark", "stripe")),
    DataItem(
        name="login_sessions", category="credentials", source="automatic",
        description="signed-in browsers: IP address, browser, expiry (tokens only hashed)",
        purpose="keep the user signed in", legal_basis=_CONTRACT,
        retention="until logout or expiry, then retention_expired_sessions_days", erasure="delete",
        table="login_sessions", user_column="user_id", export_exclude=("token_hash", "csrf_token"),
        identifiers=("ip_address", "user_agent"),
        period=Period(setting="retention_expired_sessions_days", clock="expires_at",
                      what="login sessions expired longer than the period"),
        providers=("hosting",)),
    DataItem(
        name="api_keys", category="credentials", source="provided",
        description="API keys' names, prefixes and last use (the keys only hashed)",
        purpose="API access", legal_basis=_CONTRACT, retention="until revoked or the account is deleted",
        erasure="delete", table="api_keys", user_column="user_id", export_exclude=("key_hash",),
        providers=("hosting",)),
    # --- accounts security (imagen/accounts/links.py, twofactor.py, throttle.py) ---
    DataItem(
        name="account_links", category="credentials", source="generated",
        description="emailed links to verify an address, reset the password or confirm a new address: purpose, "
                    "the new address being confirmed, expiry and use (the tokens only as keyed hashes)",
        purpose="prove the user reads mail at the address; let them reset a forgotten password",
        legal_basis=_CONTRACT, retention="until used or expired, then retention_account_tokens_days",
        erasure="delete", table="account_tokens", user_column="user_id", export_exclude=("token_hash",),
        period=Period(setting="retention_account_tokens_days", clock="expires_at",
                      what="emailed account links expired longer ago than the period"),
        providers=("hosting",)),
    DataItem(
        name="two_factor", category="credentials", source="generated",
        description="whether two-factor sign-in is on and since when (the TOTP secret is stored encrypted and "
                    "never exported)",
        purpose="protect the account with a second factor", legal_basis=_CONTRACT,
        retention="until the user turns two-factor off or the account is deleted", erasure="delete",
        table="totp_credentials", user_column="user_id", export_exclude=("secret_encrypted", "last_step"),
        providers=("hosting",)),
    DataItem(
        name="recovery_codes", category="credentials", source="generated",
        description="two-factor recovery codes: when made and used (the codes only as keyed hashes)",
        purpose="sign in when the authenticator is lost", legal_basis=_CONTRACT,
        retention="until replaced, two-factor is turned off or the account is deleted", erasure="delete",
        table="recovery_codes", user_column="user_id", export_exclude=("code_hash",), providers=("hosting",)),
    DataItem(
        name="login_failures", category="security log", source="automatic",
        description="failed sign-ins counted for throttling: time and a keyed hash of the IP address",
        purpose="slow down password guessing (policy §9)", legal_basis=_SECURITY,
        retention="retention_login_failures_days", erasure="delete", table="login_failures", user_column="user_id",
        export_exclude=("ip_hash",),
        period=Period(setting="retention_login_failures_days", what="failed-sign-in counters"),
        providers=("hosting",)),
    DataItem(
        name="account_emails", category="emails", source="generated",
        description="account emails: address confirmation and password-reset links, notices of a changed "
                    "password or address and of paused sign-ins (address, subject, text, delivery status)",
        purpose="secure the account and tell the user about changes to it", legal_basis=_CONTRACT,
        retention="retention_outbound_emails_days", erasure="delete",
        table="outbound_emails", user_column="user_id", email_column="to_address", only=("kind", ACCOUNT_MAIL_KINDS),
        period=Period(setting="retention_outbound_emails_days", what="account emails"),
        providers=("smtp",)),
    DataItem(
        name="a1111_options", category="settings", source="provided",
        description="the default checkpoint chosen for the AUTOMATIC1111-compatible API",
        purpose="use the checkpoint the user chose for their /sdapi/v1 calls", legal_basis=_CONTRACT,
        retention=ACCOUNT_LIFETIME, erasure="delete", table="a1111_options", user_column="user_id",
        providers=("hosting",)),
    DataItem(
        name="webhook_endpoints", category="integrations", source="provided",
        description="webhook URLs the user registered, the events they asked for, their delivery health",
        purpose="tell the user's own systems of their events", legal_basis=_CONTRACT,
        retention="until the user deletes the webhook or the account", erasure="delete",
        table="webhook_endpoints", user_column="user_id", export_exclude=("secret",),
        providers=("hosting",)),
    DataItem(
        name="webhook_deliveries", category="integrations", source="generated",
        description="the delivery log: each event sent to a webhook (its payload, attempts, outcome)",
        purpose="deliver events with retries and show the user what was sent", legal_basis=_CONTRACT,
        retention="until the user deletes the webhook or the account", erasure="delete",
        table="webhook_deliveries", user_column="user_id", providers=("hosting",)),
    DataItem(
        name="security_events", category="security log", source="automatic",
        description="sign-ups, logins, logouts, failed logins with IP address and browser; an admin suspending, "
                    "restoring or deleting an account",
        purpose="secure accounts, detect abuse (policy §1.2, §9)", legal_basis=_SECURITY,
        retention="retention_security_log_days", erasure="anonymize",
        table="security_events", user_column="user_id", email_column="email",
        anonymize=("user_id", "email", "ip_address", "user_agent"), identifiers=("ip_address", "user_agent"),
        period=Period(setting="retention_security_log_days",
                      what="sign-up, login, logout and failed-login events"),
        providers=("hosting",), note="on erasure the events stay as anonymous counts (kind and time only)"),
    DataItem(
        name="consents", category="consent history", source="provided",
        description="every consent choice (policy acceptance, model improvement, marketing) with time, policy "
                    "version and where it was made",
        purpose="record the user's choices and prove consent (GDPR Art. 7(1))",
        legal_basis="legal obligation (GDPR Art. 6(1)(c), Art. 7(1))", retention=ACCOUNT_LIFETIME,
        erasure="delete", table="consent_records", user_column="user_id", providers=("hosting",)),
    DataItem(
        name="generations", category="generation parameters and prompts", source="provided",
        description="prompts, parameters, models used (by content hash), the consent stamp, status, timings",
        purpose="run the generations the user asks for and keep their history; model improvement only from "
                "generations stamped with consent (policy §3)",
        legal_basis=f"{_CONTRACT}; model improvement: consent (Art. 6(1)(a))",
        retention=f"{ACCOUNT_LIFETIME} or until the user deletes them; {_FAILED}", erasure="delete",
        table="generations", user_column="user_id",
        period=Period(setting="retention_failed_generations_days", clock="finished_at",
                      only=("status", ("failed", "canceled")),
                      what="failed and canceled generations (prompt and parameters)"),
        providers=("hosting", "runpod")),
    DataItem(
        name="outputs", category="generated images", source="generated",
        description="the generated PNGs and their size and seed",
        purpose="deliver the images the user generated", legal_basis=_CONTRACT,
        retention=f"{ACCOUNT_LIFETIME} or until the user deletes the image or its generation", erasure="delete",
        table="outputs", user_column="user_id", file_column="blob_key", export_files=True,
        blob_prefix="outputs/{user_id}/", providers=("runpod", "cloudflare_r2")),
    DataItem(
        name="output_thumbnails", category="generated images", source="generated",
        description="small WebP copies of the generated images, made when each is stored, for the gallery",
        purpose="show the gallery without sending every full-size image", legal_basis=_CONTRACT,
        retention=f"{ACCOUNT_LIFETIME} or until the user deletes the image or its generation", erasure="delete",
        blob_prefix="thumbs/{user_id}/", export_files=True, providers=("cloudflare_r2",)),
    DataItem(
        name="transient_inputs", category="generation inputs", source="provided",
        description="img2img/inpaint input images and masks of queued or running jobs",
        purpose="run img2img and inpaint jobs (policy §4.1: transient inputs)", legal_basis=_CONTRACT,
        retention="until the job ends", erasure="delete",
        blob_prefix="inputs/{user_id}/", export_files=True, providers=("runpod", "cloudflare_r2")),
    DataItem(
        name="uploaded_models", category="uploaded models", source="provided",
        description="checkpoints and LoRAs the user uploaded, with their metadata",
        purpose="run the user's generations with their own models; never used for training (policy §3)",
        legal_basis=_CONTRACT, retention=f"{ACCOUNT_LIFETIME} or until the user deletes them", erasure="delete",
        table="assets", user_column="user_id", only=("kind", ("checkpoint", "lora")), file_column="blob_key",
        export_files=True, blob_prefix="assets/{user_id}/", providers=("runpod", "cloudflare_r2")),
    DataItem(
        name="reference_images", category="reference images", source="provided",
        description="reference images (stored re-encoded, without metadata)",
        purpose="img2img and inpaint inputs the user keeps; never used for training (policy §3)",
        legal_basis=_CONTRACT, retention=f"{ACCOUNT_LIFETIME} or until the user deletes them", erasure="delete",
        table="assets", user_column="user_id", only=("kind", ("reference_image",)), file_column="blob_key",
        export_files=True, blob_prefix="assets/{user_id}/", providers=("runpod", "cloudflare_r2")),
    DataItem(
        name="presets", category="presets", source="provided", description="saved workflow defaults",
        purpose="prefill the generate form", legal_basis=_CONTRACT,
        retention=f"{ACCOUNT_LIFETIME} or until the user deletes them", erasure="delete",
        table="presets", user_column="user_id", providers=("hosting",)),
    DataItem(
        name="published_workflows", category="published workflows", source="provided",
        description="workflow versions an administrator published",
        purpose="the shared workflow library; versions never change so every generation can be reproduced",
        legal_basis="legitimate interests in a reproducible workflow library (GDPR Art. 6(1)(f))",
        retention="the workflow stays; the publisher's id is removed when their account is erased",
        erasure="anonymize", table="published_workflows", user_column="published_by", anonymize=("published_by",),
        providers=("hosting",)),
    DataItem(
        name="notifications", category="notifications", source="generated",
        description="in-app notices (export ready, policy changes, request updates)",
        purpose="tell the user about their account", legal_basis=_CONTRACT,
        retention=f"{ACCOUNT_LIFETIME}; read ones retention_read_notifications_days after reading",
        erasure="delete", table="notifications", user_column="user_id",
        period=Period(setting="retention_read_notifications_days", clock="read_at",
                      what="in-app notices read longer ago than the period"),
        providers=("hosting",)),
    DataItem(
        name="exports", category="exports", source="generated",
        description="the user's data exports: when, status, expiry (the ZIPs themselves are not included in a "
                    "later export)",
        purpose="answer access and portability requests (GDPR Art. 15, 20)",
        legal_basis="legal obligation (GDPR Art. 6(1)(c), Art. 15, 20)",
        retention="the ZIP for export_expiry_days (until its link expires); the record retention_exports_days "
                  "after that",
        erasure="delete", table="exports", user_column="user_id", blob_prefix="exports/{user_id}/",
        period=Period(setting="retention_exports_days", clock="expires_at",
                      what="export records expired longer ago than the period"),
        providers=("cloudflare_r2",)),
    DataItem(
        name="erasure_requests", category="erasure log", source="automatic",
        description="account deletion requests; after erasure only salted hashes of the email and id, times, how "
                    "it was requested and counts",
        purpose="carry out account deletion and prove that it was done",
        legal_basis="legal obligation (GDPR Art. 6(1)(c), Art. 17)",
        retention="retention_erasure_log_days after the erasure (or the cancellation)", erasure="legal_hold",
        table="erasures", user_column="user_id", anonymize=("user_id",),
        hold=LegalHold(reason="proof that the erasure was carried out (GDPR Art. 5(2) accountability, Art. 17; "
                              "CCPA regulations §7101: records of consumer requests for 24 months)",
                       setting="retention_erasure_log_days", clock=("completed_at", "canceled_at"),
                       until="hold_until"),
        providers=("hosting",)),
    DataItem(
        name="privacy_requests", category="privacy requests", source="provided",
        description="rights requests (access, deletion, correction, ...) with the requester's email, status "
                    "history and answer",
        purpose="answer rights requests within the deadline and prove it (policy §8)",
        legal_basis="legal obligation (GDPR Art. 6(1)(c), Art. 12, 15-22)",
        retention="retention_privacy_requests_days after the request is closed", erasure="legal_hold",
        table="privacy_requests", user_column="user_id", email_column="email",
        export_exclude=("code_hash",), anonymize=("user_id", "code_hash"),
        hold=LegalHold(reason="proof that the request was answered in time (GDPR Art. 5(2), 12(3); CCPA "
                              "regulations §7101: 24 months)",
                       setting="retention_privacy_requests_days", clock="closed_at"),
        providers=("hosting", "smtp", "postmark")),
    DataItem(
        name="privacy_request_events", category="privacy requests", source="generated",
        description="the audit trail of privacy requests: who moved a request (the acting administrator), when, "
                    "from which state to which, and the note",
        purpose="prove how and when each request was handled (policy §8)",
        legal_basis="legal obligation (GDPR Art. 6(1)(c), Art. 5(2))",
        retention="as long as its request (deleted with it)", erasure="legal_hold",
        table="privacy_request_events", user_column="actor_id", anonymize=("actor_id",),
        hold=LegalHold(reason="proof of how each request was handled (GDPR Art. 5(2), 12(3); CCPA regulations "
                              "§7101)", setting="retention_privacy_requests_days", follows="request_id"),
        providers=("hosting",),
        note="the user here is the administrator who acted; a requester's trail goes with their request"),
    DataItem(
        name="privacy_request_emails", category="emails", source="generated",
        description="emails to a privacy requester: verification codes, receipts and outcomes with their reasons "
                    "(address, subject, text, delivery status)",
        purpose="verify the requester and tell them the outcome (policy §8)",
        legal_basis="legal obligation (GDPR Art. 6(1)(c), 12)",
        retention="retention_outbound_emails_days, then deleted with the address", erasure="legal_hold",
        table="outbound_emails", user_column="user_id", email_column="to_address", only=("kind", _PRIVACY_MAIL_KINDS),
        anonymize=("user_id",),
        hold=LegalHold(reason="proof that the requester was told the outcome, also of a deletion (GDPR Art. 5(2), "
                              "12(3))", setting="retention_outbound_emails_days"),
        providers=("smtp", "postmark")),
    # Notices emailed as well as shown in-app (imagen/notifications/service.py NOTICE_MAIL_KINDS), and the
    # addresses mail must not go to (imagen/mail/suppressions.py).
    DataItem(
        name="notice_emails", category="emails", source="generated",
        description="notices emailed to the user as well as shown in-app: export ready, policy changes, security "
                    "incidents, business transfers (address, subject, text, delivery status)",
        purpose="tell the user about their data and the service (policy §4.4, §9, §11)",
        legal_basis=_CONTRACT + " and legal obligation (GDPR Art. 6(1)(c), 34)",
        retention="retention_outbound_emails_days", erasure="delete",
        table="outbound_emails", user_column="user_id", email_column="to_address", only=("kind", _NOTICE_MAIL_KINDS),
        period=Period(setting="retention_outbound_emails_days", what="emailed notices",
                      only=("kind", _NOTICE_MAIL_KINDS)),
        providers=("smtp", "postmark")),
    DataItem(
        name="mail_suppressions", category="emails", source="automatic",
        description="an address we must not email because mail to it bounced for good or was marked as spam "
                    "(reported by Postmark), with the reason",
        purpose="stop sending mail that cannot arrive or is unwanted", legal_basis=(
            "legitimate interests in honouring complaints and in deliverable mail (GDPR Art. 6(1)(f))"),
        retention=ACCOUNT_LIFETIME, erasure="delete", table="mail_suppressions", user_column="user_id",
        email_column="email", providers=("hosting", "postmark")),
    # Records (policy §9, §4.2, §4.4; imagen/privacy/records): the recorder is the acting administrator.
    DataItem(
        name="breach_register", category="records kept by administrators", source="provided",
        description="breaches, legal requests and business-transfer notices the user recorded as an administrator",
        purpose="the breach register (GDPR Art. 33(5)), the legal-request log (policy §4.2), transfer notices "
                "(§4.4)",
        legal_basis="legal obligation (GDPR Art. 6(1)(c), Art. 5(2), 33(5))",
        retention="kept as the register; the recorder's id is removed when their account is erased",
        erasure="anonymize", table="breaches", user_column="recorded_by", anonymize=("recorded_by",),
        providers=("hosting",)),
    DataItem(
        name="legal_request_log", category="records kept by administrators", source="provided",
        description="legal requests the user logged as an administrator",
        purpose="the legal-request log (policy §4.2)", legal_basis="legal obligation (GDPR Art. 6(1)(c), Art. 5(2))",
        retention="kept as the log; the recorder's id is removed when their account is erased", erasure="anonymize",
        table="legal_requests", user_column="recorded_by", anonymize=("recorded_by",), providers=("hosting",)),
    DataItem(
        name="transfer_notices", category="records kept by administrators", source="provided",
        description="business-transfer notices the user sent",
        purpose="prove that users were told before a transfer (policy §4.4)",
        legal_basis="legitimate interests in proving notice (GDPR Art. 6(1)(f))",
        retention="kept as the record; the recorder's id is removed when their account is erased",
        erasure="anonymize", table="transfer_notices", user_column="recorded_by", anonymize=("recorded_by",),
        providers=("hosting",)),
    DataItem(
        name="breach_notices", category="security incidents", source="generated",
        description="breaches that affected the user and when the user was told",
        purpose="tell affected users about a breach (policy §9; GDPR Art. 34)",
        legal_basis="legal obligation (GDPR Art. 6(1)(c), Art. 34)",
        retention=f"{ACCOUNT_LIFETIME}; on erasure the breach keeps only its number of affected users",
        erasure="delete", table="breach_affected_users", user_column="user_id", providers=("hosting",)),
    DataItem(
        name="legal_request_subjects", category="legal requests", source="generated",
        description="legal or law-enforcement requests that named the user",
        purpose="record what was asked of us and disclosed about whom (policy §4.2)",
        legal_basis="legal obligation (GDPR Art. 6(1)(c))",
        retention=f"{ACCOUNT_LIFETIME}; on erasure the request keeps only its number of accounts", erasure="delete",
        table="legal_request_users", user_column="user_id", providers=("hosting",),
        withheld="an authority's request may come with an order not to tell the person it concerns "
                 "(GDPR Art. 23(1)(d)); ask us in writing and we will say what we can"),
    # Consent and policy (imagen/consent, imagen/privacy/minors.py).
    DataItem(
        name="marketing_consents", category="consent history", source="provided",
        description="written consents to use one of the user's images in marketing: the text shown, when, the "
                    "policy version, withdrawal, and whether an administrator marked the image",
        purpose="use an image in marketing only with its owner's written consent (policy §3)",
        legal_basis="consent (GDPR Art. 6(1)(a), Art. 7(1))",
        retention=f"{ACCOUNT_LIFETIME} or until the image is deleted", erasure="delete",
        table="output_marketing_consents", user_column="user_id", export_exclude=("marked_by",),
        providers=("hosting",),
        note="marked_by is the marking administrator's id; it becomes empty when that account is erased"),
    DataItem(
        name="minor_reports", category="reports about a minor", source="provided",
        description="reports that the account belongs to someone under 18: the account's email or an "
                    "image/generation id as reported, the reporter's details, the decision",
        purpose="find and delete accounts of minors (policy §10)",
        legal_basis="legal obligation and legitimate interests in keeping minors off the service (GDPR Art. "
                    "6(1)(c), (f))",
        retention="until decided; confirming erases the account and empties what identified it, the decision stays",
        erasure="anonymize", table="minor_reports", user_column="subject_user_id", email_column="subject_email",
        export_exclude=("reporter_email", "details", "resolved_by"),
        anonymize=("subject_user_id", "subject_email", "subject_reference", "details"), providers=("hosting",),
        note="the reporter's email and words are a third party's and are not exported to the reported user; "
             "resolved_by is the deciding administrator's id, emptied when that account is erased"),
    DataItem(
        name="analytics_events", category="analytics events", source="automatic",
        description="product analytics events", purpose="product analytics, only with consent (policy §6)",
        legal_basis="consent (GDPR Art. 6(1)(a))", retention="not stored here", erasure="delete", collected=False,
        providers=("posthog",),
        note="no events are stored on this server; with IMAGEN_ANALYTICS=posthog, and only while you consent and "
             "your browser sends no Global Privacy Control, three events (signed_up; generation_submitted with "
             "the workflow, size and steps; export_requested) go to PostHog under a keyed pseudonym, never with "
             "your email, prompts, IP address or file names; erasing the account asks PostHog to delete them"),
    DataItem(
        name="insights", category="model-improvement insights", source="generated",
        description="anonymous records derived from generations made with model-improvement consent (parameters, "
                    "timings, image statistics, a hashed prompt summary; the day only)",
        purpose="improve the service from anonymized, aggregated signals (policy §3)",
        legal_basis="consent (GDPR Art. 6(1)(a))", retention="none held about you: the records are anonymous",
        erasure="delete", collected=False,
        note="insight records (the insight_records table) carry no account id, email, prompt, image, IP address or "
             "upload hash, so none is yours to export or erase; a withdrawal applies from the next generation and "
             "what was derived before is already unlinked"),
    # Trust and safety (imagen/safety, docs/safety.md): preserved evidence is a legal hold that outlives erasure.
    DataItem(
        name="safety_cases", category="safety cases", source="generated",
        description="moderation cases about the account (hash match, user report, flagged prompts): kind, status, "
                    "the account's id and email, the report id of every NCMEC submission attempt",
        purpose="act on child sexual abuse material and abuse of the service, and report to NCMEC (policy §4.3, "
                "§10)",
        legal_basis="legal obligation (18 U.S.C. §2258A; GDPR Art. 6(1)(c)) and legitimate interests (Art. "
                    "6(1)(f))",
        retention="evidence_retention_days from the case (longer if preserved), also after account erasure",
        erasure="legal_hold", table="safety_cases", user_column="user_id", email_column="user_email",
        hold=EVIDENCE_HOLD, providers=("hosting",), disclosed_to=(NCMEC_RECIPIENT,),
        withheld=INVESTIGATION_WITHHELD),
    DataItem(
        name="safety_evidence", category="safety cases", source="generated",
        description="evidence preserved with a case: the matched file (encrypted, in quarantine), its hashes and "
                    "the match, the account's id, email, IP and time, the prompt",
        purpose="preserve evidence for NCMEC and law enforcement (policy §4.3)",
        legal_basis="legal obligation (18 U.S.C. §2258A(h); GDPR Art. 6(1)(c))",
        retention="evidence_retention_days from the case (longer if preserved), also after account erasure",
        erasure="legal_hold", table="safety_evidence", user_column="user_id", email_column="user_email",
        identifiers=("ip_address",),
        hold=LegalHold(reason=EVIDENCE_REASON, setting="evidence_retention_days", follows="case_id"),
        providers=("hosting",), disclosed_to=(NCMEC_RECIPIENT,), withheld=INVESTIGATION_WITHHELD),
    DataItem(
        name="safety_case_actions", category="safety cases", source="generated",
        description="the audit trail of moderation: the moderator who acted, when, the action and note",
        purpose="prove how each case was handled (policy §4.3)",
        legal_basis="legal obligation and legitimate interests (GDPR Art. 6(1)(c), (f))",
        retention="as long as its case (deleted with it)", erasure="legal_hold",
        table="safety_case_actions", user_column="actor_id", email_column="actor_email",
        hold=LegalHold(reason="proof of how each case was handled, kept with the case",
                       setting="evidence_retention_days", follows="case_id"),
        providers=("hosting",), note="the user here is the moderator who acted"),
    DataItem(
        name="user_reports", category="reports you made", source="provided",
        description="images you reported to the moderators and why",
        purpose="let users report abusive images (policy §4.3)", legal_basis="legitimate interests (GDPR Art. "
        "6(1)(f))", retention="as long as its case; your id is removed when your account is erased",
        erasure="anonymize", table="user_reports", user_column="reporter_id", anonymize=("reporter_id",),
        export_exclude=("case_id",), providers=("hosting",),
        note="the moderation case a report opened is not exported: cases are withheld (see safety_cases)"),
    DataItem(
        name="prompt_refusals", category="refused prompts", source="provided",
        description="prompts the prompt rules refused: rule, category, the prompt",
        purpose="flag repeated attempts to generate forbidden content for review (policy §4.3, §10)",
        legal_basis="legitimate interests in keeping the service safe (GDPR Art. 6(1)(f))",
        retention="prompt_refusals_retention_days", erasure="delete", table="prompt_refusals", user_column="user_id",
        period=Period(setting="prompt_refusals_retention_days", what="prompts the prompt rules refused"),
        providers=("hosting",)),
    # --- billing (imagen/billing): the accounting records outlive an erasure, without the user's id ---
    DataItem(
        name="credit_balance", category="billing", source="generated",
        description="credits to spend, credits held by queued and running generations, credits owed after a refund "
                    "or dispute",
        purpose="charge for generations (only with IMAGEN_BILLING=stripe)", legal_basis=_CONTRACT,
        retention=ACCOUNT_LIFETIME, erasure="delete", table="billing_accounts", user_column="user_id",
        providers=("hosting",)),
    DataItem(
        name="credit_holds", category="billing", source="generated",
        description="the credits held for each generation and whether they were spent or given back",
        purpose="hold a generation's price until it ends", legal_basis=_CONTRACT, retention=ACCOUNT_LIFETIME,
        erasure="delete", table="billing_holds", user_column="user_id", providers=("hosting",)),
    DataItem(
        name="credit_ledger", category="billing", source="generated",
        description="every movement of the user's credits: purchases, holds, spending, refunds, disputes, grants",
        purpose="keep the accounts of credits sold and spent", legal_basis=f"{_CONTRACT}; {_BOOKKEEPING}",
        retention="billing_records_retention_days, also after erasure (without the user's id)",
        erasure="legal_hold", table="billing_ledger", user_column="user_id", anonymize=("user_id",),
        hold=BILLING_HOLD, providers=("hosting",)),
    DataItem(
        name="purchases", category="billing", source="generated",
        description="receipts of credit packs bought through Stripe: pack, credits, amount, currency, Stripe's "
                    "checkout and payment ids, refunds and disputes",
        purpose="sell credit packs and issue receipts", legal_basis=f"{_CONTRACT}; {_BOOKKEEPING}",
        retention="billing_records_retention_days, also after erasure (without the user's id)",
        erasure="legal_hold", table="billing_purchases", user_column="user_id", anonymize=("user_id",),
        hold=BILLING_HOLD, providers=("hosting", "stripe")),
    DataItem(
        name="billing_cases", category="billing", source="generated",
        description="refunds that left credits owed and payment disputes: what was taken back and what is owed",
        purpose="handle refunds and disputes of payments", legal_basis=f"{_BOOKKEEPING}; legitimate interests in "
        "defending payment disputes (GDPR Art. 6(1)(f))",
        retention="billing_records_retention_days, also after erasure (without the user's id)",
        erasure="legal_hold", table="billing_cases", user_column="user_id", anonymize=("user_id",),
        hold=BILLING_HOLD, providers=("hosting", "stripe")),
]

NOT_PERSONAL: list[NotPersonal] = [
    NotPersonal(table="billing_stripe_events", reason="ids and types of Stripe events already handled; no user data"),
    NotPersonal(table="policy_versions", reason="the published versions of the privacy policy; no user data"),
    NotPersonal(table="analytics_deletions", reason="PostHog person deletions still to confirm after an erasure: "
                "only the keyed pseudonym PostHog knew, not the erased account's id; the row goes once PostHog "
                "agrees"),
    NotPersonal(table="insight_records", reason="anonymous: model-improvement records with no user id, email, "
                "prompt, image, IP address, upload hash or generation id, and only the day (imagen/insights)"),
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


def parent_table(table: Table, column: str) -> Table | None:
    """The table a `follows` column points at (its foreign key)."""
    fks = list(table.c[column].foreign_keys) if column in table.c else []
    return fks[0].column.table if fks else None


def _columns(i: DataItem) -> list[str | None]:
    named = [i.user_column, i.email_column, i.file_column, *i.export_exclude, *i.anonymize, *i.identifiers,
             i.only[0] if i.only else None]
    if i.period:
        named += [i.period.clock, *i.period.blank, i.period.only[0] if i.period.only else None]
    if i.hold:
        named += [*i.hold.clocks, i.hold.until, i.hold.follows]
    return named


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
        if i.hold is not None and i.erasure != "legal_hold":
            out.append(f"{i.name}: a LegalHold needs erasure='legal_hold'")
        for key in (i.retention_setting, i.hold.setting if i.hold else None):
            if key and key not in settings_fields:
                out.append(f"{i.name}: unknown setting {key!r}")
        table = metadata.tables.get(i.table) if i.table else None
        if table is None:
            continue  # declared ahead of its table (another part of the domain): checked once it exists
        out += [f"{i.name}: {table.name} has no column {c!r}" for c in _columns(i) if c and c not in table.c]
        emptied = (*i.anonymize, *(i.period.blank if i.period else ()))
        out += [f"{i.name}: cannot empty NOT NULL column {table.name}.{c}"
                for c in emptied if c in table.c and not table.c[c].nullable]
        out += [f"{i.name}: {table.name}.{c} identifies a person; name it in identifiers"
                for c in sorted(IDENTIFYING_VALUES & set(table.c.keys())) if c not in i.identifiers]
        if i.hold and i.hold.follows and i.hold.follows in table.c:
            parent = parent_table(table, i.hold.follows)
            if parent is None or not any(p.table == parent.name and p.hold for p in DATA_MAP):
                out.append(f"{i.name}: {i.hold.follows} must point at a table held by another entry")
        if i.user_column is None:
            out.append(f"{i.name}: a table entry needs user_column")
    return out
