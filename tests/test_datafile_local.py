"""Local datafiles: atomic writes, `.octue` files, hashing, HDF5, and metadata rules."""

from __future__ import annotations

import datetime
import math
import multiprocessing
import os

import h5py
import numpy
import pytest

from octue_dagster import (
    CorruptMetadataFileError,
    Datafile,
    InvalidLabelError,
    InvalidTagError,
    InvalidTimestampError,
)
from octue_dagster.core.local import hashing
from octue_dagster.exceptions import OctueCompatibilityWarning
from octue_dagster.core.local.atomic import is_temporary
from octue_dagster.core.metadata.values import crc32c_base64, decode_json


def test_write_creates_file_and_octue_entry(tmp_path):
    datafile = Datafile(tmp_path / "out.csv", labels={"cleaned"}, tags={"rows": 2}, timestamp=1700000000)
    with datafile.open("w") as file:
        file.write("a\n1\n2\n")
    assert (tmp_path / "out.csv").read_text() == "a\n1\n2\n"
    entry = decode_json((tmp_path / ".octue").read_text())["datafiles"]["out.csv"]
    assert entry["id"] == datafile.id
    assert entry["labels"] == {"cleaned"} and entry["tags"] == {"rows": 2}
    assert entry["timestamp"] == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.timezone.utc)
    again = Datafile(tmp_path / "out.csv")
    assert again.id == datafile.id and again.labels == {"cleaned"}


def test_failed_write_leaves_old_local_file(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old content")
    datafile = Datafile(path)
    for mode in ("w", "a", "r+"):
        with pytest.raises(ZeroDivisionError):
            with datafile.open(mode) as file:
                file.write("new content that must not land")
                1 / 0
        assert path.read_text() == "old content"
    assert [name for name in os.listdir(tmp_path) if is_temporary(name)] == []
    assert not (tmp_path / ".octue").exists()


def test_reading_local_file_does_not_write_octue(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("hello")
    with Datafile(path).open() as file:
        assert file.read() == "hello"
    assert not (tmp_path / ".octue").exists()


def test_metadata_change_in_read_block_is_not_saved_and_a_warning_says_so(tmp_path):
    # Octue's rule (issue 14): a reading block saves nothing; `update_metadata()` is the explicit way.
    path = tmp_path / "plain.txt"
    path.write_text("hello")
    datafile = Datafile(path)
    with pytest.warns(OctueCompatibilityWarning, match="not saved"):
        with datafile.open() as file:
            file.read()
            datafile.labels.add("seen")
    assert Datafile(path).labels == set()
    datafile.update_metadata()
    assert Datafile(path).labels == {"seen"}
    assert path.read_text() == "hello"


def test_hash_is_streamed_crc32c_and_cached_until_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "big.bin"
    content = os.urandom(3 * hashing.HASH_BLOCK_BYTES + 123)
    path.write_bytes(content)
    datafile = Datafile(path)
    assert datafile.hash_value == crc32c_base64(content)
    assert hashing.HASH_BLOCK_BYTES >= 1024 * 1024

    reads = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        reads.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    assert datafile.hash_value == crc32c_base64(content)
    assert str(path) not in reads, "an unchanged file must not be read again"
    monkeypatch.undo()

    with datafile.open("ab") as file:
        file.write(b"more")
    assert datafile.hash_value == crc32c_base64(content + b"more")


def test_metadata_hash_ignores_id_and_order_and_is_stable(tmp_path):
    one = Datafile(tmp_path / "a", labels=["b", "a"], tags={"x": 1, "y": {"b": 2, "a": 1}}, timestamp=0)
    two = Datafile(tmp_path / "b", labels=["a", "b"], tags={"y": {"a": 1, "b": 2}, "x": 1}, timestamp=0.0)
    assert one.id != two.id
    assert one.metadata_hash_value == two.metadata_hash_value
    two.labels.add("c")
    assert one.metadata_hash_value != two.metadata_hash_value
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        assert pool.apply(_metadata_hash_in_another_process, (str(tmp_path / "c"),)) == one.metadata_hash_value
    finally:
        _close(pool)


def _close(pool) -> None:
    """Let the workers finish and exit. Not `Pool.terminate` (what `with Pool()` does): it holds the task queue's lock
    for good and relies on SIGTERM, which a process started with SIGINT ignored (a background job) ignores too, once
    Dagster has mapped SIGTERM to SIGINT's handler; its workers would then wait for the lock forever."""
    pool.close()
    pool.join()


def _metadata_hash_in_another_process(path: str) -> str:
    return Datafile(path, labels=["a", "b"], tags={"x": 1, "y": {"a": 1, "b": 2}}, timestamp=0).metadata_hash_value


def test_id_cannot_be_reassigned(tmp_path):
    datafile = Datafile(tmp_path / "f")
    with pytest.raises(AttributeError):
        datafile.id = "something-else"
    with pytest.raises(ValueError, match="UUID"):
        Datafile(tmp_path / "g", id="not-a-uuid")


@pytest.mark.parametrize("label", ["UPPER", "-leading", "trailing-", "under_score", "sp ace!", ""])
def test_invalid_labels_are_rejected_with_the_rule(tmp_path, label):
    datafile = Datafile(tmp_path / "f")
    with pytest.raises(InvalidLabelError, match="lowercase") as error:
        datafile.labels.add(label)
    assert repr(label) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_labels_from_a_string_are_split_like_octue(tmp_path):
    assert Datafile(tmp_path / "f", labels="wind raw-data").labels == {"wind", "raw-data"}


@pytest.mark.parametrize("name", ["Bad", "_x", "x_", "with-dash", "", "a b"])
def test_invalid_tag_names_are_rejected(tmp_path, name):
    datafile = Datafile(tmp_path / "f")
    with pytest.raises(InvalidTagError, match="tag name"):
        datafile.tags[name] = 1


def test_tag_values_must_be_json(tmp_path):
    datafile = Datafile(tmp_path / "f")
    datafile.tags["fine"] = {"nested": [1, 2.5, None, True], "when": datetime.datetime(2024, 1, 1)}
    with pytest.raises(InvalidTagError, match="JSON-serialisable") as error:
        datafile.tags["bad"] = object()
    assert "'bad'" in str(error.value)
    datafile.tags["nan"] = float("nan")  # Octue's SDK stores NaN (as the JSON literal NaN), so it is accepted
    assert math.isnan(datafile.tags["nan"])


def test_timestamps(tmp_path):
    # Datetimes are kept as given, as Octue's SDK keeps them: a naive one stays naive.
    datafile = Datafile(tmp_path / "f", timestamp=datetime.datetime(2024, 1, 1, 12))
    assert datafile.timestamp == datetime.datetime(2024, 1, 1, 12) and datafile.timestamp.tzinfo is None
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    datafile.timestamp = datetime.datetime(2024, 1, 1, 12, tzinfo=plus_two)
    assert datafile.timestamp.utcoffset() == datetime.timedelta(hours=2)
    datafile.timestamp = 86400
    assert datafile.timestamp == datetime.datetime(1970, 1, 2, tzinfo=datetime.timezone.utc)
    with pytest.raises(InvalidTimestampError, match="POSIX"):
        datafile.timestamp = "yesterday"


def test_corrupt_octue_file_is_named_and_not_overwritten(tmp_path):
    (tmp_path / ".octue").write_text("{not json")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(CorruptMetadataFileError, match=str(tmp_path / ".octue")):
        Datafile(tmp_path / "data.txt")
    datafile = Datafile(tmp_path / "data.txt", ignore_stored_metadata=True, labels={"a"})
    with pytest.raises(CorruptMetadataFileError):
        datafile.update_metadata()
    assert (tmp_path / ".octue").read_text() == "{not json"


def test_hdf5_files_open_through_h5py(tmp_path):
    datafile = Datafile(tmp_path / "summary.h5", labels={"summary"})
    with datafile.open("w") as file:
        assert isinstance(file, h5py.File)
        file.create_dataset("speeds", data=numpy.arange(10.0))
    with Datafile(tmp_path / "summary.h5").open() as file:
        assert list(file["speeds"][:]) == list(numpy.arange(10.0))
    with Datafile(tmp_path / "summary.h5").open("a") as file:
        file["speeds"][0] = 42
    with Datafile(tmp_path / "summary.h5").open("rb") as file:
        assert file["speeds"][0] == 42


def test_hdf5_in_the_cloud(client, bucket):
    datafile = Datafile(f"gs://{bucket}/results/out.hdf5", storage_client=client)
    with datafile.open("w") as file:
        file.create_dataset("x", data=[1, 2, 3])
    reader = Datafile(f"gs://{bucket}/results/out.hdf5", storage_client=client)
    with reader.open() as file:
        assert list(file["x"][:]) == [1, 2, 3]


def test_hdf5_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"octue-dagster\[hdf5\]"):
        with Datafile(tmp_path / "x.h5").open("w"):
            pass


@pytest.mark.parametrize("mode", ["rw", "q", "rbt", "wbb", 3])
def test_invalid_modes(tmp_path, mode):
    with pytest.raises(ValueError, match="mode"):
        Datafile(tmp_path / "f").open(mode)


def test_concurrent_processes_writing_one_folder_keep_every_octue_entry(tmp_path):
    names = [f"file-{index}.txt" for index in range(8)]
    pool = multiprocessing.get_context("spawn").Pool(4)
    try:
        pool.map(_write_one, [str(tmp_path / name) for name in names])
    finally:
        _close(pool)
    entries = decode_json((tmp_path / ".octue").read_text())["datafiles"]
    assert sorted(entries) == sorted(names)
    for name in names:
        assert entries[name]["labels"] == {"written"}


def _write_one(path: str) -> None:
    for round_ in range(3):
        datafile = Datafile(path, labels={"written"}, tags={"round": round_})
        with datafile.open("w") as file:
            file.write(path)


def test_hash_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "CACHE_ENTRIES", 3)
    paths = []
    for index in range(5):
        path = tmp_path / f"f{index}"
        path.write_bytes(bytes([index]))
        paths.append(path)
        assert hashing.hash_file(path) == crc32c_base64(bytes([index]))
    assert len(hashing._cache) == 3
    key = lambda path: (path.stat().st_dev, path.stat().st_ino)  # noqa: E731 - files are cached by device and inode
    assert key(paths[-1]) in hashing._cache and key(paths[0]) not in hashing._cache
