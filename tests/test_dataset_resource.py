"""DatafileResource's dataset methods (get, list and filter, re-tag a whole dataset) and the UI metadata of a dataset."""

from __future__ import annotations

from dagster import MetadataValue
from dagster_gcp import GCSResource

from octue_dagster import Datafile, Dataset
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.dagster.ui_metadata import URI_KEY, dataset_data_version, dataset_metadata


def _upload_dataset(client, bucket: str, tmp_path, folder: str, **metadata) -> Dataset:
    local = tmp_path / folder.replace("/", "_")
    (local / "deep").mkdir(parents=True)
    for relative, labels in [("a.csv", {"raw"}), ("deep/b.csv", {"raw", "deep"}), ("c.txt", {"notes"})]:
        (local / relative).write_text(f"content of {relative}\n")
        Datafile(local / relative, labels=labels, tags={"file": relative}).update_metadata()
    dataset = Dataset(local, storage_client=client, **metadata)
    dataset.upload(f"gs://{bucket}/{folder}")
    return dataset


def test_list_filter_get_and_retag_datasets(client, bucket, tmp_path):
    _upload_dataset(client, bucket, tmp_path, "farms/north", name="north", labels={"wind"}, tags={"site": "n"})
    _upload_dataset(client, bucket, tmp_path, "farms/south", name="south", labels={"wind", "tidal"}, tags={"site": "s"})
    client.bucket(bucket).blob("farms/loose.csv").upload_from_string("not in a dataset")
    resource = DatafileResource(gcs=GCSResource())

    found = resource.list_datasets(f"gs://{bucket}/farms/")
    assert [dataset.name for dataset in found] == ["north", "south"]
    assert [len(dataset) for dataset in found] == [3, 3]
    assert [d.name for d in resource.list_datasets(f"gs://{bucket}/farms/", labels=["tidal"])] == ["south"]
    assert [d.name for d in resource.list_datasets(f"gs://{bucket}/", tags={"site": "n"})] == ["north"]
    assert [d.name for d in found.filter(labels__contains="tidal")] == ["south"]
    assert found.one(tags__site="n").name == "north"

    north = resource.dataset(f"gs://{bucket}/farms/north")
    assert north.name == "north" and north.files.one(tags__file="deep/b.csv").name == "b.csv"

    counts = resource.retag_dataset(f"gs://{bucket}/farms/north", labels=["raw"], add_labels=["checked"])
    assert (counts.scanned, counts.matched, counts.changed) == (3, 2, 2)
    relabelled = Dataset(f"gs://{bucket}/farms/north", storage_client=client)
    assert {f.name: "checked" in f.labels for f in relabelled.files} == {"a.csv": True, "b.csv": True, "c.txt": False}
    # The other dataset, whose folder name shares the prefix "farms/", is untouched.
    assert not any("checked" in f.labels for f in Dataset(f"gs://{bucket}/farms/south", storage_client=client).files)
    assert relabelled.name == "north" and set(relabelled.labels) == {"wind"}


def test_dataset_ui_metadata_and_data_version(client, bucket, tmp_path):
    dataset = _upload_dataset(client, bucket, tmp_path, "d", name="d", labels={"wind"}, tags={"site": "n"})
    cloud = Dataset(f"gs://{bucket}/d", storage_client=client)
    metadata = dataset_metadata(cloud)
    assert metadata[URI_KEY] == MetadataValue.path(f"gs://{bucket}/d")
    assert metadata["file_count"].value == 3
    assert metadata["total_size_bytes"].value == sum(f.size_bytes for f in dataset.files)
    assert metadata["labels"].value == ["wind"] and metadata["tags"].value == {"site": "n"}
    rows = [record.data for record in metadata["files"].value.records]
    assert [row["name"] for row in rows] == ["a.csv", "c.txt", "deep/b.csv"]
    assert rows[2]["labels"] == "deep, raw" and rows[0]["crc32c"] == cloud.files.one(name="a.csv").hash_value

    # The data version depends on (relative path, crc32c) pairs only: the local and cloud copies agree.
    assert dataset_data_version(cloud) == dataset_data_version(Dataset(tmp_path / "d"))
    (tmp_path / "d" / "c.txt").write_text("changed\n")
    assert dataset_data_version(Dataset(tmp_path / "d")) != dataset_data_version(cloud)
    (tmp_path / "d" / "c.txt").rename(tmp_path / "d" / "renamed.txt")
    (tmp_path / "d" / "renamed.txt").write_text("content of c.txt\n")
    assert dataset_data_version(Dataset(tmp_path / "d")) != dataset_data_version(cloud)
