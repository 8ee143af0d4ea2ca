"""Local metadata: the `.octue` file beside local datafiles, in Octue SDK format, safe for concurrent writers.

The file holds `{"datafiles": {"<file name>": {<entry>}}, ...}`. It is parsed without interpretation (NaN, sets,
datetimes and unknown `_type` objects stay as they were written), so entries and keys this library does not own,
such as other files' entries and the `"dataset"` entry Octue's SDK writes, are written back as they were.

Updates lock the `.octue` file itself (an advisory `flock` on the file found at the path, re-checked after locking
because each update replaces the file by renaming a new one over it). So the lock is the same for every process and
every user who can read the folder, whatever their cache directories, and no lock file is created beside the data,
where Octue's `Dataset` would list it as a datafile (it skips only files named exactly `.octue`). A `.octue` file is
created with `link`, which fails if another writer created it first, so two first writers cannot overwrite each
other either. Octue's SDK writes without a lock; its changes between our read and our rename are what the
three-way merge in `Datafile` keeps.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from octue_dagster.core.local import locks
from octue_dagster.core.local.atomic import sweep_stale_temporaries, temporary_path_for
from octue_dagster.core.metadata.values import encode_json, parse_raw_json
from octue_dagster.exceptions import CorruptMetadataFileError, MetadataFileBusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: fall back to a lock file in the per-user cache
    fcntl = None  # type: ignore[assignment]

METADATA_FILENAME = ".octue"
_MAX_POLL_SECONDS = 0.05


def metadata_path_for(local_path: str | os.PathLike[str]) -> Path:
    """The `.octue` file that holds metadata for the file at `local_path`."""
    return Path(local_path).absolute().parent / METADATA_FILENAME


def _parse(data: bytes, path: Path) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptMetadataFileError(str(path), "it is not UTF-8 text") from None
    if not text.strip():
        return {}
    try:
        records = parse_raw_json(text)
    except ValueError as error:
        raise CorruptMetadataFileError(str(path), f"not valid JSON: {error}") from None
    if not isinstance(records, dict):
        raise CorruptMetadataFileError(str(path), "its top level is not a JSON object")
    if not isinstance(records.get("datafiles", {}), dict):
        raise CorruptMetadataFileError(str(path), "its 'datafiles' entry is not a JSON object")
    return records


def read_metadata_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed contents of a `.octue` file (`{}` if it does not exist), uninterpreted (see `parse_raw_json`).

    A corrupt file raises `CorruptMetadataFileError` and is never overwritten.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    return _parse(data, path)


#: Decoded `.octue` files recently read, by path, with the identity (inode, size, mtime) of the version decoded: a
#: folder of 1,000 datafiles is then decoded once, not once per file. Writers replace the file (a new inode), so a
#: changed file is never served from here.
_RECENT_FILES: collections.OrderedDict[str, tuple[tuple[int, int, int], dict[str, Any]]] = collections.OrderedDict()
_RECENT_LIMIT = 64
_recent_lock = threading.Lock()


def _read_recent(path: Path) -> dict[str, Any]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    key = str(path)
    with _recent_lock:
        cached = _RECENT_FILES.get(key)
        if cached is not None and cached[0] == identity:
            _RECENT_FILES.move_to_end(key)
            return cached[1]
    records = read_metadata_file(path)
    with _recent_lock:
        _RECENT_FILES[key] = (identity, records)
        while len(_RECENT_FILES) > _RECENT_LIMIT:
            _RECENT_FILES.popitem(last=False)
    return records


def read_entry(local_path: str | os.PathLike[str]) -> Any:
    """The uninterpreted `.octue` entry for the file at `local_path` (a copy), or `None` if there is none."""
    records = _read_recent(metadata_path_for(local_path))
    entry = records.get("datafiles", {}).get(Path(local_path).name)
    try:
        return copy.deepcopy(entry)
    except RecursionError:
        # Nested too deeply to copy: handed over as it is (readers never change it) for the reader to reject, naming
        # the field, as it rejects any value nested too deeply.
        return entry


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev)


def _open_for_locking(path: Path) -> int | None:
    try:
        # Read-write where allowed (NFS emulates flock with POSIX locks, which need it); read-only otherwise, as a
        # file written by another user usually is.
        return os.open(path, os.O_RDWR)
    except PermissionError:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None


def _flock(descriptor: int, path: Path, deadline: float) -> None:
    delay = 0.001
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise MetadataFileBusyError(
                    f"Another process has held the lock on the metadata file {str(path)!r} for over "
                    f"{locks.LOCK_TIMEOUT_SECONDS:.0f} s, so it was not changed. Try again; if no process is writing it, "
                    f"look for a stuck one."
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, _MAX_POLL_SECONDS)


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[bool]:
    """Hold the cross-process, cross-user lock on the `.octue` file at `path` while the block runs.

    Yields `True` when the file exists and is locked, `False` when there is no file (the caller then creates it with
    `os.link`, which fails if another writer created it meanwhile, and tries again).
    """
    path = Path(path).absolute()
    if fcntl is None:  # pragma: no cover - Windows
        import filelock

        with filelock.FileLock(locks.lock_path(f"octue-file:{path.resolve()}"), timeout=locks.LOCK_TIMEOUT_SECONDS):
            yield path.exists()
        return
    deadline = time.monotonic() + locks.LOCK_TIMEOUT_SECONDS
    while True:
        descriptor = _open_for_locking(path)
        if descriptor is None:
            yield False
            return
        try:
            _flock(descriptor, path, deadline)
            # The holder we waited for may have renamed a new file over the one we locked: lock that one instead.
            if _same_file(descriptor, path):
                yield True
                return
        finally:
            os.close(descriptor)


def update_metadata_file(
    path: str | os.PathLike[str],
    change: Callable[[dict[str, Any]], None],
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Apply `change` to the parsed records of a `.octue` file under its lock, then replace the file atomically.

    `before_commit` runs once, under the lock, after the new file has been fully written under a temporary name and
    before it is renamed into place: a caller that must not change anything unless the metadata can be recorded (a
    new file's content renamed into place) does it there. If `change` or the encoding raises, neither runs.
    """
    path = Path(path).absolute()
    committed = False
    while True:
        with locked(path) as exists:
            records = read_metadata_file(path) if exists else {}
            before = json.dumps(records, sort_keys=True)
            records.setdefault("datafiles", {})
            change(records)
            if exists and json.dumps(records, sort_keys=True, default=repr) == before:
                if before_commit is not None and not committed:
                    before_commit()
                return
            text = encode_json(records, indent=4) + "\n"
            sweep_stale_temporaries(path.parent)
            temporary = temporary_path_for(path)
            try:
                with open(temporary, "w", encoding="utf-8") as file:
                    file.write(text)
                    file.flush()
                    os.fsync(file.fileno())
                if before_commit is not None and not committed:
                    before_commit()
                    committed = True
                if exists:
                    os.replace(temporary, path)
                    return
                try:
                    os.link(temporary, path)
                    return
                except FileExistsError:
                    continue  # another writer created the file first: merge with what it wrote
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)


def update_entry(
    local_path: str | os.PathLike[str],
    change: Callable[[Any], Any],
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Replace the `.octue` entry of the file at `local_path` with `change(current entry or None)` (`None` removes
    it), keeping every other entry and key as it was. See `update_metadata_file` for `before_commit`."""
    name = Path(local_path).name

    def change_records(records: dict[str, Any]) -> None:
        entry = change(records["datafiles"].get(name))
        if entry is None:
            records["datafiles"].pop(name, None)
        else:
            records["datafiles"][name] = entry

    update_metadata_file(metadata_path_for(local_path), change_records, before_commit)


def write_entry(local_path: str | os.PathLike[str], entry: dict[str, Any]) -> None:
    """Set the `.octue` entry for the file at `local_path`, keeping every other entry."""
    update_entry(local_path, lambda _: entry)


def remove_entry(local_path: str | os.PathLike[str]) -> None:
    """Remove the `.octue` entry for the file at `local_path`, if there is one."""
    if metadata_path_for(local_path).exists():
        update_entry(local_path, lambda _: None)
