"""The hash matcher at its edges (docs/safety.md, hash banks): the PDQ distance and quality thresholds are inclusive,
the multi-index finds what the scan finds even with a single candidate, every image mode hashes as its RGB picture,
the MD5 bank is checked on its own, the closest of several hashes and the first bank by name are reported, and the
matcher reloads when (and only when) the banks changed. Written from the mutation run (docs/privacy.md).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from sqlalchemy import update

from imagen.kit.config import Settings
from imagen.kit.db import Database
from imagen.safety import matcher as matcher_module
from imagen.safety.bank_models import HashBank
from imagen.safety.banks import ImportReport, hash_bank_service
from imagen.safety.matcher import (
    BankIndex,
    HashMatcher,
    PdqSegments,
    pdq_hex,
    pdq_lookup,
    pdq_scan,
    pdq_segments,
    pdq_words,
)

ZERO, ONES = "0" * 64, "f" * 64


def photo(seed: int = 3, size: int = 256) -> Image.Image:
    """An ordinary-looking picture (gradient under soft shapes): PDQ quality 100."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    t = (np.cos(seed) * x + np.sin(seed) * y)[..., None]
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = Image.fromarray((c0 * (1 - t) + c1 * t).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(size // 10, size // 2, 2))
        draw.ellipse((x0, y0, x0 + w, y0 + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image.filter(ImageFilter.GaussianBlur(1.5))


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def flip(value: str, positions: list[int]) -> str:
    """`value` with the given bits flipped (bit 0 = the most significant bit of the first hex digit)."""
    number = int(value, 16)
    for p in positions:
        number ^= 1 << (255 - p)
    return f"{number:064x}"


def from_values(*banks: list[str], **kwargs: int) -> HashMatcher:
    """A matcher over PDQ banks given in memory, bank i named f"bank{i}"."""
    words = pdq_words([v for values in banks for v in values])
    owners = np.concatenate([np.full(len(values), i, np.int32) for i, values in enumerate(banks)])
    index = BankIndex(banks=[(f"id{i}", f"bank{i}") for i in range(len(banks))], pdq=words, pdq_bank=owners)
    return HashMatcher.from_index(index, **kwargs)


def add_bank(db: Database, name: str, hash_type: str, values: list[str]) -> HashBank:
    with db.transaction() as s:
        return hash_bank_service.import_lines(s, name=name, hash_type=hash_type, lines=values)[0]


# --- PDQ without a database ---


def test_segments_are_the_sixteen_bit_slices_most_significant_first():
    value = "0123456789abcdef" * 4
    assert pdq_segments(pdq_words([value]))[:, 0].tolist() == [0x0123, 0x4567, 0x89AB, 0xCDEF] * 4


def test_distance_threshold_is_inclusive_on_scan_and_multi_index():
    far = [flip(ZERO, list(range(0, 256, 8))[:31]), flip(ZERO, list(range(0, 256, 8))[:32])]  # 31 and 32 bits
    words = pdq_words(far)
    segments = PdqSegments.build(words)
    for index in (None, segments):
        rows, distances = pdq_lookup(words, index, pdq_words([ZERO])[:, 0], 31)
        assert rows.tolist() == [0] and distances.tolist() == [31]
        assert distances.dtype == np.uint16  # bit counts up to 256: no uint8 overflow, no floats
    matcher = from_values(far)
    assert matcher.max_distance == 31 and matcher.match_pdq(ZERO).distance == 31
    assert from_values(far[1:]).match_pdq(ZERO) is None


def test_a_single_candidate_in_the_multi_index_is_still_checked():
    # Two flipped bits in each of segments 1..15: only segment 0 agrees, so there is exactly one candidate,
    # 30 bits away (within 31).
    query = flip(ZERO, [16 * s + b for s in range(1, 16) for b in (0, 1)])
    words = pdq_words([ZERO, ONES])
    segments = PdqSegments.build(words)
    q = pdq_words([query])[:, 0]
    assert segments.candidates(q, PdqSegments.radius(31)).tolist() == [0]
    rows, distances = pdq_lookup(words, segments, q, 31)
    assert rows.tolist() == [0] and distances.tolist() == [30]


def test_no_bank_and_no_candidate_give_empty_answers():
    q = pdq_words([ONES])[:, 0]
    # Empty answers keep the types of full ones: rows can still index an array, distances are bit counts.
    words = pdq_words([ZERO, ZERO[:-1] + "1"])
    for rows, distances in (pdq_scan(np.empty((4, 0), np.uint64), q, 31), pdq_scan(words, q, 31)):
        assert (rows.shape, rows.dtype, distances.shape, distances.dtype) == ((0,), np.intp, (0,), np.uint16)
    segments = PdqSegments.build(words)
    none = segments.candidates(q, 1)  # every segment of ONES is 16 bits from those rows
    assert (none.shape, none.dtype) == ((0,), np.intp)
    rows, distances = pdq_lookup(words, segments, q, 31)
    assert (rows.shape, rows.dtype, distances.shape, distances.dtype) == ((0,), np.intp, (0,), np.uint16)


def test_the_closest_hash_is_reported_not_the_first():
    value = pdq_hex(photo())[0]
    matcher = from_values([flip(value, [0, 1, 2, 3, 4, 5]), flip(value, [7])])
    match = matcher.match_pdq(value)
    assert (match.distance, match.matched_value, match.bank_name) == (1, flip(value, [7]), "bank0")


def test_with_a_multi_index_a_lookup_reads_buckets_instead_of_scanning(monkeypatch):
    value = pdq_hex(photo())[0]
    matcher = from_values([value, flip(value, [3, 9])])
    matcher._index = BankIndex(banks=matcher._index.banks, pdq=matcher._index.pdq, pdq_bank=matcher._index.pdq_bank,
                               segments=PdqSegments.build(matcher._index.pdq))

    def no_scan(*args):
        raise AssertionError("scanned every row although the bank has a multi-index")

    monkeypatch.setattr(matcher_module, "pdq_scan", no_scan)
    match = matcher.match_pdq(flip(value, [3]))
    assert (match.distance, match.matched_value) == (1, value)


def test_a_matcher_over_a_fixed_index_keeps_its_settings_and_never_reloads():
    index = BankIndex()
    fixed = HashMatcher.from_index(index, max_distance=5, min_quality=70)
    assert (fixed.max_distance, fixed.min_quality, fixed.reload_seconds) == (5, 70, float("inf"))
    assert fixed.refresh() is index  # no database to look at
    default = HashMatcher.from_index(index)
    assert (default.max_distance, default.min_quality) == (Settings.model_fields["pdq_max_distance"].default,
                                                           Settings.model_fields["pdq_min_quality"].default)


def test_the_multi_index_is_built_from_the_documented_size(monkeypatch):
    monkeypatch.setattr(matcher_module, "MIH_MIN_ROWS", 4)
    four = pdq_words([flip(ZERO, [i]) for i in range(4)])
    assert BankIndex(pdq=four, pdq_bank=np.zeros(4, np.int32)).segments is not None
    assert BankIndex(pdq=four[:, :3], pdq_bank=np.zeros(3, np.int32)).segments is None


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK"])
def test_every_image_mode_hashes_as_its_rgb_picture(mode):
    image = photo()
    converted = image.convert(mode)
    assert pdq_hex(converted) == pdq_hex(converted.convert("RGB"))


def test_large_images_are_hashed_downsampled_and_left_untouched():
    big = photo(size=2048)
    value, quality = pdq_hex(big)
    assert big.size == (2048, 2048)  # the caller's image is not resized in place
    small = big.copy()
    small.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
    assert (value, quality) == pdq_hex(small)


def test_defaults_are_the_settings_defaults(tmp_path):
    fields = Settings.model_fields
    matcher = HashMatcher(None)  # type: ignore[arg-type]
    assert (matcher.max_distance, matcher.min_quality, matcher.reload_seconds) == (
        fields["pdq_max_distance"].default, fields["pdq_min_quality"].default,
        fields["hash_bank_reload_seconds"].default)
    settings = Settings(env="test", data_dir=tmp_path, secret_key="x" * 40, pdq_max_distance=20, pdq_min_quality=70,
                        hash_bank_reload_seconds=0.25)
    configured = HashMatcher.from_settings(None, settings)  # type: ignore[arg-type]
    assert (configured.max_distance, configured.min_quality, configured.reload_seconds) == (20, 70, 0.25)


# --- against a database ---


def test_md5_bank_alone_matches_the_image_bytes(db):
    data = png(photo(5))
    add_bank(db, "md5-only", "md5", [hashlib.md5(data).hexdigest()])
    match = HashMatcher(db, reload_seconds=0).match_image(data)
    assert match is not None and (match.bank_name, match.hash_type) == ("md5-only", "md5")
    assert HashMatcher(db, reload_seconds=0).match_image(png(photo(6))) is None


def test_quality_threshold_is_inclusive(db):
    image = photo()
    value, quality = pdq_hex(image)
    add_bank(db, "photos", "pdq", [value])
    assert HashMatcher(db, reload_seconds=0, min_quality=quality).match_image(png(image)).distance == 0
    assert HashMatcher(db, reload_seconds=0, min_quality=quality + 1).match_image(png(image)) is None


def test_every_pdq_bank_is_searched_and_the_first_by_name_is_named(db):
    first, second = pdq_hex(photo(3))[0], pdq_hex(photo(4))[0]
    add_bank(db, "zeta", "pdq", [first])
    add_bank(db, "alpha", "pdq", [second])
    add_bank(db, "beta", "pdq", [first])  # the same hash in two banks: "beta" comes before "zeta"
    md5 = "a" * 32
    add_bank(db, "z-md5", "md5", [md5])
    add_bank(db, "a-md5", "md5", [md5])
    matcher = HashMatcher(db, reload_seconds=0)
    assert matcher.match_pdq(second).bank_name == "alpha"
    assert matcher.match_pdq(first).bank_name == "beta"
    assert matcher.match_md5(md5).bank_name == "a-md5"


def test_a_large_bank_is_matched_through_its_multi_index(db, monkeypatch):
    monkeypatch.setattr(matcher_module, "MIH_MIN_ROWS", 2)
    value = pdq_hex(photo())[0]
    add_bank(db, "photos", "pdq", [value, flip(value, list(range(0, 256, 2)))])
    matcher = HashMatcher(db, reload_seconds=0)
    index = matcher.refresh()
    assert index.segments is not None and index.pdq.shape == (4, 2)
    # Millions of rows stay in memory: 4 x 8 bytes of hash and 4 bytes of bank per row.
    assert (index.pdq.dtype, index.pdq_bank.dtype) == (np.uint64, np.int32)
    assert matcher.match_image(png(photo())).matched_value == value


def test_unchanged_banks_are_not_reloaded_and_the_wait_is_honoured(db):
    add_bank(db, "photos", "pdq", [pdq_hex(photo())[0]])
    eager = HashMatcher(db, reload_seconds=0)
    index = eager.refresh()
    assert eager.refresh() is index  # looked, nothing changed: the same index
    patient = HashMatcher(db, reload_seconds=3600)
    seen = patient.refresh()
    add_bank(db, "more", "md5", ["b" * 32])
    assert patient.refresh() is seen  # not looked at again before reload_seconds
    assert patient.refresh(force=True).size == seen.size + 1


def fingerprint_change(db: Database, **values) -> None:
    """Change the banks the way another process could, keeping `updated_at` unless given."""
    with db.transaction() as s:
        s.execute(update(HashBank).values(**values))


def test_a_change_of_enabled_or_count_alone_is_noticed(db):
    value = pdq_hex(photo())[0]
    add_bank(db, "photos", "pdq", [value])
    matcher = HashMatcher(db, reload_seconds=0)
    assert matcher.match_pdq(value) is not None
    fingerprint_change(db, enabled=False)  # same timestamp, e.g. two changes within the clock's resolution
    assert matcher.match_pdq(value) is None
    fingerprint_change(db, enabled=True)
    assert matcher.match_pdq(value) is not None
    with db.transaction() as s:  # hashes added and counted, timestamp unchanged
        bank = hash_bank_service.get_by_name(s, name="photos")
        hash_bank_service.add_hashes(s, bank_id=bank.id, values=[ONES], report=ImportReport())
        bank.count = 2
    assert matcher.match_pdq(ONES) is not None


def test_swapping_two_banks_of_one_size_is_noticed(db):
    old, new = pdq_hex(photo(3))[0], pdq_hex(photo(4))[0]
    add_bank(db, "list-v1", "pdq", [old])
    add_bank(db, "list-v2", "pdq", [new])
    with db.transaction() as s:
        hash_bank_service.set_enabled(s, bank=hash_bank_service.get_by_name(s, name="list-v2"), enabled=False)
    matcher = HashMatcher(db, reload_seconds=0)
    assert matcher.match_pdq(old) is not None and matcher.match_pdq(new) is None
    with db.transaction() as s:  # same number of banks, enabled banks and hashes: only the time moves
        hash_bank_service.set_enabled(s, bank=hash_bank_service.get_by_name(s, name="list-v1"), enabled=False)
        hash_bank_service.set_enabled(s, bank=hash_bank_service.get_by_name(s, name="list-v2"), enabled=True)
    assert matcher.match_pdq(old) is None and matcher.match_pdq(new) is not None
