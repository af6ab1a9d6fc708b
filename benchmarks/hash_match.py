"""PDQ lookup time against banks of 10k, 100k and 1M hashes: one run, side by side, ratios printed.

    .venv/bin/python benchmarks/hash_match.py [--sizes 10000,100000,1000000] [-n 200] [--no-db-load]

Banks are random 256-bit hashes made with numpy (not the database), turned into the matcher's index with the same
`pdq_words` the database load uses. Half of the N queries are planted near-matches (a bank hash with 20 of its bits
flipped), half are fresh random hashes; every answer is checked (the planted one found at distance 20 in the right
row, nothing for the random ones), so a fast wrong answer can't pass. Times are per query through
`HashMatcher.match_pdq` (what the matcher chose for that size: the multi-index from `MIH_MIN_ROWS` hashes on, else
the two-stage scan), next to the two-stage scan (`pdq_scan`) and a plain scan that popcounts all four words of
every row.
`--no-db-load` skips the extra line: the time to load a 100k bank from a scratch SQLite database into the index.
Nothing asserts on time; it prints and exits 0 (1 if an answer is wrong).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

from imagen.safety.matcher import BankIndex, HashMatcher, pdq_scan, pdq_words

PLANTED_DISTANCE = 20


def random_bank(n: int, rng: np.random.Generator) -> list[str]:
    raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    return [row.tobytes().hex() for row in raw]


def flip_bits(hex_value: str, count: int, rng: np.random.Generator) -> str:
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(hex_value), np.uint8))
    bits[rng.choice(256, size=count, replace=False)] ^= 1
    return np.packbits(bits).tobytes().hex()


def plain_scan(words: np.ndarray, query: np.ndarray, max_distance: int) -> np.ndarray:
    distance = np.bitwise_count(words[0] ^ query[0]).astype(np.uint16)
    for k in (1, 2, 3):
        distance += np.bitwise_count(words[k] ^ query[k])
    return np.flatnonzero(distance <= max_distance)


def run_size(n: int, queries: int, rng: np.random.Generator) -> dict[str, float]:
    values = random_bank(n, rng)
    started = time.perf_counter()
    index = BankIndex(banks=[("bench", "bench")], pdq=pdq_words(values), pdq_bank=np.zeros(n, np.int32))
    build = time.perf_counter() - started
    matcher = HashMatcher.from_index(index)
    rows = rng.choice(n, size=queries // 2, replace=False)
    cases = [(flip_bits(values[r], PLANTED_DISTANCE, rng), values[r]) for r in rows]
    cases += [(v, None) for v in random_bank(queries - len(cases), rng)]
    order = rng.permutation(len(cases))
    matcher.match_pdq(cases[0][0])  # warm-up
    times, scan_times, plain_times, wrong = [], [], [], 0
    for i in order:
        query, expected = cases[i]
        started = time.perf_counter()
        match = matcher.match_pdq(query)
        times.append(time.perf_counter() - started)
        words = pdq_words([query])[:, 0]
        started = time.perf_counter()
        scan_rows, _ = pdq_scan(index.pdq, words, matcher.max_distance)
        scan_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        plain = plain_scan(index.pdq, words, matcher.max_distance)
        plain_times.append(time.perf_counter() - started)
        got = None if match is None else (match.matched_value, match.distance)
        want = None if expected is None else (expected, PLANTED_DISTANCE)
        wrong += got != want or len(plain) != (expected is not None) or len(scan_rows) != len(plain)
    return {"n": n, "build_s": build, "median_ms": statistics.median(times) * 1000,
            "p95_ms": float(np.percentile(times, 95)) * 1000, "plain_ms": statistics.median(plain_times) * 1000,
            "scan_ms": statistics.median(scan_times) * 1000, "wrong": wrong,
            "mib": (index.pdq.nbytes + (index.segments.order.nbytes + index.segments.offsets.nbytes
                                        if index.segments else 0)) / 2**20,
            "how": "multi-index" if index.segments else "scan"}


def hash_image_ms(rng: np.random.Generator, rounds: int = 20) -> float:
    """Median time to decode a 512x512 PNG and compute its PDQ hash (what `match_image` does before a lookup)."""
    import io

    from PIL import Image, ImageFilter

    from imagen.safety.matcher import pdq_hex

    noise = Image.fromarray(rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8)).filter(ImageFilter.BLUR)
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    png = buffer.getvalue()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        with Image.open(io.BytesIO(png)) as image:
            pdq_hex(image)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def db_load_seconds(n: int, rng: np.random.Generator) -> float:
    from imagen.kit import migrate
    from imagen.kit.db import Database
    from imagen.safety.banks import ImportReport, batched, hash_bank_service

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        migrate.upgrade(url)
        db = Database(url)
        try:
            with db.transaction() as session:
                bank = hash_bank_service.ensure(session, name="bench", hash_type="pdq")
                for batch in batched(random_bank(n, rng)):
                    hash_bank_service.add_hashes(session, bank_id=bank.id, values=batch, report=ImportReport())
                hash_bank_service.finish_import(session, bank_id=bank.id)
            started = time.perf_counter()
            index = BankIndex.load(db)
            elapsed = time.perf_counter() - started
            assert index.pdq.shape == (4, n)
            return elapsed
        finally:
            db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="bank sizes, comma-separated")
    parser.add_argument("-n", "--queries", type=int, default=200, help="queries per bank (half planted)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-db-load", action="store_true", help="skip loading a 100k bank from SQLite")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}; "
          f"{args.queries} queries per bank, half planted at distance {PLANTED_DISTANCE}, threshold 31")
    results = [run_size(int(s), args.queries, rng) for s in args.sizes.split(",")]
    first = results[0]
    print(f"{'bank':>10} {'chosen':>12} {'index MiB':>10} {'build s':>8} {'median ms':>10} {'p95 ms':>8} "
          f"{'vs first':>9} {'scan ms':>8} {'scan/chosen':>12} {'plain ms':>9} {'plain/chosen':>13} {'wrong':>6}")
    for r in results:
        print(f"{r['n']:>10,} {r['how']:>12} {r['mib']:>10.1f} {r['build_s']:>8.2f} {r['median_ms']:>10.3f} "
              f"{r['p95_ms']:>8.3f} {r['median_ms'] / first['median_ms']:>8.1f}x {r['scan_ms']:>8.3f} "
              f"{r['scan_ms'] / r['median_ms']:>11.1f}x {r['plain_ms']:>9.3f} {r['plain_ms'] / r['median_ms']:>12.1f}x "
              f"{r['wrong']:>6}")
    print(f"for scale, hashing one 512x512 PNG (decode + PDQ), as every checked image costs: "
          f"{hash_image_ms(rng):.2f} ms")
    if not args.no_db_load:
        print(f"load a 100,000-hash bank from SQLite into the index: {db_load_seconds(100_000, rng):.2f} s")
    return 1 if any(r["wrong"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
