"""Comparing what a materialization recorded with what GCS holds now: pure functions, no requests.

A stored object is *intact* when it is still the generation the latest materialization recorded, with the recorded
crc32c, and (for a datafile asset's object) still carries the I/O manager's owner mark for that asset partition.
Changing only its metadata (re-tagging: a new metageneration, same generation) keeps it intact. Each way it can stop
being intact gets its own sentence, naming the URI and both versions:

- deleted: there is no object at the URI;
- overwritten: a new generation with other content (Octue's SDK or anyone uploading to the name);
- replaced with the same content: a new generation with the recorded crc32c, as when an older generation is copied
  back onto the name (a restore) or the same bytes are uploaded again: what Dagster recorded is no longer the object;
- lost its owner mark: the I/O manager would no longer treat it as the asset's (it refuses to overwrite it).

A dataset asset's files (each recorded with its crc32c and generation) are compared with one listing of the folder;
dataset files carry no owner mark of their own (the folder's `.octue` object records which are the I/O manager's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

from octue_dagster.core.metadata import values as md
from octue_dagster.core.listing.selection import is_datafile_object
from octue_dagster.core.storage.store import ObjectInfo
from octue_dagster.dagster.owned_objects import OWNER_KEY, owner_of
from octue_dagster.dagster.recorded_objects import RecordedAsset, RecordedFile
from octue_dagster.dagster.ui_metadata import files_digest
from octue_dagster.exceptions import InvalidMetadataError


@dataclasses.dataclass(frozen=True)
class FileFinding:
    """One object: where it is, what was recorded, what GCS holds now (`None`: gone), and what is wrong."""

    uri: str
    recorded: RecordedFile
    current: ObjectInfo | None
    intact_problems: tuple[str, ...] = ()
    metadata_problems: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Finding:
    """Everything one asset partition's check found: one `FileFinding` per recorded object."""

    recorded: RecordedAsset
    files: tuple[FileFinding, ...] = ()
    #: A problem with the partition as a whole (its objects could not be read).
    error: str | None = None
    #: What could not be confirmed (a dataset's files beyond its recorded table, whose digest differs): a warning.
    unconfirmed: str | None = None

    @property
    def intact_problems(self) -> list[str]:
        problems = [problem for file in self.files for problem in file.intact_problems]
        return [self.error, *problems] if self.error else problems

    @property
    def metadata_problems(self) -> list[str]:
        problems = [problem for file in self.files for problem in file.metadata_problems]
        return [self.error, *problems] if self.error else problems


def _version(generation: int | None, crc32c: str | None) -> str:
    parts = [f"generation {generation}" if generation is not None else None, f"crc32c {crc32c}" if crc32c else None]
    return ", ".join(part for part in parts if part) or "no recorded version"


def intact_problems(uri: str, recorded: RecordedFile, current: ObjectInfo | None, owner: str | None) -> list[str]:
    """What is wrong with the object at `uri` compared with the record (empty: intact). `owner` is the owner mark the
    object must carry, or `None` for objects that carry none (a dataset's files)."""
    was = _version(recorded.generation, recorded.crc32c)
    if current is None:
        return [f"{uri} was deleted: there is no object there now (the latest materialization recorded {was})."]
    problems = []
    same_content = recorded.crc32c is None or current.crc32c == recorded.crc32c
    if not same_content:
        problems.append(
            f"{uri} was overwritten outside Dagster: it is now {_version(current.generation, current.crc32c)}; the "
            f"latest materialization recorded {was}."
        )
    elif recorded.generation is not None and current.generation != recorded.generation:
        problems.append(
            f"{uri} was replaced outside Dagster by generation {current.generation} with the same crc32c "
            f"{current.crc32c} (an older generation restored onto the name, or the same bytes uploaded again); the "
            f"latest materialization recorded generation {recorded.generation}."
        )
    if owner is not None:
        mark = owner_of(current)
        if mark is None:
            problems.append(
                f"{uri} lost the I/O manager's owner mark (its custom metadata {OWNER_KEY!r} is gone), so the I/O "
                f"manager no longer treats it as this asset's and will refuse to overwrite it."
            )
        elif mark != owner:
            problems.append(f"{uri} carries the owner mark {mark!r}, not this asset partition's {owner!r}.")
    return problems


def metadata_problems(
    uri: str, current: ObjectInfo | None, required_labels: Collection[str], required_tags: Collection[str]
) -> list[str]:
    """The required labels and tag names the object at `uri` lacks now, as sentences (empty: all present)."""
    if not required_labels and not required_tags:
        return []
    if current is None:
        return [f"{uri} was deleted, so it has none of the required labels and tags."]
    try:
        stored = md.from_cloud_metadata(current.custom_metadata, uri)
    except InvalidMetadataError as error:
        return [f"{uri}'s Octue metadata cannot be read, so its labels and tags cannot be checked: {error}"]
    problems = []
    missing_labels = sorted(set(required_labels) - set(stored.labels or ()))
    if missing_labels:
        problems.append(f"{uri} lacks the required label(s) {', '.join(map(repr, missing_labels))}.")
    missing_tags = sorted(set(required_tags) - set(stored.tags or {}))
    if missing_tags:
        problems.append(f"{uri} lacks the required tag(s) {', '.join(map(repr, missing_tags))}.")
    return problems


def _file_finding(
    uri: str,
    recorded: RecordedFile,
    current: ObjectInfo | None,
    owner: str | None,
    required_labels: Collection[str],
    required_tags: Collection[str],
) -> FileFinding:
    return FileFinding(
        uri,
        recorded,
        current,
        tuple(intact_problems(uri, recorded, current, owner)),
        tuple(metadata_problems(uri, current, required_labels, required_tags)),
    )


def datafile_finding(
    recorded: RecordedAsset,
    current: ObjectInfo | None,
    owner: str,
    required_labels: Collection[str] = (),
    required_tags: Collection[str] = (),
) -> Finding:
    """The finding for a datafile asset partition, from its object's metadata now (`None`: no object)."""
    (file,) = recorded.files
    assert recorded.uri is not None
    return Finding(recorded, (_file_finding(recorded.uri, file, current, owner, required_labels, required_tags),))


def dataset_finding(
    recorded: RecordedAsset,
    listing: Mapping[str, ObjectInfo],
    required_labels: Collection[str] = (),
    required_tags: Collection[str] = (),
) -> Finding:
    """The finding for a dataset asset partition, from one listing of its folder (objects by relative name).

    Each file in the recorded table is compared by generation and crc32c. When the table left files out (a large
    dataset), the others are compared through the recorded digest of every file's (path, crc32c): if the folder's
    datafiles give the same digest, they are exactly the dataset's files with their recorded content (and their labels
    and tags are checked too); if not, a file beyond the table changed, or the folder holds files that are not the
    dataset's, which the finding reports as unconfirmed (a warning) rather than as a failure.
    """
    assert recorded.uri is not None
    folder = recorded.uri.rstrip("/")
    files = [
        _file_finding(f"{folder}/{file.name}", file, listing.get(file.name), None, required_labels, required_tags)
        for file in recorded.files
    ]
    if not recorded.files_not_recorded:
        return Finding(recorded, tuple(files))
    present = {name: info for name, info in listing.items() if is_datafile_object(info.path.name)}
    if recorded.files_digest is not None and recorded.files_digest == files_digest(
        (name, info.crc32c) for name, info in present.items()
    ):
        listed = {file.name for file in recorded.files}
        for name in sorted(set(present) - listed):
            info = present[name]
            uri = f"{folder}/{name}"
            files.append(
                FileFinding(
                    uri,
                    RecordedFile(name, info.crc32c, None),
                    info,
                    metadata_problems=tuple(metadata_problems(uri, info, required_labels, required_tags)),
                )
            )
        return Finding(recorded, tuple(files))
    return Finding(
        recorded,
        tuple(files),
        unconfirmed=f"{folder}: the {recorded.files_not_recorded} files beyond the {len(recorded.files)} the "
        f"materialization listed could not be confirmed: the folder's files no longer match the recorded digest of "
        f"every file's path and crc32c (a file changed, was added or removed, or the folder holds files that are not "
        f"the dataset's).",
    )


__all__ = ["FileFinding", "Finding", "datafile_finding", "dataset_finding", "intact_problems", "metadata_problems"]
