"""The re-tagging job and schedule factory, run by Dagster against the emulator."""

import os

import pytest
from dagster import DagsterInstance, Definitions, build_schedule_context
from dagster_gcp import GCSResource

from octue_dagster import Datafile, InvalidTagError
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.dagster.retag_job import build_retag_job, build_retag_schedule
from scratch import scratch_folder


def _put(client, bucket: str, name: str, content: bytes, **metadata) -> None:
    local = Datafile(os.path.join(scratch_folder(), os.path.basename(name)), storage_client=client, **metadata)
    with local.open("wb") as file:
        file.write(content)
    local.upload(f"gs://{bucket}/{name}")


def _output_metadata(result, op_name: str) -> dict:
    [event] = [e for e in result.all_events if e.is_successful_output and e.step_key == op_name]
    return {key: value.value for key, value in event.event_specific_data.metadata.items()}


def test_retag_job_changes_matching_objects_metadata_only_and_reports_counts(client, bucket):
    _put(client, bucket, "turbines/t1.csv", b"1", labels={"raw"}, tags={"site": "north"})
    _put(client, bucket, "turbines/t2.csv", b"2", labels={"raw"}, tags={"site": "south"})
    _put(client, bucket, "turbines/notes.txt", b"n", labels={"raw"}, tags={"site": "north"})
    _put(client, bucket, "other/t3.csv", b"3", labels={"raw"}, tags={"site": "north"})
    generations = {blob.name: blob.generation for blob in client.list_blobs(bucket)}

    job = build_retag_job(
        "tag_north",
        f"gs://{bucket}/turbines/",
        add_labels=["north-site"],
        remove_labels=["raw"],
        set_tags={"region": "eu"},
        tags={"site": "north"},
        name_glob="*.csv",
    )
    defs = Definitions(jobs=[job], resources={"datafiles": DatafileResource(gcs=GCSResource())})
    instance = DagsterInstance.ephemeral()

    dry = defs.resolve_job_def("tag_north").execute_in_process(
        instance=instance, run_config={"ops": {"tag_north_op": {"config": {"dry_run": True}}}}
    )
    assert _output_metadata(dry, "tag_north_op")["changed"] == 1
    assert Datafile(f"gs://{bucket}/turbines/t1.csv", storage_client=client).labels == {"raw"}

    result = defs.resolve_job_def("tag_north").execute_in_process(instance=instance)
    counts = _output_metadata(result, "tag_north_op")
    assert {k: counts[k] for k in ("scanned", "matched", "changed", "unchanged", "skipped")} == {
        "scanned": 3, "matched": 1, "changed": 1, "unchanged": 0, "skipped": 0,
    }
    tagged = Datafile(f"gs://{bucket}/turbines/t1.csv", storage_client=client)
    assert tagged.labels == {"north-site"} and tagged.tags == {"site": "north", "region": "eu"}
    for name in ("turbines/t2.csv", "turbines/notes.txt", "other/t3.csv"):
        assert Datafile(f"gs://{bucket}/{name}", storage_client=client).labels == {"raw"}
    assert {blob.name: blob.generation for blob in client.list_blobs(bucket)} == generations

    again = _output_metadata(defs.resolve_job_def("tag_north").execute_in_process(instance=instance), "tag_north_op")
    assert (again["matched"], again["changed"], again["unchanged"]) == (1, 0, 1)


def test_unreadable_metadata_is_skipped_and_reported(client, bucket):
    _put(client, bucket, "m/good.csv", b"g")
    blob = client.bucket(bucket).blob("m/bad.csv")
    blob.metadata = {"octue__labels": "{not json"}
    blob.upload_from_string(b"b")
    job = build_retag_job("tag_m", f"gs://{bucket}/m/", add_labels=["seen"])
    result = Definitions(jobs=[job], resources={"datafiles": DatafileResource(gcs=GCSResource())}).resolve_job_def(
        "tag_m"
    ).execute_in_process()
    counts = _output_metadata(result, "tag_m_op")
    assert (counts["changed"], counts["skipped"]) == (1, 1)
    assert counts["skipped_paths"] == [f"gs://{bucket}/m/bad.csv"]
    assert client.bucket(bucket).get_blob("m/bad.csv").metadata == {"octue__labels": "{not json"}


def test_bad_tags_fail_when_the_job_is_defined_and_the_schedule_targets_the_job(bucket):
    with pytest.raises(InvalidTagError):
        build_retag_job("bad", f"gs://{bucket}/x/", set_tags={"Bad Name": 1})
    job = build_retag_job("nightly", f"gs://{bucket}/x/", add_labels=["seen"])
    schedule = build_retag_schedule(job, "0 3 * * *")
    assert schedule.name == "nightly_schedule" and schedule.cron_schedule == "0 3 * * *"
    Definitions.validate_loadable(
        Definitions(jobs=[job], schedules=[schedule], resources={"datafiles": DatafileResource(gcs=GCSResource())})
    )
    [request] = schedule.evaluate_tick(build_schedule_context()).run_requests
    assert schedule.job_name == "nightly" and request.run_config == {}
