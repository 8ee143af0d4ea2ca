"""Asset storage you can trust, in real Dagster runs on the emulator: stable URIs whatever the local file is called,
chosen object names, ownership marks (foreign objects are never loaded, replaced or deleted), the issue's address
collision, a crash between storing and cleaning up, and the three-way metadata merge on re-materialization."""

import os
import uuid

import pytest
from dagster import AssetKey, AssetOut, DagsterInstance, StaticPartitionsDefinition, asset, materialize, multi_asset
from dagster_gcp import GCSResource

from octue_dagster import Datafile, OctueDagsterError, ReadOnlyDatafileError
from octue_dagster.core.metadata import values as md
from octue_dagster.core.listing.selection import RetagSpec, retag_objects
from octue_dagster.core.storage.store import Store
from octue_dagster.dagster.io_manager import DatafileIOManager
from octue_dagster.dagster.owned_objects import OWNER_KEY, WRITTEN_KEY
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.dagster.ui_metadata import URI_KEY
from scratch import scratch_folder

#: What the assets below return in the current run.
PLAN: dict = {}
SEEN: dict = {}


def _resources(bucket: str, **settings) -> dict:
    gcs = GCSResource()
    return {"io_manager": DatafileIOManager(bucket=bucket, gcs=gcs, **settings), "datafiles": DatafileResource(gcs=gcs)}


def _local(name: str, content: bytes, **metadata) -> Datafile:
    """A local datafile in a folder of its own, as a temporary or timestamped file would be."""
    datafile = Datafile(os.path.join(scratch_folder(), name), **metadata)
    with datafile.open("wb") as file:
        file.write(content)
    return datafile


def _latest(instance, key: str):
    return instance.get_latest_materialization_event(AssetKey(key)).asset_materialization


@asset
def report() -> Datafile:
    return _local(PLAN["name"], PLAN.get("content", b"same"), labels=PLAN.get("labels"), tags=PLAN.get("tags"))


@asset
def reads_report(report: Datafile) -> None:
    with report.open("rb") as file:
        SEEN["report"] = (report.cloud_path, file.read())


def _writes(request_log) -> list:
    return [request for request in request_log.requests if request[0] not in ("GET", "HEAD")]


# --- stable URIs ------------------------------------------------------------------------------------------------------


def test_identical_content_under_any_local_name_keeps_uri_generation_and_id_and_uploads_nothing(
    bucket, client, request_log, monkeypatch
):
    instance = DagsterInstance.ephemeral()
    PLAN.clear()
    PLAN.update(name="tmp-3f9a.csv", content=b"t,v\n0,1\n", labels={"raw"})
    assert materialize([report], resources=_resources(bucket), instance=instance).success
    first = _latest(instance, "report").metadata
    assert first[URI_KEY].value == f"gs://{bucket}/dagster/report/=/report.csv"

    monkeypatch.setattr(GCSResource, "get_client", lambda self: client)  # count the I/O manager's requests
    for name in ["report-2024-01-02T03-04-05.csv", f"{uuid.uuid4().hex}.csv"]:
        PLAN["name"] = name
        request_log.clear()
        assert materialize([report], resources=_resources(bucket), instance=instance).success
        assert _writes(request_log) == []
        again = _latest(instance, "report").metadata
        for key in (URI_KEY, "generation", "datafile_id", "crc32c"):
            assert again[key].value == first[key].value, key
    assert [blob.name for blob in client.list_blobs(bucket)] == ["dagster/report/=/report.csv"]


def test_a_deliberately_chosen_name_by_asset_metadata_or_setting(bucket, client):
    @asset(metadata={"octue_dagster/object_name": "north-sea.parquet"})
    def chosen() -> Datafile:
        return _local("tmp123.bin", b"chosen")

    @asset
    def kept() -> Datafile:
        return _local("kept-name.txt", b"kept")

    assert materialize([chosen], resources=_resources(bucket)).success
    assert materialize([kept], resources=_resources(bucket, object_names="datafile")).success
    names = sorted(blob.name for blob in client.list_blobs(bucket))
    assert names == ["dagster/chosen/=/north-sea.parquet", "dagster/kept/=/kept-name.txt"]


def test_an_unknown_object_names_setting_fails_at_start_up(bucket):
    with pytest.raises(Exception) as caught:
        materialize([report], resources=_resources(bucket, object_names="random"))
    assert "object_names must be 'asset'" in str(caught.value) or "object_names" in repr(caught.value.__cause__)


# --- ownership ----------------------------------------------------------------------------------------------------------


def _put(client, bucket: str, name: str, content: bytes, metadata: dict | None = None) -> int:
    blob = client.bucket(bucket).blob(name)
    blob.metadata = metadata
    blob.upload_from_string(content)
    return blob.generation


def test_foreign_objects_beside_an_asset_are_never_loaded_replaced_or_deleted(bucket, client):
    instance = DagsterInstance.ephemeral()
    folder = "dagster/report/=/"
    foreign = {
        folder + ".octue": b'{"dataset": {"id": "x"}}',  # what Octue's Dataset.update_cloud_metadata writes
        folder + ".signed_metadata_files/abc": b"signed",
        folder + "notes.txt": b"a person's notes",
        folder + "report.txt": b"another tool's file, named like an old output",
    }
    generations = {name: _put(client, bucket, name, content) for name, content in foreign.items()}
    PLAN.clear()
    PLAN.update(name="r.csv", content=b"v1")
    assert materialize([report, reads_report], resources=_resources(bucket), instance=instance).success
    assert SEEN["report"] == (f"gs://{bucket}/{folder}report.csv", b"v1")
    PLAN.update(name="r.json", content=b"v2")  # a new extension: the old owned object goes, foreign ones stay
    assert materialize([report, reads_report], resources=_resources(bucket), instance=instance).success
    assert SEEN["report"] == (f"gs://{bucket}/{folder}report.json", b"v2")
    remaining = {blob.name: blob.generation for blob in client.list_blobs(bucket, prefix=folder)}
    assert remaining == {**generations, folder + "report.json": remaining[folder + "report.json"]}


def test_a_foreign_object_where_the_output_would_go_is_left_and_named_in_the_error(bucket, client):
    generation = _put(client, bucket, "dagster/report/=/report.csv", b"not ours", {"team": "ops"})
    PLAN.clear()
    PLAN.update(name="r.csv", content=b"ours")
    result = materialize([report], resources=_resources(bucket), raise_on_error=False)
    assert not result.success
    text = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "ForeignObjectError" in text and "was not written by the I/O manager" in text and "object_name" in text
    blob = client.bucket(bucket).get_blob("dagster/report/=/report.csv")
    assert (blob.generation, blob.download_as_bytes()) == (generation, b"not ours")


def test_an_input_with_only_foreign_objects_is_missing_not_loaded(bucket, client):
    _put(client, bucket, "dagster/report/=/.octue", b"{}")
    _put(client, bucket, "dagster/report/=/report.csv", b"someone else's")
    result = materialize([report.to_source_asset(), reads_report], resources=_resources(bucket), raise_on_error=False)
    assert not result.success
    text = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "holds only objects the I/O manager did not write" in text


SITES = StaticPartitionsDefinition(["north", "south"])


@asset(key=AssetKey(["sites", "north"]))
def sites_north() -> Datafile:
    return _local("n.csv", b"the asset sites/north")


@asset(key=AssetKey(["sites"]), partitions_def=SITES)
def sites(context) -> Datafile:
    return _local("s.csv", f"partition {context.partition_key} of sites".encode())




def test_an_asset_named_like_a_partition_of_another_never_meets_it(bucket, client):
    instance = DagsterInstance.ephemeral()
    resources = _resources(bucket)
    assert materialize([sites], partition_key="north", resources=resources, instance=instance).success
    assert materialize([sites_north], resources=resources, instance=instance).success
    assert materialize([sites], partition_key="north", resources=resources, instance=instance).success
    stored = {blob.name: blob.download_as_bytes() for blob in client.list_blobs(bucket)}
    assert stored == {
        "dagster/sites/partition=north/sites.csv": b"partition north of sites",
        "dagster/sites/north/=/north.csv": b"the asset sites/north",
    }
    owners = {blob.name: blob.metadata[OWNER_KEY] for blob in client.list_blobs(bucket)}
    assert owners["dagster/sites/north/=/north.csv"] == '{"asset_key":["sites","north"],"partition":null}'


@multi_asset(outs={"a": AssetOut(key=AssetKey(["odd=key", ".."])), "b": AssetOut(key=AssetKey(["odd=key", "x/y"]))})
def odd_keys():
    return _local("a.txt", b"first"), _local("b.txt", b"second")


def test_asset_keys_with_separators_dots_and_equals_signs_get_their_own_addresses(bucket, client):
    assert materialize([odd_keys], resources=_resources(bucket)).success
    names = sorted(blob.name for blob in client.list_blobs(bucket))
    assert names == ["dagster/odd%3Dkey/%2E%2E/=/%2E%2E.txt", "dagster/odd%3Dkey/x%2Fy/=/x%2Fy.txt"]


def test_a_crash_between_storing_and_cleaning_up_resolves_without_loss(bucket, client):
    instance = DagsterInstance.ephemeral()
    PLAN.clear()
    PLAN.update(name="r.csv", content=b"old")
    assert materialize([report], resources=_resources(bucket), instance=instance).success
    old = client.bucket(bucket).get_blob("dagster/report/=/report.csv")
    # As if a run stored report.json and stopped before removing report.csv (and before Dagster recorded it).
    orphan = client.bucket(bucket).blob("dagster/report/=/report.json")
    orphan.metadata = dict(old.metadata)
    orphan.upload_from_string(b"new, unrecorded")
    # Loading follows Dagster's record, so downstream assets see what the last materialization says.
    assert materialize([report.to_source_asset(), reads_report], resources=_resources(bucket), instance=instance).success
    assert SEEN["report"] == (f"gs://{bucket}/dagster/report/=/report.csv", b"old")
    # The next materialization stores its output and removes the leftover.
    PLAN.update(name="r.json", content=b"newest")
    assert materialize([report], resources=_resources(bucket), instance=instance).success
    assert [blob.name for blob in client.list_blobs(bucket)] == ["dagster/report/=/report.json"]
    assert client.bucket(bucket).get_blob("dagster/report/=/report.json").download_as_bytes() == b"newest"


# --- metadata you don't own survives ----------------------------------------------------------------------------------


def _stored(client, bucket: str, name: str = "dagster/report/=/report.csv"):
    blob = client.bucket(bucket).get_blob(name)
    return md.from_cloud_metadata(blob.metadata, name), blob


def test_labels_and_tags_others_added_survive_and_what_the_asset_dropped_goes(bucket, client):
    resources, store = _resources(bucket), Store(client)
    PLAN.clear()
    PLAN.update(name="r.csv", content=b"v1", labels={"raw", "wind"}, tags={"site": "a", "stage": "1"})
    assert materialize([report], resources=resources).success
    # Others change the object: the re-tag job, and a person's own custom metadata key.
    spec = RetagSpec(add_labels=["reviewed"], set_tags={"qc": "passed"})
    assert retag_objects(store, f"gs://{bucket}/dagster/", spec).changed == 1
    blob = client.bucket(bucket).get_blob("dagster/report/=/report.csv")
    blob.metadata = {"team": "ops"}
    blob.patch()
    generation = blob.generation

    # Identical content; the asset stopped returning "wind" and "stage" and changed "site".
    PLAN.update(labels={"raw"}, tags={"site": "b"})
    assert materialize([report], resources=resources).success
    stored, blob = _stored(client, bucket)
    assert stored.labels == {"raw", "reviewed"} and stored.tags == {"site": "b", "qc": "passed"}
    assert blob.generation == generation and blob.metadata["team"] == "ops"

    # New content: a new generation, still with others' additions and keys.
    PLAN.update(content=b"v2")
    assert materialize([report], resources=resources).success
    stored, blob = _stored(client, bucket)
    assert blob.generation != generation and blob.download_as_bytes() == b"v2"
    assert stored.labels == {"raw", "reviewed"} and stored.tags == {"site": "b", "qc": "passed"}
    assert blob.metadata["team"] == "ops"
    assert md.decode_json(blob.metadata[WRITTEN_KEY])["labels"] == {"raw"}


# --- inputs are read-only -----------------------------------------------------------------------------------------------


@asset
def tries_to_write(report: Datafile) -> None:
    outcomes = {}
    for name, attempt in [
        ("append", lambda: report.open("a")),
        ("write", lambda: report.open("wb")),
        ("update", lambda: report.open("r+")),
        ("create", lambda: report.open("x")),
        ("metadata", report.update_metadata),
        ("upload", report.upload),
    ]:
        try:
            attempt()
            outcomes[name] = None
        except ReadOnlyDatafileError as error:
            outcomes[name] = (isinstance(error, PermissionError), isinstance(error, OctueDagsterError), str(error))
    report.labels.add("changed-in-memory")
    with report.open() as file:  # reading still works, and does not write the in-memory change back
        outcomes["read"] = file.read()
    SEEN["outcomes"] = outcomes


def test_inputs_are_read_only_and_say_how_to_write_a_new_file(bucket, client):
    instance = DagsterInstance.ephemeral()
    PLAN.clear()
    PLAN.update(name="r.csv", content=b"upstream", labels={"raw"})
    assert materialize([report], resources=_resources(bucket), instance=instance).success
    before = client.bucket(bucket).get_blob("dagster/report/=/report.csv")
    assert materialize([report.to_source_asset(), tries_to_write], resources=_resources(bucket), instance=instance).success
    outcomes = SEEN["outcomes"]
    assert outcomes.pop("read") == "upstream"
    for name, outcome in outcomes.items():
        assert outcome is not None, name
        is_permission_error, is_library_error, message = outcome
        assert is_permission_error and is_library_error
        assert "read-only" in message and "datafiles.new(" in message, message
    after = client.bucket(bucket).get_blob("dagster/report/=/report.csv")
    assert (after.generation, after.metageneration, after.metadata) == (
        before.generation,
        before.metageneration,
        before.metadata,
    )
