"""The retention job in real Dagster runs on the emulator: dry run first, op outputs of finished runs and asset
objects no materialization points to are removed, current and foreign objects never are."""

import datetime
import os

from dagster import (
    AssetMaterialization,
    DagsterInstance,
    Definitions,
    MetadataValue,
    asset,
    build_schedule_context,
    job,
    materialize,
    op,
)
from dagster_gcp import GCSResource

from octue_dagster import Datafile
from octue_dagster.dagster import retention as retention_module
from octue_dagster.dagster.io_manager import DatafileIOManager
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.dagster.retention_job import build_retention_job, build_retention_schedule
from scratch import scratch_folder


def _local(name: str, content: bytes) -> Datafile:
    datafile = Datafile(os.path.join(scratch_folder(), name))
    with datafile.open("wb") as file:
        file.write(content)
    return datafile


@asset
def kept() -> Datafile:
    return _local("k.csv", b"current")


@op
def produce() -> Datafile:
    return _local("p.txt", b"op output")


@op
def consume(value: Datafile) -> None:
    pass


@job
def op_job():
    consume(produce())


def _counts(result, op_name: str) -> dict:
    [event] = [e for e in result.all_events if e.is_successful_output and e.step_key == op_name]
    return {key: value.value for key, value in event.event_specific_data.metadata.items()}


def test_retention_removes_only_unreferenced_objects_it_owns_after_a_dry_run(bucket, client, monkeypatch):
    instance = DagsterInstance.ephemeral()
    gcs = GCSResource()
    resources = {"io_manager": DatafileIOManager(bucket=bucket, gcs=gcs), "datafiles": DatafileResource(gcs=gcs)}
    assert materialize([kept], resources=resources, instance=instance).success
    run = op_job.execute_in_process(resources=resources, instance=instance)
    assert run.success
    current = client.bucket(bucket).get_blob("dagster/kept/=/kept.csv")
    # A leftover of the same asset (as a crash between storing and cleaning up leaves), and foreign objects.
    leftover = client.bucket(bucket).blob("dagster/kept/=/kept.json")
    leftover.metadata = dict(current.metadata)
    leftover.upload_from_string(b"superseded")
    # ... that predates the latest materialization (an object written after it may belong to a run in progress).
    instance.report_runless_asset_event(
        AssetMaterialization("kept", metadata={"dagster/uri": MetadataValue.path(f"gs://{bucket}/{current.name}")})
    )
    monkeypatch.setattr(retention_module, "CLOCK_SKEW_MARGIN", datetime.timedelta(0))  # one clock here: GCS's is this one
    for name in ["dagster/kept/=/.octue", "dagster/kept/=/notes.txt", "dagster/elsewhere/copy.csv"]:
        blob = client.bucket(bucket).blob(name)
        blob.metadata = dict(current.metadata) if name.endswith("copy.csv") else None  # a mark copied elsewhere
        blob.upload_from_string(b"foreign")
    before = sorted(blob.name for blob in client.list_blobs(bucket))
    op_outputs = [name for name in before if name.startswith(f"dagster/run={run.run_id}/")]
    assert len(op_outputs) == 1

    retention = build_retention_job("retention", bucket=bucket, older_than_days=0)
    defs = Definitions(jobs=[retention], resources={"datafiles": DatafileResource(gcs=gcs)})
    dry = _counts(defs.resolve_job_def("retention").execute_in_process(instance=instance), "retention_op")
    assert dry["dry_run"] is True and dry["deleted"] == 0
    # Octue's .octue object is not even listed (as Octue's SDK skips it); the other two are foreign.
    assert (dry["old_op_outputs"], dry["unreferenced_asset_objects"], dry["foreign"]) == (1, 1, 2)
    assert sorted(blob.name for blob in client.list_blobs(bucket)) == before

    config = {"ops": {"retention_op": {"config": {"dry_run": False}}}}
    done = _counts(defs.resolve_job_def("retention").execute_in_process(instance=instance, run_config=config), "retention_op")
    assert done["deleted"] == 2
    after = sorted(blob.name for blob in client.list_blobs(bucket))
    assert after == sorted(set(before) - {"dagster/kept/=/kept.json", *op_outputs})
    assert client.bucket(bucket).get_blob("dagster/kept/=/kept.csv").generation == current.generation

    # With the default age threshold nothing this recent goes.
    recent = build_retention_job("recent", bucket=bucket)
    counts = _counts(
        Definitions(jobs=[recent], resources={"datafiles": DatafileResource(gcs=gcs)})
        .resolve_job_def("recent")
        .execute_in_process(instance=instance, run_config={"ops": {"recent_op": {"config": {"dry_run": False}}}}),
        "recent_op",
    )
    assert counts["deleted"] == 0 and counts["kept"] == 1


def test_the_retention_schedule_runs_for_real_and_starts_stopped():
    retention = build_retention_job("retention", bucket="my-bucket", older_than_days=7)
    schedule = build_retention_schedule(retention, "0 4 * * *")
    assert schedule.name == "retention_schedule" and schedule.default_status.value == "STOPPED"
    request = schedule.evaluate_tick(build_schedule_context()).run_requests[0]
    assert request.run_config["ops"] == {"retention_op": {"config": {"dry_run": False}}}
