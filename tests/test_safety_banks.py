"""Hash banks: imports (plain lists, CSV/TSV exports, bad lines, duplicates), the matcher (PDQ near matches, quality,
exact MD5/SHA-256, enable/disable, reload while running), the CLI and the admin API.

The test image is built in code (a gradient with blurred shapes) as a stand-in for an ordinary photo.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from imagen.accounts.models import User
from imagen.kit.errors import Conflict
from imagen.safety.bank_models import BankHash, HashBank
from imagen.safety.banks import ImportReport, hash_bank_service, parse_hashes
from imagen.safety.matcher import (
    BankIndex,
    HashMatcher,
    PdqSegments,
    pdq_hex,
    pdq_lookup,
    pdq_scan,
    pdq_words,
)
from tests.conftest import signup

MD5_A, MD5_B = "0" * 31 + "a", "b" * 32
SHA_A = "c" * 64
PHOTO = 3  # the seed of the test image (PDQ quality 100)


def scene(seed: int, size: int = 256) -> Image.Image:
    """A natural-looking picture: a two-colour gradient under a dozen soft ellipses and rectangles."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x + np.sin(angle) * y)[..., None]
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = Image.fromarray((c0 * (1 - t) + c1 * t).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(size // 10, size // 2, 2))
        shape = draw.ellipse if rng.integers(0, 2) else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image.filter(ImageFilter.GaussianBlur(1.5))


def encode(image: Image.Image, fmt: str = "PNG", **options: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def make_admin(app, email: str) -> None:
    with app.state.services.db.transaction() as s:
        s.execute(update(User).where(User.email == email).values(role="admin"))


def import_into(app, name: str, hash_type: str, lines: list[str]) -> ImportReport:
    with app.state.services.db.transaction() as s:
        return hash_bank_service.import_lines(s, name=name, hash_type=hash_type, lines=lines)[1]


# --- parsing (no database) ---


def test_plain_list_skips_blanks_and_comments_and_reports_bad_lines():
    report = ImportReport()
    lines = ["# exported 2026-01-01", "", MD5_A.upper(), "  " + MD5_B + "  ", "xyz", MD5_A[:-1], MD5_A]
    assert list(parse_hashes(lines, "md5", report)) == [MD5_A, MD5_B, MD5_A]  # duplicates go to the database step
    assert [(b.line, "not a md5 hash" in b.reason) for b in report.bad_lines] == [(5, True), (6, True)]


@pytest.mark.parametrize("delimiter", [",", "\t", ";", "|"])
def test_tables_with_a_hash_column_in_any_position(delimiter):
    report = ImportReport()
    rows = [["id", "Hash", "source"], ["1", MD5_A, "ncmec"], ["2", "nothex" * 5, "te"], ["3"], ["4", MD5_B, "x"]]
    values = list(parse_hashes([delimiter.join(r) for r in rows], "md5", report))
    assert values == [MD5_A, MD5_B]
    assert [(b.line, b.reason.split(" (")[0]) for b in report.bad_lines] == [(3, "not a md5 hash"),
                                                                          (4, "missing column 2")]


def test_headerless_csv_and_alternative_column_names_and_unknown_header():
    report = ImportReport()
    assert list(parse_hashes([f"{SHA_A},80,photo.jpg"], "sha256", report)) == [SHA_A]
    assert list(parse_hashes(["signal_type,signal_value", f"sha256,{SHA_A}"], "sha256", report)) == [SHA_A]
    assert list(parse_hashes(["name,quality", f"x,{SHA_A}"], "sha256", report)) == []
    assert report.bad_lines[-1].line == 1 and "no hash column" in report.bad_lines[-1].reason


def test_pdq_scan_finds_planted_neighbours_only():
    rng = np.random.default_rng(3)
    bank = rng.integers(0, 256, size=(5000, 32), dtype=np.uint8)
    query = bank[1234].copy()
    near = query.copy()
    near[:4] ^= 0xFF  # 32 bits away: just outside the threshold
    bank[4000] = near
    words, q = pdq_words([b.tobytes().hex() for b in bank]), pdq_words([query.tobytes().hex()])[:, 0]
    rows, distances = pdq_scan(words, q, 31)
    assert list(rows) == [1234] and list(distances) == [0]
    rows, distances = pdq_scan(words, q, 32)
    assert sorted(zip(rows.tolist(), distances.tolist(), strict=True)) == [(1234, 0), (4000, 32)]


def test_multi_index_finds_exactly_what_a_full_scan_finds():
    """Planted neighbours at every distance 0..40, with the flipped bits bunched into few segments (the hard case
    for the pigeonhole: a segment may take many flips) or spread across all of them."""
    rng = np.random.default_rng(11)
    bank = rng.integers(0, 256, size=(60_000, 32), dtype=np.uint8)
    bits = np.unpackbits(bank, axis=1)
    queries, planted = [], []
    for distance in range(41):
        for bunched in (True, False):
            row = int(rng.integers(len(bank)))
            query = bits[row].copy()
            positions = np.arange(distance) if bunched else rng.choice(256, size=distance, replace=False)
            query[positions] ^= 1
            queries.append(np.packbits(query).tobytes().hex())
            planted.append((row, distance))
    words = pdq_words([b.tobytes().hex() for b in bank])
    index = BankIndex(banks=[("b", "b")], pdq=words, pdq_bank=np.zeros(len(bank), np.int32))
    assert index.segments is not None  # large enough for the multi-index
    for max_distance in (15, 31, 40, 47, 48):
        for value, (row, distance) in zip(queries, planted, strict=True):
            q = pdq_words([value])[:, 0]
            want = pdq_scan(words, q, max_distance)
            got = pdq_lookup(words, index.segments, q, max_distance)
            assert sorted(zip(*map(np.ndarray.tolist, got), strict=True)) == \
                sorted(zip(*map(np.ndarray.tolist, want), strict=True))
            assert (row in got[0].tolist()) == (distance <= max_distance)
    assert PdqSegments.radius(31) == 1 and PdqSegments.radius(47) == 2 and PdqSegments.radius(48) is None
    small = BankIndex(banks=[("b", "b")], pdq=words[:, :1000], pdq_bank=np.zeros(1000, np.int32))
    assert small.segments is None  # a small bank is scanned


# --- the service and the matcher, on each database ---


def test_import_skips_duplicates_and_refuses_another_type(client, app):
    first = import_into(app, "ncmec", "md5", [MD5_A, MD5_B, MD5_A, "bad"])
    assert (first.added, first.duplicates, first.bad_count) == (2, 1, 1)
    again = import_into(app, "ncmec", "md5", [MD5_B, "d" * 32])
    assert (again.added, again.duplicates) == (1, 1)
    with app.state.services.db.transaction() as s:
        bank = hash_bank_service.get_by_name(s, name="ncmec")
        assert bank.count == 3 == s.scalar(select(func.count()).select_from(BankHash))
        with pytest.raises(Conflict):
            hash_bank_service.ensure(s, name="ncmec", hash_type="sha256")


def test_pdq_matches_the_image_and_a_resized_reencoded_copy_but_not_others(client, app):
    original = scene(PHOTO)
    value, quality = pdq_hex(original)
    assert len(value) == 64 and quality >= 50
    import_into(app, "photos", "pdq", [value])
    matcher = HashMatcher(app.state.services.db, reload_seconds=0)

    exact = matcher.match_image(encode(original))
    assert exact is not None and (exact.bank_name, exact.hash_type, exact.distance) == ("photos", "pdq", 0)
    assert exact.matched_value == value
    copy = encode(original.resize((200, 200), Image.Resampling.LANCZOS), "JPEG", quality=70)
    near = matcher.match_image(copy)
    assert near is not None and near.distance <= 31 and near.matched_value == value
    for seed in (1, 2, 4, 5, 6, 7):  # different gradients and shapes
        assert matcher.match_image(encode(scene(seed))) is None


def test_low_quality_hashes_are_ignored(client, app):
    flat = Image.new("RGB", (256, 256), (120, 130, 140))
    value, quality = pdq_hex(flat)
    assert quality < 50
    import_into(app, "flat", "pdq", [value])
    assert HashMatcher(app.state.services.db, reload_seconds=0).match_image(encode(flat)) is None


@pytest.mark.parametrize("hash_type", ["md5", "sha256"])
def test_exact_md5_and_sha256_of_the_bytes(client, app, hash_type):
    """Each exact bank type on its own: with only this bank's hash of the bytes, the image matches through it."""
    data = encode(scene(9))
    digest = hashlib.new(hash_type, data).hexdigest()
    import_into(app, "exact", hash_type, [digest.upper()])  # stored lower case
    matcher = HashMatcher(app.state.services.db, reload_seconds=0)
    found = matcher.match_image(data)
    assert found is not None
    assert (found.bank_name, found.hash_type, found.distance, found.matched_value) == ("exact", hash_type, 0, digest)
    lookup = matcher.match_md5 if hash_type == "md5" else matcher.match_bytes_sha256
    assert lookup(digest.upper()).matched_value == digest and lookup(digest[::-1]) is None
    assert matcher.match_image(encode(scene(10))) is None  # other bytes, and no PDQ bank
    assert matcher.match_image(encode(scene(9), compress_level=1)) is None  # the same pixels, other bytes


def test_disabled_banks_do_not_match_and_reenabled_ones_do(client, app):
    data = encode(scene(PHOTO))
    import_into(app, "photos", "pdq", [pdq_hex(scene(PHOTO))[0]])
    import_into(app, "files", "sha256", [hashlib.sha256(data).hexdigest()])
    matcher = HashMatcher(app.state.services.db, reload_seconds=0)
    assert matcher.match_image(data).hash_type == "sha256"
    with app.state.services.db.transaction() as s:
        for bank in hash_bank_service.list(s):
            hash_bank_service.set_enabled(s, bank=bank, enabled=False)
    assert matcher.match_image(data) is None
    with app.state.services.db.transaction() as s:
        hash_bank_service.set_enabled(s, bank=hash_bank_service.get_by_name(s, name="photos"), enabled=True)
    assert matcher.match_image(data).hash_type == "pdq"


def test_a_bank_imported_by_the_cli_while_the_app_runs_is_picked_up(client, app, settings, tmp_path, monkeypatch):
    from imagen.cli import app as cli
    from imagen.kit.config import get_settings

    image = encode(scene(PHOTO))
    matcher = app.state.services.safety.matcher
    matcher.reload_seconds = 0
    assert matcher.match_image(image) is None and app.state.services.safety.matcher is matcher
    listing = tmp_path / "photos.txt"
    listing.write_text(f"# one photo\n{pdq_hex(scene(PHOTO))[0]}\n")
    monkeypatch.setenv("IMAGEN_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("IMAGEN_DATA_DIR", str(tmp_path / "cli-data"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["safety", "import-bank", "photos", str(listing), "--type", "pdq"],
                                    env={"COLUMNS": "200"})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output
    match = matcher.match_image(image)
    assert match is not None and match.bank_name == "photos"


# --- the CLI (SQLite from the environment) ---


def bank_rows(output: str) -> dict[str, list[str]]:
    """`imagen safety banks` as {name: [type, enabled, hashes, source, updated]} (the table's body rows)."""
    rows = [[cell.strip() for cell in line.strip("│").split("│")] for line in output.splitlines()
            if line.startswith("│")]
    return {row[0]: row[1:] for row in rows}


def test_cli_import_list_enable_disable(cli_env):
    from imagen.cli import app as cli

    runner, env = CliRunner(), {"COLUMNS": "200"}
    plain = cli_env / "list.txt"
    plain.write_text(f"# comment\n\n{MD5_A}\nnot-a-hash\n{MD5_A}\n{MD5_B}\n")
    out = runner.invoke(cli, ["safety", "import-bank", "ncmec", str(plain), "--type", "md5", "--source", "NCMEC"],
                        env=env)
    assert out.exit_code == 0, out.output
    assert "line 4: not a md5 hash" in out.output and "2 added, 1 already there, 1 bad lines" in out.output
    table = cli_env / "export.csv"
    table.write_text(f"id,hash,note\n1,{MD5_B},dup\n2,{'e' * 32},new\n3,{'e' * 31},short\n")
    out = runner.invoke(cli, ["safety", "import-bank", "ncmec", str(table), "--type", "md5"], env=env)
    assert out.exit_code == 0 and "line 4: not a md5 hash" in out.output
    assert "1 added, 1 already there, 1 bad lines; 3 md5 hashes" in out.output
    wrong = runner.invoke(cli, ["safety", "import-bank", "ncmec", str(plain), "--type", "sha256"], env=env)
    assert wrong.exit_code == 1 and "holds md5 hashes" in wrong.output
    all_bad = cli_env / "bad.txt"
    all_bad.write_text("nope\n")
    refused = runner.invoke(cli, ["safety", "import-bank", "x", str(all_bad), "--type", "pdq"], env=env)
    assert refused.exit_code == 1 and "line 1: not a pdq hash" in refused.output
    assert "0 added, 0 already there, 1 bad lines" in refused.output

    disabled = runner.invoke(cli, ["safety", "disable", "ncmec"], env=env)
    assert disabled.exit_code == 0 and disabled.output.strip() == "ncmec: disabled."
    listing = runner.invoke(cli, ["safety", "banks"], env=env)
    assert listing.exit_code == 0
    rows = bank_rows(listing.output)
    assert rows["ncmec"][:4] == ["md5", "no", "3", "NCMEC"] and rows["x"][:4] == ["pdq", "yes", "0", ""]
    enabled = runner.invoke(cli, ["safety", "enable", "ncmec"], env=env)
    assert enabled.exit_code == 0 and enabled.output.strip() == "ncmec: enabled."
    assert bank_rows(runner.invoke(cli, ["safety", "banks"], env=env).output)["ncmec"][:3] == ["md5", "yes", "3"]
    missing = runner.invoke(cli, ["safety", "enable", "nope"], env=env)
    assert missing.exit_code == 1 and "No hash bank named 'nope'" in missing.output


# --- the admin API ---


def test_admin_api_is_for_admins_only(user_client):
    assert user_client.get("/api/v1/admin/hash-banks").status_code == 403
    r = user_client.post("/api/v1/admin/hash-banks", json={"name": "x", "hash_type": "md5", "hashes": [MD5_A]})
    assert r.status_code == 403
    assert user_client.patch("/api/v1/admin/hash-banks/abc", json={"enabled": False}).status_code == 403


def test_admin_api_imports_lists_and_disables(client, app):
    signup(client, "root@example.com")
    make_admin(app, "root@example.com")
    r = client.post("/api/v1/admin/hash-banks",
                    json={"name": "md5-list", "hash_type": "md5", "source": "TE", "hashes": [MD5_A, MD5_A, "bad"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["added"], body["duplicates"], body["bad_count"]) == (1, 1, 1)
    assert body["bad_lines"] == [{"line": 3, "reason": "not a md5 hash (32 hex digits)"}]
    assert body["bank"]["count"] == 1 and body["bank"]["enabled"] is True

    csv_bytes = f"hash,quality\n{pdq_hex(scene(PHOTO))[0]},79\n{'f' * 63},0\n".encode()
    r = client.post("/api/v1/admin/hash-banks", data={"name": "photos", "hash_type": "pdq"},
                    files={"file": ("export.csv", csv_bytes, "text/csv")})
    assert r.status_code == 201, r.text
    assert (r.json()["added"], r.json()["bad_lines"][0]["line"]) == (1, 3)
    photos = r.json()["bank"]["id"]

    assert client.post("/api/v1/admin/hash-banks",
                       json={"name": "junk", "hash_type": "pdq", "hashes": ["nope"]}).status_code == 422
    assert client.post("/api/v1/admin/hash-banks", json={"name": "x", "hash_type": "crc"}).status_code == 422
    assert client.post("/api/v1/admin/hash-banks",
                       json={"name": "md5-list", "hash_type": "pdq", "hashes": []}).status_code == 409
    assert [b["name"] for b in client.get("/api/v1/admin/hash-banks").json()] == ["md5-list", "photos"]

    matcher = HashMatcher(app.state.services.db, reload_seconds=0)
    assert matcher.match_image(encode(scene(PHOTO))).bank_id == photos
    r = client.patch(f"/api/v1/admin/hash-banks/{photos}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert matcher.match_image(encode(scene(PHOTO))) is None
    assert client.patch("/api/v1/admin/hash-banks/nope", json={"enabled": True}).status_code == 404
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(HashBank)) == 2
