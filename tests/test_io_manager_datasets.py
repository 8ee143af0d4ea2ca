"""Dataset assets through DatafileIOManager in real Dagster runs: stored as Octue dataset folders, only changed files
uploaded, files the asset dropped removed (only the I/O manager's own), data versions from (path, crc32c) pairs, UI
metadata, lazy cloud Datasets downstream, partitions as dicts."""

from __future__ import annotations

import json
from pathlib import Path

from dagster import (
    AllPartitionMapping,
    AssetIn,
    AssetKey,
    DagsterInstance,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from dagster_gcp import GCSResource

from octue_dagster import Datafile, Dataset
from octue_dagster.dagster.io_manager import DatafileIOManager
from octue_dagster.dagster.ui_metadata import URI_KEY
from octue_dagster.exceptions import ReadOnlyDatafileError
from scratch import scratch_folder

#: What the dataset asset writes: relative path -> (content, labels, tags). Tests change it between runs.
FILES: dict[str, tuple[str, set[str], dict]] = {}
SEEN: dict[str, object] = {}
DAYS = StaticPartitionsDefinition(["2024-01-01", "2024-01-02"])


def _resources(bucket: str) -> dict:
    return {"io_manager": DatafileIOManager(bucket=bucket, prefix="dagster", gcs=GCSResource())}


def _write_folder(files: dict[str, tuple[str, set[str], dict]]) -> Path:
    folder = Path(scratch_folder()) / "farm"
    for relative, (content, labels, tags) in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        Datafile(path, labels=labels, tags=tags).update_metadata()
    return folder


@asset
def farm() -> Dataset:
    return Dataset(_write_folder(FILES), name="farm-day", labels={"wind"}, tags={"site": "north"})


@asset
def farm_report(farm: Dataset) -> Datafile:
    SEEN["dataset"] = farm
    SEEN["downloaded_before_open"] = any(file.exists_locally for file in farm.files)
    turbine = farm.files.one(tags__turbine="T2")
    with turbine.open() as file:
        SEEN["t2"] = file.read()
    report = Datafile(Path(scratch_folder()) / "report.txt")
    with report.open("w") as file:
        file.write(", ".join(sorted(f.name for f in farm.files.filter(labels__contains="raw"))))
    return report


@asset(partitions_def=DAYS)
def daily_farm(context) -> Dataset:
    day = context.partition_key
    folder = _write_folder({f"{turbine}.csv": (f"{day},{turbine}\n", {"raw"}, {"turbine": turbine}) for turbine in ("T1", "T2")})
    return Dataset(folder, name=f"farm-{day}", tags={"day": day})


@asset(ins={"daily_farm": AssetIn(partition_mapping=AllPartitionMapping())})
def all_days(daily_farm: dict[str, Dataset]) -> Datafile:
    SEEN["days"] = {day: sorted(f.name for f in dataset.files) for day, dataset in daily_farm.items()}
    SEEN["day_tags"] = {day: dataset.tags.get("day") for day, dataset in daily_farm.items()}
    out = Datafile(Path(scratch_folder()) / "all.txt")
    with out.open("w") as file:
        file.write(str(sum(len(dataset) for dataset in daily_farm.values())))
    return out


def _latest(instance: DagsterInstance, key: str):
    event = instance.get_latest_materialization_event(AssetKey(key))
    assert event is not None
    return event.asset_materialization


def _objects(client, bucket: str, prefix: str) -> dict[str, int]:
    return {blob.name[len(prefix):]: blob.generation for blob in client.list_blobs(bucket, prefix=prefix)}


def test_a_dataset_asset_is_stored_as_an_octue_dataset_and_loaded_lazily_downstream(bucket, client):
    FILES.clear()
    FILES.update(
        {
            "t1.csv": ("t,v\n0,1\n", {"raw"}, {"turbine": "T1"}),
            "t2.csv": ("t,v\n0,2\n", {"raw"}, {"turbine": "T2"}),
            "met/mast.csv": ("t,d\n0,270\n", {"met"}, {"height": 80}),
        }
    )
    instance = DagsterInstance.ephemeral()
    assert materialize([farm, farm_report], resources=_resources(bucket), instance=instance).success

    stored = _objects(client, bucket, "dagster/farm/=/")
    assert set(stored) == {"t1.csv", "t2.csv", "met/mast.csv", ".octue"}
    document = json.loads(client.bucket(bucket).blob("dagster/farm/=/.octue").download_as_bytes())
    assert document["dataset"]["name"] == "farm-day" and document["dataset"]["labels"] == ["wind"]
    # The stored folder reads back as the same dataset (as Octue's SDK reads it: see test_octue_sdk_live).
    read = Dataset(f"gs://{bucket}/dagster/farm/=", storage_client=client)
    assert read.name == "farm-day" and dict(read.tags) == {"site": "north"} and len(read) == 3

    dataset = SEEN["dataset"]
    assert isinstance(dataset, Dataset) and dataset.path == f"gs://{bucket}/dagster/farm/="
    assert SEEN["downloaded_before_open"] is False
    assert SEEN["t2"] == "t,v\n0,2\n"
    with Datafile(f"gs://{bucket}/dagster/farm_report/=/farm_report.txt", storage_client=client).open() as file:
        assert file.read() == "t1.csv, t2.csv"

    materialization = _latest(instance, "farm")
    metadata = materialization.metadata
    assert metadata[URI_KEY].value == f"gs://{bucket}/dagster/farm/="
    assert metadata["file_count"].value == 3
    assert metadata["total_size_bytes"].value == sum(len(content) for content, _, _ in FILES.values())
    assert metadata["labels"].value == ["wind"] and metadata["tags"].value == {"site": "north"}
    table = metadata["files"].value
    assert [record.data["name"] for record in table.records] == ["met/mast.csv", "t1.csv", "t2.csv"]
    assert {record.data["name"]: record.data["labels"] for record in table.records}["t1.csv"] == "raw"
    blob = client.bucket(bucket).get_blob("dagster/farm/=/t1.csv")
    assert {record.data["name"]: record.data["crc32c"] for record in table.records}["t1.csv"] == blob.crc32c
    assert materialization.tags["dagster/data_version"]


def test_rematerializing_uploads_only_changes_and_removes_only_its_own_dropped_files(
    bucket, client, request_log, monkeypatch
):
    FILES.clear()
    FILES.update({f"t{index}.csv": (f"t,v\n0,{index}\n", {"raw"}, {"turbine": f"T{index}"}) for index in range(5)})
    instance = DagsterInstance.ephemeral()
    assert materialize([farm], resources=_resources(bucket), instance=instance).success
    first = _objects(client, bucket, "dagster/farm/=/")
    first_version = _latest(instance, "farm").tags["dagster/data_version"]
    client.bucket(bucket).blob("dagster/farm/=/notes-by-a-person.txt").upload_from_string("not the asset's")

    monkeypatch.setattr(GCSResource, "get_client", lambda self: client)  # count the I/O manager's requests
    request_log.clear()
    assert materialize([farm], resources=_resources(bucket), instance=instance).success
    writes = [request for request in request_log.requests if request[0] not in ("GET", "HEAD")]
    assert writes == [], writes  # identical content and metadata: nothing at all is written
    assert {name: generation for name, generation in _objects(client, bucket, "dagster/farm/=/").items()
            if name != "notes-by-a-person.txt"} == first
    assert _latest(instance, "farm").tags["dagster/data_version"] == first_version

    FILES["t1.csv"] = ("t,v\n0,100\n", {"raw"}, {"turbine": "T1"})
    del FILES["t4.csv"]
    request_log.clear()
    assert materialize([farm], resources=_resources(bucket), instance=instance).success
    uploads = [url for method, url in request_log.requests if method == "POST" and "/upload/" in url]
    after = _objects(client, bucket, "dagster/farm/=/")
    assert "t4.csv" not in after  # written by the I/O manager, no longer returned: removed
    assert "notes-by-a-person.txt" in after  # never written by it: kept
    assert after["t1.csv"] != first["t1.csv"] and after["t2.csv"] == first["t2.csv"]
    assert len(uploads) == 2  # the changed file, and the .octue object recording the files the I/O manager wrote
    assert _latest(instance, "farm").tags["dagster/data_version"] != first_version
    assert _latest(instance, "farm").metadata["file_count"].value == 4


def test_partitioned_dataset_assets_load_as_a_dict_of_datasets(bucket, client):
    for day in DAYS.get_partition_keys():
        assert materialize([daily_farm], partition_key=day, resources=_resources(bucket)).success
    assert materialize([daily_farm.to_source_asset(), all_days], resources=_resources(bucket)).success
    assert SEEN["days"] == {day: ["T1.csv", "T2.csv"] for day in DAYS.get_partition_keys()}
    assert SEEN["day_tags"] == {day: day for day in DAYS.get_partition_keys()}


@asset
def inspects_farm(farm: Dataset) -> None:
    SEEN["inspected"] = (len(farm), farm.name, sorted(f.name for f in farm.files.filter(tags__turbine__ends_with="1")))
    try:
        farm.files.one(name="t1.csv").open("w")
    except ReadOnlyDatafileError as error:
        SEEN["write_refused"] = str(error)


def test_loading_a_dataset_input_costs_one_listing_and_one_metadata_read(bucket, client, request_log, monkeypatch):
    FILES.clear()
    FILES.update({f"t{index}.csv": ("x", {"raw"}, {"turbine": f"T{index}"}) for index in range(3)})
    assert materialize([farm], resources=_resources(bucket)).success
    monkeypatch.setattr(GCSResource, "get_client", lambda self: client)
    request_log.clear()
    assert materialize([farm.to_source_asset(), inspects_farm], resources=_resources(bucket)).success
    # The bucket check at start-up, one listing of the folder, one read of its .octue object; no file content.
    assert len(request_log.requests) == 3, request_log.requests
    assert len(request_log.downloads()) == 1 and ".octue" in request_log.downloads()[0]
    assert SEEN["inspected"] == (3, "farm-day", ["t1.csv"])
    assert "read-only" in SEEN["write_refused"]  # an input dataset's files belong to the upstream asset


def test_a_cloud_dataset_returned_by_an_asset_is_copied_server_side(bucket, client, request_log, monkeypatch):
    files = {"a.csv": ("a", {"raw"}, {"turbine": "T1"}), "d/b.csv": ("b", set(), {})}
    source = Dataset(_write_folder(files), name="source", storage_client=client)
    source.upload(f"gs://{bucket}/elsewhere/source")

    @asset
    def copied_farm() -> Dataset:
        return Dataset(f"gs://{bucket}/elsewhere/source")

    monkeypatch.setattr(GCSResource, "get_client", lambda self: client)
    request_log.clear()
    assert materialize([copied_farm], resources=_resources(bucket)).success
    rewrites = [url for method, url in request_log.requests if "rewriteTo" in url]
    uploads = [url for method, url in request_log.requests if method == "POST" and "/upload/" in url]
    assert len(rewrites) == 2 and len(uploads) == 1  # both files copied in GCS; only the .octue object is sent
    assert all(".octue" in url for url in request_log.downloads())  # no file content passes through the step
    stored = Dataset(f"gs://{bucket}/dagster/copied_farm/=", storage_client=client)
    assert sorted(str(stored.relative_path(f)) for f in stored.files) == ["a.csv", "d/b.csv"]
    assert {f.name: f.id for f in stored.files} == {f.name: f.id for f in source.files}
    assert stored.files.one(name="a.csv").tags == {"turbine": "T1"} and stored.name == "source"


def test_foreign_files_in_a_dataset_folder_are_never_loaded_as_the_assets_or_replaced(bucket, client):
    FILES.clear()
    FILES.update({f"t{index}.csv": (f"t,v\n0,{index}\n", {"raw"}, {"turbine": f"T{index}"}) for index in range(3)})
    instance = DagsterInstance.ephemeral()
    assert materialize([farm], resources=_resources(bucket), instance=instance).success
    folder = "dagster/farm/=/"
    client.bucket(bucket).blob(folder + "notes-by-a-person.txt").upload_from_string("not the asset's")
    client.bucket(bucket).blob(folder + "t3.csv").upload_from_string("a person's t3")

    # Downstream sees exactly the asset's files, not the person's two.
    SEEN.clear()
    resources = _resources(bucket)
    assert materialize([farm, farm_report], resources=resources, instance=instance, selection=[farm_report]).success
    assert sorted(file.name for file in SEEN["dataset"].files) == ["t0.csv", "t1.csv", "t2.csv"]

    # Returning a file where the person's object is would replace it: refused, and the object is as it was.
    FILES["t3.csv"] = ("t,v\n0,3\n", {"raw"}, {"turbine": "T3"})
    result = materialize([farm], resources=_resources(bucket), instance=instance, raise_on_error=False)
    assert not result.success
    errors = [event.event_specific_data.error for event in result.get_step_failure_events()]
    chain = []
    for error in errors:
        while error is not None:
            chain.append(error.cls_name)
            error = error.cause or error.context
    assert "ForeignObjectError" in chain, chain
    assert client.bucket(bucket).blob(folder + "t3.csv").download_as_bytes() == b"a person's t3"
