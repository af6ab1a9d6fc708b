"""Retention (policy §7): purge each category of personal data once its configured period has passed.

`retention_service.plan(session, settings, now)` says what would go (how many rows or blobs, under which
setting); `run(session, settings, blobs, now, dry_run)` deletes it. Rows go in the caller's transaction;
blobs go only after it commits (`run_after_commit`), so a rollback leaves every blob in place. Each rule
selects by age, so running twice deletes nothing the second time.

Tables owned by other parts of the privacy domain (exports, outbound emails, privacy requests, the erasure
log) are looked up by name in the metadata and skipped when absent, so this module does not import them.
The server runs the purge on a schedule (`RetentionScheduler`, started in the app's lifespan).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Table, and_, column, delete, func, or_, select, table, update
from sqlalchemy.orm import Session

from imagen.kit.config import Settings
from imagen.kit.db import Database, run_after_commit, utcnow
from imagen.storage import BlobStore

log = logging.getLogger(__name__)

CHUNK = 500
INPUT_KEY = re.compile(r"^inputs/[^/]+/(?P<gen>[0-9a-f]{32})/[^/]+$")


@dataclass(frozen=True)
class Purge:
    """One line of a retention plan: what goes, how many, and which setting says so."""

    category: str
    what: str
    count: int
    setting: str | None = None  # the IMAGEN_ variable that sets the period
    period: str | None = None  # "365 days"
    cutoff: datetime | None = None
    blobs: int = 0
    skipped: str | None = None  # why the rule did not apply (e.g. the table does not exist yet)


# A rule: which rows of which table are past their period. `where` returns None when the table lacks the
# columns the rule needs (a part of the privacy domain that is not built yet), which skips it.
Where = Callable[[Table, datetime, Settings], ColumnElement[bool] | None]


@dataclass(frozen=True)
class Rule:
    item: str | None  # the data-map entry (imagen/privacy/datamap.py) whose retention this rule applies
    category: str
    what: str
    tables: tuple[str, ...]  # candidates, first present wins
    setting: str | None  # Settings attribute holding the period in days
    where: Where
    # Extra blobs that go with the rows (children's files); every `*blob_key` column of the table is included.
    child_blobs: Callable[[Session, list[str]], list[str]] | None = None
    # Instead of deleting the rows, empty these columns (the rest of the row is a record that stays).
    blank: tuple[str, ...] = ()

    def days(self, settings: Settings) -> int | None:
        return getattr(settings, self.setting) if self.setting else None

    def cutoff(self, settings: Settings, now: datetime) -> datetime:
        days = self.days(settings)
        return now - timedelta(days=days) if days is not None else now


def _col(table: Table, *names: str) -> ColumnElement | None:
    for name in names:
        if name in table.c:
            return table.c[name]
    return None


def _older(*names: str) -> Where:
    def where(table: Table, cutoff: datetime, _settings: Settings) -> ColumnElement[bool] | None:
        col = _col(table, *names)
        return None if col is None else and_(col.is_not(None), col < cutoff)
    return where


def _generation_blobs(session: Session, ids: list[str]) -> list[str]:
    from imagen.generation.models import Output

    return list(session.scalars(select(Output.blob_key).where(Output.generation_id.in_(ids))))


def _failed_generations(table: Table, cutoff: datetime, _settings: Settings) -> ColumnElement[bool]:
    return and_(table.c.status.in_(("failed", "canceled")), table.c.finished_at.is_not(None),
                table.c.finished_at < cutoff)


def _read_notifications(table: Table, cutoff: datetime, _settings: Settings) -> ColumnElement[bool]:
    return and_(table.c.read_at.is_not(None), table.c.read_at < cutoff)


def _email_bodies(table: Table, cutoff: datetime, _settings: Settings) -> ColumnElement[bool] | None:
    if "body" not in table.c:
        return None
    return and_(table.c.body.is_not(None), table.c.created_at < cutoff)


def _erasure_holds(table: Table, cutoff: datetime, settings: Settings) -> ColumnElement[bool] | None:
    """A hold that names its own end (`hold_until`) lasts until then; otherwise the period from completion.

    Canceled erasure requests go after the same period; scheduled and running ones are never purged.
    """
    now = cutoff + timedelta(days=settings.retention_erasure_log_days)
    until, done, canceled = (_col(table, n) for n in ("hold_until", "completed_at", "canceled_at"))
    ends = []
    if until is not None:
        ends.append(and_(until.is_not(None), until < now))
    if done is not None:
        ends.append(and_(done.is_not(None), done < cutoff, *([until.is_(None)] if until is not None else [])))
    if canceled is not None:
        ends.append(and_(canceled.is_not(None), canceled < cutoff))
    return or_(*ends) if ends else None


def _case_hold_ended(rows: Table, cutoff: datetime, settings: Settings) -> ColumnElement[bool]:
    """Rows of a safety case go when the case's hold ends (it may have been extended: `preserve`), or with it."""
    now = cutoff + timedelta(days=settings.evidence_retention_days)
    held = select(column("id")).select_from(table("safety_cases")).where(column("hold_until") >= now)
    return rows.c.case_id.not_in(held)


RULES: tuple[Rule, ...] = (
    Rule("security_events", "security log", "sign-up, login, logout and failed-login events",
         ("security_events",), "retention_security_log_days", _older("created_at")),
    Rule("login_sessions", "login sessions", "login sessions expired longer than the period",
         ("login_sessions",), "retention_expired_sessions_days", _older("expires_at")),
    Rule("generations", "generations", "failed and canceled generations (prompt and parameters)",
         ("generations",), "retention_failed_generations_days", _failed_generations, child_blobs=_generation_blobs),
    Rule("notifications", "notifications", "in-app notices read longer ago than the period",
         ("notifications",), "retention_read_notifications_days", _read_notifications),
    Rule("outbound_emails", "emails", "bodies of outbound emails (the envelope stays as proof of notice)",
         ("outbound_emails",), "retention_outbound_emails_days", _email_bodies, blank=("body",)),
    Rule("exports", "exports", "export records expired longer ago than the period",
         ("exports",), "retention_exports_days", _older("expires_at")),
    Rule("privacy_requests", "privacy requests", "privacy requests closed longer ago than the period (legal hold)",
         ("privacy_requests",), "retention_privacy_requests_days", _older("closed_at", "completed_at")),
    Rule("erasure_requests", "erasure log", "erasure records kept as a legal hold, once the hold ends",
         ("erasures", "erasure_log"), "retention_erasure_log_days", _erasure_holds),
    # Safety cases end their hold at hold_until; evidence, audit and reports go with them, quarantine files too.
    Rule("safety_cases", "safety cases", "cases and their preserved evidence (legal hold), once the hold ends",
         ("safety_cases",), "evidence_retention_days",
         lambda t, cutoff, s: t.c.hold_until < cutoff + timedelta(days=s.evidence_retention_days),
         child_blobs=lambda session, ids: [k for k in session.scalars(
             select(column("quarantine_blob_key")).select_from(table("safety_evidence"))
             .where(column("case_id").in_(ids))) if k]),
    Rule("safety_evidence", "safety cases", "preserved evidence (and its quarantined file) past its case's hold",
         ("safety_evidence",), "evidence_retention_days", _case_hold_ended),
    Rule("safety_case_actions", "safety cases", "the moderation audit trail past its case's hold",
         ("safety_case_actions",), "evidence_retention_days", _case_hold_ended),
    Rule("prompt_refusals", "refused prompts", "prompts the prompt rules refused",
         ("prompt_refusals",), "prompt_refusals_retention_days", _older("created_at")),
)


def _datamap_tables() -> dict[str, str]:
    """Data-map entry name -> its table, so a table renamed there is followed here."""
    try:
        from imagen.privacy.datamap import DATA_MAP
    except ImportError:
        return {}
    return {item.name: item.table for item in DATA_MAP if item.table}


def _tables() -> dict[str, Table]:
    from imagen.kit.models import Base  # every domain's tables, including ones added after this module

    return dict(Base.metadata.tables)


def _chunks(items: list[str], size: int = CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class RetentionService:
    def plan(self, session: Session, *, settings: Settings, blobs: BlobStore | None = None,
             now: datetime | None = None) -> list[Purge]:
        """What a run would purge now; changes nothing."""
        return self._apply(session, settings=settings, blobs=blobs, now=now or utcnow(), dry_run=True)

    def run(self, session: Session, *, settings: Settings, blobs: BlobStore, now: datetime | None = None,
            dry_run: bool = False) -> list[Purge]:
        """Purge everything past its period; blobs are deleted after the caller's commit."""
        return self._apply(session, settings=settings, blobs=blobs, now=now or utcnow(), dry_run=dry_run)

    def _apply(self, session: Session, *, settings: Settings, blobs: BlobStore | None, now: datetime,
               dry_run: bool) -> list[Purge]:
        tables, mapped = _tables(), _datamap_tables()
        purges = [self._rule(session, rule, tables, mapped, settings, blobs, now, dry_run)
                  for rule in RULES]
        purges.append(self._expired_export_files(session, blobs, now, dry_run))
        if blobs is not None:
            purges.append(self._orphaned_inputs(session, settings, blobs, now, dry_run))
        return purges

    def _rule(self, session: Session, rule: Rule, tables: dict[str, Table], mapped: dict[str, str],
              settings: Settings, blobs: BlobStore | None, now: datetime, dry_run: bool) -> Purge:
        days = rule.days(settings)
        info = dict(category=rule.category, what=rule.what,
                    setting=f"IMAGEN_{rule.setting.upper()}" if rule.setting else None,
                    period=f"{days} days" if days is not None else None)
        names = (mapped[rule.item], *rule.tables) if rule.item in mapped else rule.tables
        table = next((tables[name] for name in names if name in tables), None)
        if table is None:
            return Purge(**info, count=0, skipped=f"no {rule.tables[0]} table")
        cutoff = rule.cutoff(settings, now)
        condition = rule.where(table, cutoff, settings)
        pk = list(table.primary_key.columns)
        if condition is None or len(pk) != 1:
            return Purge(**info, count=0, cutoff=cutoff, skipped=f"{table.name} has no column to date it by")
        ids = list(session.scalars(select(pk[0]).where(condition)))
        blob_cols = [c for c in table.c if c.name.endswith("blob_key")]
        keys: list[str] = []
        for chunk in _chunks(ids):
            if blob_cols:
                for row in session.execute(select(*blob_cols).where(pk[0].in_(chunk))):
                    keys += [k for k in row if k]
            if rule.child_blobs is not None:
                keys += rule.child_blobs(session, chunk)
            if dry_run:
                continue
            if rule.blank:
                session.execute(update(table).where(pk[0].in_(chunk)).values({c: None for c in rule.blank}))
            else:
                session.execute(delete(table).where(pk[0].in_(chunk)))
        if not dry_run and blobs is not None:
            for key in keys:
                run_after_commit(session, blobs.delete, key)
        return Purge(**info, count=len(ids), cutoff=cutoff, blobs=len(keys))

    def _expired_export_files(self, session: Session, blobs: BlobStore | None, now: datetime,
                              dry_run: bool) -> Purge:
        """An export's ZIP goes when its link expires; the record stays (and answers "expired").

        The exports module owns the action (`export_service.purge_expired`); this counts and calls it.
        """
        info = dict(category="exports", what="ZIP files of exports whose download link has expired",
                    setting="IMAGEN_EXPORT_EXPIRY_DAYS", period="until the link expires")
        try:
            from imagen.privacy.exports import export_service
            from imagen.privacy.models import Export
        except ImportError:
            return Purge(**info, count=0, skipped="no exports module")
        expired = and_(Export.status == "ready", Export.expires_at.is_not(None), Export.expires_at <= now)
        count = session.scalar(select(func.count()).select_from(Export).where(expired)) or 0
        files = session.scalar(select(func.count()).select_from(Export).where(
            expired, Export.blob_key.is_not(None))) or 0
        if not dry_run and count and blobs is not None:
            export_service.purge_expired(session, blobs=blobs, now=now)
        return Purge(**info, count=count, cutoff=now, blobs=files)

    def _orphaned_inputs(self, session: Session, settings: Settings, blobs: BlobStore, now: datetime,
                         dry_run: bool) -> Purge:
        """Transient inputs are deleted when their job ends; this catches any a crash left behind."""
        from imagen.generation.models import FINAL_STATUSES, Generation

        grace = timedelta(hours=settings.retention_orphan_input_hours)
        info = dict(category="transient inputs",
                    what="img2img/inpaint inputs whose generation has finished or is gone",
                    setting="IMAGEN_RETENTION_ORPHAN_INPUT_HOURS", period="until the job ends")
        by_gen: dict[str, list[str]] = {}
        for key in blobs.keys("inputs/"):
            match = INPUT_KEY.match(key)
            if match:
                by_gen.setdefault(match["gen"], []).append(key)
        orphans: list[str] = []
        gen_ids = list(by_gen)
        for chunk in _chunks(gen_ids):
            status = dict(session.execute(select(Generation.id, Generation.status).where(
                Generation.id.in_(chunk))).tuples().all())
            for gen_id in chunk:
                if gen_id in status:
                    if status[gen_id] in FINAL_STATUSES:
                        orphans += by_gen[gen_id]
                else:  # no row: the job is gone, unless its request has not committed yet
                    orphans += [k for k in by_gen[gen_id] if self._blob_older(blobs, k, now - grace)]
        if not dry_run:
            for key in orphans:
                run_after_commit(session, blobs.delete, key)
        return Purge(**info, count=len(orphans), cutoff=now, blobs=len(orphans))

    @staticmethod
    def _blob_older(blobs: BlobStore, key: str, cutoff: datetime) -> bool:
        try:
            return blobs.local_path(key).stat().st_mtime < cutoff.timestamp()
        except (KeyError, OSError):
            return False

    def total(self, purges: list[Purge]) -> int:
        return sum(p.count for p in purges)


retention_service = RetentionService()


class RetentionScheduler:
    """Runs the purge in a daemon thread every `interval_hours`, first `first_delay` seconds after start.

    Each run is one transaction; a failed run is logged and retried at the next tick.
    """

    FIRST_DELAY_SECONDS = 300.0

    def __init__(self, db: Database, blobs: BlobStore, settings: Settings, *,
                 first_delay: float | None = None) -> None:
        self.db, self.blobs, self.settings = db, blobs, settings
        self.interval = settings.retention_interval_hours * 3600
        self.first_delay = self.FIRST_DELAY_SECONDS if first_delay is None else first_delay
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="imagen-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> list[Purge]:
        started = time.monotonic()
        with self.db.transaction() as session:
            purges = retention_service.run(session, settings=self.settings, blobs=self.blobs)
        self.runs += 1
        done = {p.category: p.count for p in purges if p.count}
        log.info("retention run purged %s in %.1fs", done or "nothing", time.monotonic() - started)
        return purges

    def _loop(self) -> None:
        wait = self.first_delay
        while not self._stop.wait(wait):
            try:
                self.run_once()
            except Exception:
                log.exception("retention run failed; retrying at the next interval")
            wait = self.interval
