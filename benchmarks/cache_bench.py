"""Measurement 6: what bounding the download cache costs. The same small objects are downloaded through `Datafile`
into a fresh cache three ways: with no size bookkeeping at all (the baseline: `cache.enforce_limit` and the shared
size estimate switched off), with bookkeeping under the limit (the normal case), and with the cache at its limit so
that it keeps evicting least recently used copies (the worst case: a scan every few downloads)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from google.cloud import storage

from benchmarks.measure import timed
from benchmarks.table import Row
from octue_dagster.core.cache import copies as cache
from octue_dagster.core.datafile.datafile import Datafile

#: Bookkeeping under the limit may cost this much more than none (noise included).
BOOKKEEPING_TOLERANCE = 1.10


@contextlib.contextmanager
def _no_bookkeeping() -> Iterator[None]:
    saved = cache.enforce_limit, cache._add_usage
    cache.enforce_limit = lambda keep=(): None  # type: ignore[assignment]
    cache._add_usage = lambda delta: None  # type: ignore[assignment]
    try:
        yield
    finally:
        cache.enforce_limit, cache._add_usage = saved


def _download_all(client: storage.Client, bucket: str, names: list[str], cache_dir: Path) -> None:
    os.environ[cache.CACHE_DIR_VARIABLE] = str(cache_dir)
    for name in names:
        Datafile(f"gs://{bucket}/{name}", storage_client=client).download()


def eviction_rows(client: storage.Client, bucket: str, names: list[str], workdir: Path, rounds: int) -> list[Row]:
    """Best-of-`rounds` seconds to download every object in `names` into a fresh cache, three ways (see above)."""
    previous_dir = os.environ.get(cache.CACHE_DIR_VARIABLE)
    sizes = [client.bucket(bucket).get_blob(name).size for name in names[:1]]
    # At the limit: room for a quarter of the objects' content (plus their small records), so most downloads evict.
    at_limit = len(names) // 4 * (sizes[0] + 300)
    times: dict[str, list[float]] = {"none": [], "under": [], "full": []}
    clear_times: list[float] = []
    try:
        for round_number in range(rounds):
            order = ["none", "under", "full"] if round_number % 2 == 0 else ["full", "under", "none"]
            for key in order:
                folder = workdir / f"cache-{key}-{round_number}"
                if key == "none":
                    with _no_bookkeeping():
                        times[key].append(timed(lambda: _download_all(client, bucket, names, folder))[0])
                else:
                    cache.configure(max_bytes=cache.DEFAULT_MAX_BYTES if key == "under" else at_limit)
                    try:
                        times[key].append(timed(lambda: _download_all(client, bucket, names, folder))[0])
                    finally:
                        cache.configure()
                if key == "full":
                    assert cache.usage_bytes() <= at_limit, "the cache outgrew its limit"
                if key == "under":
                    assert len(cache.entries()) == len(names)
                    clear_times.append(timed(cache.clear)[0])
                    assert cache.usage_bytes() == 0
            print(f"  round {round_number + 1}: " + ", ".join(f"{key} {values[-1]:.2f} s" for key, values in
                                                            times.items()), file=sys.stderr, flush=True)
    finally:
        if previous_dir is None:
            os.environ.pop(cache.CACHE_DIR_VARIABLE, None)
        else:
            os.environ[cache.CACHE_DIR_VARIABLE] = previous_dir
    count = len(names)
    none, under, full = (min(times[key]) for key in ("none", "under", "full"))
    return [
        Row(f"download {count} small objects, cache under its limit vs no size bookkeeping", under, none, "s",
            f"<= {BOOKKEEPING_TOLERANCE:.2f}", under / none <= BOOKKEEPING_TOLERANCE),
        Row(f"download {count} small objects, cache full (evicting as it fills) vs no size bookkeeping", full, none,
            "s", "reported", None),
        Row(f"clear a cache of {count} copies (per copy)", min(clear_times) / count, none / count, "s",
            "reported; baseline = one download", None),
    ]
