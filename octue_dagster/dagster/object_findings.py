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

from octue_dagster.core import metadata as md
from octue_dagster.core.store import ObjectInfo
from octue_dagster.dagster.owned_objects import OWNER_KEY, owner_of
from octue_dagster.dagster.recorded_objects import RecordedAsset, RecordedFile
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
    """The finding for a dataset asset partition, from one listing of its folder (objects by relative name)."""
    assert recorded.uri is not None
    folder = recorded.uri.rstrip("/")
    return Finding(
        recorded,
        tuple(
            _file_finding(f"{folder}/{file.name}", file, listing.get(file.name), None, required_labels, required_tags)
            for file in recorded.files
        ),
    )


__all__ = ["FileFinding", "Finding", "datafile_finding", "dataset_finding", "intact_problems", "metadata_problems"]
