"""Measurement 6: many-object work at network latency, through a proxy that adds a delay to every request.

fake-gcs-server answers in under a millisecond; real GCS in 20-40 ms. Each figure runs the same operation two ways
through `octue_dagster.testing.latency_proxy` (default 25 ms per request): ours, and a serial baseline, and reports
for each the requests sent, the time, and the time divided by what the requests cost at that latency and
concurrency (`requests x latency / concurrency`: 1.0 would be perfect overlap with zero overhead).

The objects are created directly on the emulator (not through the proxy), concurrently, before anything is timed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from google.cloud import storage

from benchmarks.dataset_bench import make_local_dataset
from benchmarks.table import Row
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.runner import run_concurrently
from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.listing.prefix_cursor import DEFAULT_SETTLE, decode_cursor, scan
from octue_dagster.core.listing.selection import RetagSpec, list_datafiles, retag_objects
from octue_dagster.core.storage.store import Store, StoreSettings, make_client
from octue_dagster.dagster.addresses import asset_address
from octue_dagster.dagster.asset_storage import AssetStorage
from octue_dagster.dagster.owned_objects import OWNER_KEY
from octue_dagster.testing.emulator import EMULATOR_VARIABLE
from octue_dagster.testing.latency_proxy import LatencyProxy, emulator_with_latency

#: Requests in flight when creating the test objects (directly on the emulator, untimed).
_CREATE_CONCURRENCY = 16
#: The re-tagging goals of issue 11: >= 10x faster than serial, within 3x of requests x latency / concurrency.
RETAG_SPEEDUP_GOAL = 10.0
RETAG_EFFICIENCY_GOAL = 3.0


@dataclasses.dataclass(frozen=True)
class Run:
    """One side of a comparison: requests sent through the proxy, seconds, and the concurrency it ran at."""

    requests: int
    seconds: float
    concurrency: int

    def efficiency(self, latency: float) -> float:
        """Time over the ideal: requests x latency / concurrency."""
        return self.seconds / (self.requests * latency / self.concurrency) if self.requests else 0.0


def _measure(proxy: LatencyProxy, concurrency: int, function: Callable[[], Any]) -> Run:
    proxy.reset()
    start = time.perf_counter()
    function()
    return Run(proxy.requests, time.perf_counter() - start, concurrency)


def _rows(label: str, ours: Run, baseline: Run, latency: float, goals: dict[str, tuple[str, bool | None]]) -> list[Row]:
    no_goal = ("report only", None)
    return [
        Row(f"{label}: requests", ours.requests, baseline.requests, "req", *goals.get("requests", no_goal)),
        Row(f"{label}: time", ours.seconds, baseline.seconds, "s", *goals.get("time", no_goal)),
        Row(
            f"{label}: time / (requests x latency / concurrency {ours.concurrency} vs {baseline.concurrency})",
            ours.efficiency(latency),
            baseline.efficiency(latency),
            "x",
            *goals.get("efficiency", no_goal),
        ),
    ]


def _create_objects(
    client: storage.Client,
    bucket: str,
    names: list[str],
    labels: Callable[[int], set[str]],
    extra_metadata: Callable[[int], dict[str, str]] = lambda index: {},
) -> None:
    timestamp = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)

    def create(indexed: tuple[int, str]) -> None:
        index, name = indexed
        blob = client.bucket(bucket).blob(name)
        metadata = md.to_cloud_metadata(str(uuid.uuid4()), timestamp, labels(index), {"index": index})
        blob.metadata = {**metadata, **extra_metadata(index)}
        blob.upload_from_string(f"{index}\n".encode(), content_type="text/csv")

    failures = [o.error for o in run_concurrently(create, enumerate(names), concurrency=_CREATE_CONCURRENCY) if o.error]
    if failures:
        raise RuntimeError(f"Could not create the benchmark objects: {failures[0]}")


def _direct_client(emulator_url: str) -> storage.Client:
    """A client that talks to the emulator without the proxy (for setting up, untimed)."""
    previous = os.environ[EMULATOR_VARIABLE]
    os.environ[EMULATOR_VARIABLE] = emulator_url
    try:
        return Store(make_client(), settings=StoreSettings(concurrency=_CREATE_CONCURRENCY)).client
    finally:
        os.environ[EMULATOR_VARIABLE] = previous


def _step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]   {message}", file=sys.stderr, flush=True)


def retag_rows(proxy: LatencyProxy, store: Store, serial: Store, bucket: str, count: int, latency: float) -> list[Row]:
    """Re-tag `count` objects (label filter, add a label): ours vs one at a time, and vs the previous way."""
    prefix = f"gs://{bucket}/retag/"

    def ours() -> None:
        counts = retag_objects(store, prefix, RetagSpec(labels=["benchmark"], add_labels=["round-ours"]))
        assert counts.changed == count and counts.failed == 0, counts

    def one_at_a_time() -> None:
        counts = retag_objects(serial, prefix, RetagSpec(labels=["benchmark"], add_labels=["round-serial"]))
        assert counts.changed == count and counts.failed == 0, counts

    def previous_way() -> None:
        # What re-tagging did before: for each listed datafile, read it again, then patch (two requests, in turn).
        spec = RetagSpec(labels=["benchmark"], add_labels=["round-previous"])
        for datafile in list_datafiles(serial, prefix):
            if spec.selects(datafile) and spec.apply(datafile):
                datafile.update_metadata()

    concurrency = store.settings.concurrency
    _step(f"re-tag {count} objects, {concurrency} at a time")
    mine = _measure(proxy, concurrency, ours)
    _step("re-tag them one at a time (same code, concurrency 1)")
    serial_run = _measure(proxy, 1, one_at_a_time)
    _step("re-tag them the previous way (a read before each patch, one at a time)")
    previous = _measure(proxy, 1, previous_way)
    speedup = previous.seconds / mine.seconds
    goals = {
        "time": (f">= {RETAG_SPEEDUP_GOAL:.0f}x faster (ratio <= {1 / RETAG_SPEEDUP_GOAL:.2f})",
                 speedup >= RETAG_SPEEDUP_GOAL),
        "efficiency": (f"<= {RETAG_EFFICIENCY_GOAL:.0f}", mine.efficiency(latency) <= RETAG_EFFICIENCY_GOAL),
    }
    rows = _rows(f"re-tag {count} objects vs previous way", mine, previous, latency, goals)
    rows += _rows(f"re-tag {count} objects vs concurrency 1", mine, serial_run, latency, {})
    return rows


def listing_rows(proxy: LatencyProxy, store: Store, bucket: str, count: int, latency: float) -> list[Row]:
    """List `count` datafiles with a label filter: ours vs the plain client's listing, filtered by hand."""
    prefix = f"gs://{bucket}/retag/"
    expected = (count + 1) // 2

    def ours() -> None:
        assert len(list_datafiles(store, prefix, labels=["even"])) == expected

    def baseline() -> None:
        found = 0
        for blob in store.client.list_blobs(bucket, prefix="retag/", page_size=1000):
            labels = json.loads((blob.metadata or {}).get("octue__labels", "{}"))  # Octue's {"_type": "set", ...}
            if "even" in labels.get("items", ()):
                found += 1
        assert found == expected

    _step(f"list {count} datafiles with a label filter")
    return _rows(f"list {count} datafiles, label filter", _measure(proxy, 1, ours), _measure(proxy, 1, baseline),
                 latency, {})


def lazy_input_rows(
    proxy: LatencyProxy, direct: storage.Client, store: Store, serial: Store, bucket: str, count: int, latency: float
) -> list[Row]:
    """Load `count` partitions of an upstream asset as one input (a fan-in), as the I/O manager's load_input does."""
    keys = [f"p{index:05d}" for index in range(count)]
    # Objects as the I/O manager stores them: at each partition's address, carrying its owner mark.
    places = [asset_address(bucket, "dagster", ["upstream"], key) for key in keys]
    names = [f"{place.folder.name}upstream.csv" for place in places]
    owner = lambda index: {OWNER_KEY: places[index].owner}  # noqa: E731
    _create_objects(direct, bucket, names, lambda index: {"benchmark"}, owner)
    partitions = dg.StaticPartitionsDefinition(keys)

    def context() -> dg.InputContext:
        return dg.build_input_context(
            asset_key=dg.AssetKey("upstream"),
            asset_partitions_def=partitions,
            asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[-1]),
            dagster_type=dg.DagsterType(lambda _, value: True, name="AnyDatafiles", typing_type=dict),
        )

    contexts = {"ours": context(), "serial": context()}  # built untimed: the first one imports much of Dagster

    def load(with_store: Store, side: str) -> None:
        manager = AssetStorage(with_store, bucket=bucket, prefix="dagster")  # what DatafileIOManager delegates to
        loaded = manager.load_input(contexts[side])
        assert len(loaded) == count and all(datafile.hash_value for datafile in loaded.values())

    concurrency = store.settings.concurrency
    _step(f"load {count} partitions as lazy inputs, {concurrency} at a time, then one at a time")
    return _rows(f"load {count} lazy inputs (fan-in)", _measure(proxy, concurrency, lambda: load(store, "ours")),
                 _measure(proxy, 1, lambda: load(serial, "serial")), latency, {})


def sensor_rows(proxy: LatencyProxy, direct: storage.Client, store: Store, bucket: str, count: int) -> list[Row]:
    """Prefix-sensor ticks over `count` objects, and their cursors: ours vs a listing into a name map (what the
    first version of the sensor stored on every tick)."""
    names = [f"watched/{index:06d}.csv" for index in range(count)]
    _step(f"create {count} objects for the sensor (direct to the emulator)")
    _create_objects(direct, bucket, names, lambda index: set())
    prefix = GCSPath(bucket, "watched/")
    cursors: list[str] = []

    def tick(expected_changes: int) -> None:
        previous = decode_cursor(cursors[-1]) if cursors else None
        result = scan(store.list_objects(prefix), previous, settle=DEFAULT_SETTLE)
        assert len(result.changed) == expected_changes, (len(result.changed), expected_changes)
        cursors.append(result.cursor.encode())

    map_size = 0

    def listing_and_name_map() -> None:
        nonlocal map_size
        objects = {info.path.name: [info.generation, info.crc32c] for info in store.list_objects(prefix)}
        map_size = len(json.dumps({"version": 1, "objects": objects}))

    _step(f"sensor ticks over {count} objects: the first, then one after a new object arrives")
    first = _measure(proxy, 1, lambda: tick(count))
    time.sleep(DEFAULT_SETTLE.total_seconds() + 0.5)  # the burst settles; then one more object arrives
    direct.bucket(bucket).blob("watched/new.csv").upload_from_string(b"new")
    later = _measure(proxy, 1, lambda: tick(1))
    baseline = _measure(proxy, 1, listing_and_name_map)
    settle = f"settle {DEFAULT_SETTLE.total_seconds():g} s"
    return [
        Row(f"sensor tick over {count} objects, 1 new: time (vs listing into a name map)", later.seconds,
            baseline.seconds, "s", "report only", None),
        Row(f"sensor tick over {count} objects, 1 new: requests", later.requests, baseline.requests, "req",
            "report only", None),
        Row(f"sensor cursor, {count} objects, then 1 more (vs a name -> generation, crc32c map)", len(cursors[-1]),
            map_size, "B", "does not grow with the bucket", len(cursors[-1]) < 1000),
        Row(f"sensor cursor right after a burst of {count} writes ({settle}; first tick {first.seconds:.1f} s)",
            len(cursors[0]), map_size, "B", "report only (grows with writes per settle window)", None),
    ]


def dataset_rows(proxy, store: Store, bucket: str, workdir: Path, count: int, latency: float) -> list[Row]:
    """Re-upload a local dataset of `count` files of which 10 changed: ours (concurrent) vs one transfer at a time."""
    folder = workdir / "latency-dataset"
    _step(f"upload a dataset of {count} files twice (untimed), then change 10 of them")
    make_local_dataset(folder, count)
    for side in ("ours", "serial"):
        Dataset(folder, store=store, max_workers=store.settings.concurrency).upload(f"gs://{bucket}/dataset-{side}")
    for index in range(10):
        (folder / f"turbine-{index:05d}.csv").write_text(f"time,speed\n0,{index + 0.5}\n")

    def upload(side: str, workers: int) -> None:
        report = Dataset(folder, store=store, max_workers=workers).upload_with_report(f"gs://{bucket}/dataset-{side}")
        assert len(report.transferred) == 10, report

    concurrency = store.settings.concurrency
    _step(f"re-upload it, {concurrency} transfers at a time, then one at a time")
    ours = _measure(proxy, concurrency, lambda: upload("ours", concurrency))
    serial = _measure(proxy, 1, lambda: upload("serial", 1))
    shutil.rmtree(folder, ignore_errors=True)
    return _rows(f"re-upload a dataset of {count} files, 10 changed", ours, serial, latency, {})


LATENCY_BENCHMARKS = ("retag", "list", "inputs", "sensor", "dataset-latency")


def latency_rows(
    workdir: Path, *, latency_ms: float, objects: int, sensor_objects: int, concurrency: int, which: set[str]
) -> list[Row]:
    """Every latency figure that `which` names, on a fresh emulator behind a fresh latency proxy."""
    latency = latency_ms / 1000
    rows: list[Row] = []
    with emulator_with_latency(latency, workdir / "latency-emulator.log", separate_process=True) as (emulator, proxy):
        direct = _direct_client(emulator.url)
        store = Store(settings=StoreSettings(concurrency=concurrency))
        serial = store.with_settings(dataclasses.replace(store.settings, concurrency=1))
        bucket = f"latency-{uuid.uuid4().hex[:8]}"
        store.ensure_bucket(bucket)
        if which & {"retag", "list"}:
            names = [f"retag/{index:05d}.csv" for index in range(objects)]
            _step(f"create {objects} objects (direct to the emulator)")
            labels = lambda index: {"benchmark", "even" if index % 2 == 0 else "odd"}  # noqa: E731
            _create_objects(direct, bucket, names, labels)
        if "retag" in which:
            rows += retag_rows(proxy, store, serial, bucket, objects, latency)
        if "list" in which:
            rows += listing_rows(proxy, store, bucket, objects, latency)
        if "inputs" in which:
            rows += lazy_input_rows(proxy, direct, store, serial, bucket, objects, latency)
        if "dataset-latency" in which:
            rows += dataset_rows(proxy, store, bucket, workdir, objects, latency)
        if "sensor" in which:
            rows += sensor_rows(proxy, direct, store, bucket, sensor_objects)
    return rows
