"""Concurrent writers, in separate processes (spawned, as on macOS and Windows): nothing any of them wrote is lost.

Also proves the metageneration retry in `Store.patch_metadata` against a server that enforces the precondition
(the fault proxy answers 412 to the first PATCH after another writer has patched), which fake-gcs-server alone does
not do.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from octue_dagster import ConflictError, Datafile
from octue_dagster.core.storage.store import Store, make_client
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.testing.emulator import EMULATOR_VARIABLE

from faultproxy import Fault, FaultProxy
from reliability_summary import save_summary

WORKERS = 4
_summary: dict[str, Any] = {"processes": 0, "writes": 0, "lost": 0, "conflicts": 0}


@pytest.fixture(scope="module", autouse=True)
def write_summary():
    yield
    save_summary("concurrency", _summary)


def _run(target, argument_lists: list[tuple]) -> list[Any]:
    """Run `target(*arguments, barrier, results)` in one spawned process per argument tuple; return their results."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(argument_lists))
    results = context.Queue()
    processes = [context.Process(target=target, args=(*arguments, barrier, results)) for arguments in argument_lists]
    for process in processes:
        process.start()
    collected = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    _summary["processes"] += len(processes)
    return collected


def retag(uris: list[str], label: str, barrier, results) -> None:
    client = make_client()
    datafiles = [Datafile(uri, storage_client=client) for uri in uris]
    barrier.wait()
    for datafile in datafiles:
        datafile.labels.add(label)
        datafile.tags[label.replace("-", "_")] = label
        datafile.update_metadata()
    results.put(label)


def write_local(folder: str, worker: int, count: int, barrier, results) -> None:
    barrier.wait()
    for index in range(count):
        datafile = Datafile(Path(folder) / f"worker{worker}-{index}.txt", labels={f"worker-{worker}"})
        with datafile.open("w") as file:
            file.write(f"{worker}/{index}")
    results.put(worker)


def write_object(uri: str, content: str, barrier, results) -> None:
    datafile = Datafile(uri, storage_client=make_client())
    barrier.wait()
    try:
        with datafile.open("w") as file:
            file.write(content)
        results.put(("won", content))
    except ConflictError as error:
        results.put(("conflict", str(error)))


def test_concurrent_retagging_keeps_every_label(client, bucket):
    uris = []
    for index in range(3):
        datafile = Datafile(f"gs://{bucket}/shared-{index}.txt", storage_client=client, labels={"original"})
        with datafile.open("w") as file:
            file.write("shared")
        uris.append(datafile.cloud_path)
    labels = [f"worker-{worker}" for worker in range(WORKERS)]
    _run(retag, [(uris, label) for label in labels])
    _summary["writes"] += len(uris) * WORKERS
    for uri in uris:
        stored = Datafile(uri, storage_client=client)
        missing = ({"original", *labels}) - set(stored.labels)
        _summary["lost"] += len(missing)
        assert stored.labels == {"original", *labels}
        assert stored.tags == {label.replace("-", "_"): label for label in labels}


def test_concurrent_local_writers_keep_every_octue_entry(tmp_path):
    per_worker = 5
    _run(write_local, [(str(tmp_path), worker, per_worker) for worker in range(WORKERS)])
    _summary["writes"] += WORKERS * per_worker
    entries = json.loads((tmp_path / ".octue").read_text())["datafiles"]
    expected = {f"worker{worker}-{index}.txt" for worker in range(WORKERS) for index in range(per_worker)}
    _summary["lost"] += len(expected - set(entries))
    assert set(entries) == expected
    for name, entry in entries.items():
        assert md.from_local_metadata(entry, name).labels == {name.split("-")[0].replace("worker", "worker-")}
        assert (tmp_path / name).read_text() == name.removeprefix("worker").removesuffix(".txt").replace("-", "/")


def test_two_writers_of_one_object_one_wins_one_conflicts(client, bucket):
    uri = f"gs://{bucket}/contested.txt"
    with Datafile(uri, storage_client=client).open("w") as file:
        file.write("before")
    outcomes = _run(write_object, [(uri, "from A"), (uri, "from B")])
    _summary["writes"] += 2
    won = [detail for outcome, detail in outcomes if outcome == "won"]
    conflicts = [detail for outcome, detail in outcomes if outcome == "conflict"]
    _summary["conflicts"] += len(conflicts)
    assert len(won) == 1 and len(conflicts) == 1, outcomes
    assert "another writer" in conflicts[0]
    with Datafile(uri, storage_client=client).open() as file:
        assert file.read() == won[0]


def test_patch_retried_after_412_keeps_both_writers_labels(client, bucket, emulator, monkeypatch):
    uri = f"gs://{bucket}/enforced.txt"
    with Datafile(uri, storage_client=client, labels={"original"}).open("w") as file:
        file.write("data")
    path = GCSPath(bucket, "enforced.txt")

    def other_writer_patches_first() -> None:
        # Another machine adds its label between our read and our patch; a real GCS then fails our patch with 412.
        info = Store(client).get_object(path)
        stored = md.from_cloud_metadata(info.custom_metadata, uri)
        blob = client.bucket(bucket).blob(path.name)
        blob.metadata = md.to_cloud_metadata(stored.id, stored.timestamp, {*stored.labels, "other"}, stored.tags)
        blob.patch()

    with FaultProxy(emulator.url) as proxy:
        fault = proxy.add(Fault("status", "PATCH", r"/o/enforced", status=412, before=other_writer_patches_first))
        monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
        proxied = make_client()
        monkeypatch.setenv(EMULATOR_VARIABLE, emulator.url)
        datafile = Datafile(uri, storage_client=proxied)
        datafile.labels.add("mine")
        datafile.update_metadata()
        patches = [exchange for exchange in proxy.exchanges if exchange.method == "PATCH"]
    _summary["writes"] += 2
    assert fault.fired == 1
    assert len(patches) == 2, "the patch was not re-read and re-applied after the 412"
    assert datafile.labels == {"original", "other", "mine"}
    assert Datafile(uri, storage_client=client).labels == {"original", "other", "mine"}
