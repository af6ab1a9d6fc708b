"""Erasure (GDPR Art. 17, policy §3, §7, §8): account deletion driven by the data map.

`erasure_service.request` (password already checked by the caller) records the request. With a grace period
(`erasure_grace_days`) the account keeps working and can cancel until `due_at`; otherwise, in the same
transaction, the account stops working (login sessions and API keys deleted, password unusable, suspended) and
its queued and running jobs are canceled; `erase_user` then runs in the background after the commit.

`erase_user(db, blobs, executor, user_id)` is idempotent: rows with files go in batches (rows first, their blobs
after each commit), the rest per data-map entry (delete, anonymize, or keep a legal hold with the declared columns
emptied), references to the user's published models in other users' generations lose their blob key, the user row
goes, the erasure row keeps only salted hashes until `hold_until`, and every declared blob prefix is swept last, so
a job that finished during the erasure leaves nothing (its completion fails once the generation row is gone, and
whatever it wrote before is under a swept prefix). Before it deletes anything it gathers what identifies the
person (`residue.gather`: id, email, and the identifiers the data map names, such as the security log's IP
addresses and browsers); with `verify=True` the residue scan then searches every table and the blob store for them
and the summary records how many findings are not legal holds in force (`residue`: 0 on a clean erasure).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, Text, cast, delete, or_, select, update
from sqlalchemy.orm import Session

from imagen.accounts.models import ApiKey, LoginSession, User
from imagen.analytics.service import analytics_service
from imagen.billing.ledger import ledger
from imagen.generation.models import Generation
from imagen.kit.config import Settings
from imagen.kit.db import Database, run_after_commit, utcnow
from imagen.kit.errors import Conflict, NotFound
from imagen.kit.tasks import JobControl, TaskQueue, enqueue_after_commit
from imagen.privacy.datamap import DATA_MAP, DataItem
from imagen.privacy.models import Erasure
from imagen.privacy.residue import Needles, gather, residue, scan, subject_hash
from imagen.storage import BlobStore

log = logging.getLogger(__name__)

BATCH = 500
OPEN = ("scheduled", "in_progress")
UNUSABLE_PASSWORD = "!erased"  # not an argon2 hash: no password verifies against it


def _tables() -> dict[str, Table]:
    from imagen.kit.db import Base

    return dict(Base.metadata.tables)


class ErasureService:
    def request(self, session: Session, *, user: User, via: str, settings: Settings, grace: bool = True,
                tasks: TaskQueue | None = None, jobs: JobControl | None = None) -> Erasure:
        """Record an erasure; `grace=False` (or no configured grace) stops the account now and erases it next
        (`privacy.erase_user`, enqueued on `tasks` after the commit; `jobs` cancels the account's running jobs)."""
        days = settings.erasure_grace_days if grace else 0
        now = utcnow()
        erasure = self.current(session, user_id=user.id)
        if erasure is not None and (erasure.status == "in_progress" or days > 0):
            return erasure
        if erasure is None:
            secret = settings.resolved_secret_key()
            erasure = Erasure(user_id=user.id, status="scheduled", via=via[:64], due_at=now + timedelta(days=days),
                              subject_email_hash=subject_hash(secret, user.email),
                              subject_id_hash=subject_hash(secret, user.id))
            session.add(erasure)
            session.flush()
        if days == 0:
            erasure.due_at = min(erasure.due_at, now)
            self.start(session, erasure=erasure, user=user, jobs=jobs)
            enqueue_after_commit(session, tasks, "privacy.erase_user", user.id)
        return erasure

    def start(self, session: Session, *, erasure: Erasure, user: User, jobs: JobControl | None = None) -> list[str]:
        """The account stops working now: sessions and keys revoked, jobs canceled. Returns running job ids."""
        now = utcnow()
        erasure.status, erasure.started_at = "in_progress", erasure.started_at or now
        session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
        session.execute(delete(ApiKey).where(ApiKey.user_id == user.id))
        user.password_hash, user.suspended_at = UNUSABLE_PASSWORD, user.suspended_at or now
        queued = (Generation.user_id == user.id) & (Generation.status == "queued")
        canceled = session.scalars(update(Generation).where(queued)
                                   .values(status="canceled", cancel_requested=True, finished_at=now)
                                   .returning(Generation.id)).all()
        for gen_id in canceled:  # their credit holds end with them (running ones end through their worker)
            ledger.release(session, generation_id=gen_id)
        running = list(session.scalars(select(Generation.id).where(
            Generation.user_id == user.id, Generation.status == "running")))
        session.execute(update(Generation).where(Generation.id.in_(running)).values(cancel_requested=True))
        if jobs is not None:
            for gen_id in running:
                run_after_commit(session, jobs.cancel, gen_id)
        return running

    def current(self, session: Session, *, user_id: str) -> Erasure | None:
        return session.scalars(select(Erasure).where(Erasure.user_id == user_id, Erasure.status.in_(OPEN))
                               .order_by(Erasure.created_at.desc())).first()

    def get_current(self, session: Session, *, user_id: str) -> Erasure:
        erasure = self.current(session, user_id=user_id)
        if erasure is None:
            raise NotFound("No account deletion is pending")
        return erasure

    def cancel(self, session: Session, *, user_id: str) -> Erasure:
        erasure = self.get_current(session, user_id=user_id)
        if erasure.status != "scheduled":
            raise Conflict("The deletion has already started and cannot be canceled")
        erasure.status, erasure.canceled_at = "canceled", utcnow()
        return erasure

    def due_user_ids(self, session: Session, *, now: datetime | None = None, only_started: bool = False,
                     started_before: datetime | None = None) -> list[str]:
        """Accounts whose erasure is due (scheduled and past due_at) or was started and not finished
        (`started_before`: only those started before then, so a scheduled pass leaves running ones alone)."""
        cond = Erasure.status == "in_progress"
        if started_before is not None:
            cond = cond & (Erasure.started_at <= started_before)
        if not only_started:
            cond = or_(cond, (Erasure.status == "scheduled") & (Erasure.due_at <= (now or utcnow())))
        return list(dict.fromkeys(session.scalars(
            select(Erasure.user_id).where(cond, Erasure.user_id.is_not(None)).order_by(Erasure.due_at))))

    def find_by_subject(self, session: Session, *, value: str, settings: Settings) -> list[Erasure]:
        """Erasure records for an email or id (the operator's proof that an erasure happened)."""
        h = subject_hash(settings.resolved_secret_key(), value)
        return list(session.scalars(select(Erasure).where(
            or_(Erasure.subject_email_hash == h, Erasure.subject_id_hash == h)).order_by(Erasure.created_at)))


erasure_service = ErasureService()


# ---- carrying it out (background; takes ids; idempotent) ----

def erase_due(db: Database, blobs: BlobStore, executor: JobControl | None, *, settings: Settings,
              now: datetime | None = None, started_before: datetime | None = None) -> list[str]:
    """Erase every account whose erasure is due; returns their (former) ids."""
    with db.transaction() as session:
        due = erasure_service.due_user_ids(session, now=now, started_before=started_before)
    for user_id in due:
        erase_user(db, blobs, executor, user_id, settings=settings)
    return due


def erase_user(db: Database, blobs: BlobStore, executor: JobControl | None, user_id: str, *,
               settings: Settings, verify: bool = False) -> dict[str, Any]:
    """Erase one account across the database and the blob store; safe to run again (also after it finished).

    Returns the summary (rows per data-map entry). `verify`: scan for what identified the person afterwards;
    the summary then has `residue` (the count, also stored on the erasure record) and `findings` (the residue).
    """
    with db.transaction() as session:
        user = session.get(User, user_id)
        if user is None:
            _sweep(blobs, user_id)  # already erased: catch a file a late job may have left
            return {}
        erasure = erasure_service.current(session, user_id=user_id)
        if erasure is None:  # called directly (operator, tests): record it as the request
            secret = settings.resolved_secret_key()
            erasure = Erasure(user_id=user_id, status="scheduled", via="operator", due_at=utcnow(),
                              subject_email_hash=subject_hash(secret, user.email),
                              subject_id_hash=subject_hash(secret, user_id))
            session.add(erasure)
            session.flush()
        running = erasure_service.start(session, erasure=erasure, user=user) if erasure.status != "in_progress" \
            else list(session.scalars(select(Generation.id).where(Generation.user_id == user_id,
                                                                  Generation.status == "running")))
        erasure_id, email = erasure.id, user.email.lower()
        # What identifies the person, read before anything is emptied: the scan searches for it afterwards.
        found = gather(session, user_id=user_id, email=email, secret=settings.resolved_secret_key())
    for gen_id in running:
        if executor is not None:
            executor.cancel(gen_id)

    tables = _tables()
    summary: dict[str, Any] = {}
    for item in DATA_MAP:  # rows with files first, batch by batch, so memory stays flat
        table = tables.get(item.table or "")
        if table is not None and item.file_column and item.erasure == "delete":
            summary[item.name] = _delete_with_files(db, blobs, item, table, user_id, email)

    # Files first, so an erasure recorded as completed has none left; the sweep after the commit catches any a job
    # that finished meanwhile wrote.
    swept = _sweep(blobs, user_id)
    with db.transaction() as session:
        for item in DATA_MAP:
            table = tables.get(item.table or "")
            # The user row goes last (its id is what the rest is found by); the erasure rows become the hold below.
            if table is None or item.table in (User.__tablename__, Erasure.__tablename__) or item.name in summary:
                continue
            cond = item.rows_of(table, user_id, email)
            if item.erasure == "delete":
                summary[item.name] = session.execute(delete(table).where(cond)).rowcount
            elif item.anonymize:
                summary[item.name] = session.execute(
                    update(table).where(cond).values({c: None for c in item.anonymize})).rowcount
        summary["shared_model_references"] = _scrub_model_references(session, user_id)
        now = utcnow()
        # Every erasure row of this person becomes the legal hold: no id, only the hashes, until hold_until.
        session.execute(update(Erasure).where(or_(Erasure.user_id == user_id, Erasure.id == erasure_id)).values(
            user_id=None, hold_until=now + timedelta(days=settings.retention_erasure_log_days)))
        summary["account"] = session.execute(delete(User).where(User.id == user_id)).rowcount
        session.execute(update(Erasure).where(Erasure.id == erasure_id).values(
            status="completed", completed_at=now, summary=summary))
        # PostHog forgets the person too (analytics.delete_person after this commit, analytics.retry until done).
        analytics_deletion = analytics_service.request_deletion(session, settings=settings, user_id=user_id)
    if analytics_deletion:
        summary["analytics_deletion"] = analytics_deletion
    summary["blobs"] = swept + _sweep(blobs, user_id)
    log.info("erased account %s: %s", erasure_id, summary)
    if verify:
        _verify(db, blobs, settings, erasure_id, found, summary)
    return summary


def _verify(db: Database, blobs: BlobStore, settings: Settings, erasure_id: str, found: Needles,
            summary: dict[str, Any]) -> None:
    left = residue(scan(db.engine, blobs, needles=found, settings=settings))
    with db.transaction() as session:  # the record proves the erasure was checked, not only done
        stored = dict(session.get(Erasure, erasure_id).summary or {})  # type: ignore[union-attr]
        session.execute(update(Erasure).where(Erasure.id == erasure_id).values(
            summary={**stored, "residue": len(left)}))
    if left:  # table.column or "blob" only: a blob key holds the id, and logs are not a place for it
        log.error("erasure %s left %d finding(s) outside legal holds: %s", erasure_id, len(left),
                  sorted({f.where if f.store == "database" else "blob" for f in left}))
    summary["residue"], summary["findings"] = len(left), left


def _delete_with_files(db: Database, blobs: BlobStore, item: DataItem, table: Table, user_id: str,
                       email: str | None) -> int:
    pk = next(iter(table.primary_key.columns))
    file_col = table.c[item.file_column]  # type: ignore[index]
    total = 0
    while True:
        with db.transaction() as session:
            batch = session.execute(select(pk, file_col).where(item.rows_of(table, user_id, email))
                                    .order_by(pk).limit(BATCH)).all()
            if batch:
                session.execute(delete(table).where(pk.in_([r[0] for r in batch])))
        for _, key in batch:  # after the commit
            if key:
                blobs.delete(key)
        total += len(batch)
        if len(batch) < BATCH:
            return total


def _scrub_model_references(session: Session, user_id: str) -> int:
    """Other users' generations that used this user's published models keep the hash, not the blob key."""
    marker = f"assets/{user_id}/"
    rows = session.execute(select(Generation.id, Generation.models).where(
        Generation.user_id != user_id, cast(Generation.models, Text).contains(marker, autoescape=True))).all()
    for gen_id, models in rows:
        scrubbed = [{**m, "blob_key": None} if str(m.get("blob_key") or "").startswith(marker) else m
                    for m in models or []]
        session.execute(update(Generation).where(Generation.id == gen_id).values(models=scrubbed))
    return len(rows)


def _sweep(blobs: BlobStore, user_id: str) -> int:

    count = 0
    for item in DATA_MAP:
        prefix = item.prefix_for(user_id)
        if prefix and item.erasure != "legal_hold":
            for key in list(blobs.keys(prefix)):
                blobs.delete(key)
                count += 1
    return count
