"""Hash banks: reading operators' hash lists (plain or CSV/TSV exports) and the service that stores them.

A file is either one hex hash per line, or a table with a `hash` column (NCMEC, ThreatExchange and HMA exports; the
delimiter is detected: comma, tab, semicolon or pipe). Blank lines and `#` comments are skipped; every other line
that doesn't hold a hash of the bank's type is reported with its line number and left out. Hashes are stored as
lowercase hex, once per bank: importing the same list twice adds nothing. Every change moves the bank's
`updated_at`, which is what running matchers watch (imagen/safety/matcher.py).
"""

from __future__ import annotations

import csv
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from imagen.kit.db import utcnow
from imagen.kit.errors import Conflict, NotFound, field_error
from imagen.safety.bank_models import HASH_TYPES, HEX_LENGTHS, BankHash, HashBank

BATCH_SIZE = 2000
MAX_REPORTED_BAD_LINES = 1000
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,99}$")
DELIMITERS = (",", "\t", ";", "|")
_HEX = frozenset(string.hexdigits)


def hash_columns(hash_type: str) -> tuple[str, ...]:
    """Header names taken as the hash column, most specific first."""
    extra = {"sha256": ("sha-256", "sha_256"), "pdq": ("pdq_hash",), "md5": ("md5_hash",)}[hash_type]
    return ("hash", hash_type, *extra, "hash_value", "signal_value", "signal", "value")


@dataclass
class BadLine:
    line: int
    reason: str


@dataclass
class ImportReport:
    added: int = 0
    duplicates: int = 0
    bad_count: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)  # the first MAX_REPORTED_BAD_LINES

    def bad(self, line: int, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad_lines) < MAX_REPORTED_BAD_LINES:
            self.bad_lines.append(BadLine(line, reason))


def check_hash_type(hash_type: str) -> str:
    if hash_type not in HASH_TYPES:
        raise field_error("hash_type", f"must be one of {', '.join(HASH_TYPES)}")
    return hash_type


def normalize_hash(value: str, hash_type: str) -> str | None:
    """Lowercase hex of the right length for the type, or None."""
    value = value.strip().strip('"').strip().lower()
    if value.startswith("0x"):
        value = value[2:]
    if len(value) != HEX_LENGTHS[hash_type] or not _HEX.issuperset(value):
        return None
    return value


def _content_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(lines, start=1):
        text = raw.strip().lstrip("\ufeff")
        if text and not text.startswith("#"):
            yield number, text


def parse_hashes(lines: Iterable[str], hash_type: str, report: ImportReport) -> Iterator[str]:
    """The valid hashes of a plain list or a CSV/TSV export, in file order; bad lines go to `report`."""
    rows = _content_lines(lines)
    first = next(rows, None)
    if first is None:
        return
    number, text = first
    delimiter = next((d for d in DELIMITERS if d in text), None)
    column = 0
    header = [c.strip().strip('"').strip().lower() for c in next(csv.reader([text], delimiter=delimiter))] \
        if delimiter else [text.strip('"').strip().lower()]
    if normalize_hash(header[0], hash_type) is None:
        names = hash_columns(hash_type)
        found = next((name for name in names if name in header), None)
        if found is not None:
            column = header.index(found)
        elif delimiter:
            report.bad(number, f"no hash column in the header (expected one of: {', '.join(names)})")
            return
        else:  # a plain list whose first line is not a hash
            report.bad(number, f"not a {hash_type} hash ({HEX_LENGTHS[hash_type]} hex digits)")
    else:
        rows = _chain_first(first, rows)
    for number, text in rows:
        cells = next(csv.reader([text], delimiter=delimiter)) if delimiter else [text]
        if column >= len(cells):
            report.bad(number, f"missing column {column + 1}")
            continue
        value = normalize_hash(cells[column], hash_type)
        if value is None:
            report.bad(number, f"not a {hash_type} hash ({HEX_LENGTHS[hash_type]} hex digits)")
            continue
        yield value


def _chain_first(first: tuple[int, str], rest: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    yield first
    yield from rest


def batched(values: Iterable[str], size: int = BATCH_SIZE) -> Iterator[list[str]]:
    it = iter(values)
    while batch := list(islice(it, size)):
        yield batch


class HashBankService:
    def list(self, session: Session) -> list[HashBank]:
        return list(session.scalars(select(HashBank).order_by(HashBank.name)))

    def get(self, session: Session, *, bank_id: str) -> HashBank:
        bank = session.get(HashBank, bank_id)
        if bank is None:
            raise NotFound("Hash bank not found")
        return bank

    def get_by_name(self, session: Session, *, name: str) -> HashBank:
        bank = session.scalar(select(HashBank).where(HashBank.name == name))
        if bank is None:
            raise NotFound(f"No hash bank named {name!r}")
        return bank

    def ensure(self, session: Session, *, name: str, hash_type: str, source: str | None = None,
               description: str | None = None) -> HashBank:
        """The bank named `name` (created enabled when new); its type must match."""
        check_hash_type(hash_type)
        if not NAME_PATTERN.match(name):
            raise field_error("name", "1-100 characters: letters, digits, space, '.', '_', ':', '-'")
        bank = session.scalar(select(HashBank).where(HashBank.name == name))
        if bank is None:
            bank = HashBank(name=name, hash_type=hash_type, source=source or "", description=description or "",
                            count=0, enabled=True, updated_at=utcnow())
            session.add(bank)
            session.flush()
        elif bank.hash_type != hash_type:
            raise Conflict(f"Bank {name!r} holds {bank.hash_type} hashes, not {hash_type}")
        if source is not None:
            bank.source = source
        if description is not None:
            bank.description = description
        return bank

    def add_hashes(self, session: Session, *, bank_id: str, values: list[str], report: ImportReport) -> None:
        """Insert one batch of normalized hashes, skipping those already in the bank (or earlier in the batch)."""
        unique = list(dict.fromkeys(values))
        report.duplicates += len(values) - len(unique)
        existing = set(session.scalars(
            select(BankHash.value).where(BankHash.bank_id == bank_id, BankHash.value.in_(unique))))
        new = [v for v in unique if v not in existing]
        report.duplicates += len(unique) - len(new)
        if new:
            session.execute(insert(BankHash), [{"bank_id": bank_id, "value": v} for v in new])
        report.added += len(new)

    def finish_import(self, session: Session, *, bank_id: str) -> HashBank:
        """Recount the bank and move `updated_at`, so running matchers reload it."""
        bank = self.get(session, bank_id=bank_id)
        bank.count = session.scalar(select(func.count()).select_from(BankHash).where(BankHash.bank_id == bank_id))
        bank.updated_at = utcnow()
        session.flush()
        return bank

    def import_lines(self, session: Session, *, name: str, hash_type: str, lines: Iterable[str],
                     source: str | None = None, description: str | None = None) -> tuple[HashBank, ImportReport]:
        """A whole list in this session's transaction (the API; the CLI commits batch by batch instead)."""
        bank = self.ensure(session, name=name, hash_type=hash_type, source=source, description=description)
        report = ImportReport()
        for batch in batched(parse_hashes(lines, hash_type, report)):
            self.add_hashes(session, bank_id=bank.id, values=batch, report=report)
        return self.finish_import(session, bank_id=bank.id), report

    def set_enabled(self, session: Session, *, bank: HashBank, enabled: bool) -> HashBank:
        if bank.enabled != enabled:
            bank.enabled = enabled
            bank.updated_at = utcnow()
            session.flush()
        return bank

    def update(self, session: Session, *, bank_id: str, enabled: bool | None = None, source: str | None = None,
               description: str | None = None) -> HashBank:
        bank = self.get(session, bank_id=bank_id)
        if source is not None:
            bank.source = source
        if description is not None:
            bank.description = description
        if enabled is not None:
            self.set_enabled(session, bank=bank, enabled=enabled)
        session.flush()
        return bank


hash_bank_service = HashBankService()
