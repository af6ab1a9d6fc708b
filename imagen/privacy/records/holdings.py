"""What IMAGEN holds about a user, by data category: for the privacy centre and the breach lookup.

The categories come from the data map (`imagen.privacy.datamap.DATA_MAP`); where each is processed from the
provider registry (`imagen.privacy.providers`, only providers this installation configured); retention periods
from the settings the data map names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Table, func, select, union
from sqlalchemy.orm import Session

from imagen.kit.config import Settings

OWN_SERVER = "this IMAGEN server"
SETTING_NAME = re.compile(r"\b([a-z][a-z_]*_(?:days|hours))\b")  # checked against Settings where used

# (table, column holding the user id, optional (column, values) restricting the rows)
Source = tuple[str, str, tuple[str, tuple[str, ...]] | None]


@dataclass(frozen=True)
class Holding:
    category: str
    description: str
    sources: tuple[Source, ...]
    where: tuple[str, ...]  # who processes it: provider names, or this server
    retention: str
    collected: bool = True


def period_text(text: str, settings: Settings) -> str:
    """Setting names in the data map's retention text become the configured periods."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        amount = getattr(settings, name, None)
        if amount is None:
            return name.replace("_", " ")
        return f"{amount} {'hours' if name.endswith('_hours') else 'days'}"
    return SETTING_NAME.sub(value, text)


def _where(provider_ids: tuple[str, ...], settings: Settings) -> tuple[str, ...]:
    try:
        from imagen.privacy.providers import configured_providers
    except ImportError:
        return (OWN_SERVER,)
    enabled = {p.id: p.name for p in configured_providers(settings)}
    names = [enabled[p] for p in provider_ids if p in enabled]
    # Infrastructure a deployment has not handed to a provider runs on the operator's own server.
    if not provider_ids or any(p not in enabled for p in provider_ids if p not in ("stripe", "posthog")):
        names.insert(0, OWN_SERVER)
    return tuple(dict.fromkeys(names))


def holdings(settings: Settings) -> list[Holding]:
    """The data map's categories as the user sees them (entries the law lets us withhold are left out)."""
    from imagen.privacy.datamap import DATA_MAP

    grouped: dict[str, list[object]] = {}
    for entry in (e for e in DATA_MAP if not e.withheld):
        grouped.setdefault(entry.category, []).append(entry)
    result = []
    for category, entries in grouped.items():
        sources = tuple((e.table, e.user_column, e.only) for e in entries if e.table and e.user_column)
        providers = tuple(dict.fromkeys(p for e in entries for p in e.providers))
        result.append(Holding(
            category=category, description="; ".join(dict.fromkeys(e.description for e in entries)),
            sources=sources, where=_where(providers, settings),
            retention="; ".join(dict.fromkeys(period_text(e.retention, settings) for e in entries)),
            collected=any(e.collected for e in entries)))
    return result


def _tables() -> dict[str, Table]:
    from imagen.kit.db import Base

    return dict(Base.metadata.tables)


def _rows(table: Table, column: str, only: tuple[str, tuple[str, ...]] | None) -> list[ColumnElement[bool]]:
    conditions = [table.c[column].is_not(None)]
    if only is not None and only[0] in table.c:
        conditions.append(table.c[only[0]].in_(only[1]))
    return conditions


def counts(session: Session, items: list[Holding], user_id: str) -> dict[str, int]:
    """How many records each category holds for one user."""
    tables = _tables()
    result: dict[str, int] = {}
    for item in items:
        total = 0
        for name, column, only in item.sources:
            table = tables.get(name)
            if table is not None and column in table.c:
                total += session.scalar(select(func.count()).select_from(table).where(
                    table.c[column] == user_id, *_rows(table, column, only))) or 0
        result[item.category] = total
    return result


def category_names(items: list[Holding]) -> list[str]:
    return [item.category for item in items if item.sources]


def users_with_data(session: Session, items: list[Holding], categories: list[str]) -> set[str]:
    """Ids of the accounts holding any data in the given categories."""
    tables = _tables()
    selects = []
    for item in items:
        if item.category not in categories:
            continue
        for name, column, only in item.sources:
            table = tables.get(name)
            if table is not None and column in table.c:
                selects.append(select(table.c[column].label("user_id")).where(*_rows(table, column, only)))
    if not selects:
        return set()
    return set(session.scalars(union(*selects)))
