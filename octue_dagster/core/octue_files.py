"""Local metadata: the `.octue` file beside local datafiles, in Octue SDK format, safe for concurrent writers.

The file holds `{"datafiles": {"<file name>": {<entry>}}, ...}`. Keys this library does not own (such as the
`"dataset"` entry Octue's SDK writes) are kept as they are. Updates hold a cross-process lock, re-read the file and
replace it atomically, so concurrent processes lose no entries and a crash never leaves half a file.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import filelock

from octue_dagster.core import cache
from octue_dagster.core.atomic import atomic_replace
from octue_dagster.exceptions import CorruptMetadataFileError
from octue_dagster.core.metadata import decode_json, encode_json

METADATA_FILENAME = ".octue"


def metadata_path_for(local_path: str | os.PathLike[str]) -> Path:
    """The `.octue` file that holds metadata for the file at `local_path`."""
    return Path(local_path).absolute().parent / METADATA_FILENAME


def read_metadata_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The decoded contents of a `.octue` file (`{}` if it does not exist); a corrupt file raises and is kept."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise CorruptMetadataFileError(str(path), "it is not UTF-8 text") from None
    if not text.strip():
        return {}
    try:
        records = decode_json(text)
    except ValueError as error:
        raise CorruptMetadataFileError(str(path), f"not valid JSON: {error}") from None
    if not isinstance(records, dict):
        raise CorruptMetadataFileError(str(path), "its top level is not a JSON object")
    datafiles = records.get("datafiles", {})
    if not isinstance(datafiles, dict):
        raise CorruptMetadataFileError(str(path), "its 'datafiles' entry is not a JSON object")
    return records


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
    """The `.octue` entry for the file at `local_path` (a copy), or `None` if there is none."""
    records = _read_recent(metadata_path_for(local_path))
    return copy.deepcopy(records.get("datafiles", {}).get(Path(local_path).name))


def _lock_for(path: Path) -> filelock.FileLock:
    return filelock.FileLock(cache.lock_path(f"octue-file:{path.resolve()}"), timeout=cache.LOCK_TIMEOUT_SECONDS)


def update_metadata_file(path: str | os.PathLike[str], change: Callable[[dict[str, Any]], None]) -> None:
    """Apply `change` to the decoded records of a `.octue` file under a cross-process lock, then write atomically."""
    path = Path(path).absolute()
    with _lock_for(path):
        records = read_metadata_file(path)
        before = json.dumps(records, sort_keys=True, default=repr)
        records.setdefault("datafiles", {})
        change(records)
        if json.dumps(records, sort_keys=True, default=repr) == before and path.exists():
            return
        with atomic_replace(path) as temporary:
            with open(temporary, "w", encoding="utf-8") as file:
                file.write(encode_json(records, indent=4))
                file.write("\n")


def write_entry(local_path: str | os.PathLike[str], entry: dict[str, Any]) -> None:
    """Set the `.octue` entry for the file at `local_path`, keeping every other entry."""
    name = Path(local_path).name

    def change(records: dict[str, Any]) -> None:
        records["datafiles"][name] = entry

    update_metadata_file(metadata_path_for(local_path), change)


def remove_entry(local_path: str | os.PathLike[str]) -> None:
    """Remove the `.octue` entry for the file at `local_path`, if there is one."""
    name = Path(local_path).name
    if not metadata_path_for(local_path).exists():
        return

    def change(records: dict[str, Any]) -> None:
        records["datafiles"].pop(name, None)

    update_metadata_file(metadata_path_for(local_path), change)
