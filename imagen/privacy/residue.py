"""Residue scan: is anything identifying a user left after erasure? (architecture invariant 5)

It does not trust the data map to find data: it reflects EVERY table of the database and searches every string and
JSON column for what identifies the person (`Needles`): their id, their email (case-insensitive), the salted hashes
an erasure record keeps, and every identifier the data map names (`DataItem.identifiers`: IP addresses, browsers,
payment or device ids) as they were in the person's rows before the erasure. `gather` collects those; erasure runs
it before it deletes anything (`erase_user(..., verify=True)` then scans with them). Blob keys are searched for
the id and the email.

A finding is allowed only where the data map declares a legal hold that has not ended: the table is a `legal_hold`
entry, the column is not one it empties, and `retention.hold_ended` is false for the row. A hold past its period
is residue, like anything else. An identifier others can share (an IP address, a browser) found in a row that
belongs to someone else (the entry's user or email column names another person) is theirs, not residue.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, MetaData, String, Table, Text, cast, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from imagen.kit.config import Settings
from imagen.kit.db import utcnow
from imagen.privacy.datamap import DATA_MAP, DataItem
from imagen.privacy.retention import hold_ended
from imagen.storage import BlobStore

SAMPLES = 5
OWN = frozenset({"id", "email", "id_hash", "email_hash"})  # kinds that name this person alone
MIN_LENGTH = 4  # shorter identifiers ("::1", "-") match too much to say anything about a person


def subject_hash(secret: str, value: str) -> str:
    """Salted (keyed) hash of an email or id: proves an erasure without keeping who it was."""
    return hmac.new(secret.encode(), f"imagen-erasure:{value.strip().lower()}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Needles:
    """What identifies one person: (kind, lowercased value) pairs; kind is one of OWN or an identifier column."""

    user_id: str | None
    email: str | None
    terms: tuple[tuple[str, str], ...]

    def kinds(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for kind, value in self.terms:
            out.setdefault(kind, []).append(value)
        return out


def needles_for(*, user_id: str | None, email: str | None, secret: str | None,
            identifiers: Mapping[str, Iterable[str]] | None = None) -> Needles:
    user_id = user_id.lower() if user_id else None
    email = email.strip().lower() if email else None
    terms: list[tuple[str, str]] = [(k, v) for k, v in (("id", user_id), ("email", email)) if v]
    if secret:
        terms += [(f"{k}_hash", subject_hash(secret, v)) for k, v in list(terms)]
    for kind, values in (identifiers or {}).items():
        for value in values:
            value = str(value).strip().lower()
            if len(value) >= MIN_LENGTH and (kind, value) not in terms:
                terms.append((kind, value))
    return Needles(user_id, email, tuple(terms))


def _tables() -> dict[str, Table]:
    from imagen.kit.db import Base

    return dict(Base.metadata.tables)


def gather(session: Session, *, user_id: str, email: str | None = None, secret: str | None = None) -> Needles:
    """Everything that identifies the user, read from their rows now (before an erasure empties them)."""
    from imagen.accounts.models import User

    if email is None:
        user = session.get(User, user_id)
        email = user.email if user is not None else None
    tables = _tables()
    found: dict[str, set[str]] = {}
    for item in DATA_MAP:
        table = tables.get(item.table or "")
        if table is None or not item.identifiers or item.user_column is None:
            continue
        for name in item.identifiers:
            found.setdefault(name, set()).update(v for v in session.scalars(
                select(table.c[name]).where(item.rows_of(table, user_id, email), table.c[name].is_not(None))
                .distinct()) if v)
    return needles_for(user_id=user_id, email=email, secret=secret,
                       identifiers={k: sorted(v) for k, v in found.items()})


@dataclass
class Finding:
    store: str  # "database" | "blobs"
    where: str  # table.column, or the blob key
    needle: str  # id | email | id_hash | email_hash | an identifier column (ip_address, user_agent, ...)
    count: int = 0
    samples: list[str] = field(default_factory=list)  # row primary keys
    allowed: bool = False
    reason: str = ""


@dataclass(frozen=True)
class _Hold:
    label: str  # the selected column saying whether it has ended
    item: DataItem

    def covers(self, row: Any, column: str) -> bool:
        only = self.item.only
        return column not in self.item.anonymize and (only is None or row.get(f"_o_{only[0]}") in only[1])


def _searchable(column) -> bool:
    return isinstance(column.type, String | Text | JSON) or type(column.type).__name__.upper() in ("JSONB", "JSON")


def _owners(table: Table) -> list[tuple[str, str]]:
    """(column, "id" | "email"): the columns saying whose a row is, from the data map."""
    owners: list[tuple[str, str]] = []
    for i in DATA_MAP:
        if i.table == table.name:
            owners += [(c, kind) for c, kind in ((i.user_column, "id"), (i.email_column, "email"))
                       if c and c in table.c and (c, kind) not in owners]
    return owners


def _someone_else(row: Any, owners: list[tuple[str, str]], terms: Needles) -> bool:
    mine = {"id": terms.user_id, "email": terms.email}
    return any(row[f"_w_{c}"] is not None and str(row[f"_w_{c}"]).strip().lower() != mine[kind]
               for c, kind in owners)


def scan(engine: Engine, blobs: BlobStore | None, *, needles: Needles | None = None, user_id: str | None = None,
         email: str | None = None, secret: str | None = None, settings: Settings, now: datetime | None = None,
         ) -> list[Finding]:
    """Every place the person is still found. Give `needles` (from `gather`, before the erasure), or the id and
    email (then only those and their hashes are searched). Holds end by `settings`' periods at `now`."""
    terms = needles if needles is not None else needles_for(user_id=user_id, email=email, secret=secret)
    if not terms.terms:
        raise ValueError("give a user id or an email")
    now = now or utcnow()
    findings: dict[tuple[str, str, str], Finding] = {}
    meta = MetaData()
    meta.reflect(bind=engine)
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            columns = [c for c in table.c if _searchable(c)]
            if not columns:
                continue
            pk = list(table.primary_key.columns) or columns[:1]
            holds = [_Hold(f"_h{n}", i) for n, i in enumerate(DATA_MAP)
                     if i.table == table.name and i.erasure == "legal_hold" and i.hold]
            only = {h.item.only[0] for h in holds if h.item.only} & set(table.c.keys())
            owners = _owners(table)
            texts = {c.name: func.lower(cast(c, Text)) for c in columns}
            cond = or_(*(t.contains(v, autoescape=True) for t in texts.values() for _, v in terms.terms))
            query = select(*pk, *(t.label(f"_s_{name}") for name, t in texts.items()),
                           *(table.c[o].label(f"_o_{o}") for o in only),
                           *(table.c[c].label(f"_w_{c}") for c, _ in owners),
                           *(hold_ended(h.item, table, meta.tables, settings, now).label(h.label) for h in holds)
                           ).where(cond)
            for row in conn.execute(query.execution_options(yield_per=1000)):
                mapping = row._mapping
                row_id = "/".join(str(mapping[c.name]) for c in pk)
                theirs = _someone_else(mapping, owners, terms)
                for name in texts:
                    value = mapping[f"_s_{name}"] or ""
                    for kind, needle in terms.terms:
                        if needle not in value or (kind not in OWN and theirs):
                            continue
                        hold = next((h for h in holds if h.covers(mapping, name)), None)
                        verdict = None if hold is None else (hold.item, bool(mapping[hold.label]))
                        _add(findings, "database", f"{table.name}.{name}", kind, row_id, verdict)
    if blobs is not None:
        prefixes = [(i.blob_prefix.split("{", 1)[0], i) for i in DATA_MAP if i.blob_prefix and i.hold]
        for key in blobs.keys(""):
            low = key.lower()
            for kind in ("id", "email"):
                value = terms.user_id if kind == "id" else terms.email
                if value and value in low:
                    held = next((i for prefix, i in prefixes if key.startswith(prefix)), None)
                    _add(findings, "blobs", key, kind, key, None if held is None else (held, False))
    return sorted(findings.values(), key=lambda f: (f.allowed, f.store, f.where))


def _add(findings: dict[tuple[str, str, str], Finding], store: str, where: str, needle: str, sample: str,
         verdict: tuple[DataItem, bool] | None) -> None:
    """`verdict`: the hold that keeps the value and whether it has ended (None: no hold keeps it)."""
    if verdict is None:
        state, reason = "residue", ""
    elif verdict[1]:
        state, reason = "ended", f"legal hold ended ({verdict[0].name}): {verdict[0].hold.reason}"  # type: ignore
    else:
        state, reason = "held", f"legal hold: {verdict[0].hold.reason}"  # type: ignore[union-attr]
    finding = findings.get((where, needle, state))
    if finding is None:
        finding = findings[(where, needle, state)] = Finding(store, where, needle, allowed=state == "held",
                                                             reason=reason)
    finding.count += 1
    if len(finding.samples) < SAMPLES:
        finding.samples.append(sample)


def residue(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that are not declared legal holds still in force (a clean erasure has none)."""
    return [f for f in findings if not f.allowed]
