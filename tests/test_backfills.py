"""Single-run backfills (`BackfillPolicy.single_run()`): one materialization per partition, each with its own URI,
crc32c, size, labels and tags, and a data version that stays the same for identical content, so staleness works."""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    DagsterEventType,
    DagsterInstance,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime
from dagster_gcp import GCSResource

from octue_dagster import Datafile
from octue_dagster.core.local.hashing import crc32c_base64
from octue_dagster.dagster.io_manager import DatafileIOManager
from octue_dagster.dagster.recording import batch_data_version
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.dagster.type_routers import StoredOutput
from octue_dagster.dagster.ui_metadata import URI_KEY

DAYS = StaticPartitionsDefinition(["d1", "d2", "d3"])
CONTENT: dict[str, bytes] = {}


@asset(partitions_def=DAYS, backfill_policy=BackfillPolicy.single_run())
def daily(context: AssetExecutionContext, datafiles: DatafileResource) -> dict[str, Datafile]:
    result = {}
    for key in context.partition_keys:
        datafile = datafiles.new(f"{key}.csv", labels={"daily", key}, tags={"day": key})
        with datafile.open("wb") as file:
            file.write(CONTENT.get(key, f"day {key}".encode()))
        result[key] = datafile
    return result


@asset(partitions_def=DAYS)
def summary(context: AssetExecutionContext, daily: Datafile) -> None:
    pass


def _resources(bucket: str) -> dict:
    gcs = GCSResource()
    return {"io_manager": DatafileIOManager(bucket=bucket, gcs=gcs), "datafiles": DatafileResource(gcs=gcs)}


def _backfill(bucket, instance):
    tags = {"dagster/asset_partition_range_start": "d1", "dagster/asset_partition_range_end": "d3"}
    result = materialize([daily], tags=tags, resources=_resources(bucket), instance=instance)
    assert result.success
    return result


def _materializations(instance, run_id: str) -> dict:
    records = instance.get_records_for_run(run_id, of_type={DagsterEventType.ASSET_MATERIALIZATION}).records
    return {
        record.event_log_entry.dagster_event.partition: record.event_log_entry.asset_materialization
        for record in records
    }


def _stale(instance, partition: str) -> StaleStatus:
    graph = AssetGraph.from_assets([daily, summary])
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    return resolver.get_status(AssetKey("summary"), partition)


def test_each_partition_records_its_own_file_and_identical_content_keeps_downstream_fresh(bucket, client):
    instance = DagsterInstance.ephemeral()
    CONTENT.clear()
    first = _materializations(instance, _backfill(bucket, instance).run_id)
    assert sorted(first) == ["d1", "d2", "d3"]
    versions = set()
    for day, materialization in first.items():
        metadata = materialization.metadata
        name = f"dagster/daily/partition={day}/daily.csv"
        blob = client.bucket(bucket).get_blob(name)
        assert metadata[URI_KEY].value == f"gs://{bucket}/{name}"
        assert metadata["crc32c"].value == blob.crc32c == crc32c_base64(f"day {day}".encode())
        assert metadata["size_bytes"].value == len(f"day {day}")
        assert metadata["labels"].value == sorted({"daily", day})
        assert metadata["tags"].value == {"day": day}
        assert metadata["generation"].value == str(blob.generation)
        versions.add(materialization.tags["dagster/data_version"])
    # One data version for the run's partitions (Dagster 1.13 records one per asset key and step; see README).
    assert len(versions) == 1

    for day in DAYS.get_partition_keys():
        assert materialize([daily.to_source_asset(), summary], partition_key=day, resources=_resources(bucket), instance=instance).success
    assert {_stale(instance, day) for day in DAYS.get_partition_keys()} == {StaleStatus.FRESH}

    # Identical content again: nothing is uploaded, every partition keeps its data version, downstream stays fresh.
    generations = {blob.name: blob.generation for blob in client.list_blobs(bucket)}
    again = _materializations(instance, _backfill(bucket, instance).run_id)
    assert {m.tags["dagster/data_version"] for m in again.values()} == versions
    assert {blob.name: blob.generation for blob in client.list_blobs(bucket)} == generations
    assert {_stale(instance, day) for day in DAYS.get_partition_keys()} == {StaleStatus.FRESH}

    # New content in one partition: a new data version, and downstream shows as stale.
    CONTENT["d2"] = b"day d2, corrected"
    changed = _materializations(instance, _backfill(bucket, instance).run_id)
    assert changed["d2"].metadata["crc32c"].value == crc32c_base64(CONTENT["d2"])
    assert changed["d1"].metadata["crc32c"].value == first["d1"].metadata["crc32c"].value
    assert _stale(instance, "d2") == StaleStatus.STALE


def test_the_batch_data_version_depends_on_every_partition_and_nothing_else():
    def stored(**crcs):
        from dagster import DataVersion

        return [StoredOutput(key, {}, DataVersion(crc)) for key, crc in crcs.items()]

    base = batch_data_version(stored(d1="a", d2="b"))
    assert batch_data_version(stored(d2="b", d1="a")) == base
    assert batch_data_version(stored(d1="a", d2="c")) != base
    assert batch_data_version(stored(d1="b", d2="a")) != base
