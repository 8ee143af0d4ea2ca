"""Which files make up a dataset folder, and where they go: pure selection over a listing or a folder walk.

Octue's SDK keeps a dataset's metadata in a `.octue` file (or object) in its folder and signed-URL metadata under
`.signed_metadata_files/`; neither is ever a file of the dataset, and every listing of the library skips them
(`is_octue_metadata_object`) as Octue's SDK does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from octue_dagster.core.metadata import octue_files
from octue_dagster.core.local.atomic import is_temporary
from octue_dagster.core.storage.gcs_path import GCSPath, make_gcs_path
from octue_dagster.core.storage.store import ObjectInfo
from octue_dagster.exceptions import InvalidInputError

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
    """A relative path inside a dataset, refusing absolute paths and `..` (an object name must not escape a folder)."""
    parts = PurePosixPath(relative.replace(os.sep, "/")).parts
    if not parts or relative.startswith("/") or any(part in ("..", ".", "") for part in parts):
        raise InvalidInputError(
            f"{relative!r} ({where}) is not a plain relative path inside the dataset: it is empty, absolute or "
            f"contains '.' or '..'. Rename it, or give path_in_dataset."
        )
    return PurePosixPath(*parts)


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
    "local_file_paths",
    "prefix_of",
    "safe_relative_path",
    "select_cloud_files",
]
