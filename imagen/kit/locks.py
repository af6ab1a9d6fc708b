"""Row locks for check-then-write decisions (a quota, a per-user limit) that must hold under concurrency."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute, Session


def lock_row(session: Session, key: InstrumentedAttribute[Any], value: Any, *,
             touch: InstrumentedAttribute[Any]) -> None:
    """Hold a lock on the row `key == value` until the transaction ends; another transaction asking for it waits.

    PostgreSQL: SELECT ... FOR NO KEY UPDATE (rows that reference it can still be inserted meanwhile); each later
    statement of a READ COMMITTED transaction sees what the previous holder committed. SQLite has one writer at a
    time: a write that changes nothing (`touch` = itself, a non-key column) takes the database's write lock. pysqlite
    begins its transaction at that first write, so the reads that follow see every earlier commit.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(key).where(key == value).with_for_update(key_share=True))
    else:
        session.execute(update(key.class_).where(key == value).values({touch: touch})
                        .execution_options(synchronize_session=False))
