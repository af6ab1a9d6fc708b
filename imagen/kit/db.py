"""Engine, sessions and the after-commit queue shared by every domain."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, String, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use imagen.kit.db.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class IdMixin:
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)


class CreatedMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


def make_engine(url: str, *, pool_size: int | None = None, pool_timeout: float = 30.0) -> Engine:
    """`pool_size`: connections kept and the most open at once (no overflow), sized by the caller against its
    threads (imagen/kit/capacity.py); None keeps SQLAlchemy's defaults (the CLI, one thread)."""
    sized: dict[str, Any] = {"pool_timeout": pool_timeout}
    if pool_size is not None:
        sized.update(pool_size=pool_size, max_overflow=0)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **sized)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if pool_size is None:
        sized.update(pool_size=10, max_overflow=20)
    return create_engine(url, pool_pre_ping=True, **sized)


class Database:
    def __init__(self, url: str, *, pool_size: int | None = None, pool_timeout: float = 30.0) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, pool_timeout=pool_timeout)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


# Background work queued during a transaction runs only once it has committed,
# so a worker never sees rows that do not exist yet; a rollback drops it.
_AFTER_COMMIT = "imagen_after_commit"


def run_after_commit(session: Session, fn: Callable[..., Any], *args: Any) -> None:
    session.info.setdefault(_AFTER_COMMIT, []).append((fn, args))


_AFTER_ROLLBACK = "imagen_after_rollback"


def run_after_rollback(session: Session, fn: Callable[..., Any], *args: Any) -> None:
    """Undo side effects outside the database (a blob written early) if the transaction fails."""
    session.info.setdefault(_AFTER_ROLLBACK, []).append((fn, args))


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_ROLLBACK, None)
    for fn, args in session.info.pop(_AFTER_COMMIT, []):
        try:
            fn(*args)
        except Exception:  # the commit stands; the job is safe to re-run later
            log.exception("after-commit callback %s failed", fn)


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)
    for fn, args in session.info.pop(_AFTER_ROLLBACK, []):
        try:
            fn(*args)
        except Exception:
            log.exception("after-rollback callback %s failed", fn)
