"""Scale: many-object work at 1,000 / 5,000 / 20,000 objects, through a proxy adding latency to every request.

For each operation and size it reports CPU time (`process_time`, every thread of this process: the proxy and the
emulator run in other processes), wall time, requests and peak memory (`tracemalloc`, in a second run of the same
operation, so that tracing does not slow the timed run), beside the plain google-cloud-storage client listing the
same objects. Growth is judged on CPU per object: at the largest size over the smallest, above 2 is flagged
"superlinear".

Objects are created once, concurrently and directly on the emulator (not through the proxy), before anything is
timed. Goals (issue 16): an unchanged 20k-file dataset re-uploads in under 2 s of CPU; `list_datafiles` with a label
filter within 1.3x of the plain client's listing; re-tagging within 1.5x of requests x latency / concurrency.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fnmatch
import gc
import json
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.cloud import storage

from benchmarks.latency_bench import _direct_client
from benchmarks.table import Row
from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.core.metadata import values as md
from octue_dagster.core.listing.prefix_cursor import DEFAULT_SETTLE, decode_cursor, scan
from octue_dagster.core.listing.selection import RetagSpec, list_datafiles, retag_objects
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.runner import run_concurrently
from octue_dagster.core.storage.store import Store, StoreSettings
from octue_dagster.testing.latency_proxy import emulator_with_latency

SIZES = (1_000, 5_000, 20_000)
UPLOAD_CPU_GOAL_SECONDS = 2.0
LISTING_GOAL_RATIO = 1.3
RETAG_GOAL_RATIO = 1.5
#: Per-object CPU at the largest size over the smallest above which growth is flagged as superlinear.
SUPERLINEAR_RATIO = 2.0
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured run: CPU and wall seconds, requests through the proxy, peak traced bytes."""

    cpu: float
    wall: float
    requests: int
    peak_bytes: int


def measure(proxy: Any, function: Callable[[], Any], *, memory: bool = True) -> Figure:
    """Run `function` timed, then (if `memory`) again under tracemalloc for its peak allocation."""
    gc.collect()
    proxy.reset()
    cpu, wall = time.process_time(), time.perf_counter()
    function()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    requests = proxy.requests
    peak = 0
    if memory:
        gc.collect()
        tracemalloc.start()
        try:
            function()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return Figure(cpu, wall, requests, peak)


def _step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]   {message}", file=sys.stderr, flush=True)


def _labels(index: int) -> set[str]:
    return {"benchmark", "even" if index % 2 == 0 else "odd"}


def _plain_listing(client: storage.Client, bucket: str, prefix: str) -> Callable[[], int]:
    """The baseline: the plain client listing the same objects (pages of 1000), touching each object's metadata."""

    def listing() -> int:
        count = 0
        for blob in client.list_blobs(bucket, prefix=prefix, page_size=1000):
            count += blob.metadata is not None
        return count

    return listing


def _plain_filtered_listing(client: storage.Client, bucket: str, prefix: str) -> Callable[[], int]:
    """The plain client's label filter: list, parse the labels field, keep the matches."""

    def listing() -> int:
        found = 0
        for blob in client.list_blobs(bucket, prefix=prefix, page_size=1000):
            labels = json.loads((blob.metadata or {}).get("octue__labels", "{}"))
            found += "even" in labels.get("items", ())
        return found

    return listing


def _content(index: int) -> bytes:
    return f"time,speed\n0,{index}\n".encode()


def _make_local_dataset(folder: Path, count: int) -> dict[str, dict[str, Any]]:
    """`count` small files and their `.octue` file (ids, labels, tags), written at once; returns the entries."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for index in range(count):
        name = f"f-{index:06d}.csv"
        (folder / name).write_bytes(_content(index))
        entries[name] = {"id": str(uuid.uuid4()), "timestamp": None, "tags": {"index": index},
                         "labels": {"_type": "set", "items": sorted(_labels(index))}, "sdk_version": "0.69.1"}
    dataset = {"id": str(uuid.uuid4()), "name": folder.name, "tags": {}, "labels": []}
    (folder / ".octue").write_text(json.dumps({"datafiles": entries, "dataset": dataset}))
    return entries


def _put_dataset_objects(client: storage.Client, bucket: str, prefix: str, entries: dict[str, dict[str, Any]]) -> None:
    """The objects an upload of the local dataset makes (same bytes and metadata), created directly on the emulator
    and concurrently: the untimed first upload, without sending 20,000 files through this process."""

    def create(item: tuple[str, dict[str, Any]]) -> None:
        name, entry = item
        index = entry["tags"]["index"]
        blob = client.bucket(bucket).blob(f"{prefix}{name}")
        blob.metadata = md.to_cloud_metadata(entry["id"], None, set(entry["labels"]["items"]), entry["tags"])
        blob.upload_from_string(_content(index), content_type="text/csv")

    failures = [o.error for o in run_concurrently(create, entries.items(), concurrency=32) if not o.ok]
    if failures:
        raise RuntimeError(f"Could not create the dataset's objects: {failures[0]}")


@dataclasses.dataclass
class _Series:
    """One operation's figures at every size, and its baseline's."""

    name: str
    ours: dict[int, Figure] = dataclasses.field(default_factory=dict)
    baseline: dict[int, Figure] = dataclasses.field(default_factory=dict)
    baseline_name: str = "plain client listing"


def _series_rows(series: _Series, goals: dict[int, tuple[str, bool | None]] | None = None) -> list[Row]:
    rows = []
    for size, ours in series.ours.items():
        base = series.baseline[size]
        goal, met = (goals or {}).get(size, ("report only", None))
        label = f"scale: {series.name}, {size} objects (vs {series.baseline_name})"
        rows += [
            Row(f"{label}: CPU", ours.cpu, base.cpu, "s", goal if "CPU" in goal else "report only",
                met if "CPU" in goal else None),
            Row(f"{label}: wall", ours.wall, base.wall, "s", goal if "CPU" not in goal else "report only",
                met if "CPU" not in goal else None),
            Row(f"{label}: requests", ours.requests, base.requests, "req", "report only", None),
            Row(f"{label}: peak memory", ours.peak_bytes / MIB, base.peak_bytes / MIB, "MiB", "report only", None),
            Row(f"{label}: peak memory per object", ours.peak_bytes / size / 1024, base.peak_bytes / size / 1024,
                "KiB", "report only", None),
        ]
    sizes = sorted(series.ours)
    small, large = sizes[0], sizes[-1]
    growth = (series.ours[large].cpu / large) / (series.ours[small].cpu / small) if series.ours[small].cpu else 0.0
    base_growth = (series.baseline[large].cpu / large) / (series.baseline[small].cpu / small) \
        if series.baseline[small].cpu else 0.0
    verdict = "superlinear" if growth > SUPERLINEAR_RATIO else "linear"
    rows.append(Row(f"scale: {series.name}: CPU per object at {large} / at {small} ({verdict})", growth, base_growth,
                    "x", f"<= {SUPERLINEAR_RATIO:g} (linear)", growth <= SUPERLINEAR_RATIO))
    return rows


def scale_rows(workdir: Path, *, latency_ms: float, concurrency: int, sizes: tuple[int, ...] = SIZES) -> list[Row]:
    """Every scale figure, on a fresh emulator behind a latency proxy in its own process.

    Each size has a bucket of its own: fake-gcs-server's in-memory backend takes longer per object created the more
    objects a bucket already holds, so one bucket for every size would make the setup itself quadratic.
    """
    latency = latency_ms / 1000
    rows: list[Row] = []
    sizes = tuple(sorted(sizes))
    with emulator_with_latency(latency, workdir / "scale-emulator.log", separate_process=True) as (emulator, proxy):
        direct_client = _direct_client(emulator.url)
        direct = Store(direct_client, settings=StoreSettings(concurrency=32))
        store = Store(settings=StoreSettings(concurrency=concurrency))
        client = store.client
        run = uuid.uuid4().hex[:8]
        buckets = {size: f"scale-{run}-{size}" for size in sizes}
        for size in sizes:
            _step(f"create a local dataset of {size} files and its objects in {buckets[size]} (untimed)")
            store.ensure_bucket(buckets[size])
            entries = _make_local_dataset(workdir / f"scale-dataset-{size}", size)
            _put_dataset_objects(direct_client, buckets[size], "dataset/", entries)
        rows += _upload_rows(proxy, store, direct, client, buckets, workdir, sizes)
        rows += _open_rows(proxy, store, client, buckets, sizes)
        rows += _listing_rows(proxy, store, client, buckets, sizes)
        rows += _sensor_rows(proxy, store, direct, direct_client, client, buckets, sizes)
        rows += _retag_rows(proxy, store, buckets, sizes, latency)
    return rows


def _upload_rows(proxy, store, direct, client, buckets, workdir, sizes) -> list[Row]:
    series = _Series("Dataset.upload of an unchanged local folder")
    for size in sizes:
        folder = workdir / f"scale-dataset-{size}"
        _step(f"re-upload the unchanged local dataset of {size} files (once untimed: it writes the .octue object)")
        Dataset(folder, store=direct).upload(f"gs://{buckets[size]}/dataset")
        dataset = Dataset(folder, store=store)

        def reupload() -> None:
            report = dataset.upload_with_report(f"gs://{buckets[size]}/dataset")
            assert len(report.unchanged) == size, (len(report.unchanged), len(report.patched), len(report.transferred))

        series.ours[size] = measure(proxy, reupload)
        series.baseline[size] = measure(proxy, _plain_listing(client, buckets[size], "dataset/"))
    goals = {size: (f"CPU < {UPLOAD_CPU_GOAL_SECONDS:g} s", series.ours[size].cpu < UPLOAD_CPU_GOAL_SECONDS)
             for size in sizes if size >= 20_000}
    return _series_rows(series, goals)


def _open_rows(proxy, store, client, buckets, sizes) -> list[Row]:
    series = _Series("open a cloud Dataset and read every file's labels")
    for size in sizes:
        _step(f"open the cloud dataset of {size} files and read its labels")

        def open_and_read() -> None:
            dataset = Dataset(f"gs://{buckets[size]}/dataset", store=store)
            assert sum(len(file.labels) for file in dataset.files) == 2 * size

        series.ours[size] = measure(proxy, open_and_read)
        series.baseline[size] = measure(proxy, _plain_listing(client, buckets[size], "dataset/"))
    return _series_rows(series)


def _listing_rows(proxy, store, client, buckets, sizes) -> list[Row]:
    series = _Series("list_datafiles with a label filter", baseline_name="plain client listing, same filter")
    for size in sizes:
        _step(f"list_datafiles over {size} objects with a label filter")
        expected = (size + 1) // 2

        def ours() -> None:
            assert len(list_datafiles(store, f"gs://{buckets[size]}/dataset/", labels=["even"])) == expected

        series.ours[size] = measure(proxy, ours)
        series.baseline[size] = measure(proxy, _plain_filtered_listing(client, buckets[size], "dataset/"))
    goals = {}
    for size in sizes:
        ratio = series.ours[size].wall / series.baseline[size].wall
        goals[size] = (f"wall <= {LISTING_GOAL_RATIO:g}x plain", ratio <= LISTING_GOAL_RATIO)
    return _series_rows(series, goals)


def _sensor_rows(proxy, store, direct, direct_client, client, buckets, sizes) -> list[Row]:
    series = _Series("prefix sensor tick, 1 new object")
    for size in sizes:
        _step(f"sensor tick over {size} objects after one new object")
        bucket = buckets[size]
        prefix = GCSPath(bucket, "dataset/")
        cursor = scan(direct.list_objects(prefix), None, settle=DEFAULT_SETTLE).cursor.encode()
        time.sleep(DEFAULT_SETTLE.total_seconds() + 0.2)  # the new object comes after the settle window
        direct_client.bucket(bucket).blob("dataset/new.csv").upload_from_string(b"x")

        def tick() -> None:
            result = scan(store.list_objects(prefix), decode_cursor(cursor), settle=DEFAULT_SETTLE)
            assert len(result.changed) == 1, len(result.changed)

        series.ours[size] = measure(proxy, tick)
        series.baseline[size] = measure(proxy, _plain_listing(client, bucket, "dataset/"))
    return _series_rows(series)


def _retag_rows(proxy, store, buckets, sizes, latency) -> list[Row]:
    """Re-tag 300 objects (as the issue measured) and every object of the two smaller datasets: the objects were
    written by this benchmark and are not read again, so they are re-tagged last."""
    concurrency = store.settings.concurrency
    series = _Series(f"re-tag objects, {concurrency} at a time",
                     baseline_name=f"requests x {latency * 1000:g} ms / {concurrency}")
    plain = _Series("", baseline_name=f"plain client: listing + conditional patches, {concurrency} threads")
    rounds = iter(range(1_000_000))
    smallest = sizes[0]
    cases = {min(300, smallest): (buckets[smallest], "f-000[0-2]??.csv" if smallest >= 300 else None)}
    for size in sizes[:2]:
        cases[size] = (buckets[size], None)
    for count, (bucket, glob) in sorted(cases.items()):
        _step(f"re-tag {count} objects")

        def retag() -> None:
            spec = RetagSpec(labels=["benchmark"], name_glob=glob, add_labels=[f"round-{next(rounds)}"])
            counts = retag_objects(store, f"gs://{bucket}/dataset/", spec)
            assert counts.changed == count and counts.failed == 0, counts

        ours = measure(proxy, retag)
        series.ours[count] = ours
        series.baseline[count] = Figure(0.0, ours.requests * latency / concurrency, ours.requests, 0)
        plain.ours[count] = ours
        plain.baseline[count] = measure(proxy, lambda: _plain_patches(store.client, bucket, glob, concurrency, count),
                                        memory=False)
    goals = {count: (f"wall <= {RETAG_GOAL_RATIO:g}x ideal",
                     series.ours[count].wall <= RETAG_GOAL_RATIO * series.baseline[count].wall) for count in cases}
    rows = _series_rows(series, goals)
    for count in sorted(cases):
        ours, base = plain.ours[count], plain.baseline[count]
        label = f"scale: re-tag {count} objects (vs {plain.baseline_name})"
        rows += [Row(f"{label}: CPU", ours.cpu, base.cpu, "s", "report only", None),
                 Row(f"{label}: wall", ours.wall, base.wall, "s", "report only", None)]
    return rows


def _plain_patches(client: storage.Client, bucket: str, glob: str | None, concurrency: int, count: int) -> None:
    """The plain client doing the same work: one listing, then a conditional metadata patch per object, `concurrency`
    at a time (what this machine and emulator allow, whatever the library)."""
    blobs = [blob for blob in client.list_blobs(bucket, prefix="dataset/", page_size=1000)
             if "benchmark" in (blob.metadata or {}).get("octue__labels", "")
             and (glob is None or fnmatch.fnmatchcase(blob.name.rsplit("/", 1)[-1], glob))]
    assert len(blobs) == count, len(blobs)

    def patch(blob: storage.Blob) -> None:
        blob.metadata = {"plain_round": uuid.uuid4().hex}
        blob.patch(if_metageneration_match=blob.metageneration)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(patch, blobs))


__all__ = ["Figure", "SIZES", "measure", "scale_rows"]
