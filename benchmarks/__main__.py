"""`python -m benchmarks [--quick] [--only NAMES] ...`: run the benchmarks against a fresh emulator, print the table.

Benchmarks (choose with `--only hash,metadata,...`; default all): hash, metadata, transfer, sliced, memory,
dataset, catalog, and the latency ones: retag, list, inputs, sensor, dataset-latency, scale (through a proxy adding
`--latency-ms` to each request; scale runs its operations at 1k/5k/20k objects, or `--scale-sizes`).

The emulator (fake-gcs-server, in-memory) and the download cache are private to the run; big files go in a temporary
folder that is deleted at the end. The table is also written to benchmarks/results/latest.txt.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks import (
    cache_bench,
    catalog_bench,
    dataset_bench,
    hash_bench,
    latency_bench,
    memory_bench,
    metadata_bench,
    scale_bench,
    sliced_bench,
    transfer_bench,
)
from benchmarks.measure import MIB, make_random_file
from benchmarks.table import Row, render
from octue_dagster.core.storage import store
from octue_dagster.core.cache.copies import CACHE_DIR_VARIABLE
from octue_dagster.testing.emulator import running_emulator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALL_BENCHMARKS = (
    "hash", "metadata", "transfer", "sliced", "memory", "dataset", "catalog", *latency_bench.LATENCY_BENCHMARKS, "scale"
)
RESULTS = Path(__file__).resolve().parent / "results" / "latest.txt"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small, fast run: 64 MiB files, 100 datafiles")
    parser.add_argument("--size-mib", type=int, help="size of the upload/download/memory file (default 1024)")
    parser.add_argument("--hash-mib", type=int, help="size of the hashing-throughput file (default 256)")
    parser.add_argument("--datafiles", type=int, help="number of small cloud objects to read (default 1000)")
    parser.add_argument("--rounds", type=int, help="timed repetitions; the best is reported (default 2)")
    parser.add_argument("--workdir", help="where big temporary files go (default: the system temp folder)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any goal is missed")
    parser.add_argument("--only", help=f"comma-separated benchmarks to run, of: {', '.join(ALL_BENCHMARKS)}")
    parser.add_argument("--latency-ms", type=float, default=25.0, help="delay the proxy adds per request (25)")
    parser.add_argument("--latency-objects", type=int, help="objects for the latency benchmarks (default 1000)")
    parser.add_argument("--sensor-objects", type=int, help="objects under the sensor's prefix (default 20000)")
    parser.add_argument("--scale-sizes", help="object counts for the scale benchmark (default 1000,5000,20000)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight for many-object work (16)")
    arguments = parser.parse_args(argv)
    defaults = (64, 64, 100, 2, 200, 2000) if arguments.quick else (1024, 256, 1000, 2, 1000, 20000)
    fields = ("size_mib", "hash_mib", "datafiles", "rounds", "latency_objects", "sensor_objects")
    for field, default in zip(fields, defaults):
        if getattr(arguments, field) is None:
            setattr(arguments, field, default)
    arguments.only = set(ALL_BENCHMARKS) if not arguments.only else set(arguments.only.split(","))
    unknown = arguments.only - set(ALL_BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL_BENCHMARKS)}")
    return arguments


def _step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(arguments: argparse.Namespace, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    if "hash" in arguments.only:
        _step(f"writing a {arguments.hash_mib} MiB file for hashing")
        hash_file = make_random_file(workdir / "hash.bin", arguments.hash_mib * MIB)
        _step("1. hash throughput")
        rows += hash_bench.throughput_rows(hash_file, repeats=max(5, arguments.rounds))
        _step("2. second hash_value access")
        rows += hash_bench.second_access_rows(hash_file)
        hash_file.unlink()
    if "catalog" in arguments.only:
        _step(f"8. catalog metadata: counting the rows of a {arguments.hash_mib} MiB CSV")
        rows += catalog_bench.catalog_rows(workdir, arguments.hash_mib, repeats=max(3, arguments.rounds))
    if arguments.only & {"metadata", "transfer", "sliced", "memory", "dataset"}:
        rows += _emulator_rows(arguments, workdir)
    latency = arguments.only & set(latency_bench.LATENCY_BENCHMARKS)
    if latency:
        _step(f"7. many-object work at {arguments.latency_ms:g} ms per request ({', '.join(sorted(latency))})")
        rows += latency_bench.latency_rows(
            workdir,
            latency_ms=arguments.latency_ms,
            objects=arguments.latency_objects,
            sensor_objects=arguments.sensor_objects,
            concurrency=arguments.concurrency,
            which=latency,
        )
    if "scale" in arguments.only:
        sizes = tuple(int(size) for size in (arguments.scale_sizes or "1000,5000,20000").split(","))
        _step(f"8. scale: {', '.join(map(str, sizes))} objects at {arguments.latency_ms:g} ms per request")
        rows += scale_bench.scale_rows(
            workdir,
            latency_ms=arguments.latency_ms,
            concurrency=arguments.concurrency,
            sizes=sizes,
        )
    return rows


def _emulator_rows(arguments: argparse.Namespace, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    with running_emulator(workdir / "fake-gcs-server.log"):
        client = store.Store.default().client
        bucket = f"benchmark-{uuid.uuid4().hex[:8]}"
        store.Store(client).ensure_bucket(bucket)

        if "metadata" in arguments.only:
            _step(f"3. metadata reads of {arguments.datafiles} cloud datafiles (creating the objects first)")
            names = metadata_bench.create_small_objects(client, bucket, arguments.datafiles)
            rows += metadata_bench.metadata_read_rows(client, bucket, names, max(3, arguments.rounds))
            _step(f"3b. downloading {len(names)} small objects: cost of the cache's size limit and eviction")
            rows += cache_bench.eviction_rows(client, bucket, names, workdir, max(3, arguments.rounds))
        if arguments.only & {"transfer", "sliced", "memory"}:
            _step(f"writing a {arguments.size_mib} MiB file for transfers")
            big_file = make_random_file(workdir / "big.bin", arguments.size_mib * MIB)
            if "transfer" in arguments.only:
                _step(f"4. upload and download, {arguments.rounds} round(s)")
                rows += transfer_bench.transfer_rows(client, big_file, bucket, workdir, arguments.rounds)
            if "sliced" in arguments.only:
                _step(f"4b. sliced downloads with the transfer manager, {arguments.rounds} round(s)")
                rows += sliced_bench.sliced_rows(client, big_file, bucket, workdir, arguments.rounds)
            if "memory" in arguments.only:
                _step("5. peak memory, one fresh process per operation")
                rows += memory_bench.memory_rows(client, big_file, bucket, workdir, PROJECT_ROOT)
            big_file.unlink()
        if "dataset" in arguments.only:
            _step(f"6. datasets of {arguments.datafiles} files: instantiation, re-upload, peak memory")
            rows += dataset_bench.instantiation_rows(client, bucket, workdir, arguments.datafiles)
            rows += dataset_bench.reupload_rows(client, bucket, workdir, arguments.datafiles, changed=10)
            rows += dataset_bench.memory_rows(bucket, workdir, PROJECT_ROOT, arguments.datafiles, arguments.size_mib)
    return rows


def header(arguments: argparse.Namespace) -> list[str]:
    return [
        f"octue_dagster benchmarks, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; GCS = fake-gcs-server "
        f"(in-memory) on loopback",
        f"transfer/memory file {arguments.size_mib} MiB, hash file {arguments.hash_mib} MiB, "
        f"{arguments.datafiles} datafiles, best of {arguments.rounds} round(s) for transfers; ratio = ours / baseline",
        f"latency benchmarks: {arguments.latency_ms:g} ms added per request by a loopback proxy, "
        f"{arguments.latency_objects} objects ({arguments.sensor_objects} for the sensor), concurrency "
        f"{arguments.concurrency}; run: {', '.join(name for name in ALL_BENCHMARKS if name in arguments.only)}",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    workdir = Path(tempfile.mkdtemp(prefix="octue-dagster-bench-", dir=arguments.workdir))
    previous_cache = os.environ.get(CACHE_DIR_VARIABLE)
    os.environ[CACHE_DIR_VARIABLE] = str(workdir / "cache")
    try:
        rows = run(arguments, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if previous_cache is None:
            os.environ.pop(CACHE_DIR_VARIABLE, None)
        else:
            os.environ[CACHE_DIR_VARIABLE] = previous_cache
    text = render(rows, header(arguments))
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    missed = [row.measurement for row in rows if row.met is False]
    if missed:
        print(f"goals missed: {', '.join(missed)}", file=sys.stderr)
    return 1 if arguments.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
