"""DatafileIOManager in real Dagster runs against the emulator: paths, uploads by hash, server-side copies, lazy
inputs, partitions, data versions and staleness, start-up checks, and steps in separate processes."""


import datetime
import os
import tempfile

import pytest
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
    evaluate_automation_conditions,
    execute_job,
    instance_for_test,
    job,
    op,
    materialize,
    AutomationCondition,
)
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._time import get_current_datetime
from dagster_gcp import GCSResource

from octue_dagster import Datafile
from octue_dagster.dagster.ui_metadata import URI_KEY
from octue_dagster.dagster.io_manager import (
    DatafileIOManager,
    datafile_output,
    materialize_datafile,
    on_upstream_data_version_change,
)
from octue_dagster.core.metadata.values import crc32c_base64
from octue_dagster.dagster.resources import DatafileResource

READINGS_TIME = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
#: What the assets below write; tests change it to simulate new upstream content.
CONTENT: dict[str, bytes] = {}


def _resources(bucket: str, prefix: str = "dagster") -> dict:
    gcs = GCSResource()
    return {"io_manager": DatafileIOManager(bucket=bucket, prefix=prefix, gcs=gcs), "datafiles": DatafileResource(gcs=gcs)}


def _write(datafiles: DatafileResource, name: str, content: bytes, **metadata) -> Datafile:
    datafile = datafiles.new(name, **metadata)
    with datafile.open("wb") as file:
        file.write(content)
    return datafile


@asset
def readings(datafiles: DatafileResource) -> Datafile:
    return _write(
        datafiles,
        "readings.csv",
        CONTENT.get("readings", b"t,v\n0,1\n"),
        labels={"raw", "wind"},
        tags={"site": "a"},
        timestamp=READINGS_TIME,
    )


SEEN: dict[str, object] = {}


@asset
def summary(datafiles: DatafileResource, readings: Datafile) -> Datafile:
    SEEN["downloaded_before_read"] = readings.exists_locally
    SEEN["input"] = readings
    with readings.open() as file:
        rows = file.read().splitlines()
    return _write(datafiles, "summary.txt", f"{len(rows) - 1} rows".encode())


def _latest(instance: DagsterInstance, key: str):
    event = instance.get_latest_materialization_event(AssetKey(key))
    assert event is not None
    return event.asset_materialization


def _stale_status(instance: DagsterInstance, assets: list, key: str) -> StaleStatus:
    graph = AssetGraph.from_assets(assets)
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    return CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view).get_status(
        AssetKey(key)
    )


# --- outputs and inputs ----------------------------------------------------------------------------------------------


def test_round_trip_records_metadata_and_loads_lazily(bucket, client):
    instance = DagsterInstance.ephemeral()
    CONTENT["readings"] = b"t,v\n0,1\n1,2\n"
    result = materialize([readings, summary], resources=_resources(bucket), instance=instance)
    assert result.success

    blob = client.bucket(bucket).get_blob("dagster/readings/=/readings.csv")
    assert blob.download_as_bytes() == CONTENT["readings"]
    assert client.bucket(bucket).get_blob("dagster/summary/=/summary.txt").download_as_bytes() == b"2 rows"

    # The downstream asset got a cloud datafile at the upstream path and downloaded only when it opened it.
    assert SEEN["downloaded_before_read"] is False
    assert SEEN["input"].cloud_path == f"gs://{bucket}/dagster/readings/=/readings.csv"
    assert SEEN["input"].labels == {"raw", "wind"} and SEEN["input"].tags == {"site": "a"}

    materialization = _latest(instance, "readings")
    metadata = materialization.metadata
    assert metadata[URI_KEY].value == f"gs://{bucket}/dagster/readings/=/readings.csv"
    assert metadata["console_url"].value.endswith(f"/{bucket}/dagster/readings/=/readings.csv")
    assert metadata["crc32c"].value == blob.crc32c == crc32c_base64(CONTENT["readings"])
    assert metadata["size_bytes"].value == len(CONTENT["readings"])
    assert metadata["labels"].value == ["raw", "wind"]
    assert metadata["tags"].value == {"site": "a"}
    assert metadata["generation"].value == str(blob.generation)
    assert metadata["timestamp"].value == READINGS_TIME.timestamp()
    assert metadata["datafile_id"].value == SEEN["input"].id
    # Plain `return datafile` gives the crc32c as the data version.
    assert materialization.tags["dagster/data_version"] == blob.crc32c


def test_identical_content_uploads_nothing_and_keeps_downstream_fresh(bucket, client, request_log, monkeypatch):
    instance = DagsterInstance.ephemeral()
    assets = [readings, summary]
    CONTENT["readings"] = b"t,v\n0,1\n"
    assert materialize(assets, resources=_resources(bucket), instance=instance).success
    generation = client.bucket(bucket).get_blob("dagster/readings/=/readings.csv").generation
    first_id = _latest(instance, "readings").metadata["datafile_id"].value
    assert _stale_status(instance, assets, "summary") == StaleStatus.FRESH

    monkeypatch.setattr(GCSResource, "get_client", lambda self: client)  # count the I/O manager's requests
    request_log.clear()
    assert materialize([readings], resources=_resources(bucket), instance=instance).success
    assert [r for r in request_log.requests if r[0] not in ("GET", "HEAD")] == []
    assert client.bucket(bucket).get_blob("dagster/readings/=/readings.csv").generation == generation
    assert _latest(instance, "readings").metadata["datafile_id"].value == first_id
    assert _latest(instance, "readings").tags["dagster/data_version"] == crc32c_base64(CONTENT["readings"])
    assert _stale_status(instance, assets, "summary") == StaleStatus.FRESH

    CONTENT["readings"] = b"t,v\n0,1\n1,5\n"
    assert materialize([readings], resources=_resources(bucket), instance=instance).success
    assert client.bucket(bucket).get_blob("dagster/readings/=/readings.csv").generation != generation
    assert _latest(instance, "readings").tags["dagster/data_version"] == crc32c_base64(CONTENT["readings"])
    assert _stale_status(instance, assets, "summary") == StaleStatus.STALE


@asset
def via_output(datafiles: DatafileResource):
    return datafile_output(_write(datafiles, "o.bin", b"output path"))


@asset
def via_result(datafiles: DatafileResource) -> MaterializeResult:
    return materialize_datafile(_write(datafiles, "m.bin", b"materialize result path"))


def test_explicit_data_version_helpers_store_the_file_and_set_the_crc32c(bucket, client):
    instance = DagsterInstance.ephemeral()
    assert materialize([via_output, via_result], resources=_resources(bucket), instance=instance).success
    for key, content in [("via_output", b"output path"), ("via_result", b"materialize result path")]:
        assert client.bucket(bucket).get_blob(f"dagster/{key}/=/{key}.bin").download_as_bytes() == content
        materialization = _latest(instance, key)
        assert materialization.tags["dagster/data_version"] == crc32c_base64(content)
        assert materialization.metadata["crc32c"].value == crc32c_base64(content)


def test_cloud_datafile_is_copied_server_side_and_a_new_extension_replaces_the_old_object(bucket, client, request_log, monkeypatch, tmp_path):
    source = Datafile(os.path.join(tmp_path, "src.csv"), storage_client=client)
    with source.open("wb") as file:
        file.write(b"elsewhere")
    source.upload(f"gs://{bucket}/incoming/src.csv")
    # The I/O manager's client is the spied one, so every request it sends is recorded.
    monkeypatch.setattr(GCSResource, "get_client", lambda self: client)

    @asset(name="copied")
    def copied_v1(datafiles: DatafileResource) -> Datafile:
        return datafiles.get(f"gs://{bucket}/incoming/src.csv")

    request_log.clear()
    assert materialize([copied_v1], resources=_resources(bucket)).success
    assert request_log.downloads() == []
    assert any("rewriteTo" in url for _, url in request_log.requests)
    assert client.bucket(bucket).get_blob("dagster/copied/=/copied.csv").download_as_bytes() == b"elsewhere"

    @asset(name="copied")
    def copied_v2(datafiles: DatafileResource) -> Datafile:
        return _write(datafiles, "renamed.txt", b"new name")

    assert materialize([copied_v2], resources=_resources(bucket)).success
    names = sorted(blob.name for blob in client.list_blobs(bucket, prefix="dagster/copied/"))
    assert names == ["dagster/copied/=/copied.txt"]
    assert client.bucket(bucket).get_blob("incoming/src.csv") is not None  # the source is not the I/O manager's


def test_other_return_types_fail_naming_the_asset_and_type(bucket):
    @asset
    def not_a_datafile() -> dict:
        return {"a": 1}

    result = materialize([not_a_datafile], resources=_resources(bucket), raise_on_error=False)
    assert not result.success
    text = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "TypeError" in text and "asset not_a_datafile" in text and "builtins.dict" in text, text


@asset(deps=[], ins={"readings": AssetIn()})
def inspects_input(readings: Datafile) -> None:
    SEEN["inspected"] = (readings.labels, readings.hash_value, readings.exists_locally)


def test_loading_an_input_costs_one_listing_and_no_download(bucket, client, request_log, monkeypatch):
    CONTENT["readings"] = b"t,v\n9,9\n"
    assert materialize([readings], resources=_resources(bucket)).success
    monkeypatch.setattr(GCSResource, "get_client", lambda self: client)
    request_log.clear()
    assert materialize([readings.to_source_asset(), inspects_input], resources=_resources(bucket)).success
    # One request checks the bucket at start-up, one lists the asset's folder; nothing is downloaded.
    assert len(request_log.requests) == 2 and request_log.downloads() == []
    assert SEEN["inspected"] == ({"raw", "wind"}, crc32c_base64(CONTENT["readings"]), False)


@op
def make_file() -> Datafile:
    # (This module is also loaded by path in step processes, where tests/scratch.py cannot be imported.)
    datafile = Datafile(os.path.join(tempfile.mkdtemp(dir=os.environ["OCTUE_TEST_SCRATCH"]), "op.txt"))
    with datafile.open("w") as file:
        file.write("from an op")
    return datafile


@op
def read_file(datafile: Datafile) -> None:
    with datafile.open() as file:
        SEEN["op_input"] = (datafile.cloud_path, file.read())


@job
def op_job():
    read_file(make_file())


def test_plain_op_outputs_are_stored_under_the_run_and_step(bucket):
    result = op_job.execute_in_process(resources=_resources(bucket))
    assert result.success
    uri = f"gs://{bucket}/dagster/run={result.run_id}/step=make_file/output=result/=/result.txt"
    assert SEEN["op_input"] == (uri, "from an op")


# --- partitions ------------------------------------------------------------------------------------------------------

SITES = StaticPartitionsDefinition(["north", "south", "east"])


@asset(partitions_def=SITES)
def site_readings(context: AssetExecutionContext, datafiles: DatafileResource) -> Datafile:
    return _write(datafiles, "site.csv", f"site {context.partition_key}".encode())


@asset(ins={"site_readings": AssetIn(partition_mapping=AllPartitionMapping())})
def all_sites(site_readings: dict[str, Datafile]) -> None:
    SEEN["all_sites"] = {key: datafile.cloud_path for key, datafile in site_readings.items()}


@asset(
    ins={
        "site_readings": AssetIn(
            partition_mapping=AllPartitionMapping(), metadata={"allow_missing_partitions": True}
        )
    }
)
def available_sites(site_readings: dict[str, Datafile]) -> None:
    SEEN["available_sites"] = sorted(site_readings)


def test_partitions_load_as_a_dict_and_missing_ones_fail_unless_allowed(bucket):
    instance = DagsterInstance.ephemeral()
    resources = _resources(bucket)
    for site in ["north", "south"]:
        assert materialize([site_readings], partition_key=site, resources=resources, instance=instance).success
    failed = materialize([site_readings.to_source_asset(), all_sites], resources=resources, instance=instance, raise_on_error=False)
    assert not failed.success
    assert "east" in failed.get_step_failure_events()[0].event_specific_data.error.to_string()

    assert materialize([site_readings.to_source_asset(), available_sites], resources=resources, instance=instance).success
    assert SEEN["available_sites"] == ["north", "south"]

    assert materialize([site_readings], partition_key="east", resources=resources, instance=instance).success
    assert materialize([site_readings.to_source_asset(), all_sites], resources=resources, instance=instance).success
    expected = {site: f"gs://{bucket}/dagster/site_readings/partition={site}/site_readings.csv" for site in SITES.get_partition_keys()}
    assert SEEN["all_sites"] == expected


GRID = MultiPartitionsDefinition(
    {"site": StaticPartitionsDefinition(["north"]), "date": StaticPartitionsDefinition(["2024-01-01"])}
)


@asset(partitions_def=GRID)
def grid(datafiles: DatafileResource) -> Datafile:
    return _write(datafiles, "cell.txt", b"cell")


@asset(partitions_def=GRID)
def grid_child(grid: Datafile) -> None:
    SEEN["grid_child"] = grid.cloud_path


def test_multi_partition_keys_give_one_hive_folder_per_dimension_sorted_by_name(bucket):
    key = MultiPartitionKey({"site": "north", "date": "2024-01-01"})
    assert materialize([grid, grid_child], partition_key=key, resources=_resources(bucket)).success
    assert SEEN["grid_child"] == f"gs://{bucket}/dagster/grid/date=2024-01-01/site=north/grid.txt"


# --- start-up checks -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket_name", "prefix", "message"),
    [
        ("", "dagster", "needs a bucket"),
        ("no-such-bucket-octue", "dagster", "does not exist"),
        (None, "/leading", "starts with '/'"),
        (None, "a/../b", "'..'"),
        (None, "gs://b/x", "full gs:// URI"),
    ],
)
def test_bad_configuration_fails_before_any_asset_runs(bucket, bucket_name, prefix, message):
    ran = []

    @asset
    def never() -> Datafile:
        ran.append(True)
        raise AssertionError("should not run")

    with pytest.raises(Exception) as caught:
        materialize([never], resources=_resources(bucket if bucket_name is None else bucket_name, prefix))
    chain, error = [], caught.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any(message in text for text in chain), chain
    assert ran == []


# --- automation ------------------------------------------------------------------------------------------------------


@asset(automation_condition=AutomationCondition.eager())
def eager_child(readings: Datafile) -> None:
    pass


@asset(automation_condition=on_upstream_data_version_change())
def versioned_child(readings: Datafile) -> None:
    pass


def test_automation_condition_runs_downstream_only_when_the_data_version_changes(bucket):
    instance = DagsterInstance.ephemeral()
    defs = Definitions(assets=[readings, eager_child, versioned_child], resources=_resources(bucket))
    CONTENT["readings"] = b"v1"
    assert materialize([readings, eager_child, versioned_child], resources=_resources(bucket), instance=instance).success
    baseline = evaluate_automation_conditions(defs=defs, instance=instance)
    assert baseline.total_requested == 0

    assert materialize([readings], resources=_resources(bucket), instance=instance).success  # same content
    same = evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    assert same.get_num_requested(AssetKey("eager_child")) == 1
    assert same.get_num_requested(AssetKey("versioned_child")) == 0

    CONTENT["readings"] = b"v2"
    assert materialize([readings, eager_child], resources=_resources(bucket), instance=instance).success
    changed = evaluate_automation_conditions(defs=defs, instance=instance, cursor=same.cursor)
    assert changed.get_num_requested(AssetKey("versioned_child")) == 1


# --- separate processes ----------------------------------------------------------------------------------------------


def _multiprocess_job():
    """A job whose two steps run in separate processes; only GCS carries the file between them."""
    bucket = os.environ["OCTUE_TEST_BUCKET"]
    defs = Definitions(
        assets=[readings, summary],
        jobs=[define_asset_job("both", selection=["readings", "summary"])],
        resources=_resources(bucket),
    )
    return defs.resolve_job_def("both")


def test_steps_in_separate_processes_exchange_files_through_gcs(bucket, client, monkeypatch, tmp_path):
    monkeypatch.setenv("OCTUE_TEST_BUCKET", bucket)
    CONTENT.pop("readings", None)  # subprocesses import this module afresh, so they see the default content
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        # The step processes load this file by path (tests/ is not an importable package).
        job = ReconstructableJob.for_file(os.path.abspath(__file__), "_multiprocess_job")
        with execute_job(job, instance=instance) as result:
            assert result.success
            step_pids = {event.pid for event in result.all_events if event.is_step_success}
        assert len(step_pids) == 2 and os.getpid() not in step_pids
        assert _latest(instance, "summary").tags["dagster/data_version"] == crc32c_base64(b"1 rows")
    assert client.bucket(bucket).get_blob("dagster/summary/=/summary.txt").download_as_bytes() == b"1 rows"
