"""Residue scan: is anything identifying a user left after erasure? (architecture invariant 5)

It does not trust the data map: it reflects EVERY table of the database and searches every string and JSON column
for the user's id, their email (case-insensitive) and the salted hashes an erasure record keeps, and lists every
blob whose key contains the id or the email. A finding is allowed only where the data map declares a legal hold
(the table is a `legal_hold` entry and the column is not one it empties); anything else is residue.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, MetaData, String, Text, cast, func, or_, select
from sqlalchemy.engine import Engine

from imagen.privacy.datamap import DATA_MAP
from imagen.privacy.erasure import subject_hash
from imagen.storage import BlobStore

SAMPLES = 5


@dataclass
class Finding:
    store: str  # "database" | "blobs"
    where: str  # table.column, or the blob key
    needle: str  # id | email | id_hash | email_hash
    count: int = 0
    samples: list[str] = field(default_factory=list)  # row primary keys
    allowed: bool = False
    reason: str = ""


def needles(*, user_id: str | None, email: str | None, secret: str | None) -> dict[str, str]:
    found: dict[str, str] = {}
    if user_id:
        found["id"] = user_id.lower()
    if email:
        found["email"] = email.strip().lower()
    if secret:
        for name, value in list(found.items()):
            found[f"{name}_hash"] = subject_hash(secret, value)
    return found


def _holds() -> dict[str, list[tuple[tuple[str, tuple[str, ...]] | None, set[str], str]]]:
    """table -> [(the part of the table it covers, columns the hold empties, reason)]."""
    holds: dict[str, list[tuple[tuple[str, tuple[str, ...]] | None, set[str], str]]] = {}
    for i in DATA_MAP:
        if i.table and i.erasure == "legal_hold":
            holds.setdefault(i.table, []).append((i.only, set(i.anonymize), i.hold.reason if i.hold else ""))
    return holds


def _held(holds: list, row: Any, column: str) -> str | None:
    """The legal hold that keeps this column of this row, if any."""
    for only, emptied, reason in holds:
        if column not in emptied and (only is None or row.get(f"_o_{only[0]}") in only[1]):
            return reason
    return None


def _blob_holds() -> list[tuple[str, str]]:
    return [(i.blob_prefix.split("{", 1)[0], i.hold.reason if i.hold else "")
            for i in DATA_MAP if i.blob_prefix and i.erasure == "legal_hold"]


def _searchable(column) -> bool:
    return isinstance(column.type, String | Text | JSON) or type(column.type).__name__.upper() in ("JSONB", "JSON")


def scan(engine: Engine, blobs: BlobStore | None, *, user_id: str | None = None, email: str | None = None,
         secret: str | None = None) -> list[Finding]:
    terms = needles(user_id=user_id, email=email, secret=secret)
    if not terms:
        raise ValueError("give a user id or an email")
    findings: dict[tuple[str, str, bool], Finding] = {}
    holds = _holds()
    meta = MetaData()
    meta.reflect(bind=engine)
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            columns = [c for c in table.c if _searchable(c)]
            if not columns:
                continue
            pk = list(table.primary_key.columns) or columns[:1]
            held = holds.get(table.name, [])
            only = {o[0] for o, _, _ in held if o} & set(table.c.keys())
            texts = {c.name: func.lower(cast(c, Text)) for c in columns}
            cond = or_(*(t.contains(n, autoescape=True) for t in texts.values() for n in terms.values()))
            query = select(*pk, *(t.label(f"_s_{name}") for name, t in texts.items()),
                           *(table.c[o].label(f"_o_{o}") for o in only)).where(cond)
            for row in conn.execute(query.execution_options(yield_per=1000)):
                mapping = row._mapping
                row_id = "/".join(str(mapping[c.name]) for c in pk)
                for name in texts:
                    value = mapping[f"_s_{name}"] or ""
                    for needle_name, needle in terms.items():
                        if needle in value:
                            reason = _held(held, mapping, name)
                            _add(findings, "database", f"{table.name}.{name}", needle_name, row_id, reason)
    if blobs is not None:
        prefixes = _blob_holds()
        for key in blobs.keys(""):
            low = key.lower()
            for needle_name in ("id", "email"):
                if needle_name in terms and terms[needle_name] in low:
                    reason = next((r for prefix, r in prefixes if key.startswith(prefix)), None)
                    _add(findings, "blobs", key, needle_name, key, reason)
    return sorted(findings.values(), key=lambda f: (f.allowed, f.store, f.where))


def _add(findings: dict[tuple[str, str, bool], Finding], store: str, where: str, needle: str, sample: str,
         hold: str | None) -> None:
    key = (where, needle, hold is not None)
    finding = findings.get(key)
    if finding is None:
        finding = findings[key] = Finding(store, where, needle, allowed=hold is not None,
                                          reason=f"legal hold: {hold}" if hold is not None else "")
    finding.count += 1
    if len(finding.samples) < SAMPLES:
        finding.samples.append(sample)


def residue(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that are not declared legal holds (a clean erasure has none)."""
    return [f for f in findings if not f.allowed]
