"""Measurement 8: what catalog metadata costs: counting a CSV's rows in the read that hashes it, against hashing alone
and against counting with Python's CSV parser, and the profiler's peak memory against the file's size."""

from __future__ import annotations

import csv
import random
import tracemalloc
from pathlib import Path

from benchmarks.measure import MIB, timed
from benchmarks.table import Row
from octue_dagster.core.local import hashing, profiling


def make_csv(path: Path, size_bytes: int, quoted: bool = False) -> Path:
    """A CSV of turbine-like readings of about `size_bytes`, written in chunks (memory stays small)."""
    rng = random.Random(0)
    status = '"ok"' if quoted else "ok"
    line = "{},2024-03-01T00:{:02d}:00,{:.6f},wt-0{}," + status + "\n"
    with open(path, "w", newline="") as file:
        file.write("id,timestamp,power_kw,turbine,status\n")
        row = 0
        while file.tell() < size_bytes:
            file.write("".join(line.format(i, i % 60, rng.random(), i % 5) for i in range(row, row + 10_000)))
            row += 10_000
    return path


def _hash_only(path: Path) -> str:
    return hashing.read_file_hash(path)


def _hash_and_count(path: Path) -> int | None:
    counter = profiling.RecordCounter()
    hashing.hash_file_blocks(path, counter.feed)
    return counter.records


def _hash_then_parse(path: Path) -> int:
    hashing.read_file_hash(path)
    with open(path, newline="", encoding="utf-8") as text:
        return sum(1 for record in csv.reader(text) if record)


def catalog_rows(workdir: Path, size_mib: int, repeats: int) -> list[Row]:
    """Best-of-`repeats` seconds for each way to hash and count a plain and a quoted CSV (read from the page
    cache: the comparison is of the loops, not of the disk), and the profiler's peak memory."""
    rows: list[Row] = []
    plain = make_csv(workdir / "catalog.csv", size_mib * MIB)
    size = plain.stat().st_size
    plain.read_bytes()  # into the page cache
    best = {
        name: min(timed(lambda: function(plain))[0] for _ in range(repeats))
        for name, function in (("hash", _hash_only), ("count", _hash_and_count), ("parse", _hash_then_parse))
    }
    assert _hash_and_count(plain) == _hash_then_parse(plain), "line counting disagrees with the CSV parser"
    rows.append(
        Row("CSV hash + row count in one read vs hash alone", best["count"], best["hash"], "s", "reported", None)
    )
    rows.append(
        Row(
            "CSV hash + row count in one read vs hash + CSV parser",
            best["count"],
            best["parse"],
            "s",
            "<= 0.50",
            best["count"] / best["parse"] <= 0.5,
        )
    )
    quoted = make_csv(workdir / "catalog-quoted.csv", size_mib * MIB, quoted=True)
    profile_seconds = min(timed(lambda: profiling.profile_csv(quoted, max_bytes=size * 2))[0] for _ in range(repeats))
    parse_seconds = min(timed(lambda: _hash_then_parse(quoted))[0] for _ in range(repeats))
    rows.append(
        # Ours also counts lines in the hash read (to see a line cut by the length bound) and reads the sample.
        Row("quoted CSV profile vs hash + CSV parser", profile_seconds, parse_seconds, "s", "<= 1.30",
            profile_seconds / parse_seconds <= 1.3)
    )
    tracemalloc.start()
    try:
        profiling.profile_csv(plain, max_bytes=size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The hash's 4 MiB buffer; the counter copies no block.
    rows.append(Row("CSV profile peak memory vs file size", peak / MIB, size / MIB, "MiB", "<= 5 MiB", peak <= 5 * MIB))
    plain.unlink()
    quoted.unlink()
    return rows
