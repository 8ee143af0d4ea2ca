"""Measurements 1 and 2: hashing throughput against bare crc32c, and whether a second `hash_value` re-reads the file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import crc32c

from benchmarks.measure import MIB, bytes_read_by_this_process, timed
from benchmarks.table import Row
from octue_dagster.core.local import hashing
from octue_dagster.core.datafile.datafile import Datafile

#: Hashing a file may take at most this many times the CPU of crc32c over the same bytes in memory (issue 16).
HASH_CPU_GOAL = 1.3
#: Block size of the "plain file reads" baseline: an ordinary buffered read loop.
PLAIN_READ_BYTES = 1 * MIB


def plain_file_crc32c(path: Path) -> int:
    """The baseline a user would write: read the file in 1 MiB blocks and feed crc32c."""
    checksum = 0
    with open(path, "rb") as file:
        while block := file.read(PLAIN_READ_BYTES):
            checksum = crc32c.crc32c(block, checksum)
    return checksum


def _hash_uncached(path: Path) -> str:
    # hash_file caches by file identity; forgetting the cache makes every timed call read and hash the whole file.
    hashing._cache.clear()
    return hashing.hash_file(path)


def throughput_rows(path: Path, repeats: int) -> list[Row]:
    """Best-of-`repeats` MB/s of `hash_file` vs crc32c over the bytes in memory and over plain file reads.

    The file is read once first, so every variant reads from the page cache: the comparison is of the hashing
    loops, not of the disk.
    """
    size = path.stat().st_size
    data = path.read_bytes()
    expected = hashing.encode_crc32c(crc32c.crc32c(data))
    ours_times, memory_times, plain_times = [], [], []
    ours_cpu, memory_cpu = [], []
    for _ in range(repeats):
        cpu = time.process_time()
        seconds, value = timed(lambda: _hash_uncached(path))
        ours_cpu.append(time.process_time() - cpu)
        assert value == expected, "hash_file disagrees with crc32c over the same bytes"
        ours_times.append(seconds)
        cpu = time.process_time()
        memory_times.append(timed(lambda: crc32c.crc32c(data))[0])
        memory_cpu.append(time.process_time() - cpu)
        seconds, value = timed(lambda: plain_file_crc32c(path))
        assert hashing.encode_crc32c(value) == expected
        plain_times.append(seconds)
    del data
    ours = size / min(ours_times) / 1e6
    in_memory = size / min(memory_times) / 1e6
    plain = size / min(plain_times) / 1e6
    # CPU time (user + system, so page faults of the mapped windows count) is steadier than wall time on a shared
    # machine; the goal of issue 16 is within 1.3x of crc32c over the same bytes in memory.
    cpu_ratio = min(ours_cpu) / min(memory_cpu) if min(memory_cpu) else 0.0
    return [
        Row(f"hash CPU time, {size // MIB} MiB file (mmap) vs crc32c on bytes in memory", min(ours_cpu),
            min(memory_cpu), "s", f"<= {HASH_CPU_GOAL:g}x", cpu_ratio <= HASH_CPU_GOAL),
        Row("hash MB/s vs crc32c on bytes in memory", ours, in_memory, "MB/s", ">= 0.80", ours / in_memory >= 0.8),
        Row("hash MB/s vs crc32c on 1 MiB file reads", ours, plain, "MB/s", ">= 0.80", ours / plain >= 0.8),
    ]


def second_access_rows(path: Path) -> list[Row]:
    """Time and bytes read by the first and second `Datafile.hash_value` on an unchanged local file.

    The first access (cold hash cache) is the baseline: it is what every access would cost without the cache.
    """
    datafile = Datafile(path)
    hashing._cache.clear()
    # Pages of a mapped file are not counted in /proc/self/io's rchar, so hash by reading here: the first access
    # then shows the file's size in bytes read, and a second access that re-read the file would show it again.
    previous = os.environ.get(hashing.MMAP_VARIABLE)
    os.environ[hashing.MMAP_VARIABLE] = "0"
    try:
        return _second_access_rows(datafile)
    finally:
        if previous is None:
            os.environ.pop(hashing.MMAP_VARIABLE, None)
        else:
            os.environ[hashing.MMAP_VARIABLE] = previous


def _second_access_rows(datafile: Datafile) -> list[Row]:
    before = bytes_read_by_this_process()
    first_seconds, first_value = timed(lambda: datafile.hash_value)
    first_bytes = bytes_read_by_this_process() - before
    before = bytes_read_by_this_process()
    second_seconds, second_value = timed(lambda: datafile.hash_value)
    second_bytes = bytes_read_by_this_process() - before
    assert first_value == second_value
    no_reread = second_bytes < PLAIN_READ_BYTES  # a few stat/realpath bytes at most, never the content
    return [
        Row("2nd hash_value time (baseline: 1st)", second_seconds * 1e3, first_seconds * 1e3, "ms", "no re-read",
            no_reread),
        Row("2nd hash_value bytes read (baseline: 1st)", second_bytes, first_bytes, "B", "0 B of content", no_reread),
    ]
