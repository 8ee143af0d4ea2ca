"""The cache and local copies against hostile or broken disks (issue 17 parts 2-4, issue 16's cache attacks).

Real files, real links, real full and read-only file systems: a small `tmpfs` is mounted for the disk-full and
read-only cases (root only; the tests skip themselves where `mount` is not allowed).
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from octue_dagster import Datafile, Dataset
from octue_dagster.core.cache import copies as cache
from octue_dagster.core.local import atomic
from octue_dagster.core.local.folders import CACHE_DIR_VARIABLE
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.store import Store, make_client
from octue_dagster.exceptions import (
    ConflictError,
    FolderNotWritableError,
    InsufficientSpaceError,
    InvalidInputError,
    OctueDagsterError,
    UnsafeFolderError,
)

KIB = 1024


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size: int, *, read_only: bool = False) -> Iterator[Path]:
    """A real small file system at `folder` (mounted for the block, unmounted after)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0700" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _cloud_file(bucket: str, name: str, content: bytes) -> Datafile:
    """An object put there by another tool (nothing in this process's cache yet)."""
    make_client().bucket(bucket).blob(name).upload_from_string(content)
    return Datafile(f"gs://{bucket}/{name}")


def _files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file() or path.is_symlink())


# --- links in the cache ------------------------------------------------------------------------------------------------


def test_a_linked_object_folder_is_refused_and_nothing_outside_is_written(emulator, bucket, tmp_path, cache_dir):
    datafile = _cloud_file(bucket, "data/readings.csv", b"cloud content")
    folder = cache.object_cache_dir(GCSPath(bucket, "data/readings.csv"))
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / cache.safe_basename("data/readings.csv")
    victim.write_bytes(b"someone else's file")
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(outside, target_is_directory=True)

    with pytest.raises(UnsafeFolderError, match="is a symbolic link") as raised:
        with Datafile(f"gs://{bucket}/data/readings.csv").open("rb") as file:
            file.read()
    assert str(folder) in str(raised.value) and CACHE_DIR_VARIABLE in str(raised.value)
    with pytest.raises(UnsafeFolderError):
        datafile.download()
    assert victim.read_bytes() == b"someone else's file"
    assert _files_under(outside) == [victim.name]


def test_a_linked_bucket_folder_is_never_cleared_or_evicted_through(emulator, bucket, tmp_path, cache_dir):
    _cloud_file(bucket, "kept.csv", b"x" * 100).download()  # a real copy, so the cache has content to clear
    outside = tmp_path / "outside"
    # A folder laid out like the cache's own, holding someone's files.
    lookalike = outside / "ab" / ("c" * 32)
    lookalike.mkdir(parents=True)
    (lookalike / "report.csv").write_bytes(b"precious")
    (lookalike / ".record.json").write_text("{}")
    (cache_dir / "objects" / "other-bucket").symlink_to(outside, target_is_directory=True)

    report = cache.clear()
    cache.evict(0, wait=True)
    assert report.removed == 1
    assert (lookalike / "report.csv").read_bytes() == b"precious" and (lookalike / ".record.json").exists()
    assert (cache_dir / "objects" / "other-bucket").is_symlink()
    # Reading an object of that bucket refuses the link rather than writing through it.
    with pytest.raises(UnsafeFolderError, match="other-bucket"):
        cache.checked_object_dir(GCSPath("other-bucket", "report.csv"), create=True)


def test_a_copy_or_record_that_is_a_link_is_not_served_or_written_through(emulator, bucket, tmp_path, cache_dir):
    datafile = _cloud_file(bucket, "table.csv", b"the object's bytes")
    copy = Path(datafile.download())
    outside = tmp_path / "outside.csv"
    outside.write_bytes(b"the object's bytes")  # same bytes: only the link makes it foreign
    record = copy.parent / ".record.json"
    outside_record = tmp_path / "outside.json"
    outside_record.write_text(record.read_text())
    copy.unlink()
    copy.symlink_to(outside)
    record.unlink()
    record.symlink_to(outside_record)

    with Datafile(f"gs://{bucket}/table.csv").open("rb") as file:
        assert file.read() == b"the object's bytes"
    # Downloaded again and renamed over the links (which are replaced, never followed).
    assert not copy.is_symlink() and not record.is_symlink()
    assert outside.read_bytes() == b"the object's bytes"
    assert outside_record.read_text() != record.read_text()


# --- private folders ---------------------------------------------------------------------------------------------------


def test_cache_and_lock_folders_are_private_and_another_users_folder_is_refused(emulator, bucket, cache_dir):
    datafile = _cloud_file(bucket, "private.csv", b"secret")
    datafile.download()
    objects = cache_dir / "objects"
    folders = [cache_dir / "locks", objects] + [path for path in objects.rglob("*") if path.is_dir()]
    assert len(folders) >= 5
    for folder in folders:
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700, folder

    # One of ours made group-writable (an older version, umask 002): made private again, not refused.
    object_folder = cache.object_cache_dir(datafile.gcs_path)
    os.chmod(object_folder, 0o775)
    Datafile(f"gs://{bucket}/private.csv").download()
    assert stat.S_IMODE(os.lstat(object_folder).st_mode) == 0o700

    # A cache folder the user chose that others can write in (a shared /tmp-like folder) is refused, never chmod-ed.
    os.chmod(cache_dir, 0o777)
    with pytest.raises(UnsafeFolderError, match="writable by other users"):
        cache.checked_object_dir(GCSPath(bucket, "another.csv"), create=True)
    assert stat.S_IMODE(os.lstat(cache_dir).st_mode) == 0o777
    os.chmod(cache_dir, 0o700)

    if os.geteuid() != 0:
        pytest.skip("handing a folder to another user needs root")
    os.chown(object_folder, 4242, 4242)
    with pytest.raises(UnsafeFolderError, match="owned by user id 4242") as raised:
        Datafile(f"gs://{bucket}/private.csv").download()
    assert str(object_folder) in str(raised.value)
    os.chown(cache_dir / "locks", 4242, 4242)
    with pytest.raises(UnsafeFolderError, match="locks"):
        cache.clear()


# --- disk full ---------------------------------------------------------------------------------------------------------


def _leftovers(root: Path) -> list[str]:
    """Files in the cache's object folders that are not a recorded copy: temporaries, or copies without a record."""
    found = []
    for folder in {path.parent for path in (root / "objects").rglob("*") if path.is_file()}:
        names = {path.name for path in folder.iterdir()}
        found += [f"{folder}/{name}" for name in names if atomic.is_temporary(name)]
        if ".record.json" not in names and any(not name.startswith(".") for name in names):
            found.append(f"{folder}: copy without a record")
    return found


def test_a_full_cache_evicts_to_make_room_else_names_the_folder_and_recovers(
    emulator, bucket, tmp_path, monkeypatch
):
    with mounted_tmpfs(tmp_path / "small", 2 * 1024 * KIB) as small:
        monkeypatch.setenv(CACHE_DIR_VARIABLE, str(small / "cache"))
        cache.configure(max_bytes=None)  # no size limit: only the disk is full
        try:
            contents = {name: os.urandom(800 * KIB) for name in ("first", "second", "third")}
            first, second, third = (_cloud_file(bucket, f"{name}.bin", data) for name, data in contents.items())
            first.download()
            second.download()
            # No room for a third copy: the least recently used one (first) is evicted to make it.
            third.download()
            assert Path(third.local_path).read_bytes() == contents["third"]
            assert not cache.cached_path(first.gcs_path).exists() and cache.cached_path(second.gcs_path).exists()

            # Copies in use cannot be evicted: a library error naming the folder and the size, nothing left behind.
            with second.open("rb"), third.open("rb"):
                with pytest.raises(InsufficientSpaceError) as raised:
                    Datafile(f"gs://{bucket}/first.bin").download()
                assert isinstance(raised.value, OSError)
                message = str(raised.value)
                needed = 800 * KIB + cache.RECORD_ALLOWANCE_BYTES
                assert str(small / "cache") in message and f"{needed:,} bytes" in message
                assert _leftovers(small / "cache") == []
            # Once room can be made, the same read works.
            with Datafile(f"gs://{bucket}/first.bin").open("rb") as file:
                assert file.read() == contents["first"]
            assert _leftovers(small / "cache") == []
        finally:
            cache.configure()


def test_a_record_that_does_not_fit_leaves_no_unrecorded_copy_and_recovers(emulator, bucket, tmp_path, monkeypatch):
    from octue_dagster.core.cache import local_copy

    with mounted_tmpfs(tmp_path / "small", 1024 * KIB) as small:
        monkeypatch.setenv(CACHE_DIR_VARIABLE, str(small / "cache"))
        datafile = _cloud_file(bucket, "object.bin", os.urandom(300 * KIB))
        filler = small / "filler"
        original = local_copy._download

        def download_then_disk_fills(store, info, temporary):
            crc32c = original(store, info, temporary)
            # Someone else fills the disk between the download and its record (a real ENOSPC follows).
            with contextlib.suppress(OSError), open(filler, "ab") as file:
                while True:
                    file.write(b"\0" * 64 * KIB)
                    file.flush()
            return crc32c

        monkeypatch.setattr(local_copy, "_download", download_then_disk_fills)
        with pytest.raises(InsufficientSpaceError, match="No room in the download cache"):
            datafile.download()
        assert _leftovers(small / "cache") == []
        assert cache.read_record(datafile.gcs_path) is None
        monkeypatch.undo()
        monkeypatch.setenv(CACHE_DIR_VARIABLE, str(small / "cache"))
        filler.unlink()
        assert Path(Datafile(f"gs://{bucket}/object.bin").download()).stat().st_size == 300 * KIB


def test_disk_full_at_a_chosen_local_path_stops_before_the_upload_and_a_retry_is_not_a_conflict(
    emulator, bucket, tmp_path, monkeypatch
):
    with mounted_tmpfs(tmp_path / "small", 512 * KIB) as small:
        _cloud_file(bucket, "kept.csv", b"old,content\n")
        local = small / "kept.csv"
        datafile = Datafile(f"gs://{bucket}/kept.csv", local_path=local)
        datafile.download()
        generation = make_client().bucket(bucket).get_blob("kept.csv").generation
        filler = small / "filler"
        free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
        filler.write_bytes(b"\0" * (free - 24 * KIB))  # room for the new content, not for a new .octue file

        with pytest.raises(InsufficientSpaceError, match=str(small)):
            with datafile.open("w") as file:
                file.write("new,content\n")
        # Nothing changed anywhere: the object is at the same generation, the local copy is the old one.
        assert make_client().bucket(bucket).get_blob("kept.csv").generation == generation
        assert local.read_text() == "old,content\n"

        # Now the disk fills only after the upload (the check passed): the cloud is new, the local copy old...
        filler.unlink()
        original = Store.upload_file

        def upload_then_disk_fills(self, *args, **kwargs):
            info = original(self, *args, **kwargs)
            with contextlib.suppress(OSError), open(filler, "ab") as handle:
                while True:
                    handle.write(b"\0" * 16 * KIB)
                    handle.flush()
            return info

        monkeypatch.setattr(Store, "upload_file", upload_then_disk_fills)
        with pytest.raises(InsufficientSpaceError, match="now holds the new content"):
            with datafile.open("w") as file:
                file.write("new,content\n")
        monkeypatch.undo()
        assert local.read_text() == "old,content\n"
        # ...and a retry once there is room is this datafile's own write again, not another writer's conflict.
        filler.unlink()
        try:
            with datafile.open("w") as file:
                file.write("newer,content\n")
        except ConflictError as error:  # pragma: no cover - the defect this test exists for
            pytest.fail(f"a retry was taken for another writer's change: {error}")
        assert local.read_text() == "newer,content\n"
        assert make_client().bucket(bucket).blob("kept.csv").download_as_bytes() == b"newer,content\n"


# --- read-only cache or HOME -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["cache", "home"])
def test_a_read_only_cache_allows_metadata_work_and_names_the_setting_for_reads(
    emulator, bucket, tmp_path, monkeypatch, where
):
    datafile = _cloud_file(bucket, "tagged.csv", b"a,b\n")
    with mounted_tmpfs(tmp_path / "readonly", 64 * KIB, read_only=True) as readonly:
        if where == "cache":
            monkeypatch.setenv(CACHE_DIR_VARIABLE, str(readonly))
        else:
            monkeypatch.delenv(CACHE_DIR_VARIABLE)
            monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
            monkeypatch.setenv("HOME", str(readonly))
        # Metadata only: no cache needed.
        fresh = Datafile(f"gs://{bucket}/tagged.csv")
        fresh.labels.add("checked")
        fresh.tags["by"] = "reliability"
        fresh.update_metadata()
        assert Datafile(f"gs://{bucket}/tagged.csv").labels == {"checked"}
        # A read needs the cache: the error names the folder and the setting.
        with pytest.raises(FolderNotWritableError) as raised:
            with Datafile(f"gs://{bucket}/tagged.csv").open() as file:
                file.read()
        assert isinstance(raised.value, PermissionError) and isinstance(raised.value, OctueDagsterError)
        assert str(readonly) in str(raised.value) and CACHE_DIR_VARIABLE in str(raised.value)
        # Reading to a chosen local path does not need the cache.
        target = tmp_path / "copy.csv"
        Datafile(f"gs://{bucket}/tagged.csv", local_path=target).download()
        assert target.read_bytes() == b"a,b\n"


# --- dataset downloads -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("names", [("ds/a//b.csv", "ds/a/b.csv"), ("ds/./c.csv", "ds/c.csv")])
def test_dataset_objects_that_meet_on_disk_are_refused_by_name(emulator, client, bucket, tmp_path, names):
    for index, name in enumerate(names):
        client.bucket(bucket).blob(name).upload_from_string(f"file {index}".encode())
    dataset = Dataset(f"gs://{bucket}/ds")
    assert len(dataset.files) == 2
    target = tmp_path / "download"
    with pytest.raises(InvalidInputError) as raised:
        dataset.download(target)
    assert all(repr(name) in str(raised.value) for name in names)
    assert not target.exists() or _files_under(target) == []  # refused before anything was downloaded
    # Into the cache (no local folder) each object has its own place.
    dataset.download()
    assert sorted(Path(file.local_path).read_bytes() for file in dataset.files) == [b"file 0", b"file 1"]


def test_a_1024_byte_object_name_downloads_to_the_cache_and_is_refused_for_a_local_folder(
    emulator, client, bucket, tmp_path
):
    name = "ds/" + "n" * (1024 - len("ds/") - len(".csv")) + ".csv"
    assert len(name.encode()) == 1024
    client.bucket(bucket).blob(name).upload_from_string(b"long")
    dataset = Dataset(f"gs://{bucket}/ds")
    with pytest.raises(InvalidInputError, match="over this file system's limit"):
        dataset.download(tmp_path / "download")
    dataset.download()
    assert Path(dataset.files.one().local_path).read_bytes() == b"long"


def test_a_local_name_that_is_not_utf8_is_a_library_error(emulator, bucket, tmp_path):
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "fine.csv").write_text("ok")
    raw = os.fsencode(folder) + b"/caf\xe9.csv"  # Latin-1, not UTF-8
    with open(raw, "wb") as file:
        file.write(b"latin")
    with pytest.raises(InvalidInputError, match="not valid UTF-8"):
        Dataset(folder).upload(f"gs://{bucket}/up-{uuid.uuid4().hex[:6]}")
