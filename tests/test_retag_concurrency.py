"""Concurrent many-object work: re-tagging and bulk deletes keep exact, per-object semantics with requests in flight
at the same time (no timing: overlap is observed by the proxy, correctness by what GCS holds)."""

from __future__ import annotations

import logging
import os

import dagster as dg
import pytest
from dagster_gcp import GCSResource

from faultproxy import Fault, FaultProxy
from octue_dagster import ConflictError, Datafile, InvalidInputError
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.listing.selection import RetagSpec, retag_objects
from octue_dagster.core.storage.store import Store, StoreSettings
from octue_dagster.dagster.resources import DatafileResource, StoreConfig
from octue_dagster.dagster.retag_job import build_retag_job
from octue_dagster.testing.emulator import EMULATOR_VARIABLE
from octue_dagster.testing.latency_proxy import LatencyProxy
from scratch import scratch_folder


def _put(store: Store, bucket: str, name: str, content: str = "", **metadata) -> None:
    local = Datafile(os.path.join(scratch_folder(), os.path.basename(name)), store=store, **metadata)
    with local.open("w") as file:
        file.write(content or name)
    local.upload(f"gs://{bucket}/{name}")


def _labels(store: Store, bucket: str, prefix: str) -> dict[str, set[str]]:
    return {
        info.path.name: set(md.from_cloud_metadata(info.custom_metadata, str(info.path)).labels or ())
        for info in store.list_objects(GCSPath(bucket, prefix))
    }


def test_patches_overlap_up_to_the_concurrency_and_one_request_per_object(emulator, bucket, monkeypatch, caplog):
    with LatencyProxy(emulator.url, latency_seconds=0.02) as proxy:
        monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
        store = Store(settings=StoreSettings(concurrency=8))
        for index in range(40):
            _put(store, bucket, f"r/{index:02d}.csv", labels={"raw"})
        assert store.client._http.adapters["http://"]._pool_maxsize >= 8
        proxy.reset()
        with caplog.at_level(logging.WARNING, logger="urllib3"):
            counts = retag_objects(store, f"gs://{bucket}/r/", RetagSpec(labels=["raw"], add_labels=["seen"]))
        assert (counts.scanned, counts.matched, counts.changed, counts.failed) == (40, 40, 40, 0)
        assert dict(proxy.by_method) == {"GET": 1, "PATCH": 40}  # one listing page, one patch per object
        assert 2 <= proxy.peak_in_flight <= 8
        assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]

        proxy.reset()
        serial = retag_objects(store, f"gs://{bucket}/r/", RetagSpec(add_labels=["again"]), concurrency=1)
        assert serial.changed == 40 and proxy.peak_in_flight == 1
    assert all(labels == {"raw", "seen", "again"} for labels in _labels(store, bucket, "r/").values())


def test_a_writer_patching_after_the_listing_is_merged_not_overwritten(enforcing_proxy, bucket, monkeypatch):
    store = Store()
    other = Store()  # another machine's client, also going through the enforcing proxy
    for index in range(6):
        _put(store, bucket, f"m/{index}.csv", labels={"raw"})
    listed = store.list_objects

    def listing_then_other_writer(prefix, **kwargs):
        infos = list(listed(prefix, **kwargs))
        for info in infos:  # after our listing, before our patches: another writer adds its label
            theirs = Datafile.from_object_info(other.require_object(info.path), store=other)
            theirs.labels.add("theirs")
            theirs.update_metadata()
        yield from infos

    monkeypatch.setattr(store, "list_objects", listing_then_other_writer)
    enforcing_proxy.reset()
    counts = retag_objects(store, f"gs://{bucket}/m/", RetagSpec(add_labels=["ours"]))
    assert (counts.matched, counts.changed, counts.failed) == (6, 6, 0)
    # Each of our first patches was refused (412), re-read and re-applied: 6 + 6 + 6 patches, 6 re-reads.
    assert enforcing_proxy.by_method["PATCH"] == 18
    assert all(labels == {"raw", "theirs", "ours"} for labels in _labels(store, bucket, "m/").values())


def test_one_object_failing_is_reported_for_that_object_and_the_others_change(emulator, bucket, monkeypatch):
    direct = Store()
    for index in range(8):
        _put(direct, bucket, f"f/{index}.csv", labels={"raw"})
    with FaultProxy(emulator.url) as proxy:
        proxy.add(Fault("status", "PATCH", r"/o/f%2F3\.csv", status=403, times=100))
        monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
        store = Store(settings=StoreSettings(concurrency=4))
        counts = retag_objects(store, f"gs://{bucket}/f/", RetagSpec(add_labels=["seen"]))
    assert (counts.scanned, counts.matched, counts.changed, counts.failed, counts.vanished) == (8, 8, 7, 1, 0)
    assert list(counts.failures) == [f"gs://{bucket}/f/3.csv"]
    assert "StoragePermissionError" in counts.failures[f"gs://{bucket}/f/3.csv"]
    labels = _labels(direct, bucket, "f/")
    assert labels.pop("f/3.csv") == {"raw"}
    assert all(value == {"raw", "seen"} for value in labels.values())


def test_the_retag_job_fails_after_changing_every_other_object_and_names_the_failure(emulator, bucket, monkeypatch):
    direct = Store()
    for index in range(3):
        _put(direct, bucket, f"j/{index}.csv", labels={"raw"})
    job = build_retag_job("tag_j", f"gs://{bucket}/j/", add_labels=["seen"])
    with FaultProxy(emulator.url) as proxy:
        proxy.add(Fault("status", "PATCH", r"/o/j%2F1\.csv", status=403, times=100))
        monkeypatch.setenv(EMULATOR_VARIABLE, proxy.url)
        resource = DatafileResource(gcs=GCSResource(), store_settings=StoreConfig(concurrency=2))
        result = dg.Definitions(jobs=[job], resources={"datafiles": resource}).resolve_job_def(
            "tag_j"
        ).execute_in_process(raise_on_error=False)
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    data = failure.step_failure_data
    assert "1 of 3 matching objects" in data.user_failure_data.description
    assert data.user_failure_data.metadata["changed"].value == 2
    assert list(data.user_failure_data.metadata["failures"].value) == [f"gs://{bucket}/j/1.csv"]
    assert _labels(direct, bucket, "j/") == {"j/0.csv": {"raw", "seen"}, "j/1.csv": {"raw"}, "j/2.csv": {"raw", "seen"}}


def test_objects_deleted_after_the_listing_are_counted_as_vanished(bucket, monkeypatch):
    store = Store()
    for index in range(4):
        _put(store, bucket, f"v/{index}.csv")
    listed = store.list_objects

    def listing_then_delete(prefix, **kwargs):
        infos = list(listed(prefix, **kwargs))
        store.delete_object(infos[0].path)
        yield from infos

    monkeypatch.setattr(store, "list_objects", listing_then_delete)
    counts = retag_objects(store, f"gs://{bucket}/v/", RetagSpec(add_labels=["seen"]))
    assert (counts.matched, counts.changed, counts.vanished, counts.failed) == (4, 3, 1, 0)


def test_bulk_delete_removes_only_the_listed_generations(enforcing_proxy, bucket):
    # fake-gcs-server ignores ifGenerationMatch on deletes; the proxy enforces it as GCS does.
    store = Store(settings=StoreSettings(concurrency=4))
    for index in range(10):
        _put(store, bucket, f"d/{index}.csv")
    listed = list(store.list_objects(GCSPath(bucket, "d/")))
    _put(store, bucket, "d/5.csv", "new content")  # replaced after the listing: must survive
    outcomes = {outcome.item.path.name: outcome for outcome in store.delete_objects(listed)}
    assert len(outcomes) == 10
    assert isinstance(outcomes["d/5.csv"].error, ConflictError)
    assert all(outcome.ok for name, outcome in outcomes.items() if name != "d/5.csv")
    assert [info.path.name for info in store.list_objects(GCSPath(bucket, "d/"))] == ["d/5.csv"]


def test_concurrency_setting_is_validated():
    with pytest.raises(InvalidInputError, match="concurrency"):
        StoreSettings(concurrency=0)
