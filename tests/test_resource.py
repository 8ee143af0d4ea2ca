"""DatafileResource on the emulator: get, new, list (from listing metadata alone) and retag (metadata patches)."""

import os
import threading

import pytest
from dagster import asset, build_init_resource_context, materialize
from dagster_gcp import GCSResource

from octue_dagster import CloudObjectNotFoundError, Datafile, InvalidLabelError
from octue_dagster.dagster.io_manager import DatafileIOManager
from octue_dagster.dagster.resources import StoreConfig, DatafileResource
from scratch import scratch_folder


def _put(client, bucket: str, name: str, content: bytes, **metadata) -> None:
    local = Datafile(os.path.join(scratch_folder(), os.path.basename(name)), storage_client=client, **metadata)
    with local.open("wb") as file:
        file.write(content)
    local.upload(f"gs://{bucket}/{name}")


@pytest.fixture
def resource(client, monkeypatch) -> DatafileResource:
    """A resource whose GCS client is the test's (spied) client, so its requests can be counted."""
    monkeypatch.setattr(GCSResource, "get_client", lambda self: client)
    return DatafileResource(gcs=GCSResource())


def test_get_reads_metadata_only_and_missing_objects_raise(resource, client, bucket, request_log):
    _put(client, bucket, "a/one.csv", b"1", labels={"raw"})
    request_log.clear()
    datafile = resource.get(f"gs://{bucket}/a/one.csv")
    assert request_log.count == 1 and request_log.downloads() == []
    assert datafile.labels == {"raw"} and not datafile.exists_locally
    with pytest.raises(FileNotFoundError):
        resource.get(f"gs://{bucket}/a/missing.csv")


def test_list_builds_datafiles_from_paged_listings_without_a_request_per_object(resource, client, bucket, request_log):
    for index in range(7):
        _put(client, bucket, f"wind/{index}.csv", str(index).encode(), labels={"raw"} | ({"qc"} if index % 2 else set()),
             tags={"turbine": f"t{index % 3}"})
    _put(client, bucket, "solar/x.csv", b"x", labels={"raw"})
    request_log.clear()
    # Three objects a page: 7 objects need 3 pages, so a request per object would show up as more requests.
    paged = DatafileResource(gcs=GCSResource(), store_settings=StoreConfig(list_page_size=3))
    everything = paged.list(f"gs://{bucket}/wind/")
    assert request_log.count == 3 and request_log.downloads() == []
    assert sorted(d.name for d in everything) == [f"{i}.csv" for i in range(7)]
    assert all(d.cloud_path.startswith(f"gs://{bucket}/wind/") and not d.exists_locally for d in everything)

    qc = resource.list(f"gs://{bucket}/wind/", labels=["qc"])
    assert sorted(d.name for d in qc) == ["1.csv", "3.csv", "5.csv"]
    t0_qc = resource.list(f"gs://{bucket}/wind/", labels=["qc"], tags={"turbine": "t0"})
    assert [d.name for d in t0_qc] == ["3.csv"]
    assert [d.name for d in resource.list(f"gs://{bucket}/solar/")] == ["x.csv"]


def test_retag_patches_metadata_keeps_content_and_counts(resource, client, bucket, request_log):
    for index in range(4):
        _put(client, bucket, f"d/{index}.txt", b"same", labels={"raw"}, tags={"n": index})
    _put(client, bucket, "d/other.bin", b"z", labels={"raw"})
    generations = {blob.name: blob.generation for blob in client.list_blobs(bucket)}
    request_log.clear()
    counts = resource.retag(
        f"gs://{bucket}/d/", add_labels=["reviewed"], remove_labels=["raw"], set_tags={"batch": 7}, name_glob="*.txt"
    )
    assert (counts.scanned, counts.matched, counts.changed, counts.unchanged) == (5, 4, 4, 0)
    # One listing, then one patch per changed object, built from the listing's metadata (no read before each).
    assert sorted(method for method, _ in request_log.requests) == ["GET", "PATCH", "PATCH", "PATCH", "PATCH"]
    assert request_log.downloads() == []
    assert not any(method == "POST" and "upload" in url for method, url in request_log.requests)
    for blob in client.list_blobs(bucket):
        assert blob.generation == generations[blob.name]
        datafile = Datafile(f"gs://{bucket}/{blob.name}", storage_client=client)
        if blob.name.endswith(".txt"):
            assert datafile.labels == {"reviewed"} and datafile.tags["batch"] == 7 and "n" in datafile.tags
        else:
            assert datafile.labels == {"raw"} and "batch" not in datafile.tags

    again = resource.retag(f"gs://{bucket}/d/", add_labels=["reviewed"], name_glob="*.txt")
    assert (again.matched, again.changed, again.unchanged) == (4, 0, 4)
    with pytest.raises(InvalidLabelError):
        resource.retag(f"gs://{bucket}/d/", add_labels=["Not Valid"])


def test_concurrent_retaggers_both_take_effect(enforcing_proxy, client, bucket):
    # Re-tagging patches what the listing returned, conditional on its metageneration; GCS refuses a patch whose
    # object another writer changed since, and the re-tagger re-reads and merges. fake-gcs-server ignores that
    # condition, so both re-taggers go through a proxy that enforces it as GCS does.
    for index in range(5):
        _put(client, bucket, f"c/{index}.txt", b"c", labels={"raw"})
    errors: list[BaseException] = []

    def run(label: str) -> None:
        try:
            DatafileResource(gcs=GCSResource()).retag(f"gs://{bucket}/c/", add_labels=[label])
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(label,)) for label in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for datafile in DatafileResource(gcs=GCSResource()).list(f"gs://{bucket}/c/"):
        assert datafile.labels == {"raw", "first", "second"}


def test_new_files_live_in_a_step_folder_removed_after_the_io_manager_stored_them(client, bucket, tmp_path):
    seen = {}

    @asset
    def made(datafiles: DatafileResource) -> Datafile:
        datafile = datafiles.new("made.txt", labels={"fresh"})
        with datafile.open("w") as file:
            file.write("hello")
        seen["local"] = datafile.local_path
        return datafile

    gcs = GCSResource()
    result = materialize(
        [made],
        resources={
            "datafiles": DatafileResource(gcs=gcs, working_dir=str(tmp_path)),
            "io_manager": DatafileIOManager(bucket=bucket, gcs=gcs),
        },
    )
    assert result.success
    assert seen["local"] == str(tmp_path / result.run_id / "made" / "attempt-0" / "made.txt")
    assert list(tmp_path.iterdir()) == []
    stored = Datafile(f"gs://{bucket}/dagster/made/=/made.txt", storage_client=client)
    assert stored.labels == {"fresh"}
    with stored.open() as file:
        assert file.read() == "hello"


def test_new_rejects_paths_and_duplicates(tmp_path):
    resource = DatafileResource(gcs=GCSResource(), working_dir=str(tmp_path))
    with build_init_resource_context() as context:
        resource.setup_for_execution(context)
    with pytest.raises(ValueError):
        resource.new("../escape.txt")
    first = resource.new("x.txt")
    with first.open("w") as file:
        file.write("x")
    with pytest.raises(FileExistsError):
        resource.new("x.txt")


def test_missing_object_error_is_a_library_error(resource, bucket):
    with pytest.raises(CloudObjectNotFoundError):
        resource.get(f"gs://{bucket}/nothing-here")
