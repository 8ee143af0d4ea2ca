"""Which files make up a dataset folder, and where they go: pure selection over a listing or a folder walk.

Octue's SDK keeps a dataset's metadata in a `.octue` file (or object) in its folder and signed-URL metadata under
`.signed_metadata_files/`; neither is ever a file of the dataset, and every listing of the library skips them
(`is_octue_metadata_object`) as Octue's SDK does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from octue_dagster.core.metadata import octue_files
from octue_dagster.core.local.atomic import is_temporary
from octue_dagster.core.storage.gcs_path import GCSPath, make_gcs_path
from octue_dagster.core.storage.store import ObjectInfo
from octue_dagster.exceptions import InvalidInputError, InvalidMetadataError

METADATA_FILENAME = octue_files.METADATA_FILENAME
#: Where Octue's SDK puts the metadata files behind a dataset's signed URLs; never part of the dataset.
SIGNED_METADATA_DIRECTORY = ".signed_metadata_files"


def is_octue_metadata_object(name: str) -> bool:
    """Whether an object name is one of Octue's metadata objects, which a cloud dataset never holds as a file."""
    return name.endswith(METADATA_FILENAME) or SIGNED_METADATA_DIRECTORY in name


def prefix_of(path: GCSPath) -> GCSPath:
    """The listing prefix of a dataset folder: its name with exactly one trailing `/` (empty for a bucket root)."""
    name = path.name.strip("/")
    return make_gcs_path(path.bucket, f"{name}/" if name else "", allow_empty_name=True)


def safe_relative_path(relative: str, where: str) -> PurePosixPath:
    """A relative path inside a dataset, refusing absolute paths and `..` (an object name must not escape a folder)
    and local names that are not UTF-8 (no object can carry them)."""
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{relative.encode('utf-8', 'surrogateescape')!r} ({where}) is not valid UTF-8, and GCS object names "
            f"(and Octue's metadata) must be: rename the file (e.g. `convmv -f latin1 -t utf8`)."
        ) from None
    parts = PurePosixPath(relative.replace(os.sep, "/")).parts
    if not parts or relative.startswith("/") or any(part in ("..", ".", "") for part in parts) or "\x00" in relative:
        raise InvalidInputError(
            f"{relative!r} ({where}) is not a plain relative path inside the dataset: it is empty, absolute or "
            f"contains '.', '..' or a NUL character. Rename it, or give path_in_dataset."
        )
    return PurePosixPath(*parts)


def download_targets(
    files: Sequence[tuple[str, str]], root: Path
) -> list[Path]:
    """Where each of a cloud dataset's files goes under the local folder `root`: `files` is (object name, relative
    path inside the dataset) per file. Refuses, naming the objects, names that would meet on disk (`a//b.csv` and
    `a/b.csv`, `./c.csv` and `c.csv`, or names that differ only in case on a case-insensitive disk), and names the
    local file system cannot hold (a part over its name limit, as a 1,024-byte object name is), before anything is
    downloaded."""
    name_max = _limit(root, "PC_NAME_MAX", 255)
    path_max = _limit(root, "PC_PATH_MAX", 4096)
    fold = _case_insensitive(root)
    seen: dict[str, str] = {}
    targets = []
    for object_name, relative in files:
        target = root.joinpath(*PurePosixPath(relative).parts)
        too_long = [part for part in PurePosixPath(relative).parts if len(os.fsencode(part)) > name_max]
        if too_long or len(os.fsencode(str(target))) >= path_max:
            raise InvalidInputError(
                f"The object {object_name!r} cannot be downloaded under {root}: "
                + (
                    f"its name part {too_long[0][:40]!r}... is {len(os.fsencode(too_long[0]))} bytes, over this file "
                    f"system's limit of {name_max}"
                    if too_long
                    else f"the local path would be {len(os.fsencode(str(target)))} bytes, over the limit of {path_max}"
                )
                + ". Download it without a local folder (`dataset.download()` keeps every file in the cache under a "
                "hashed name, reachable through each file's `local_path`), or rename the object."
            )
        key = str(target).casefold() if fold else str(target)
        if key in seen:
            raise InvalidInputError(
                f"The objects {seen[key]!r} and {object_name!r} would both be downloaded to {target}, so one would "
                f"be missing: rename one of them (names like 'a//b.csv' and 'a/b.csv', or './c.csv' and 'c.csv', "
                f"are one path on disk), or download without a local folder."
            )
        seen[key] = object_name
        targets.append(target)
    folders = folders_of_others([PurePosixPath(relative) for _, relative in files])
    if folders:
        raise InvalidInputError(
            f"Some files would be downloaded to the same place under {root} as a folder other files need (a file "
            f"where a folder must be): {folders[:5]}. Nothing was downloaded; rename one of them, or download "
            f"without a local folder."
        )
    return targets


def folders_of_others(paths: Sequence[PurePosixPath]) -> list[str]:
    """The relative paths that are also a folder of another path (`sub` and `sub/x`), sorted: on disk, one of
    them cannot be written."""
    folders = {parent for path in paths for parent in path.parents if parent != PurePosixPath(".")}
    return sorted(str(path) for path in paths if path in folders)


def stored_file_paths(listed: object, where: str) -> list[str]:
    """The `files` entry of a dataset's stored metadata, which must list `gs://` paths or http(s) URLs: an object
    in a bucket must not make this process read local files as the dataset's."""
    if not isinstance(listed, list) or not all(
        isinstance(path, str) and (path.startswith("gs://") or path.lower().startswith(("https://", "http://")))
        for path in listed
    ):
        raise InvalidMetadataError(
            f"The dataset metadata at {where} lists 'files' that are not gs:// paths or http(s) URLs; fix or remove "
            f"that entry, or pass ignore_stored_metadata=True."
        )
    return listed


def _limit(folder: Path, name: str, default: int) -> int:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return os.pathconf(existing, name)
    except (OSError, ValueError, AttributeError):
        return default


def _case_insensitive(folder: Path) -> bool:
    """Whether names differing only in case are one file where `folder` is (macOS and Windows disks usually)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    swapped = existing.with_name(existing.name.swapcase()) if existing.name else existing
    return swapped != existing and swapped.exists() and os.path.samefile(existing, swapped)


def select_cloud_files(
    listing: Iterable[ObjectInfo], prefix: GCSPath, *, recursive: bool, include_octue_metadata_files: bool
) -> tuple[list[ObjectInfo], ObjectInfo | None]:
    """The objects of a listing that are files of the dataset at `prefix`, and the dataset's own `.octue` object."""
    files, metadata_object = [], None
    metadata_name = prefix.name + METADATA_FILENAME
    for info in listing:
        name = info.path.name
        if name == metadata_name:
            metadata_object = info
        if name.endswith("/") or not name.startswith(prefix.name):
            continue
        if SIGNED_METADATA_DIRECTORY in name or (name.endswith(METADATA_FILENAME) and not include_octue_metadata_files):
            continue
        if not recursive and "/" in name[len(prefix.name) :]:
            continue
        files.append(info)
    return files, metadata_object


def local_file_paths(folder: Path, *, recursive: bool, include_octue_metadata_files: bool) -> list[str]:
    """The files of the local dataset folder (sorted, top level only unless `recursive`), without `.octue` files
    and the library's own temporary files."""
    paths = []
    for level, (current, folders, names) in enumerate(os.walk(folder)):
        folders.sort()
        if not recursive and level > 0:
            break
        for name in sorted(names):
            if (name == METADATA_FILENAME and not include_octue_metadata_files) or is_temporary(name):
                continue
            paths.append(os.path.join(current, name))
    return paths


__all__ = [
    "METADATA_FILENAME",
    "SIGNED_METADATA_DIRECTORY",
    "is_octue_metadata_object",
    "download_targets",
    "local_file_paths",
    "prefix_of",
    "folders_of_others",
    "safe_relative_path",
    "select_cloud_files",
    "stored_file_paths",
]
