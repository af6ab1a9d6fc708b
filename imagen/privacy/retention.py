"""Retention (policy §7): purge each category of personal data once its configured period has passed.

The rules come from the data map (`imagen/privacy/datamap.py`): an entry's `period` deletes (or empties) its rows
`setting` days after their clock, and its `hold` deletes the rows it kept after an erasure once the hold ends
(`hold_ended`, which the residue scan also uses to call an expired hold residue). Rows of a child table that
cascade with their parent take their files with them (every `*blob_key` column of the table and of the tables
that reference it with ON DELETE CASCADE).

`retention_service.plan(session, settings, now)` says what would go (how many rows or blobs, under which
setting); `run(session, settings, blobs, now, dry_run)` deletes it. Rows go in the caller's transaction;
blobs go only after it commits (`run_after_commit`), so a rollback leaves every blob in place. Each rule
selects by age, so running twice deletes nothing the second time. The server runs the purge on a schedule
(the periodic `privacy.retention` task, imagen/privacy/tasks.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, Table, and_, delete, exists, false, func, or_, select, update
from sqlalchemy.orm import Session

from imagen.kit.config import Settings
from imagen.kit.db import Database, run_after_commit, utcnow
from imagen.privacy.datamap import DATA_MAP, DataItem, Period, parent_table
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
    name: str | None = None  # the data-map entry whose period or hold this is


@dataclass(frozen=True)
class Rule:
    """A data-map entry's period or legal hold, as the retention run applies it."""

    item: DataItem
    kind: Literal["period", "hold"]

    @property
    def setting(self) -> str:
        return self.item.period.setting if self.kind == "period" else self.item.hold.setting  # type: ignore[union-attr]

    @property
    def what(self) -> str:
        if self.kind == "period":
            return self.item.period.what  # type: ignore[union-attr]
        return f"{self.item.description} kept as a legal hold, once the hold ends"


def rules() -> list[Rule]:
    """Every period and hold the data map declares, in its order (a parent's hold before its followers)."""
    return [Rule(item, kind) for item in DATA_MAP if item.table
            for kind in ("period", "hold") if getattr(item, kind) is not None]  # type: ignore[misc]


def _passed(table: Table, clocks: tuple[str, ...], cutoff: datetime) -> ColumnElement[bool]:
    """The first set clock column is before `cutoff`; false (never NULL) when none is set."""
    clock = table.c[clocks[0]] if len(clocks) == 1 else func.coalesce(*(table.c[c] for c in clocks))
    return and_(clock.is_not(None), clock < cutoff)


def _part(table: Table, only: tuple[str, tuple[str, ...]] | None) -> list[ColumnElement[bool]]:
    return [table.c[only[0]].in_(only[1])] if only else []


def period_ended(period: Period, table: Table, settings: Settings, now: datetime) -> ColumnElement[bool]:
    """Rows of `table` past `period` (only the part it applies to)."""
    cutoff = now - timedelta(days=getattr(settings, period.setting))
    return and_(_passed(table, (period.clock,), cutoff), *_part(table, period.only))


def hold_ended(item: DataItem, table: Table, tables: Mapping[str, Table], settings: Settings,
               now: datetime) -> ColumnElement[bool]:
    """Rows of `table` whose legal hold (`item.hold`) has ended; never NULL, so it can be negated and selected.

    `tables` holds `table`'s parents (for a hold that follows another row): the declared metadata for a purge,
    the reflected one for the residue scan.
    """
    hold = item.hold
    assert hold is not None
    if hold.follows:
        column = table.c[hold.follows]
        parent = parent_table(table, hold.follows)
        parent_item = next((i for i in DATA_MAP if parent is not None and i.table == parent.name and i.hold), None)
        if parent is None or parent_item is None:
            return false()
        parent = tables.get(parent.name, parent)
        key = next(iter(parent.primary_key.columns))
        kept = select(key).where(key == column, ~hold_ended(parent_item, parent, tables, settings, now))
        return or_(column.is_(None), ~exists(kept))
    cutoff = now - timedelta(days=getattr(settings, hold.setting))
    passed = _passed(table, hold.clocks, cutoff)
    if hold.until is None:
        return passed
    until = table.c[hold.until]
    return or_(and_(until.is_not(None), until < now), and_(until.is_(None), passed))


def _tables() -> dict[str, Table]:
    from imagen.kit.db import Base  # every table: the composition root imports them all (imagen/models.py)

    return dict(Base.metadata.tables)


def _blob_columns(table: Table, tables: Mapping[str, Table]) -> list[tuple[Table, list, object]]:
    """Where the files of `table`'s rows are: its own `*blob_key` columns, and those of tables whose rows
    cascade with it. Returns (table, blob columns, the column to match the rows' ids against)."""
    pk = next(iter(table.primary_key.columns))
    found = []
    own = [c for c in table.c if c.name.endswith("blob_key")]
    if own:
        found.append((table, own, pk))
    for child in tables.values():
        for fk in child.foreign_keys:
            if fk.column.table is table and (fk.ondelete or "").upper() == "CASCADE":
                cols = [c for c in child.c if c.name.endswith("blob_key")]
                if cols:
                    found.append((child, cols, fk.parent))
    return found


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
        tables = _tables()
        purges = [self._rule(session, rule, tables, settings, blobs, now, dry_run) for rule in rules()]
        purges.append(self._expired_export_files(session, blobs, now, dry_run))
        if blobs is not None:
            purges.append(self._orphaned_inputs(session, settings, blobs, now, dry_run))
        return purges

    def _rule(self, session: Session, rule: Rule, tables: dict[str, Table], settings: Settings,
              blobs: BlobStore | None, now: datetime, dry_run: bool) -> Purge:
        item, days = rule.item, getattr(settings, rule.setting)
        info = dict(category=item.category, what=rule.what, name=item.name,
                    setting=f"IMAGEN_{rule.setting.upper()}", period=f"{days} days")
        table = tables.get(item.table or "")
        if table is None:
            return Purge(**info, count=0, skipped=f"no {item.table} table")
        pk = list(table.primary_key.columns)
        if len(pk) != 1:
            return Purge(**info, count=0, skipped=f"{table.name} has no single-column primary key")
        if rule.kind == "period":
            assert item.period is not None
            condition, blank = period_ended(item.period, table, settings, now), item.period.blank
        else:
            condition, blank = hold_ended(item, table, tables, settings, now), ()
        ids = list(session.scalars(select(pk[0]).where(condition, *_part(table, item.only))))
        keys: list[str] = []
        files = [] if blank else _blob_columns(table, tables)
        for chunk in _chunks(ids):
            for source, columns, match in files:
                for row in session.execute(select(*columns).select_from(source).where(match.in_(chunk))):
                    keys += [k for k in row if k]
            if dry_run:
                continue
            if blank:
                session.execute(update(table).where(pk[0].in_(chunk)).values({c: None for c in blank}))
            else:
                session.execute(delete(table).where(pk[0].in_(chunk)))
        if not dry_run and blobs is not None:
            for key in keys:
                run_after_commit(session, blobs.delete, key)
        return Purge(**info, count=len(ids), cutoff=now - timedelta(days=days), blobs=len(keys))

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


def run_retention(db: Database, blobs: BlobStore, settings: Settings) -> list[Purge]:
    """One retention run in one transaction (the `privacy.retention` task; `imagen privacy retention run`)."""
    started = time.monotonic()
    with db.transaction() as session:
        purges = retention_service.run(session, settings=settings, blobs=blobs)
    done = {p.category: p.count for p in purges if p.count}
    log.info("retention run purged %s in %.1fs", done or "nothing", time.monotonic() - started)
    return purges
