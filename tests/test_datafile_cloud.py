"""Cloud datafiles on the emulator: localities, lazy download, open modes, preconditions, uploads and copies."""

from __future__ import annotations

import os

import pytest

from octue_dagster import ConflictError, Datafile
from octue_dagster.exceptions import OctueCompatibilityWarning
from octue_dagster.core.cache import copies as cache
from octue_dagster.core.metadata.values import crc32c_base64
from scratch import scratch_folder


def _make(client, bucket, name="data/readings.csv", content=b"a,b\n1,2\n", **kwargs) -> Datafile:
    """Put an object in the bucket by uploading a local file, so that no cached copy exists afterwards."""
    folder = scratch_folder()
    local = Datafile(os.path.join(folder, os.path.basename(name)), storage_client=client, **kwargs)
    with local.open("wb") as file:
        file.write(content)
    local.upload(f"gs://{bucket}/{name}")
    return Datafile(f"gs://{bucket}/{name}", storage_client=client)


def test_localities(client, bucket, tmp_path):
    local = tmp_path / "local.txt"
    local.write_text("local only")
    local_only = Datafile(local)
    assert local_only.exists_locally and not local_only.exists_in_cloud and local_only.cloud_path is None

    _make(client, bucket)
    cloud_only = Datafile(f"gs://{bucket}/data/readings.csv", storage_client=client)
    assert cloud_only.exists_in_cloud and not cloud_only.exists_locally

    cloud_only.download()
    assert cloud_only.exists_locally and cloud_only.exists_in_cloud


def test_instantiation_costs_one_request_and_no_content(client, bucket, request_log):
    _make(client, bucket, labels={"raw"}, tags={"turbine": "t1"})
    request_log.clear()
    datafile = Datafile(f"gs://{bucket}/data/readings.csv", storage_client=client)
    assert request_log.count == 1
    assert datafile.labels == {"raw"} and datafile.tags == {"turbine": "t1"}
    assert datafile.hash_value == crc32c_base64(b"a,b\n1,2\n")
    assert datafile.size_bytes == 8
    assert datafile.metadata_hash_value
    datafile.labels.add("reviewed")
    datafile.update_metadata()
    assert request_log.downloads() == []
    assert not datafile.exists_locally


def test_hash_value_is_the_gcs_crc32c(client, bucket):
    datafile = _make(client, bucket, content=b"This is some cleaned data.")
    blob = client.bucket(bucket).get_blob("data/readings.csv")
    assert datafile.hash_value == blob.crc32c == "BE0c5A=="


def test_content_is_downloaded_only_when_read_and_reused_while_generation_unchanged(client, bucket, request_log):
    _make(client, bucket)
    request_log.clear()
    datafile = Datafile(f"gs://{bucket}/data/readings.csv", storage_client=client)
    with datafile.open() as file:
        assert file.read() == "a,b\n1,2\n"
    assert len(request_log.downloads()) == 1
    again = Datafile(f"gs://{bucket}/data/readings.csv", storage_client=client)
    with again.open("rb") as file:
        assert file.read() == b"a,b\n1,2\n"
    assert len(request_log.downloads()) == 1, "an unchanged generation must reuse the cached copy"
    assert again.local_path.endswith(".csv")


def test_writing_does_not_download_what_it_overwrites(client, bucket, request_log):
    _make(client, bucket)
    request_log.clear()
    datafile = Datafile(f"gs://{bucket}/data/readings.csv", storage_client=client)
    with datafile.open("w") as file:
        file.write("new")
    assert request_log.downloads() == []
    assert client.bucket(bucket).blob("data/readings.csv").download_as_bytes() == b"new"


def test_append_and_read_write_modes(client, bucket):
    datafile = _make(client, bucket, content=b"one\n")
    with datafile.open("a") as file:
        file.write("two\n")
    with datafile.open("r+") as file:
        assert file.read() == "one\ntwo\n"
        file.write("three\n")
    with datafile.open("ab") as file:
        file.write(b"four\n")
    fresh = Datafile(datafile.cloud_path, storage_client=client)
    with fresh.open() as file:
        assert file.read() == "one\ntwo\nthree\nfour\n"
    assert fresh.hash_value == datafile.hash_value


def test_exclusive_mode_refuses_existing_object(client, bucket):
    _make(client, bucket)
    with pytest.raises(FileExistsError):
        with Datafile(f"gs://{bucket}/data/readings.csv", storage_client=client).open("x"):
            pass
    new = Datafile(f"gs://{bucket}/data/new.csv", storage_client=client)
    with new.open("x") as file:
        file.write("fresh")
    assert new.exists_in_cloud


def test_content_and_metadata_go_in_one_upload(client, bucket, request_log):
    datafile = Datafile(f"gs://{bucket}/one.txt", storage_client=client, labels={"a"})
    request_log.clear()
    with datafile.open("w") as file:
        file.write("x")
    uploads = [url for method, url in request_log.requests if method == "POST" and "/upload/" in url]
    patches = [url for method, url in request_log.requests if method == "PATCH"]
    assert len(uploads) == 1 and patches == []
    assert client.bucket(bucket).get_blob("one.txt").metadata["octue__labels"] == '{"_type": "set", "items": ["a"]}'


def test_metadata_change_after_a_read_block_is_a_patch_keeping_generation(client, bucket, request_log):
    datafile = _make(client, bucket)
    generation = datafile.generation
    request_log.clear()
    with pytest.warns(OctueCompatibilityWarning, match="not saved"):
        with datafile.open() as file:
            file.read()
            datafile.tags["checked"] = True
    assert Datafile(datafile.cloud_path, storage_client=client).tags == {}  # Octue's rule: reading saves nothing
    datafile.update_metadata()
    assert not [url for method, url in request_log.requests if "/upload/" in url]
    blob = client.bucket(bucket).get_blob("data/readings.csv")
    assert blob.generation == generation
    assert Datafile(datafile.cloud_path, storage_client=client).tags == {"checked": True}


def test_failed_block_uploads_nothing_and_keeps_local_copy(client, bucket):
    datafile = _make(client, bucket, content=b"original")
    datafile.download()
    generation = datafile.generation
    with pytest.raises(RuntimeError):
        with datafile.open("w") as file:
            file.write("half written")
            raise RuntimeError("boom")
    assert client.bucket(bucket).get_blob("data/readings.csv").generation == generation
    with open(datafile.local_path, "rb") as file:
        assert file.read() == b"original"
    assert [name for name in os.listdir(os.path.dirname(datafile.local_path)) if name.endswith(".octue-tmp")] == []


def test_concurrent_writer_is_not_overwritten(client, bucket):
    first = _make(client, bucket, content=b"v1")
    second = Datafile(first.cloud_path, storage_client=client)
    with first.open("w") as file:
        file.write("v2 by first")
    with pytest.raises(ConflictError, match="another writer"):
        with second.open("w") as file:
            file.write("v2 by second")
    assert client.bucket(bucket).blob("data/readings.csv").download_as_bytes() == b"v2 by first"
    with pytest.raises(ConflictError):
        second.upload()


def test_concurrent_retaggers_keep_each_others_labels(client, bucket):
    _make(client, bucket, labels={"raw"}, tags={"keep": 1})
    one = Datafile(f"gs://{bucket}/data/readings.csv", storage_client=client)
    two = Datafile(f"gs://{bucket}/data/readings.csv", storage_client=client)
    one.labels.add("from-one")
    one.tags["one"] = 1
    one.update_metadata()
    two.labels.add("from-two")
    two.labels.discard("raw")
    two.update_metadata()
    final = Datafile(f"gs://{bucket}/data/readings.csv", storage_client=client)
    assert final.labels == {"from-one", "from-two"}
    assert final.tags == {"keep": 1, "one": 1}
    assert two.labels == final.labels


def test_upload_skips_transfer_when_crc32c_matches(client, bucket, tmp_path, request_log):
    path = tmp_path / "same.txt"
    path.write_bytes(b"same bytes")
    first = Datafile(path, labels={"v1"})
    first.upload(f"gs://{bucket}/same.txt")
    generation = client.bucket(bucket).get_blob("same.txt").generation
    request_log.clear()
    again = Datafile(path, labels={"v2"}, storage_client=client)
    again.upload(f"gs://{bucket}/same.txt")
    assert not [url for _, url in request_log.requests if "/upload/" in url]
    blob = client.bucket(bucket).get_blob("same.txt")
    assert blob.generation == generation
    assert Datafile(f"gs://{bucket}/same.txt", storage_client=client).labels == {"v2"}


def test_upload_of_cloud_only_datafile_is_a_server_side_copy(client, bucket, request_log):
    source = _make(client, bucket, content=b"copy me", labels={"source"})
    request_log.clear()
    datafile = Datafile(source.cloud_path, storage_client=client)
    datafile.upload(f"gs://{bucket}/copies/readings.csv")
    assert request_log.downloads() == []
    assert any("rewriteTo" in url for _, url in request_log.requests)
    copy = Datafile(f"gs://{bucket}/copies/readings.csv", storage_client=client)
    assert copy.hash_value == source.hash_value and copy.labels == {"source"} and copy.id == source.id
    assert datafile.cloud_path == f"gs://{bucket}/copies/readings.csv"


def test_local_datafile_uploaded_becomes_both(client, bucket, tmp_path):
    path = tmp_path / "both.csv"
    path.write_text("x,y\n")
    datafile = Datafile(path, labels={"raw"}, storage_client=client)
    assert datafile.upload(f"gs://{bucket}/both.csv") == f"gs://{bucket}/both.csv"
    assert datafile.exists_locally and datafile.exists_in_cloud
    assert datafile.local_path == str(path)
    assert Datafile(f"gs://{bucket}/both.csv", storage_client=client).id == datafile.id


def test_download_to_chosen_path(client, bucket, tmp_path):
    _make(client, bucket)
    datafile = Datafile(f"gs://{bucket}/data/readings.csv", storage_client=client)
    target = tmp_path / "mine.csv"
    assert datafile.download(target) == str(target)
    assert target.read_bytes() == b"a,b\n1,2\n"
    assert datafile.local_path == str(target)


def test_missing_object_opened_for_reading(client, bucket):
    datafile = Datafile(f"gs://{bucket}/nope.txt", storage_client=client)
    assert datafile.exists_in_cloud and datafile.object_info is None  # Octue's meaning: it has a cloud path
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        with datafile.open():
            pass


def test_cached_copy_replaced_when_generation_changes(client, bucket):
    first = _make(client, bucket, content=b"v1")
    first.download()
    other = Datafile(first.cloud_path, storage_client=client)
    with other.open("w") as file:
        file.write("v2")
    reader = Datafile(first.cloud_path, storage_client=client)
    assert cache.read_cached_generation(reader.gcs_path) == reader.generation
    with reader.open() as file:
        assert file.read() == "v2"


def test_pristine_cached_copy_is_still_copied_server_side(client, bucket, request_log):
    source = _make(client, bucket, content=b"cached then copied")
    source.download()
    request_log.clear()
    source.upload(f"gs://{bucket}/elsewhere.csv")
    assert not [url for _, url in request_log.requests if "/upload/" in url]
    assert any("rewriteTo" in url for _, url in request_log.requests)


def test_local_datafile_with_cloud_path_writes_both(client, bucket, tmp_path):
    datafile = Datafile(tmp_path / "pair.txt", cloud_path=f"gs://{bucket}/pair.txt", labels={"pair"}, storage_client=client)
    assert datafile.object_info is None  # no local file yet, so nothing was uploaded at construction
    with datafile.open("w") as file:
        file.write("both places")
    assert (tmp_path / "pair.txt").read_text() == "both places"
    assert client.bucket(bucket).blob("pair.txt").download_as_bytes() == b"both places"
    assert Datafile(tmp_path / "pair.txt").labels == {"pair"}
    cloud = Datafile(f"gs://{bucket}/pair.txt", storage_client=client)
    assert cloud.labels == {"pair"} and cloud.id == datafile.id
    datafile.tags["checked"] = True
    datafile.update_metadata()
    assert Datafile(f"gs://{bucket}/pair.txt", storage_client=client).tags == {"checked": True}
    assert Datafile(tmp_path / "pair.txt").tags == {"checked": True}


def test_merge_keeps_other_writers_tag_changes_and_deletions(client, bucket):
    _make(client, bucket, tags={"a": 1, "b": 2, "c": 3}, labels={"x", "y"})
    path = f"gs://{bucket}/data/readings.csv"
    mine, theirs = Datafile(path, storage_client=client), Datafile(path, storage_client=client)
    theirs.tags["a"] = 10
    del theirs.tags["b"]
    theirs.labels.discard("x")
    theirs.update_metadata()
    mine.tags["c"] = 30
    mine.labels.add("z")
    mine.update_metadata()
    final = Datafile(path, storage_client=client)
    assert final.tags == {"a": 10, "c": 30}
    assert final.labels == {"y", "z"}


def test_stale_file_at_chosen_local_path_is_replaced_by_the_objects_content(client, bucket, tmp_path):
    _make(client, bucket, content=b"current content")
    target = tmp_path / "copy.csv"
    target.write_bytes(b"an older version")
    datafile = Datafile(f"gs://{bucket}/data/readings.csv", local_path=target, storage_client=client)
    # As in Octue's SDK, a chosen local path is made to hold the object's content at construction.
    assert target.read_bytes() == b"current content" and datafile.has_local_copy
    with datafile.open() as file:
        assert file.read() == "current content"
    assert target.read_bytes() == b"current content" and datafile.exists_locally


def test_upload_sends_changes_made_directly_to_the_chosen_local_path(client, bucket, tmp_path):
    _make(client, bucket, content=b"v1")
    target = tmp_path / "edit.csv"
    datafile = Datafile(f"gs://{bucket}/data/readings.csv", local_path=target, storage_client=client)
    datafile.download()
    target.write_bytes(b"v2 edited outside the datafile")
    datafile.upload()
    assert client.bucket(bucket).blob("data/readings.csv").download_as_bytes() == b"v2 edited outside the datafile"
    assert datafile.hash_value == Datafile(datafile.cloud_path, storage_client=client).hash_value
