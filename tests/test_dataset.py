"""`Dataset`: local folders and gs:// prefixes of Datafiles, built from one listing, moved with minimal transfers."""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import uuid
from pathlib import Path

import pytest

from octue_dagster import Datafile
from octue_dagster.core.storage.store import Store, StoreSettings
from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.core.dataset.filters import FilterSet
from octue_dagster.exceptions import (
    InvalidInputError,
    OctueCompatibilityWarning,
    UnexpectedNumberOfResultsError,
)

FIXTURES = Path(__file__).parent / "fixtures" / "octue_sdk"
UTC = datetime.timezone.utc


def put_sdk_dataset(client, bucket: str) -> str:
    """Store the objects of the dataset Octue's SDK uploaded (fixtures/octue_sdk/cloud_dataset.json) in `bucket`."""
    fixture = json.loads((FIXTURES / "cloud_dataset.json").read_text())
    for record in fixture["objects"]:
        blob = client.bucket(bucket).blob(record["name"])
        blob.metadata = record["metadata"]
        blob.upload_from_string(base64.b64decode(record["content_b64"]), content_type=record["content_type"])
    return f"gs://{bucket}/{fixture['prefix']}"


def make_local_dataset(folder: Path, count: int = 3, **kwargs) -> Dataset:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        subfolder = folder / ("deep" if index == count - 1 else "")
        subfolder.mkdir(exist_ok=True)
        path = subfolder / f"turbine-{index}.csv"
        path.write_text(f"time,speed\n0,{index}\n")
        Datafile(path, labels={"raw"}, tags={"turbine": f"T{index}", "cluster": index % 2}).update_metadata()
    return Dataset(folder, **kwargs)


def test_reads_a_cloud_dataset_written_by_octue_sdk_from_one_listing(client, bucket, request_log):
    path = put_sdk_dataset(client, bucket)
    expected = json.loads((FIXTURES / "expected_dataset.json").read_text())
    request_log.clear()

    dataset = Dataset(path, storage_client=client)

    # One listing page plus one read of the dataset's .octue object; no request per file.
    assert request_log.count == 2, request_log.requests
    assert request_log.downloads() and len(request_log.downloads()) == 1
    assert dataset.id == expected["id"]
    assert dataset.name == expected["name"]
    assert sorted(dataset.labels) == expected["labels"]
    assert dict(dataset.tags) == expected["tags"]
    assert dataset.hash_value == expected["hash_value"]
    by_path = {str(dataset.relative_path(file)): file for file in dataset.files}
    assert set(by_path) == set(expected["files"])
    for relative, described in expected["files"].items():
        file = by_path[relative]
        assert file.id == described["id"]
        assert sorted(file.labels) == described["labels"]
        assert dict(file.tags) == described["tags"]
        assert file.hash_value == described["hash_value"]
    assert sorted(f.name for f in dataset.files.filter(labels__contains="raw", name__ends_with=".csv")) == (
        expected["raw_csv_files"]
    )
    assert request_log.count == 2  # filtering and hashing used the listing's metadata only


def test_reads_the_local_dataset_written_by_octue_sdk(tmp_path):
    expected = json.loads((FIXTURES / "expected.json").read_text())["local"]["dataset"]
    folder = tmp_path / "local"
    shutil.copytree(FIXTURES / "local", folder)
    dataset = Dataset(folder)
    assert (dataset.id, dataset.name, sorted(dataset.labels), dict(dataset.tags)) == (
        expected["id"],
        expected["name"],
        expected["labels"],
        expected["tags"],
    )
    assert sorted(file.name for file in dataset.files) == expected["files"]
    assert dataset.hash_value == expected["hash_value"]


def test_upload_then_read_back_round_trips_files_and_metadata(client, bucket, tmp_path):
    local = make_local_dataset(tmp_path / "farm", name="farm", labels={"wind"}, tags={"site": "north"})
    local.update_metadata()
    cloud_path = f"gs://{bucket}/datasets/farm"

    assert local.upload(cloud_path) == cloud_path
    assert local.exists_in_cloud and local.all_files_are_in_cloud and local.path == cloud_path

    cloud = Dataset(cloud_path, storage_client=client)
    assert (cloud.id, cloud.name, set(cloud.labels), dict(cloud.tags)) == (local.id, "farm", {"wind"}, {"site": "north"})
    assert sorted(str(cloud.relative_path(f)) for f in cloud.files) == [
        "deep/turbine-2.csv",
        "turbine-0.csv",
        "turbine-1.csv",
    ]
    assert cloud.hash_value == local.hash_value
    ids = {f.name: f.id for f in local.files}
    assert {f.name: f.id for f in cloud.files} == ids
    assert cloud.files.one(tags__turbine="T1").name == "turbine-1.csv"
    with cloud.files.one(tags__turbine="T2").open() as file:
        assert file.read() == "time,speed\n0,2\n"
    # Octue's own metadata objects are never files of the dataset.
    assert all(not f.name.endswith(".octue") for f in cloud.files)


def test_second_upload_sends_nothing_and_a_changed_file_is_the_only_upload(client, bucket, tmp_path, request_log):
    local = make_local_dataset(tmp_path / "farm", count=5)
    local.update_metadata()  # else each instantiation gets a new id, which is a metadata change
    cloud_path = f"gs://{bucket}/farm"
    first = local.upload_with_report(cloud_path)
    assert len(first.transferred) == 5 and not first.unchanged

    again = Dataset(tmp_path / "farm", storage_client=client)
    request_log.clear()
    report = again.upload_with_report(cloud_path)
    assert len(report.unchanged) == 5 and not report.transferred and not report.patched
    uploads = [url for method, url in request_log.requests if method == "POST" and "upload" in url]
    assert uploads == []

    (tmp_path / "farm" / "turbine-1.csv").write_text("time,speed\n0,99\n")
    changed = Dataset(tmp_path / "farm", storage_client=client)
    changed.files.one(name="turbine-0.csv").labels.add("checked")
    request_log.clear()
    report = changed.upload_with_report(cloud_path)
    assert [t.rsplit("/", 1)[-1] for t in report.transferred] == ["turbine-1.csv"]
    assert [t.rsplit("/", 1)[-1] for t in report.patched] == ["turbine-0.csv"]
    assert len(report.unchanged) == 3
    uploads = [url for method, url in request_log.requests if method == "POST" and "upload" in url]
    assert len(uploads) == 1, request_log.requests
    cloud = Dataset(cloud_path, storage_client=client)
    assert "checked" in cloud.files.one(name="turbine-0.csv").labels
    with cloud.files.one(name="turbine-1.csv").open() as file:
        assert file.read() == "time,speed\n0,99\n"


def test_copying_a_cloud_dataset_is_server_side(client, bucket, request_log):
    source = Dataset(put_sdk_dataset(client, bucket), storage_client=client)
    request_log.clear()
    report = source.upload_with_report(f"gs://{bucket}/copy")
    assert len(report.copied) == 3 and not report.transferred
    assert request_log.downloads() == []
    copy = Dataset(f"gs://{bucket}/copy", storage_client=client)
    assert copy.id == source.id and copy.name == "wind-farm"
    assert sorted(f.id for f in copy.files) == sorted(f.id for f in source.files)
    assert copy.hash_value == source.hash_value


def test_download_into_a_folder_and_into_the_cache(client, bucket, tmp_path):
    dataset = Dataset(put_sdk_dataset(client, bucket), storage_client=client)
    target = tmp_path / "download"
    assert dataset.download(target) == str(target)
    assert (target / "t1.csv").read_text() == "time,speed\n0,7.5\n"
    assert (target / "met" / "mast.csv").read_text() == "time,direction\n0,270\n"
    assert not (target / ".octue").exists()

    fresh = Dataset(dataset.path, storage_client=client)
    assert fresh.download() is None
    for file in fresh.files:
        assert Path(file.local_path).is_file() and file.exists_locally


def test_non_recursive_dataset_holds_only_the_top_level(client, bucket, tmp_path):
    local = make_local_dataset(tmp_path / "farm", count=3)
    assert len(Dataset(tmp_path / "farm", recursive=False)) == 2
    local.upload(f"gs://{bucket}/farm")
    assert sorted(f.name for f in Dataset(f"gs://{bucket}/farm", recursive=False, storage_client=client)) == [
        "turbine-0.csv",
        "turbine-1.csv",
    ]


def test_metadata_objects_and_signed_metadata_files_are_skipped(client, bucket):
    path = put_sdk_dataset(client, bucket)
    client.bucket(bucket).blob("datasets/wind-farm/.signed_metadata_files/x").upload_from_string("{}")
    client.bucket(bucket).blob("datasets/wind-farm/met/.octue").upload_from_string("{}")
    client.bucket(bucket).blob("datasets/wind-farm-other/t9.csv").upload_from_string("x")
    dataset = Dataset(path, storage_client=client)
    assert len(dataset) == 3
    assert len(Dataset(path, include_octue_metadata_files=True, storage_client=client)) == 5


def test_cloud_metadata_update_merges_with_another_writer(client, bucket):
    path = put_sdk_dataset(client, bucket)
    ours = Dataset(path, storage_client=client)
    theirs = Dataset(path, storage_client=client)
    theirs.labels.add("reviewed")
    theirs.tags["owner"] = "ops"
    theirs.update_metadata()
    ours.labels.add("cleaned")
    ours.labels.discard("cloud")
    with ours:
        ours.tags["day"] = "2024-05-02"
    stored = Dataset(path, storage_client=client)
    assert set(stored.labels) == {"wind", "reviewed", "cleaned"}
    assert dict(stored.tags) == {"site": "north_sea", "day": "2024-05-02", "owner": "ops"}
    assert stored.id == "d5e6f7a8-0000-4000-8000-0000000000d2"


def test_octue_format_of_the_metadata_object_keeps_unknown_keys(client, bucket):
    path = put_sdk_dataset(client, bucket)
    blob = client.bucket(bucket).blob("datasets/wind-farm/.octue")
    document = json.loads(blob.download_as_bytes())
    document["dataset"]["extra"] = 1
    document["other_tool"] = {"keep": True}
    blob.upload_from_string(json.dumps(document))
    dataset = Dataset(path, storage_client=client)
    dataset.name = "renamed"
    dataset.update_metadata()
    written = json.loads(client.bucket(bucket).blob("datasets/wind-farm/.octue").download_as_bytes())
    assert written["other_tool"] == {"keep": True}
    assert written["dataset"]["extra"] == 1
    assert written["dataset"]["name"] == "renamed"
    assert written["dataset"]["labels"] == ["cloud", "wind"]  # Octue writes labels as a sorted list
    assert written["dataset"]["path"] == path


def test_local_metadata_is_written_in_octue_format_beside_the_file_entries(tmp_path):
    local = make_local_dataset(tmp_path / "farm", count=2, name="farm", labels="a b")
    local.update_metadata()
    records = json.loads((tmp_path / "farm" / ".octue").read_text())
    assert set(records["datafiles"]) == {"turbine-0.csv"}  # turbine-1.csv is in deep/
    assert records["dataset"]["labels"] == ["a", "b"] and records["dataset"]["id"] == local.id
    assert Dataset(tmp_path / "farm").id == local.id


def test_stored_metadata_wins_over_given_as_in_octue_but_ids_cannot_change(tmp_path):
    make_local_dataset(tmp_path / "farm", count=1, name="farm", labels={"stored"}).update_metadata()
    with pytest.warns(OctueCompatibilityWarning, match="The name, labels, tags given for .* were not used"):
        reread = Dataset(tmp_path / "farm", name="other", labels={"given"}, tags={"given": 1})
    assert (reread.name, set(reread.labels), dict(reread.tags)) == ("farm", {"stored"}, {})
    assert Dataset(tmp_path / "farm", name="other", ignore_stored_metadata=True).name == "other"
    assert Dataset(tmp_path / "empty", name="given", labels={"given"}).labels == {"given"}  # nothing stored
    with pytest.raises(InvalidInputError, match="ids cannot be reassigned"):
        Dataset(tmp_path / "farm", id=str(uuid.uuid4()))
    assert Dataset(tmp_path / "farm", id=str(uuid.UUID(int=1)), ignore_stored_metadata=True).name == "farm"


def test_add_puts_files_inside_the_dataset(client, bucket, tmp_path):
    local = make_local_dataset(tmp_path / "farm", count=1)
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("x")
    added = local.add(Datafile(outside, labels={"extra"}), path_in_dataset="extra/elsewhere.csv")
    assert (tmp_path / "farm" / "extra" / "elsewhere.csv").read_text() == "x"
    assert added in local and "extra" in added.labels
    assert "extra" in Datafile(tmp_path / "farm" / "extra" / "elsewhere.csv").labels

    cloud = Dataset(f"gs://{bucket}/c", files=[], storage_client=client)
    cloud_file = cloud.add(Datafile(outside))
    assert cloud_file.cloud_path == f"gs://{bucket}/c/elsewhere.csv"
    assert len(Dataset(f"gs://{bucket}/c", storage_client=client)) == 1
    with pytest.raises(InvalidInputError, match="relative path"):
        cloud.add(Datafile(outside), path_in_dataset="../escape.csv")
    with pytest.raises(InvalidInputError, match="Datafiles"):
        cloud.add(str(outside))  # type: ignore[arg-type]


def test_get_file_by_label_container_protocol_and_errors(tmp_path):
    dataset = make_local_dataset(tmp_path / "farm", count=2)
    assert isinstance(dataset.files, FilterSet)
    first = dataset.files.one(name="turbine-0.csv")
    first.labels.add("first")
    assert dataset.get_file_by_label("first") is first
    with pytest.raises(UnexpectedNumberOfResultsError):
        dataset.get_file_by_label("raw")
    assert first in dataset and len(dataset) == 2 and set(dataset) == set(dataset.files)
    with pytest.raises(InvalidInputError, match="iterable"):
        Dataset(tmp_path, files="a.csv")
    with pytest.raises(InvalidInputError, match="local"):
        dataset.upload()
    with pytest.raises(InvalidInputError, match="cloud datasets"):
        dataset.download()


def test_object_names_cannot_escape_the_download_folder(client, bucket, tmp_path):
    client.bucket(bucket).blob("d/../../escape.csv").upload_from_string("x")
    client.bucket(bucket).blob("d/ok.csv").upload_from_string("y")
    dataset = Dataset(f"gs://{bucket}/d", storage_client=client)
    with pytest.raises(InvalidInputError, match="relative path"):
        dataset.download(tmp_path / "down")
    assert not (tmp_path / "escape.csv").exists()


def test_many_files_are_listed_in_pages_not_per_file(client, bucket, request_log):
    for index in range(25):
        client.bucket(bucket).blob(f"many/{index:03}.txt").upload_from_string(str(index))
    request_log.clear()
    store = Store(client, settings=StoreSettings(list_page_size=10))
    dataset = Dataset(f"gs://{bucket}/many", store=store)
    assert len(dataset) == 25
    assert request_log.count == 3  # three pages of ten; no .octue object, so no metadata read


def test_a_local_folder_of_many_files_decodes_its_octue_file_once(tmp_path, monkeypatch):
    from octue_dagster.core.metadata import octue_files

    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(40):
        (folder / f"{index}.csv").write_text(str(index))
        Datafile(folder / f"{index}.csv", tags={"index": index}).update_metadata()
    decoded = []
    original = octue_files.read_metadata_file
    monkeypatch.setattr(octue_files, "read_metadata_file", lambda path: decoded.append(path) or original(path))
    dataset = Dataset(folder)
    assert sorted(file.tags["index"] for file in dataset.files) == list(range(40))
    assert len(decoded) <= 2  # once for the files' entries, at most once more for the dataset's own entry
    # A changed .octue file is read again, never served stale.
    dataset.files.one(tags__index=3).tags["index"] = 300
    dataset.files.one(tags__index=300).update_metadata()
    assert Datafile(folder / "3.csv").tags["index"] == 300
