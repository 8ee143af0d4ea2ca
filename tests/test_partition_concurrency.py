"""Concurrent Dagster runs of different partitions of one asset, in separate (spawned) processes sharing one
persistent Dagster instance and one bucket: every partition's object lands with the right content and metadata, and
every materialization records that object (its generation) with the object's crc32c as its data version."""

import multiprocessing
import os
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DailyPartitionsDefinition,
    asset,
    instance_for_test,
    materialize,
)
from dagster_gcp import GCSResource

from octue_dagster import Datafile
from octue_dagster.core.metadata import values as md
from octue_dagster.dagster.ui_metadata import URI_KEY
from octue_dagster.dagster.io_manager import DatafileIOManager
from reliability_summary import save_summary
from scratch import scratch_folder

WORKERS = 4
PARTITIONS_PER_WORKER = 2
DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-31")


def content_for(day: str) -> bytes:
    """Each partition's own content (a few KiB, so that uploads from different runs overlap in time)."""
    return f"day,{day}\n".encode() * 400


@asset(partitions_def=DAYS)
def daily(context: AssetExecutionContext) -> Datafile:
    day = context.partition_key
    datafile = Datafile(Path(scratch_folder()) / "day.csv", labels={"daily"}, tags={"day": day})
    with datafile.open("wb") as file:
        file.write(content_for(day))
    return datafile


def materialize_partitions(instance_ref, bucket: str, days: list[str], barrier, results) -> None:
    """A worker process: wait for the others, then run one materialization per day, one after another."""
    instance = DagsterInstance.from_ref(instance_ref)
    resources = {"io_manager": DatafileIOManager(bucket=bucket, gcs=GCSResource())}
    barrier.wait()
    for day in days:
        result = materialize([daily], partition_key=day, instance=instance, resources=resources, raise_on_error=False)
        results.put((day, result.success, result.run_id, os.getpid()))


def test_concurrent_runs_of_different_partitions_all_land(client, bucket, tmp_path):
    all_days = DAYS.get_partition_keys()[: WORKERS * PARTITIONS_PER_WORKER]
    assignments = [all_days[worker::WORKERS] for worker in range(WORKERS)]
    context = multiprocessing.get_context("spawn")
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        barrier = context.Barrier(WORKERS)
        results = context.Queue()
        processes = [
            context.Process(target=materialize_partitions, args=(instance.get_ref(), bucket, days, barrier, results))
            for days in assignments
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in all_days]
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0

        assert all(success for _, success, _, _ in outcomes), outcomes
        assert len({pid for *_, pid in outcomes}) == WORKERS
        run_of = {day: run_id for day, _, run_id, _ in outcomes}

        stored = {blob.name: blob for blob in client.list_blobs(bucket, prefix="dagster/daily/")}
        assert sorted(stored) == sorted(f"dagster/daily/partition={day}/daily.csv" for day in all_days)
        lost = 0
        for day in all_days:
            blob = stored[f"dagster/daily/partition={day}/daily.csv"]
            found = md.from_cloud_metadata(blob.metadata, blob.name)
            lost += blob.download_as_bytes() != content_for(day)
            assert blob.download_as_bytes() == content_for(day)
            assert (found.labels, found.tags) == ({"daily"}, {"day": day})

            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey("daily"), asset_partitions=[day]), limit=10
            ).records
            assert len(records) == 1, f"partition {day} has {len(records)} materializations"
            entry = records[0].event_log_entry
            materialization = entry.asset_materialization
            assert entry.run_id == run_of[day]
            assert materialization.metadata[URI_KEY].value == f"gs://{bucket}/{blob.name}"
            assert materialization.metadata["generation"].value == str(blob.generation)
            assert materialization.metadata["crc32c"].value == blob.crc32c
            assert materialization.tags["dagster/data_version"] == blob.crc32c
        assert instance.get_materialized_partitions(AssetKey("daily")) == set(all_days)

    summary: dict[str, Any] = {"processes": WORKERS, "runs": len(outcomes), "partitions": len(all_days), "lost": lost}
    save_summary("partition_concurrency", summary)
