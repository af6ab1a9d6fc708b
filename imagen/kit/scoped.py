"""Owner-scoped reads: every read a user can trigger goes through here.

Another user's object is indistinguishable from a missing one (404), never a 403 with details.
"""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from imagen.kit.errors import NotFound

T = TypeVar("T")


def owned(model: type[T], user_id: str) -> Select[tuple[T]]:
    return select(model).where(model.user_id == user_id)  # type: ignore[attr-defined]


def get_owned(session: Session, model: type[T], object_id: str, user_id: str, *, what: str | None = None) -> T:
    obj = session.scalars(owned(model, user_id).where(model.id == object_id)).first()  # type: ignore[attr-defined]
    if obj is None:
        raise NotFound(f"{what or model.__name__} not found")
    return obj

