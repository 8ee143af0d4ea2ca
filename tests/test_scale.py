"""Many-object work stays linear: what each object costs is counted (calls, requests, threads), never timed."""

from __future__ import annotations

import datetime
import enum
import json
import os
import threading
import uuid

import pytest

from octue_dagster import Datafile
from octue_dagster.core.dataset import dataset_transfers
from octue_dagster.core.dataset.dataset import Dataset, list_datasets
from octue_dagster.core.listing import selection
from octue_dagster.core.local import hashing
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.object_info import ObjectInfo
from octue_dagster.core.storage.runner import run_all, run_concurrently
from octue_dagster.core.storage.store import Store
from octue_dagster.exceptions import InvalidMetadataError, InvalidTagError

UTC = datetime.timezone.utc


def put(client, bucket: str, name: str, labels: set[str], tags: dict | None = None, content: bytes = b"x") -> None:
    blob = client.bucket(bucket).blob(name)
    blob.metadata = md.to_cloud_metadata(str(uuid.uuid4()), None, labels, tags or {})
    blob.upload_from_string(content)


# --- listings ----------------------------------------------------------------------------------------------------------


def test_list_datafiles_builds_a_datafile_only_for_objects_that_may_match(client, bucket, monkeypatch):
    for index in range(12):
        put(client, bucket, f"f/{index:02d}.csv", {"even" if index % 2 == 0 else "odd"}, {"turbine": index % 3})
    built = []
    original = Datafile.from_object_info.__func__

    def spy(cls, info, store=None):
        built.append(info.path.name)
        return original(cls, info, store=store)

    monkeypatch.setattr(Datafile, "from_object_info", classmethod(spy))
    found = selection.list_datafiles(Store(client), f"gs://{bucket}/f/", labels=["even"], tags={"turbine": 0})
    assert sorted(datafile.name for datafile in found) == ["00.csv", "06.csv"]
    assert sorted(built) == ["f/00.csv", "f/06.csv"]  # the other ten were rejected on their listed fields alone


def test_an_unreadable_labels_field_is_still_reported_under_a_label_filter(client, bucket):
    blob = client.bucket(bucket).blob("bad/x.csv")
    blob.metadata = {"octue__labels": "{not json"}
    blob.upload_from_string(b"x")
    with pytest.raises(InvalidMetadataError, match="octue__labels"):
        selection.list_datafiles(Store(client), f"gs://{bucket}/bad/", labels=["even"])


def test_stored_field_reads_one_field_as_the_full_parse_does():
    metadata = md.to_cloud_metadata(str(uuid.uuid4()), None, {"b", "a"}, {"x": [1, 2], "when": datetime.datetime(2024, 1, 1)})
    full = md.from_cloud_metadata(metadata, "here")
    assert md.stored_field(metadata, "labels") == frozenset(full.labels)
    assert md.stored_field(metadata, "tags") == dict(full.tags)
    assert md.stored_field({}, "labels") is None
    assert md.stored_field({"octue__labels": "[1, 2"}, "labels") is md.UNREADABLE
    assert md.stored_field({"octue__labels": '["Not A Label"]'}, "labels") is md.UNREADABLE


def test_object_info_from_a_listed_resource_matches_the_clients_own_reading(client):
    resource = {
        "name": "a/b.csv",
        "generation": "1712345678901234",
        "metageneration": "3",
        "size": "42",
        "crc32c": "AAAAAA==",
        "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg==",
        "contentType": "text/csv",
        "updated": "2024-05-01T12:00:00.123456789Z",
        "timeCreated": "2024-05-01T11:00:00Z",
        "metadata": {"octue__labels": '["x"]'},
    }
    blob = client.bucket("some-bucket").blob("a/b.csv")
    blob._set_properties(dict(resource))  # as the client does with an answer
    info = ObjectInfo.from_resource("some-bucket", resource)
    assert info == ObjectInfo.from_blob(blob)
    assert (info.generation, info.metageneration, info.size) == (blob.generation, blob.metageneration, blob.size)
    assert info.updated == blob.updated and info.time_created == blob.time_created
    assert info.updated.tzinfo is not None and info.custom_metadata == blob.metadata
    assert info.custom_metadata is not resource["metadata"]  # a copy: the listing's page is not kept alive by it


def test_list_datasets_gives_each_folder_exactly_its_objects(client, bucket):
    store = Store(client)
    for folder, files in {"a": ["1.csv"], "a/b": ["2.csv"], "ab": ["3.csv", "4.csv"]}.items():
        for name in files:
            put(client, bucket, f"{folder}/{name}", {"x"})
        Dataset(f"gs://{bucket}/{folder}", store=store).update_cloud_metadata()
    datasets = {dataset.name: sorted(file.name for file in dataset.files) for dataset in list_datasets(store, f"gs://{bucket}")}
    # "ab/" sorts between "a/..." objects' neighbours but is not inside "a/"; "a/b/" is inside "a/" (recursive).
    assert datasets == {"a": ["1.csv", "2.csv"], "b": ["2.csv"], "ab": ["3.csv", "4.csv"]}


# --- dataset re-upload -------------------------------------------------------------------------------------------------


def local_dataset(folder, count: int) -> Dataset:
    folder.mkdir()
    for index in range(count):
        path = folder / f"{index:03d}.csv"
        path.write_text(f"{index}\n")
        Datafile(path, labels={"raw"}).update_metadata()
    Dataset(folder).update_metadata()  # the dataset's own id, kept across instances
    return Dataset(folder)


def test_an_unchanged_re_upload_settles_every_file_in_the_calling_thread_with_no_writes(
    client, bucket, tmp_path, request_log, monkeypatch
):
    folder = tmp_path / "data"
    dataset = local_dataset(folder, 20)
    store = Store(client)
    Dataset(folder, store=store).upload(f"gs://{bucket}/data")
    again = Dataset(folder, store=store)
    sent, reads = [], []
    monkeypatch.setattr(dataset_transfers._Upload, "send", lambda self: sent.append(self) or ("transferred", ""))
    original_read = hashing.read_file_hash
    monkeypatch.setattr(hashing, "read_file_hash", lambda path: reads.append(path) or original_read(path))
    request_log.clear()
    report = again.upload_with_report(f"gs://{bucket}/data")
    assert len(report.unchanged) == 20 and not report.transferred and not report.patched
    assert sent == [] and reads == []  # no worker thread, no file read: the hashes were known
    # One listing page and one read of the dataset's .octue object, whatever the number of files; nothing written.
    assert [method for method, _ in request_log.requests] == ["GET", "GET"], request_log.requests
    assert all(file.cloud_path == f"gs://{bucket}/data/{file.name}" for file in again.files)
    assert not report.others


def test_others_are_the_listed_objects_the_dataset_does_not_hold(client, bucket, tmp_path):
    folder = tmp_path / "data"
    local_dataset(folder, 3)
    store = Store(client)
    for index in range(5):
        put(client, bucket, f"data/extra-{index}.csv", set())
    report = Dataset(folder, store=store).upload_with_report(f"gs://{bucket}/data")
    assert sorted(info.path.name for info in report.others) == [f"data/extra-{index}.csv" for index in range(5)]
    assert len(report.transferred) == 3


# --- the runner --------------------------------------------------------------------------------------------------------


def test_quick_settles_items_in_the_calling_thread_and_its_errors_are_outcomes():
    caller, threads = threading.get_ident(), []

    def work(item: int) -> str:
        threads.append(threading.get_ident())
        return "worked"

    def quick(item: int) -> str | None:
        assert threading.get_ident() == caller
        if item == 7:
            raise ValueError("seven")
        return "quick" if item % 2 == 0 else None

    outcomes = {outcome.item: outcome for outcome in run_concurrently(work, range(20), concurrency=4, quick=quick)}
    assert sorted(outcomes) == list(range(20))
    assert all(outcomes[item].result == "quick" for item in range(0, 20, 2))
    assert all(outcomes[item].result == "worked" for item in range(1, 20, 2) if item != 7)
    assert str(outcomes[7].error) == "seven"
    assert len(threads) == 9 and caller not in threads  # only the odd items (but 7) reached the workers


def test_run_all_stops_at_the_first_error_and_the_memory_budget_holds(tmp_path):
    held, lock, most = [0], threading.Lock(), [0]

    def work(size: int) -> int:
        with lock:
            held[0] += size
            most[0] = max(most[0], held[0])
        with lock:
            held[0] -= size
        if size == 13:
            raise RuntimeError("thirteen")
        return size

    assert sorted(run_all(work, [40, 40, 40, 40], concurrency=4, memory_of=lambda size: size, memory_budget_bytes=80)) \
        == [40] * 4
    assert most[0] <= 80
    with pytest.raises(RuntimeError, match="thirteen"):
        list(run_all(work, [13, *range(1000)], concurrency=2))


# --- hashing and metadata values ----------------------------------------------------------------------------------------


def test_a_file_reached_by_two_paths_is_hashed_once(tmp_path, monkeypatch):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(1000))
    link = tmp_path / "link.bin"
    link.symlink_to(path)
    reads = []
    original = hashing.read_file_hash
    monkeypatch.setattr(hashing, "read_file_hash", lambda p: reads.append(p) or original(p))
    assert hashing.hash_file(path) == hashing.hash_file(link) == hashing.hash_file(tmp_path / ".." / tmp_path.name / "data.bin")
    assert len(reads) == 1
    assert hashing.cached_hash(link) == hashing.hash_file(path)
    path.write_bytes(b"changed")
    assert hashing.cached_hash(path) is None  # never a stale value


class Colour(enum.IntEnum):
    RED = 1


def test_plain_tag_values_are_kept_as_given_and_others_still_round_trip():
    assert md.validate_tag_value("x", True) is True
    assert md.validate_tag_value("x", "text") == "text"
    value = md.validate_tag_value("x", Colour.RED)
    assert value == 1 and type(value) is int  # stored as JSON stores it, not as the enum
    assert md.validate_tag_value("x", (1, 2)) == [1, 2]
    with pytest.raises(InvalidTagError):
        md.validate_tag_value("x", 10 ** 5000)  # too many digits to store, as before
    assert md.validate_tag_value("x", float("nan")) != md.validate_tag_value("x", float("nan"))


def test_decode_json_is_json_loads_with_octues_types():
    text = '{"a": {"_type": "set", "items": [1]}, "b": NaN}'
    assert md.decode_json(text)["a"] == {1}
    assert md.decode_json(text.encode("utf-16")) == md.decode_json(text)
    with pytest.raises(ValueError):
        md.decode_json("\ufeff{}")
    with pytest.raises(TypeError):
        md.decode_json(5)  # type: ignore[arg-type]
    assert md.encode_json({"s": {2, 1}}, sort_keys=True) == json.dumps({"s": {"_type": "set", "items": [1, 2]}})
