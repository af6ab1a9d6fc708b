"""Settings from the environment (prefix IMAGEN_); one instance per process, replaceable in tests."""

from __future__ import annotations

import ipaddress
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "changethis", "dev", "development", "test"}

# The operator's details published in the privacy policy: setting → (variable, what it is); their unset defaults.
OPERATOR_SETTINGS = {
    "legal_entity": ("IMAGEN_LEGAL_ENTITY", "the operator's legal name"),
    "postal_address": ("IMAGEN_POSTAL_ADDRESS", "the operator's postal address"),
    "contact_email": ("IMAGEN_CONTACT_EMAIL", "the privacy contact email"),
    "site_domain": ("IMAGEN_SITE_DOMAIN", "the site's domain"),
}
UNSET_OPERATOR = {
    "legal_entity": "(operator name not set: IMAGEN_LEGAL_ENTITY)",
    "postal_address": "(postal address not set: IMAGEN_POSTAL_ADDRESS)",
    "contact_email": "contact-not-set@imagen.invalid",
    "site_domain": "imagen.invalid",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGEN_", env_file=None, extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("./imagen-data")
    database_url: str | None = None
    secret_key: str | None = None
    # Where generations run: in this process (local), on an `imagen worker` fleet (celery), or on RunPod serverless.
    executor: Literal["local", "celery", "runpod"] = "local"
    storage: Literal["local", "s3"] = "local"
    # IMAGEN_EXECUTOR=celery (imagen/fleet/, docs/fleet.md): the broker (Redis or RabbitMQ) and the Redis that carries
    # progress, cancels and the workers' loaded checkpoints (default: the broker when it is Redis).
    broker_url: str = Field(default="", description="redis://... or amqp://...")
    redis_url: str = Field(default="", description="progress, cancel and affinity; default: the Redis broker")
    fleet_affinity: bool = Field(default=True, description="route a job to an idle worker with its checkpoint")
    fleet_job_attempts: int = Field(default=3, ge=1, description="runs of a job whose workers died, then it fails")
    runpod_endpoint_id: str = ""  # IMAGEN_EXECUTOR=runpod: the serverless endpoint
    runpod_api_key: str | None = None
    # The serverless API (tests point it at a local worker); a job's status is polled this often; one call's limit.
    runpod_base_url: str = "https://api.runpod.ai/v2"
    runpod_poll_seconds: float = Field(default=1.0, gt=0, description="between status polls of a RunPod job")
    runpod_request_timeout_seconds: float = Field(default=30.0, gt=0, description="one call to RunPod's API")
    s3_bucket: str = ""  # IMAGEN_STORAGE=s3
    s3_endpoint_url: str = Field(default="", description="S3-compatible endpoint (R2, MinIO, ...); empty: AWS S3")
    # S3 storage (imagen/storage/s3.py); credentials come from boto3's chain (AWS_ACCESS_KEY_ID, ...), never from here.
    s3_region: str = Field(default="", description="the bucket's region (R2: auto); empty: boto3's default")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(default="auto", description="MinIO: path")
    s3_redirect_outputs: bool = Field(default=True, description="outputs answer 307 to a presigned URL")
    s3_url_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600, description="lifetime of a presigned URL")
    cdn_base_url: str = Field(default="", description="presigned URLs on this base (a pass-through CDN)")
    blob_cache_dir: Path | None = None  # defaults to <data_dir>/cache/blobs: local copies of remote model files
    blob_cache_bytes: int = Field(default=20 * 1024**3, ge=0, description="bound of the local blob cache (LRU)")
    models_dir: Path | None = None  # defaults to <data_dir>/models

    # Web and sessions
    cookie_secure: bool = True
    session_days: int = 30
    base_url: str = "http://127.0.0.1:8000"
    # Input bounds (imagen/kit/limits.py): the request body limit of every endpoint that sets none of its own
    # (asset uploads keep theirs, below); the public forms' per-sender limit (per address, and per email given).
    max_body_bytes: int = Field(default=1024**2, ge=1024, description="413 above this many bytes")
    public_form_limit: int = Field(default=5, ge=1, description="submissions per sender and form in the window")
    public_form_window_seconds: int = Field(default=3600, ge=1)
    # Proxies whose X-Forwarded-For/-Proto are believed (addresses or CIDRs, comma-separated; "*": any; empty:
    # none). Behind a TLS-terminating proxy this makes the scheme https, so answers carry HSTS.
    trusted_proxies: str = "127.0.0.1"
    # Capacity under load (imagen/kit/capacity.py): worker threads = requests doing database work at once; the pool
    # holds one connection for each plus a reserve for background work; the rest wait, bounded, then get a 503.
    worker_threads: int = Field(default=40, ge=2, le=1000, description="threads for sync endpoints and dependencies")
    db_pool_size: int | None = Field(default=None, ge=2, description="database connections; default: threads + 10")
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0, description="longest wait for a connection, then 503")
    request_queue_seconds: float = Field(default=10.0, gt=0, description="longest wait for a worker, then 503")
    request_queue_limit: int = Field(default=1000, ge=0, description="requests waiting beyond this: 503 at once")
    sse_streams_per_user: int = Field(default=20, ge=1, description="open progress streams per user (429 beyond)")

    # Inference
    device: str | None = None  # "cuda", "cpu"; auto when unset
    model_cache_bytes: int = 8 * 1024**3
    max_queued_per_user: int = 50
    # Jobs always end (imagen/generation/tasks.py, executors/local.py). Cost = pixels x steps x images, every pass.
    job_timeout_seconds: float = Field(default=900.0, ge=0, description="a running job is stopped after this; 0: none")
    job_stale_seconds: float = Field(default=60.0, gt=0, description="a running job whose worker stays silent this "
                                     "long is ended by the watchdog")
    # --- generate page: live previews (imagen/inference/preview.py; transient, never stored) ---
    preview_every_steps: int = Field(default=5, ge=0, le=1000, description="a live preview every N denoising "
                                     "steps of a running job; 0: off")
    max_job_cost: int = Field(default=2048 * 2048 * 50, ge=0, description="pixels x steps x batch of one job; 0: none")
    max_queued_cost_per_user: int = Field(default=4 * 2048 * 2048 * 50, ge=0,
                                          description="total cost of one user's queued and running jobs; 0: none")

    # Uploads (assets)
    max_model_upload_bytes: int = 8 * 1024**3
    max_image_upload_bytes: int = 20 * 1024**2
    user_storage_quota_bytes: int = 20 * 1024**3
    upload_idle_timeout_seconds: float = Field(default=60.0, gt=0, description="an upload that sends nothing for "
                                               "this long is stopped (408) and its temp file deleted")

    # Operator details that fill the published policy's placeholders. The defaults are visibly unset (and
    # `.invalid` can never be someone's real domain): refused with IMAGEN_ENV=production, flagged otherwise.
    legal_entity: str = UNSET_OPERATOR["legal_entity"]
    postal_address: str = UNSET_OPERATOR["postal_address"]
    contact_email: str = UNSET_OPERATOR["contact_email"]
    site_domain: str = UNSET_OPERATOR["site_domain"]
    # Policy §5: where the servers are (as it reads after "in", e.g. "the United States", "Germany") and the
    # safeguards for transfers out of the EEA/UK/Switzerland (e.g. "the European Commission's Standard Contractual
    # Clauses"). Unset, §5 says so instead of naming a country or a mechanism.
    hosting_country: str = ""
    transfer_safeguards: str = ""
    policy_version: str = "2026-04-29"
    privacy_response_days: int = 30

    # Retention and records (policy §7, §9): how long each category is kept once it is no longer needed.
    # 0 purges as soon as a row becomes eligible; `imagen retention run` and the server's schedule apply them.
    retention_interval_hours: float = Field(default=24.0, ge=0, description="0 disables the scheduled purge")
    retention_security_log_days: int = Field(default=365, ge=0)
    retention_expired_sessions_days: int = Field(default=7, ge=0)
    retention_failed_generations_days: int = Field(default=30, ge=0)
    retention_read_notifications_days: int = Field(default=180, ge=0)
    retention_outbound_emails_days: int = Field(default=90, ge=0)
    retention_exports_days: int = Field(default=30, ge=0)
    retention_privacy_requests_days: int = Field(default=730, ge=0)
    retention_erasure_log_days: int = Field(default=730, ge=0)
    retention_orphan_input_hours: float = Field(default=1.0, ge=0)
    breach_regulator_hours: int = Field(default=72, ge=1)

    # Privacy requests and mail (policy §8). The response deadline is privacy_response_days above.
    privacy_max_response_days: int = Field(default=90, ge=1, description="legal maximum with extensions (GDPR)")
    privacy_due_soon_days: int = Field(default=7, ge=0)
    privacy_code_ttl_hours: float = Field(default=24.0, gt=0)
    privacy_code_max_attempts: int = Field(default=5, ge=1)
    privacy_code_resend_seconds: int = Field(default=60, ge=0)
    privacy_public_requests_per_day: int = Field(default=5, ge=1, description="per email address (429 beyond)")
    mail_backend: Literal["outbox", "smtp", "postmark"] = "outbox"
    mail_retry_interval_seconds: float = Field(default=300.0, ge=0, description="resend failed mail; 0: never")
    mail_from: str | None = None  # defaults to contact_email
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    smtp_timeout: float = 10.0

    # --- notices: Postmark mail and PostHog analytics (issue 14) ---
    # IMAGEN_MAIL_BACKEND=postmark sends through Postmark's HTTP API (imagen/mail/postmark.py); the API base is
    # overridable for a local fake. Notices to everyone (policy changes, business transfers) use the broadcast stream.
    postmark_server_token: str | None = None
    postmark_api_base: str = "https://api.postmarkapp.com"
    postmark_transactional_stream: str = "outbound"
    postmark_broadcast_stream: str = "broadcast"
    postmark_timeout_seconds: float = Field(default=10.0, gt=0)
    # The bounce/spam-complaint webhook (POST /api/v1/mail/postmark/webhook) wants HTTP basic auth with this
    # password (any user name); unset, the webhook answers 404.
    postmark_webhook_token: str | None = None
    # Server-side product analytics (imagen/analytics): off, or PostHog for users who consented and send no GPC.
    analytics: Literal["off", "posthog"] = "off"
    posthog_api_key: str | None = None  # the project key events are captured with
    posthog_host: str = "https://us.i.posthog.com"
    # Person deletion on erasure uses PostHog's private API: a personal API key (person:write) and the project id.
    posthog_personal_api_key: str | None = None
    posthog_project_id: str = ""
    posthog_api_host: str = Field(default="", description="PostHog's app host for the private API; default: "
                                  "posthog_host")
    analytics_retry_interval_seconds: float = Field(default=600.0, ge=0, description="retry PostHog person "
                                                    "deletions; 0: never")

    # Consent and policy (policy §3, §6, §4.1, §11)
    # Outside the EU/EEA, the UK and Switzerland (where everything is opt-in), these purposes start granted
    # until the user chooses: comma-separated, from model_improvement, marketing_emails, analytics.
    consent_defaults_elsewhere: str = ""
    cookie_consent_days: int = Field(default=180, ge=1, description="lifetime of the cookie-choice cookie")
    hosting_provider: str = Field(default="", description="company hosting this server, listed in policy §4.1")

    # Privacy core (policy §7, §8): exports, erasure and the background step that runs due erasures
    export_expiry_days: int = Field(default=7, ge=1, description="how long an export's download link works")
    erasure_grace_days: int = Field(default=0, ge=0, description="0 erases at once; >0 schedules it, cancellable")
    privacy_jobs_interval_seconds: float = Field(default=300.0, ge=0, description="0 disables the schedule")

    # Safety: hash banks (imagen/safety/banks.py, matcher.py)
    pdq_max_distance: int = Field(default=31, ge=0, le=256, description="PDQ match: Hamming distance at most this")
    pdq_min_quality: int = Field(default=50, ge=0, le=100, description="PDQ hashes of lower quality are ignored")
    hash_bank_reload_seconds: float = Field(default=5.0, ge=0, description="how often matchers look for bank changes")

    # Safety: NCMEC (CyberTipline reporting API, imagen/safety/ncmec_client.py)
    ncmec_environment: Literal["test", "production"] = "test"
    ncmec_username: str | None = None
    ncmec_password: str | None = None
    ncmec_base_url: str | None = Field(default=None, description="overrides the environment's URL (tests)")
    ncmec_require_confirmation: bool = Field(default=True, description="a moderator confirms before submission")
    ncmec_timeout_seconds: float = Field(default=60.0, gt=0)
    ncmec_reporter_company: str | None = None  # defaults to legal_entity
    ncmec_reporter_first_name: str = ""
    ncmec_reporter_last_name: str = ""
    ncmec_reporter_email: str | None = None  # defaults to contact_email
    ncmec_reporter_phone: str = ""
    ncmec_terms_of_service_url: str = ""  # sent as reporter/legalURL
    ncmec_company_template: str = Field(default="", description="standing text in every report (companyTemplate)")

    # Safety: prompts and NSFW (imagen/safety/prompt_rules.py, nsfw.py)
    prompt_rules_file: Path | None = Field(default=None, description="operator prompt rules (JSON), added to built-ins")
    nsfw_policy: str = Field(default="", description='JSON, e.g. {"genitalia_exposed": "block"}; empty allows all')
    nsfw_threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="detector score from which a rule acts")
    nsfw_blur_mode: Literal["boxes", "image"] = Field(default="boxes", description="blur the regions or the image")

    # Safety: cases and quarantine (imagen/safety/service.py, quarantine.py, checks.py)
    quarantine_key: str | None = Field(default=None, description="Fernet key; generated into <data>/quarantine.key")
    evidence_retention_days: int = Field(default=365, ge=0, description="legal hold of evidence (REPORT Act: 1 year)")
    prompt_refusals_flag: int = Field(default=3, ge=1, description="refusals in 24 h that open a prompt_flag case")
    prompt_refusals_retention_days: int = Field(default=90, ge=0)

    # --- accounts security (imagen/accounts/: verification, reset, throttling, 2FA) ---
    # None: on when mail really leaves the server (IMAGEN_MAIL_BACKEND other than outbox), off otherwise.
    require_email_verification: bool | None = Field(default=None, description="generation and uploads need a "
                                                    "verified email; unset: on with a real mail backend")
    email_verification_ttl_hours: float = Field(default=48.0, gt=0, description="lifetime of a verification link")
    password_reset_ttl_minutes: float = Field(default=60.0, gt=0, description="lifetime of a password-reset link")
    password_min_score: int = Field(default=3, ge=0, le=4, description="lowest zxcvbn score a password may have")
    login_window_minutes: float = Field(default=15.0, gt=0, description="the window failed logins are counted in")
    login_max_failures_per_account: int = Field(default=10, ge=1, description="then 429 for the account")
    login_max_failures_per_ip: int = Field(default=50, ge=1, description="then 429 for the address")
    require_staff_2fa: bool = Field(default=False, description="moderators and admins need TOTP two-factor")
    retention_login_failures_days: int = Field(default=1, ge=0, description="failed-login counters are kept")
    retention_account_tokens_days: int = Field(default=7, ge=0, description="emailed links, after expiry")

    worker_autostart: bool = Field(default=True, description="start the in-process worker with the app")

    # The AUTOMATIC1111-compatible API (imagen/a1111) and webhooks (imagen/webhooks)
    a1111_wait_seconds: float = Field(default=0.0, ge=0, description="/sdapi/v1 txt2img/img2img wait at most this "
                                      "for their job; 0: the job timeout plus IMAGEN_JOB_STALE_SECONDS")
    webhooks_allow_private: bool = Field(default=False, description="allow webhook targets on private or loopback "
                                         "addresses (local testing only)")
    webhooks_interval_seconds: float = Field(default=5.0, ge=0, description="how often due webhook deliveries "
                                             "are sent (new and retried); 0 disables the schedule")
    webhooks_retry_seconds: float = Field(default=30.0, ge=0, description="first retry delay, doubled each time")
    webhooks_max_attempts: int = Field(default=8, ge=1, description="attempts per delivery before it is given up")
    webhooks_disable_after: int = Field(default=20, ge=1, description="consecutive failed attempts that disable "
                                        "an endpoint")
    webhooks_timeout_seconds: float = Field(default=10.0, gt=0, description="per delivery attempt")

    # --- insights and metrics (imagen/insights, docs/insights.md) ---
    insights_min_group: int = Field(default=20, ge=2, description="smallest group any insights output releases")
    insights_epsilon: float = Field(default=0.0, ge=0, description="Laplace noise on released counts, scale "
                                    "1/epsilon; 0: no noise")
    insights_sweep_interval_seconds: float = Field(default=600.0, ge=0, description="how often ended generations "
                                                   "whose derivation was missed are derived; 0 disables")
    metrics_token: str | None = Field(default=None, description="/metrics answers `Authorization: Bearer <token>`")
    metrics_allow: str = Field(default="", description="comma-separated addresses or networks /metrics answers "
                               "without the token; with neither set /metrics is a 404")

    @field_validator("metrics_allow")
    @classmethod
    def _metrics_networks(cls, value: str) -> str:
        for net in (n.strip() for n in value.split(",") if n.strip()):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not an address or network") from None
        return value

    @property
    def metrics_allow_list(self) -> list[str]:
        return [n.strip() for n in self.metrics_allow.split(",") if n.strip()]
    # --- billing (imagen/billing, docs/configuration.md "Billing") ---
    # off: generation is free and nothing is charged; stripe: credits bought through Stripe Checkout, held per job.
    billing: Literal["off", "stripe"] = "off"
    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = Field(default=None, description="whsec_...: verifies the Stripe webhook")
    stripe_api_base: str = Field(default="https://api.stripe.com", description="Stripe's API (tests: a local fake)")
    billing_prices: str = Field(default="", description='JSON, e.g. {"*": {"base": 1, "per_step": 0}}')
    billing_packs: str = Field(default="", description='JSON list of {"id", "credits", "amount", "currency"}')
    billing_records_retention_days: int = Field(default=7 * 365, ge=0, description="receipts, ledger and billing "
                                                "cases are kept this long (accounting law), also after erasure")

    @field_validator("consent_defaults_elsewhere")
    @classmethod
    def _known_consent_purposes(cls, value: str) -> str:
        purposes = {p.strip() for p in value.split(",") if p.strip()}
        if unknown := purposes - {"model_improvement", "marketing_emails", "analytics"}:
            raise ValueError(f"unknown consent purposes {sorted(unknown)}; use model_improvement, "
                             "marketing_emails, analytics")
        return ",".join(sorted(purposes))

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Settings:
        if self.env != "production":
            return self
        problems = []
        key = (self.secret_key or "").strip()
        if key.lower() in PLACEHOLDER_SECRETS or len(key) < 32:
            problems.append("IMAGEN_SECRET_KEY must be set to a random value of at least 32 characters (generate "
                            "one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')")
        problems += [f"{var} must be set ({what}; the privacy policy publishes it)"
                     for var, what in self.unset_operator_settings()]
        if problems:
            raise ValueError("IMAGEN_ENV=production refuses to start: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _backend_settings(self) -> Settings:
        if self.executor == "celery" and not (self.broker_url.strip() and self.resolved_redis_url):
            raise ValueError("IMAGEN_EXECUTOR=celery needs IMAGEN_BROKER_URL, and IMAGEN_REDIS_URL unless the broker "
                             "is Redis")
        if self.executor == "runpod" and not (self.runpod_endpoint_id.strip() and self.runpod_api_key):
            raise ValueError("IMAGEN_EXECUTOR=runpod needs IMAGEN_RUNPOD_ENDPOINT_ID and IMAGEN_RUNPOD_API_KEY")
        if self.billing == "stripe" and not (self.stripe_secret_key and self.stripe_webhook_secret):
            raise ValueError("IMAGEN_BILLING=stripe needs IMAGEN_STRIPE_SECRET_KEY and IMAGEN_STRIPE_WEBHOOK_SECRET")
        if self.storage == "s3" and not self.s3_bucket.strip():
            raise ValueError("IMAGEN_STORAGE=s3 needs IMAGEN_S3_BUCKET")
        if self.mail_backend == "postmark" and not (self.postmark_server_token or "").strip():
            raise ValueError("IMAGEN_MAIL_BACKEND=postmark needs IMAGEN_POSTMARK_SERVER_TOKEN")
        if self.analytics == "posthog" and not (self.posthog_api_key or "").strip():
            raise ValueError("IMAGEN_ANALYTICS=posthog needs IMAGEN_POSTHOG_API_KEY")
        return self

    def unset_operator_settings(self) -> list[tuple[str, str]]:
        """(variable, what it is) for each operator detail still blank, at its unset default or a template
        placeholder ("[YOUR ...]")."""
        unset = []
        for name, (var, what) in OPERATOR_SETTINGS.items():
            value = str(getattr(self, name) or "").strip()
            if not value or value == UNSET_OPERATOR[name] or value.startswith("["):
                unset.append((var, what))
        return unset

    @property
    def mail_delivered(self) -> bool:
        """Mail really leaves the server (SMTP, Postmark); the outbox backend only records and logs it."""
        return self.mail_backend in ("smtp", "postmark")

    @property
    def email_verification_required(self) -> bool:
        if self.require_email_verification is not None:
            return self.require_email_verification
        return self.mail_backend != "outbox"

    @property
    def resolved_redis_url(self) -> str:
        if self.redis_url.strip():
            return self.redis_url.strip()
        return self.broker_url.strip() if self.broker_url.strip().startswith(("redis://", "rediss://")) else ""

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'imagen.db').resolve()}"

    @property
    def resolved_db_pool_size(self) -> int:
        # A connection for every admitted request, plus the worker, watchdog, schedulers and the second connection
        # an upload's quota check takes.
        return self.db_pool_size or self.worker_threads + 10

    @property
    def blobs_dir(self) -> Path:
        return (self.data_dir / "blobs").resolve()

    @property
    def resolved_blob_cache_dir(self) -> Path:
        return (self.blob_cache_dir or self.data_dir / "cache" / "blobs").resolve()

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def resolved_quarantine_key(self) -> bytes:
        """The quarantine's Fernet key: configured, or generated once into the data folder (not the secret key)."""
        if self.quarantine_key:
            return self.quarantine_key.encode()
        from cryptography.fernet import Fernet

        self.ensure_data_dir()
        key_file = self.data_dir / "quarantine.key"
        if not key_file.exists():
            key_file.write_bytes(Fernet.generate_key())
            key_file.chmod(0o600)
        return key_file.read_bytes().strip()

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once and kept in the data folder."""
        if self.secret_key:
            return self.secret_key
        self.ensure_data_dir()
        key_file = self.data_dir / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(48))
            key_file.chmod(0o600)
        return key_file.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
