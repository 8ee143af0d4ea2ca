"""Observable GCS source assets and the prefix sensor, run by Dagster against the emulator."""

import os

from dagster import (
    AssetKey,
    DagsterInstance,
    asset,
    build_sensor_context,
    define_asset_job,
    materialize,
)
from dagster_gcp import GCSResource

from octue_dagster import Datafile
from octue_dagster.core.listing.prefix_cursor import PrefixCursor, decode_cursor
from octue_dagster.dagster.observation import OBJECT_TAG, gcs_observable_source_asset, gcs_prefix_sensor, prefix_hash
from octue_dagster.core.storage.store import Store
from octue_dagster.core.storage.gcs_path import GCSPath
from scratch import scratch_folder


def _put(client, bucket: str, name: str, content: bytes, **metadata) -> int:
    local = Datafile(os.path.join(scratch_folder(), os.path.basename(name)), storage_client=client, **metadata)
    with local.open("wb") as file:
        file.write(content)
    local.upload(f"gs://{bucket}/{name}")
    return local.generation


def _observed_version(source, instance: DagsterInstance) -> str:
    """Observe the source asset in a real run and return the data version Dagster recorded."""
    result = materialize([source], resources={"gcs": GCSResource()}, instance=instance, selection=[source.key])
    assert result.success
    record = instance.get_latest_data_version_record(source.key)
    assert record is not None
    return record.asset_observation.tags["dagster/data_version"]


def test_object_source_asset_reports_the_crc32c_and_changes_only_with_content(client, bucket):
    _put(client, bucket, "in/file.csv", b"one", labels={"raw"})
    source = gcs_observable_source_asset("incoming_file", f"gs://{bucket}/in/file.csv")
    instance = DagsterInstance.ephemeral()
    first = _observed_version(source, instance)
    assert first == client.bucket(bucket).get_blob("in/file.csv").crc32c

    datafile = Datafile(f"gs://{bucket}/in/file.csv", storage_client=client)
    datafile.labels.add("checked")
    datafile.update_metadata()  # metadata only: same data version
    assert _observed_version(source, instance) == first

    _put(client, bucket, "other/file.csv", b"two")
    Datafile(f"gs://{bucket}/other/file.csv", storage_client=client).upload(f"gs://{bucket}/in/file.csv")
    assert _observed_version(source, instance) == client.bucket(bucket).get_blob("in/file.csv").crc32c != first


def test_prefix_source_asset_hashes_names_and_crc32c(client, bucket):
    _put(client, bucket, "p/a.csv", b"a")
    _put(client, bucket, "p/b.csv", b"b")
    source = gcs_observable_source_asset(AssetKey(["gcs", "p"]), f"gs://{bucket}/p/")
    instance = DagsterInstance.ephemeral()
    first = _observed_version(source, instance)
    assert first == prefix_hash(list(Store(client).list_objects(GCSPath(bucket, "p/"))))

    _put(client, bucket, "p/c.csv", b"c")
    second = _observed_version(source, instance)
    assert second != first
    client.bucket(bucket).blob("p/c.csv").delete()
    assert _observed_version(source, instance) == first


@asset
def process_file() -> None:
    pass


def _tick(sensor, cursor, instance):
    context = build_sensor_context(cursor=cursor, resources={"gcs": GCSResource()}, instance=instance)
    return sensor.evaluate_tick(context)


def test_prefix_sensor_requests_runs_for_new_and_changed_objects_only(client, bucket):
    job = define_asset_job("process", selection=[process_file])
    sensor = gcs_prefix_sensor("watch_incoming", f"gs://{bucket}/incoming/", job=job)
    instance = DagsterInstance.ephemeral()
    _put(client, bucket, "incoming/a.csv", b"a")
    _put(client, bucket, "incoming/b.csv", b"b")
    _put(client, bucket, "elsewhere/z.csv", b"z")

    first = _tick(sensor, None, instance)
    assert sorted(r.tags[OBJECT_TAG] for r in first.run_requests) == [
        f"gs://{bucket}/incoming/a.csv",
        f"gs://{bucket}/incoming/b.csv",
    ]
    assert set(decode_cursor(first.cursor).recent) <= {"incoming/a.csv", "incoming/b.csv"}

    quiet = _tick(sensor, first.cursor, instance)
    assert quiet.run_requests == [] and quiet.skip_message

    # Metadata change: no run. New content: a run. New object: a run. Deleted object: dropped from the cursor.
    datafile = Datafile(f"gs://{bucket}/incoming/a.csv", storage_client=client)
    datafile.tags["seen"] = True
    datafile.update_metadata()
    _put(client, bucket, "elsewhere/b2.csv", b"b changed")
    Datafile(f"gs://{bucket}/elsewhere/b2.csv", storage_client=client).upload(f"gs://{bucket}/incoming/b.csv")
    _put(client, bucket, "incoming/c.csv", b"c")
    client.bucket(bucket).blob("incoming/a.csv").delete()
    third = _tick(sensor, quiet.cursor, instance)
    assert sorted(r.tags[OBJECT_TAG] for r in third.run_requests) == [
        f"gs://{bucket}/incoming/b.csv",
        f"gs://{bucket}/incoming/c.csv",
    ]
    assert set(decode_cursor(third.cursor).recent) <= {"incoming/b.csv", "incoming/c.csv"}
    # Run keys name the object generation, so a lost cursor cannot start a duplicate run for the same content.
    assert len({r.run_key for r in first.run_requests + third.run_requests}) == 4

    _put(client, bucket, "elsewhere/a.csv", b"a")
    Datafile(f"gs://{bucket}/elsewhere/a.csv", storage_client=client).upload(f"gs://{bucket}/incoming/a.csv")
    back = _tick(sensor, third.cursor, instance)
    assert [r.tags[OBJECT_TAG] for r in back.run_requests] == [f"gs://{bucket}/incoming/a.csv"]


def test_prefix_sensor_options_limit_and_skip_existing(client, bucket):
    job = define_asset_job("process", selection=[process_file])
    for index in range(3):
        _put(client, bucket, f"q/{index}.bin", bytes([index]))
    instance = DagsterInstance.ephemeral()

    limited = gcs_prefix_sensor("limited", f"gs://{bucket}/q/", job=job, max_runs_per_tick=2)
    first = _tick(limited, None, instance)
    second = _tick(limited, first.cursor, instance)
    assert len(first.run_requests) == 2 and len(second.run_requests) == 1
    assert _tick(limited, second.cursor, instance).run_requests == []

    only_new = gcs_prefix_sensor(
        "only_new", f"gs://{bucket}/q/", job=job, process_existing=False,
        run_config_fn=lambda info: {"ops": {"process_file": {"config": {"path": str(info.path)}}}},
    )
    baseline = _tick(only_new, None, instance)
    assert baseline.run_requests == []
    _put(client, bucket, "q/new.bin", b"new")
    later = _tick(only_new, baseline.cursor, instance)
    assert [r.run_config["ops"]["process_file"]["config"]["path"] for r in later.run_requests] == [
        f"gs://{bucket}/q/new.bin"
    ]


def test_prefix_sensor_can_be_invoked_directly_with_its_resources(bucket, client):
    import dagster as dg
    from dagster_gcp import GCSResource

    from octue_dagster import gcs_prefix_sensor

    client.bucket(bucket).blob("incoming/a.csv").upload_from_string(b"a")

    @dg.asset
    def consumer() -> None:
        return None

    sensor = gcs_prefix_sensor("direct", f"gs://{bucket}/incoming/", asset_selection=[consumer])
    with dg.build_sensor_context(resources={"gcs": GCSResource()}) as context:
        result = sensor(context)
    assert [request.tags["octue/object"] for request in result.run_requests] == [f"gs://{bucket}/incoming/a.csv"]


def test_every_listing_skips_octue_metadata_objects_as_octue_does(client, bucket):
    """Octue's `Dataset.update_cloud_metadata` writes `<folder>/.octue`, and signed copies under
    `.signed_metadata_files/`; listing, re-tagging, the sensor and prefix sources all skip them, as Octue's SDK does."""
    from octue_dagster.core.listing.selection import RetagSpec
    from octue_dagster.dagster.resources import DatafileResource

    _put(client, bucket, "ds/a.csv", b"a")
    source = gcs_observable_source_asset(AssetKey(["gcs", "ds"]), f"gs://{bucket}/ds/")
    instance = DagsterInstance.ephemeral()
    before = _observed_version(source, instance)
    sensor = gcs_prefix_sensor("watch_ds", f"gs://{bucket}/ds/", job=define_asset_job("process", selection=[process_file]))
    first = _tick(sensor, None, instance)
    for name in ["ds/.octue", "ds/.signed_metadata_files/bright-sunny-fox"]:
        blob = client.bucket(bucket).blob(name)
        blob.upload_from_string(b'{"dataset": {"id": "0f6e2b7c-4b5c-4a8e-9d7e-3a0b1c2d3e4f"}}')
    resource = DatafileResource(gcs=GCSResource())
    assert [datafile.name for datafile in resource.list(f"gs://{bucket}/ds/")] == ["a.csv"]
    counts = resource.retag(f"gs://{bucket}/ds/", RetagSpec(add_labels=["seen"]))
    assert (counts.scanned, counts.changed) == (1, 1)
    assert client.bucket(bucket).get_blob("ds/.octue").metadata is None
    assert _tick(sensor, first.cursor, instance).run_requests == []
    assert _observed_version(source, instance) == before


def test_prefix_sensor_cursor_stays_small_and_exact_over_many_objects(client, bucket):
    job = define_asset_job("process", selection=[process_file])
    # settle_seconds=0: only the objects created at the newest instant are remembered by name.
    sensor = gcs_prefix_sensor("many", f"gs://{bucket}/many/", job=job, settle_seconds=0)
    instance = DagsterInstance.ephemeral()
    handle = client.bucket(bucket)
    for index in range(120):
        handle.blob(f"many/{index:03d}.csv").upload_from_string(f"{index}".encode())
    first = _tick(sensor, None, instance)
    assert len(first.run_requests) == 120
    cursor = decode_cursor(first.cursor)
    assert isinstance(cursor, PrefixCursor) and len(cursor.recent) <= 3 and len(first.cursor) < 300

    for index in range(0, 120, 10):  # metadata-only patches: no runs
        datafile = Datafile(f"gs://{bucket}/many/{index:03d}.csv", storage_client=client)
        datafile.labels.add("reviewed")
        datafile.update_metadata()
    handle.blob("many/007.csv").upload_from_string(b"new content")  # overwrite: a new generation
    handle.blob("many/050.csv").delete()
    handle.blob("many/050.csv").upload_from_string(b"50")  # deleted and re-created with the same bytes
    second = _tick(sensor, first.cursor, instance)
    assert sorted(r.tags[OBJECT_TAG] for r in second.run_requests) == [
        f"gs://{bucket}/many/007.csv",
        f"gs://{bucket}/many/050.csv",
    ]
    assert _tick(sensor, second.cursor, instance).run_requests == []


def test_prefix_sensor_reads_a_cursor_of_the_first_version_without_repeating_runs(client, bucket):
    job = define_asset_job("process", selection=[process_file])
    sensor = gcs_prefix_sensor("legacy", f"gs://{bucket}/old/", job=job)
    instance = DagsterInstance.ephemeral()
    for name in ("a", "b"):
        client.bucket(bucket).blob(f"old/{name}.csv").upload_from_string(name.encode())
    blobs = {blob.name: blob for blob in client.list_blobs(bucket)}
    legacy = (
        '{"version": 1, "objects": {"old/a.csv": [%d, "%s"], "old/b.csv": [1, "stale"]}}'
        % (blobs["old/a.csv"].generation, blobs["old/a.csv"].crc32c)
    )
    migrated = _tick(sensor, legacy, instance)
    assert [r.tags[OBJECT_TAG] for r in migrated.run_requests] == [f"gs://{bucket}/old/b.csv"]
    assert isinstance(decode_cursor(migrated.cursor), PrefixCursor)
    assert _tick(sensor, migrated.cursor, instance).run_requests == []
