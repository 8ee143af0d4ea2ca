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
    """A relative path inside a dataset, refusing absolute paths and `..` (an object name must not escape a folder)."""
    parts = PurePosixPath(relative.replace(os.sep, "/")).parts
    if not parts or relative.startswith("/") or any(part in ("..", ".", "") for part in parts) or "\x00" in relative:
        raise InvalidInputError(
            f"{relative!r} ({where}) is not a plain relative path inside the dataset: it is empty, absolute or "
            f"contains '.', '..' or a NUL character. Rename it, or give path_in_dataset."
        )
    return PurePosixPath(*parts)


def colliding_paths(paths: Iterable[PurePosixPath]) -> list[str]:
    """The relative paths that would meet in one folder: given twice, or both a file and a folder of another file
    (`sub` and `sub/x`); sorted. Downloading them would overwrite one file with another or fail half-way."""
    listed = list(paths)
    seen: set[PurePosixPath] = set()
    colliding = set()
    for path in listed:
        if path in seen:
            colliding.add(str(path))
        seen.add(path)
    folders = {parent for path in listed for parent in path.parents if parent != PurePosixPath(".")}
    colliding.update(str(path) for path in listed if path in folders)
    return sorted(colliding)


def name_limit(folder: Path) -> int:
    """The longest file name (in bytes) the file system holding `folder` (or its nearest existing parent) takes."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def too_long_paths(paths: Iterable[PurePosixPath], limit: int) -> list[str]:
    """The relative paths with a part longer than `limit` bytes (an object name may hold up to 1024 bytes between
    slashes; a local file name rarely more than 255), sorted."""
    return sorted(
        str(path) for path in paths if any(len(os.fsencode(part)) > limit for part in path.parts)
    )


def check_download_targets(relatives: Iterable[Path | PurePosixPath], root: Path, what: str) -> None:
    """Refuse, before anything is fetched, a download of `what` whose files (at `relatives` under `root`) would not
    each land in a place of their own: names too long for the file system, or paths that meet (`colliding_paths`)."""
    paths = [PurePosixPath(Path(relative).as_posix()) for relative in relatives]
    limit = name_limit(root)
    too_long = too_long_paths(paths, limit)
    if too_long:
        raise InvalidInputError(
            f"Some file names of {what} are too long for a file in {str(root)!r} (over {limit} bytes): "
            f"{[name[:80] + '...' for name in too_long[:3]]}. Nothing was downloaded; download those files one by "
            f"one (datafile.download(path)) under shorter names."
        )
    colliding = colliding_paths(paths)
    if colliding:
        raise InvalidInputError(
            f"Several files of {what} would be downloaded to the same place in {str(root)!r} (one overwriting "
            f"another, or a file where a folder must be): {colliding[:5]}. Nothing was downloaded; download the "
            f"files one by one (datafile.download(path)) to places you choose."
        )


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
    "check_download_targets",
    "colliding_paths",
    "name_limit",
    "too_long_paths",
    "SIGNED_METADATA_DIRECTORY",
    "is_octue_metadata_object",
    "local_file_paths",
    "prefix_of",
    "safe_relative_path",
    "select_cloud_files",
    "stored_file_paths",
]
