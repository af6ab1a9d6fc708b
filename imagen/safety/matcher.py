"""Matching images and files against the enabled hash banks, from an in-memory index.

PDQ (Meta's perceptual hash, computed with the `pdqhash` package) matches at Hamming distance at most
`IMAGEN_PDQ_MAX_DISTANCE` (31 of 256 bits) and ignores hashes of quality below `IMAGEN_PDQ_MIN_QUALITY` (50), as the
reference does; MD5 and SHA-256 match the exact bytes. The index holds every enabled bank: PDQ hashes as four
contiguous uint64 columns; exact hashes in a dict. Small PDQ banks are scanned with XOR + popcount (the first two
words first, so only the rare rows within the threshold on half the bits are finished). From `MIH_MIN_ROWS` rows
on, a multi-index (`PdqSegments`) finds the candidates instead: with the 256 bits cut into 16 segments of 16 bits,
two hashes within distance 31 agree to within one bit on at least one segment (pigeonhole), so a lookup reads 16
bucket tables at 17 keys each and counts full distances only for the rows found there
(`benchmarks/hash_match.py` measures both). A cheap query on `hash_banks` (at most every
`IMAGEN_HASH_BANK_RELOAD_SECONDS`) tells when an import or an enable/disable happened, in this process or
another one, and the index is rebuilt.

Callers get a `Match` (which bank, how far) and decide what to do; this module takes no action.
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pdqhash
from PIL import Image
from sqlalchemy import case, func, select

from imagen.kit.config import Settings
from imagen.kit.db import Database
from imagen.safety.bank_models import BankHash, HashBank

LOAD_CHUNK = 100_000
MIH_MIN_ROWS = 50_000  # below this the scan is as fast as the multi-index (benchmarks/hash_match.py)
SEGMENTS, SEGMENT_BITS = 16, 16
MAX_HASH_SIDE = 1024  # larger images are downsampled before hashing (PDQ itself works on a 64x64 reduction)


@dataclass(frozen=True)
class Match:
    bank_id: str
    bank_name: str
    hash_type: str
    distance: int  # 0 for exact hashes
    matched_value: str


def pdq_hex(image: Image.Image) -> tuple[str, int]:
    """The PDQ hash of an image as 64 lowercase hex digits (first bit = most significant, as HMA) and its quality."""
    if max(image.size) > MAX_HASH_SIDE:
        image = image.copy()
        image.thumbnail((MAX_HASH_SIDE, MAX_HASH_SIDE), Image.Resampling.LANCZOS)
    vector, quality = pdqhash.compute(np.asarray(image.convert("RGB")))
    return np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes().hex(), int(quality)


def pdq_words(hex_values: list[str]) -> np.ndarray:
    """PDQ hex strings → a (4, n) uint64 array, one contiguous row per 64-bit word."""
    raw = np.frombuffer(bytes.fromhex("".join(hex_values)), dtype=">u8").astype(np.uint64)
    return np.ascontiguousarray(raw.reshape(-1, 4).T)


def pdq_scan(words: np.ndarray, query: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `words` within `max_distance` of `query` (4 uint64) and their distances.

    The first two words are counted for every row; only rows already within the threshold on those 128 bits
    (rare for unrelated hashes, which differ in about half their bits) get the other two counted.
    """
    if words.shape[1] == 0:
        return np.empty(0, np.intp), np.empty(0, np.uint16)
    half = np.bitwise_count(words[0] ^ query[0])
    half += np.bitwise_count(words[1] ^ query[1])  # uint8: at most 128
    rows = np.flatnonzero(half <= max_distance)
    if rows.size == 0:
        return rows, np.empty(0, np.uint16)
    full = half[rows].astype(np.uint16)
    full += np.bitwise_count(words[2, rows] ^ query[2])
    full += np.bitwise_count(words[3, rows] ^ query[3])
    keep = full <= max_distance
    return rows[keep], full[keep]


@functools.cache
def _flip_masks(radius: int) -> np.ndarray:
    """Every 16-bit mask with at most `radius` bits set (radius 1: the value itself and its 16 neighbours)."""
    masks = np.arange(1 << SEGMENT_BITS, dtype=np.uint32)
    return masks[np.bitwise_count(masks) <= radius].astype(np.intp)


def pdq_segments(words: np.ndarray) -> np.ndarray:
    """(4, n) uint64 words → (16, n) 16-bit segments, most significant first."""
    shifts = [np.uint64(48 - SEGMENT_BITS * j) for j in range(4)]
    return np.stack([(words[i] >> shift) & np.uint64(0xFFFF) for i in range(4) for shift in shifts]).astype(np.intp)


@dataclass(frozen=True)
class PdqSegments:
    """Multi-index hashing (Norouzi, Punjani and Fleet): per segment, the rows ordered by that segment's value and
    where each of the 65,536 values starts, so a key's rows are one slice."""

    order: np.ndarray  # (16, n) int32
    offsets: np.ndarray  # (16, 65537) int64

    @classmethod
    def build(cls, words: np.ndarray) -> PdqSegments:
        segments = pdq_segments(words)
        order = np.argsort(segments, axis=1, kind="stable").astype(np.int32)
        counts = np.stack([np.bincount(row, minlength=1 << SEGMENT_BITS) for row in segments])
        offsets = np.zeros((SEGMENTS, (1 << SEGMENT_BITS) + 1), np.int64)
        np.cumsum(counts, axis=1, out=offsets[:, 1:])
        return cls(order, offsets)

    @staticmethod
    def radius(max_distance: int) -> int | None:
        """Bits a segment may differ by (pigeonhole), or None when probing would cost more than scanning."""
        radius = max_distance // SEGMENTS
        return radius if radius <= 2 else None

    def candidates(self, query: np.ndarray, radius: int) -> np.ndarray:
        """Rows that agree with `query` to within `radius` bits on at least one segment (a superset of matches;
        a row may come more than once: deduplicating thousands of candidates costs more than counting them)."""
        keys = pdq_segments(query.reshape(4, 1))[:, 0, None] ^ _flip_masks(radius)[None, :]  # (16, probes)
        lane = np.arange(SEGMENTS)[:, None]
        starts, ends = self.offsets[lane, keys].ravel(), self.offsets[lane, keys + 1].ravel()
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, np.intp)
        # The slices order[s, start:end] of every probe, gathered in one go from the flattened table.
        base = (starts + np.repeat(np.arange(SEGMENTS) * self.order.shape[1], keys.shape[1]))
        first = np.cumsum(lengths) - lengths
        flat = np.repeat(base - first, lengths) + np.arange(total)
        return self.order.ravel()[flat]


def pdq_lookup(words: np.ndarray, segments: PdqSegments | None, query: np.ndarray,
               max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows within `max_distance` and their distances: through the multi-index when there is one, else a scan."""
    radius = PdqSegments.radius(max_distance)
    if segments is None or radius is None:
        return pdq_scan(words, query, max_distance)
    rows = segments.candidates(query, radius)
    if rows.size == 0:
        return rows, np.empty(0, np.uint16)
    distance = np.zeros(rows.size, np.uint16)
    for k in range(4):
        distance += np.bitwise_count(words[k, rows] ^ query[k])
    rows, first = np.unique(rows[distance <= max_distance], return_index=True)
    return rows, distance[distance <= max_distance][first]


@dataclass
class BankIndex:
    """Everything the enabled banks hold, ready to match. Replaced whole on reload, never changed in place."""

    banks: list[tuple[str, str]] = field(default_factory=list)  # position → (bank id, name)
    pdq: np.ndarray = field(default_factory=lambda: np.empty((4, 0), np.uint64))
    pdq_bank: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    exact: dict[str, dict[str, int]] = field(default_factory=lambda: {"md5": {}, "sha256": {}})
    segments: PdqSegments | None = None  # built for banks of MIH_MIN_ROWS and more

    def __post_init__(self) -> None:
        if self.segments is None and self.pdq.shape[1] >= MIH_MIN_ROWS:
            self.segments = PdqSegments.build(self.pdq)

    @classmethod
    def load(cls, db: Database) -> BankIndex:
        index = cls()
        with db.transaction() as session:
            banks = session.execute(select(HashBank.id, HashBank.name, HashBank.hash_type)
                                    .where(HashBank.enabled).order_by(HashBank.name)).all()
            index.banks = [(b.id, b.name) for b in banks]
            position = {b.id: i for i, b in enumerate(banks)}
            words, owners = [], []
            for bank in banks:
                rows = session.execute(select(BankHash.value).where(BankHash.bank_id == bank.id)
                                       .execution_options(yield_per=LOAD_CHUNK))
                if bank.hash_type == "pdq":
                    for chunk in rows.partitions(LOAD_CHUNK):
                        words.append(pdq_words([r[0] for r in chunk]))
                        owners.append(np.full(len(chunk), position[bank.id], np.int32))
                else:
                    table = index.exact[bank.hash_type]
                    for (value,) in rows:
                        table.setdefault(value, position[bank.id])
        if words:
            index.pdq = np.ascontiguousarray(np.concatenate(words, axis=1))
            index.pdq_bank = np.concatenate(owners)
            if index.pdq.shape[1] >= MIH_MIN_ROWS:
                index.segments = PdqSegments.build(index.pdq)
        return index

    @property
    def size(self) -> int:
        return self.pdq.shape[1] + sum(len(t) for t in self.exact.values())


class HashMatcher:
    def __init__(self, db: Database, *, max_distance: int = 31, min_quality: int = 50,
                 reload_seconds: float = 5.0) -> None:
        self.db = db
        self.max_distance = max_distance
        self.min_quality = min_quality
        self.reload_seconds = reload_seconds
        self._index = BankIndex()
        self._fingerprint: Any = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def from_index(cls, index: BankIndex, *, max_distance: int = 31, min_quality: int = 50) -> HashMatcher:
        """A matcher over a fixed index, without a database (benchmarks)."""
        matcher = cls(None, max_distance=max_distance, min_quality=min_quality,  # type: ignore[arg-type]
                      reload_seconds=float("inf"))
        matcher._index, matcher._checked_at = index, time.monotonic()
        return matcher

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> HashMatcher:
        return cls(db, max_distance=settings.pdq_max_distance, min_quality=settings.pdq_min_quality,
                   reload_seconds=settings.hash_bank_reload_seconds)

    def _current_fingerprint(self) -> Any:
        with self.db.transaction() as session:
            return tuple(session.execute(select(
                func.count(), func.max(HashBank.updated_at), func.coalesce(func.sum(HashBank.count), 0),
                func.coalesce(func.sum(case((HashBank.enabled, 1), else_=0)), 0))).one())

    def refresh(self, *, force: bool = False) -> BankIndex:
        """The index, rebuilt first if the banks changed (looked at most every `reload_seconds`)."""
        if not force and time.monotonic() - self._checked_at < self.reload_seconds:
            return self._index
        with self._lock:
            if not force and time.monotonic() - self._checked_at < self.reload_seconds:
                return self._index
            fingerprint = self._current_fingerprint()
            if force or fingerprint != self._fingerprint:
                self._index = BankIndex.load(self.db)
                self._fingerprint = fingerprint
            self._checked_at = time.monotonic()
            return self._index

    def _match(self, index: BankIndex, position: int, hash_type: str, distance: int, value: str) -> Match:
        bank_id, bank_name = index.banks[position]
        return Match(bank_id=bank_id, bank_name=bank_name, hash_type=hash_type, distance=distance,
                     matched_value=value)

    def _exact(self, hash_type: str, hexdigest: str) -> Match | None:
        index = self.refresh()
        value = hexdigest.strip().lower()
        position = index.exact[hash_type].get(value)
        return None if position is None else self._match(index, position, hash_type, 0, value)

    def match_md5(self, hexdigest: str) -> Match | None:
        return self._exact("md5", hexdigest)

    def match_bytes_sha256(self, hexdigest: str) -> Match | None:
        """For files hashed elsewhere (uploaded model files): the SHA-256 hex digest against the sha256 banks."""
        return self._exact("sha256", hexdigest)

    def match_pdq(self, hex_value: str) -> Match | None:
        """The closest PDQ hash within the threshold, if any."""
        index = self.refresh()
        query = pdq_words([hex_value.lower()])[:, 0]
        rows, distances = pdq_lookup(index.pdq, index.segments, query, self.max_distance)
        if rows.size == 0:
            return None
        best = int(np.argmin(distances))
        row = int(rows[best])
        value = index.pdq[:, row].astype(">u8").tobytes().hex()
        return self._match(index, int(index.pdq_bank[row]), "pdq", int(distances[best]), value)

    def match_image(self, png_bytes: bytes) -> Match | None:
        """The encoded image's exact bytes (SHA-256, MD5), then its PDQ hash when its quality is high enough."""
        match = self.match_bytes_sha256(hashlib.sha256(png_bytes).hexdigest()) \
            or self.match_md5(hashlib.md5(png_bytes, usedforsecurity=False).hexdigest())
        if match is not None or self.refresh().pdq.shape[1] == 0:
            return match
        with Image.open(io.BytesIO(png_bytes)) as image:
            value, quality = pdq_hex(image)
        if quality < self.min_quality:
            return None
        return self.match_pdq(value)

