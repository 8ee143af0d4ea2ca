"""The `.octue` file under concurrent writers: one lock for every process and user whatever their cache dirs, a
three-way merge with whatever another writer (this library or Octue's SDK) stored, other writers' entries written back
as they were, and no content renamed into place unless its metadata can be recorded.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from octue_dagster import Datafile
from octue_dagster.core.metadata import values as md
from octue_dagster.core.metadata import octue_files
from octue_dagster.exceptions import CorruptMetadataFileError, InvalidMetadataError, OctueDagsterError
from reliability_summary import save_summary

WRITERS, FILES_PER_WRITER = 6, 15

_WRITER = textwrap.dedent(
    """
    import sys
    from octue_dagster import Datafile
    folder, writer, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for index in range(count):
        datafile = Datafile(f"{folder}/w{writer}-{index}.txt", labels={f"writer-{writer}"}, tags={"index": index})
        with datafile.open("w") as file:
            file.write(f"{writer}/{index}")
    """
)


def _octue_dataset_would_list(folder: Path) -> list[str]:
    """What Octue SDK 0.69.1's `Dataset(path=folder)` lists: every file except one named exactly `.octue`
    (`Dataset._instantiate_from_local_directory`: hidden files are listed too)."""
    return sorted(name for name in os.listdir(folder) if name != ".octue" and (folder / name).is_file())


def test_writers_with_different_cache_dirs_keep_every_entry_and_leave_no_lock_files(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    processes = []
    for writer in range(WRITERS):
        # Each process has its own cache dir, as two users or per-worker OCTUE_DAGSTER_CACHE_DIR settings would.
        env = {**os.environ, "OCTUE_DAGSTER_CACHE_DIR": str(tmp_path / f"cache-{writer}")}
        processes.append(subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(folder), str(writer), str(FILES_PER_WRITER)], env=env
        ))
    assert [process.wait(timeout=300) for process in processes] == [0] * WRITERS
    entries = json.loads((folder / ".octue").read_text())["datafiles"]
    expected = sorted(f"w{writer}-{index}.txt" for writer in range(WRITERS) for index in range(FILES_PER_WRITER))
    assert sorted(entries) == expected
    for name, entry in entries.items():
        assert entry["labels"]["items"] == [f"writer-{name[1]}"]
    assert _octue_dataset_would_list(folder) == expected
    save_summary("octue_file_writers", {"processes": WRITERS, "entries_written": len(expected),
                                        "entries_kept": len(entries), "files_beside_data": 0})


def test_an_entry_changed_by_another_writer_since_we_read_it_is_merged(tmp_path):
    ours = Datafile(tmp_path / "data.txt", labels={"original"}, tags={"keep": 1, "drop": 2, "edit": 3})
    ours.update_metadata()
    reader = Datafile(tmp_path / "data.txt")
    # Another writer (Octue's SDK writes in place, with its own encoder) changes the entry after `reader` read it.
    records = json.loads((tmp_path / ".octue").read_text())
    entry = records["datafiles"]["data.txt"]
    entry["labels"]["items"].append("from-octue")
    entry["tags"]["theirs"] = float("nan")
    entry["tags"]["edit"] = 30
    (tmp_path / ".octue").write_text(json.dumps(records, indent=4))
    reader.labels.add("ours")
    reader.labels.discard("original")
    del reader.tags["drop"]
    reader.tags["mine"] = "x"
    reader.update_metadata()
    merged = Datafile(tmp_path / "data.txt")
    assert merged.labels == {"from-octue", "ours"}
    assert merged.tags["keep"] == 1 and merged.tags["edit"] == 30 and merged.tags["mine"] == "x"
    assert "drop" not in merged.tags and math.isnan(merged.tags["theirs"])
    assert reader.labels == merged.labels  # the datafile holds what it stored


def test_entries_and_keys_we_do_not_own_are_written_back_as_they_were(tmp_path):
    (tmp_path / "ours.txt").write_text("x")
    others = {
        "id": "a1b2c3d4-0000-4000-8000-000000000002",
        "timestamp": {"_type": "datetime", "value": "2024-01-01T00:00:00.000000+00:00"},
        "tags": {"nan": float("nan"), "inf": float("inf"), "quantity": {"_type": "quantity", "value": 3, "unit": "m"},
                 "unordered": {"_type": "set", "items": [3, 1, 2]}},
        "labels": {"_type": "set", "items": ["b", "a"]},
        "extension": {"written_by": "another tool"},
    }
    mine = {"id": "a1b2c3d4-0000-4000-8000-000000000001", "tags": {"n": float("nan")}, "custom_key": [1, 2],
            "timestamp": {"_type": "datetime", "value": "2023-11-02T08:15:00"}}
    records = {"datafiles": {"other.txt": others, "ours.txt": mine}, "dataset": {"name": "d", "labels": ["z"]},
               "unknown_top_level": {"kept": True}}
    (tmp_path / ".octue").write_text(json.dumps(records))
    datafile = Datafile(tmp_path / "ours.txt")
    datafile.labels.add("added")
    datafile.update_metadata()
    after = md.parse_raw_json((tmp_path / ".octue").read_text())
    assert json.dumps(after["datafiles"]["other.txt"]) == json.dumps(others)  # NaN, order, unknown `_type` kept
    assert after["dataset"] == records["dataset"] and after["unknown_top_level"] == {"kept": True}
    written = after["datafiles"]["ours.txt"]
    assert written["custom_key"] == [1, 2] and written["timestamp"] == mine["timestamp"]
    assert math.isnan(written["tags"]["n"]) and written["labels"] == {"_type": "set", "items": ["added"]}


def test_nan_in_another_files_entry_does_not_stop_a_write(tmp_path):
    (tmp_path / ".octue").write_text('{"datafiles": {"other.txt": {"tags": {"v": NaN}}}}')
    with Datafile(tmp_path / "new.txt", tags={"ok": 1}).open("w") as file:
        file.write("content")
    assert (tmp_path / "new.txt").read_text() == "content"
    after = md.parse_raw_json((tmp_path / ".octue").read_text())
    assert math.isnan(after["datafiles"]["other.txt"]["tags"]["v"]) and after["datafiles"]["new.txt"]["tags"] == {"ok": 1}


@pytest.mark.parametrize(
    "octue_file",
    [
        '{"datafiles": {"other.txt": {"tags": ' + "[" * 5000 + "]" * 5000 + "}}}",  # deeper than any JSON parser
        "{not json",
        '{"datafiles": []}',
    ],
    ids=["nested-5000-deep", "not-json", "datafiles-not-an-object"],
)
@pytest.mark.parametrize("existing", [True, False], ids=["replace", "create"])
def test_content_is_not_renamed_into_place_unless_its_metadata_can_be_recorded(tmp_path, octue_file, existing):
    target = tmp_path / "data.txt"
    if existing:
        target.write_text("old")
    datafile = Datafile(target, ignore_stored_metadata=True)
    (tmp_path / ".octue").write_text(octue_file)
    with pytest.raises(CorruptMetadataFileError) as raised:
        with datafile.open("w") as file:
            file.write("new")
    assert isinstance(raised.value, OctueDagsterError) and isinstance(raised.value, ValueError)
    assert str(tmp_path / ".octue") in str(raised.value)
    assert (target.read_text() == "old") if existing else not target.exists()
    assert (tmp_path / ".octue").read_text() == octue_file
    assert sorted(os.listdir(tmp_path)) == sorted([".octue"] + (["data.txt"] if existing else []))


def test_our_entry_made_unreadable_after_we_read_it_stops_the_write_and_names_the_field(tmp_path):
    datafile = Datafile(tmp_path / "data.txt")
    with datafile.open("w") as file:
        file.write("old")
    records = json.loads((tmp_path / ".octue").read_text())
    records["datafiles"]["data.txt"]["timestamp"] = {"_type": "datetime", "value": "yesterday"}
    (tmp_path / ".octue").write_text(json.dumps(records))
    with pytest.raises(InvalidMetadataError, match="'timestamp'") as raised:
        with datafile.open("w") as file:
            file.write("new")
    assert str(tmp_path / "data.txt") in str(raised.value)
    assert (tmp_path / "data.txt").read_text() == "old"


def test_the_lock_follows_the_file_when_a_writer_replaces_it(tmp_path, monkeypatch):
    """A waiter that locked the file a writer then replaced re-locks the new one, so it never writes from a stale
    read: both entries survive a write that waits on a lock held across a replacement."""
    path = tmp_path / ".octue"
    octue_files.write_entry(tmp_path / "a.txt", {"id": "a"})
    entered, release, blocked = threading.Event(), threading.Event(), threading.Event()
    real_fcntl = octue_files.fcntl

    class ObservedFcntl:
        LOCK_EX, LOCK_NB = real_fcntl.LOCK_EX, real_fcntl.LOCK_NB

        @staticmethod
        def flock(descriptor, operation):
            try:
                real_fcntl.flock(descriptor, operation)
            except BlockingIOError:
                blocked.set()
                raise

    monkeypatch.setattr(octue_files, "fcntl", ObservedFcntl)

    def slow_change(records):
        entered.set()
        release.wait(timeout=30)
        records["datafiles"]["b.txt"] = {"id": "b"}

    holder = threading.Thread(target=octue_files.update_metadata_file, args=(path, slow_change))
    holder.start()
    assert entered.wait(timeout=30)
    waiter = threading.Thread(target=octue_files.write_entry, args=(tmp_path / "c.txt", {"id": "c"}))
    waiter.start()
    assert blocked.wait(timeout=30)  # the waiter holds the old file open and waits for its lock (flock is per
    # open file description, so threads of one process contend as processes do)
    release.set()
    holder.join(timeout=30)
    waiter.join(timeout=30)
    assert sorted(json.loads(path.read_text())["datafiles"]) == ["a.txt", "b.txt", "c.txt"]
