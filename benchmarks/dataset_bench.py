"""Measurement 6: datasets. Requests to instantiate a cloud dataset, uploads when few files changed, peak memory.

- Instantiation: our `Dataset("gs://...")` (paged listing + one `.octue` read) against Octue's SDK 0.69.1 request
  pattern, reproduced with the same client: a listing, then one metadata request per file (its `Datafile(path)`),
  plus an existence check and a download of the `.octue` object.
- Re-upload: a local dataset already uploaded, with `changed` files rewritten: our upload against Octue's, which
  uploads every file again (its `Dataset.upload` calls `Datafile.upload` for each).
- Peak memory of an upload and a download of the whole dataset, in a fresh process (`python -m
  benchmarks.dataset_bench child ...`), for many small files and for a few large ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.cloud import storage

from benchmarks.measure import MIB, RequestCounter, make_random_file, timed
from benchmarks.table import Row
from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.core.storage.store import Store

MEMORY_GOAL_MIB = 150


def make_local_dataset(folder: Path, count: int, size_bytes: int = 0) -> Dataset:
    """`count` files (small CSVs, or random files of `size_bytes`) with Octue metadata, and the dataset's own."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        path = folder / f"turbine-{index:05d}.csv"
        if size_bytes:
            make_random_file(path, size_bytes)
        else:
            path.write_text(f"time,speed\n0,{index}\n")
    dataset = Dataset(folder, name=folder.name, labels={"benchmark"})
    for datafile in dataset.files:
        datafile.tags["turbine"] = datafile.name
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda datafile: datafile.update_metadata(), dataset.files))
    dataset.update_metadata()
    return Dataset(folder)


def _octue_style_instantiation(client: storage.Client, bucket: str, prefix: str) -> int:
    """Octue's SDK's requests for `Dataset(path="gs://...")`: `.octue` exists + download, a listing, one GET per file."""
    handle = client.bucket(bucket)
    metadata = handle.blob(f"{prefix}/.octue")
    if metadata.exists():
        json.loads(metadata.download_as_bytes())
    names = [blob.name for blob in client.list_blobs(bucket, prefix=f"{prefix}/") if not blob.name.endswith(".octue")]
    files = [handle.get_blob(name) for name in names]
    return len(files)


def instantiation_rows(client: storage.Client, bucket: str, workdir: Path, count: int) -> list[Row]:
    local = make_local_dataset(workdir / "instantiate", count)
    local.upload(f"gs://{bucket}/instantiate")
    counters = {"ours": RequestCounter(), "base": RequestCounter()}
    times = {}
    store = Store(client)
    with counters["ours"].spying_on(client):
        times["ours"], dataset = timed(lambda: Dataset(f"gs://{bucket}/instantiate", store=store))
    assert len(dataset) == count
    with counters["base"].spying_on(client):
        times["base"], found = timed(lambda: _octue_style_instantiation(client, bucket, "instantiate"))
    assert found == count
    pages = -(-(count + 1) // store.settings.list_page_size)  # the listing holds the files and the .octue object
    return [
        Row(f"requests to instantiate a cloud dataset of {count} files", counters["ours"].count,
            counters["base"].count, "req", f"= pages + 1 = {pages + 1}", counters["ours"].count == pages + 1),
        Row(f"time to instantiate a cloud dataset of {count} files", times["ours"], times["base"], "s",
            "report only", None),
    ]


def reupload_rows(client: storage.Client, bucket: str, workdir: Path, count: int, changed: int) -> list[Row]:
    folder = workdir / "reupload"
    make_local_dataset(folder, count).upload(f"gs://{bucket}/reupload")
    for index in range(changed):
        (folder / f"turbine-{index:05d}.csv").write_text(f"time,speed\n0,{index + 0.5}\n")
    dataset = Dataset(folder, store=Store(client))
    counters = {"ours": RequestCounter(), "base": RequestCounter()}
    with counters["ours"].spying_on(client):
        seconds, report = timed(lambda: dataset.upload_with_report(f"gs://{bucket}/reupload"))
    again = Dataset(folder, store=Store(client)).upload_with_report(f"gs://{bucket}/reupload")
    handle = client.bucket(bucket)

    def octue_style() -> None:  # Octue's Dataset.upload sends every file, 16 threads here as ours
        def send(path: Path) -> None:
            handle.blob(f"reupload-octue/{path.name}").upload_from_filename(str(path))

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(send, sorted(folder.glob("*.csv"))))

    with counters["base"].spying_on(client):
        base_seconds, _ = timed(octue_style)
    sent = len(report.transferred)
    return [
        Row(f"files uploaded when {changed} of {count} changed", sent, count, "files", f"= {changed}",
            sent == changed),
        Row(f"files uploaded when none of {count} changed", len(again.transferred), count, "files", "= 0",
            not again.transferred),
        Row(f"requests to re-upload {count} files, {changed} changed", counters["ours"].count,
            counters["base"].count, "req", "report only", None),
        Row(f"time to re-upload {count} files, {changed} changed", seconds, base_seconds, "s", "report only", None),
    ]


def memory_rows(bucket: str, workdir: Path, project_root: Path, small_count: int, large_mib: int) -> list[Row]:
    """Peak MiB above the interpreter's own for a whole-dataset upload and download, ours against the plain client
    sending or fetching every file on 16 threads (what Octue's SDK does)."""
    rows = []
    for label, count, size in [
        (f"{small_count} small files", small_count, 0),
        (f"{large_mib} MiB in 8 files", 8, large_mib * MIB // 8),
    ]:
        folder = workdir / f"memory-{uuid.uuid4().hex[:6]}"
        make_local_dataset(folder, count, size)
        peaks = {}
        for side in ("ours", "base"):
            cloud_path = f"gs://{bucket}/{folder.name}-{side}"
            for operation in ("upload", "download"):
                target = workdir / f"{folder.name}-{side}-down"
                peaks[operation, side] = _child_peak_mib(project_root, side, operation, str(folder), cloud_path, target)
                if operation == "download":
                    shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        for operation in ("upload", "download"):
            ours = peaks[operation, "ours"]
            rows.append(Row(f"peak memory: dataset {operation}, {label}", ours, peaks[operation, "base"], "MiB",
                            f"< {MEMORY_GOAL_MIB} MiB", ours < MEMORY_GOAL_MIB))
    return rows


def _child_peak_mib(project_root: Path, side: str, operation: str, folder: str, cloud_path: str, target: Path) -> float:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.dataset_bench", "child", side, operation, folder, cloud_path, str(target)],
        cwd=project_root, env=os.environ.copy(), capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dataset memory child {side}/{operation} failed:\n{result.stderr}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return (report["peak_kib"] - report["before_kib"]) / 1024


def _plain(operation: str, folder: str, cloud_path: str, target: str):
    client = Store.default().client
    bucket_name, _, prefix = cloud_path[len("gs://"):].partition("/")
    handle = client.bucket(bucket_name)
    if operation == "upload":
        paths = sorted(Path(folder).glob("*.csv"))

        def work(path: Path) -> None:
            handle.blob(f"{prefix}/{path.name}").upload_from_filename(str(path))

        items = paths
    else:
        Path(target).mkdir(parents=True, exist_ok=True)
        items = [blob.name for blob in client.list_blobs(bucket_name, prefix=prefix + "/")]

        def work(name: str) -> None:
            handle.blob(name).download_to_filename(str(Path(target) / name.rsplit("/", 1)[-1]))

    def run() -> None:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(work, items))

    return run


def _child(side: str, operation: str, folder: str, cloud_path: str, target: str) -> None:
    from benchmarks.memory_child import _reset_peak, _status_kib

    if side == "base":
        action = _plain(operation, folder, cloud_path, target)
    elif operation == "upload":
        dataset = Dataset(folder)
        for datafile in dataset.files:
            assert datafile.hash_value  # hashing is measured elsewhere; the transfer is measured here
        action = lambda: dataset.upload(cloud_path)  # noqa: E731
    else:
        dataset = Dataset(cloud_path)
        action = lambda: dataset.download(target)  # noqa: E731
    reset = _reset_peak()
    before = _status_kib("VmRSS")
    action()
    print(json.dumps({"before_kib": before, "peak_kib": _status_kib("VmHWM"), "peak_reset": reset}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(*sys.argv[2:7])
