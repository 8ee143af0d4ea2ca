"""Moving a dataset's files: the upload and download loops, run concurrently with bounded memory.

`Dataset.upload`/`download` decide what goes where; these functions send it, file by file, on the bounded runner of
`octue_dagster.core.storage.runner`, and report what each file needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from octue_dagster.core.local import hashing
from octue_dagster.core.metadata import values as md
from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.store import MULTIPART_LIMIT_BYTES, UPLOAD_CHUNK_BYTES, ObjectInfo
from octue_dagster.core.storage.runner import run_all


@dataclasses.dataclass
class TransferReport:
    """What a dataset upload or download did, file by file, counted."""

    transferred: list[str] = dataclasses.field(default_factory=list)
    copied: list[str] = dataclasses.field(default_factory=list)
    patched: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)
    #: Objects found under the destination before the upload that the dataset does not hold (never touched here).
    others: list[ObjectInfo] = dataclasses.field(default_factory=list)


def upload_memory_bytes(size: int) -> int:
    """What uploading a file of `size` bytes holds in memory: a one-request (multipart) upload builds its whole body
    from the file (about four copies, measured), a resumable one holds one chunk at a time (plus request buffers)."""
    if size <= MULTIPART_LIMIT_BYTES:
        return 4 * size
    return UPLOAD_CHUNK_BYTES + MULTIPART_LIMIT_BYTES


def _wanted_metadata(datafile: Datafile) -> dict[str, str]:
    return md.to_cloud_metadata(datafile.id, datafile.timestamp, datafile.labels, datafile.tags)


def _holds_content(existing: ObjectInfo | None, datafile: Datafile) -> bool:
    return existing is not None and existing.crc32c == datafile.hash_value


def _keep_if_unchanged(datafile: Datafile, target: GCSPath, existing: ObjectInfo) -> bool:
    """If the listed object (holding the file's content) also holds exactly its metadata, make it the datafile's
    cloud object and say so."""
    metadata = _wanted_metadata(datafile)
    sdk_version = f"{md.NAMESPACE}__sdk_version"
    if any(existing.custom_metadata.get(key) != value for key, value in metadata.items() if key != sdk_version):
        return False
    # The datafile records its own metadata as the stored one instead of parsing the object's back (`_switch_to`):
    # they are equal, and parsing was a third of the cost of re-uploading an unchanged dataset.
    datafile._cloud, datafile._object = target, existing  # noqa: SLF001
    datafile._mark_persisted()  # noqa: SLF001
    return True


def upload_one(
    datafile: Datafile, target: GCSPath, existing: ObjectInfo | None, *, holds_content: bool | None = None
) -> str:
    """Put one file at `target`, doing nothing if the listed object already holds its content and metadata.

    `holds_content` is whether `existing` has the file's crc32c, if the caller has just compared them.
    """
    if holds_content if holds_content is not None else _holds_content(existing, datafile):
        if _keep_if_unchanged(datafile, target, existing):  # type: ignore[arg-type]
            return "unchanged"
        datafile.upload(str(target))
        return "patched"
    was_in_cloud = datafile.object_info is not None and not datafile.exists_locally
    datafile.upload(str(target))
    return "copied" if was_in_cloud else "transferred"


def upload_memory_of(datafile: Datafile, existing: ObjectInfo | None, *, holds_content: bool | None = None) -> int:
    """What `upload_one` will hold in memory: nothing for a file already there or copied server side."""
    if holds_content if holds_content is not None else _holds_content(existing, datafile):
        return 0
    if datafile.object_info is not None and not datafile.exists_locally:
        return 0
    return upload_memory_bytes(datafile.size_bytes or 0)


class _Upload:
    """One file to put at its target, with the listed object there; whether that object already holds the file's
    content is worked out once (it needs the file's hash), for both the memory budget and the upload."""

    __slots__ = ("datafile", "target", "existing", "_holds")

    def __init__(self, datafile: Datafile, target: GCSPath, existing: ObjectInfo | None) -> None:
        self.datafile, self.target, self.existing = datafile, target, existing
        self._holds: bool | None = None

    @property
    def holds_content(self) -> bool:
        if self._holds is None:
            self._holds = _holds_content(self.existing, self.datafile)
        return self._holds

    def memory(self) -> int:
        return upload_memory_of(self.datafile, self.existing, holds_content=self.holds_content)

    def settle_without_reading(self) -> tuple[str, str] | None:
        """("unchanged", target) if the listed object holds this local file's content (by the hash already known for
        the file as it is now: no read) and metadata; else `None`, for `send` to decide on a worker thread."""
        datafile, existing = self.datafile, self.existing
        local = datafile._local  # noqa: SLF001 - a local file's content is its local copy's
        if existing is None or local is None or datafile._cloud_is_source:  # noqa: SLF001
            return None
        if hashing.cached_hash(local) != existing.crc32c or existing.crc32c is None:
            return None
        self._holds = True
        if not _keep_if_unchanged(datafile, self.target, existing):
            return None  # a metadata patch: a request, sent from a worker thread
        return "unchanged", str(self.target)

    def send(self) -> tuple[str, str]:
        return upload_one(self.datafile, self.target, self.existing, holds_content=self.holds_content), str(self.target)


def upload_files(
    plan: Sequence[tuple[Datafile, GCSPath]],
    existing: Mapping[str, ObjectInfo],
    *,
    max_workers: int | None,
    description: str,
) -> TransferReport:
    """Put each datafile at its target (`existing` is the destination's listing by object name), concurrently."""
    report = TransferReport()
    uploads = (_Upload(datafile, target, existing.get(target.name)) for datafile, target in plan)
    for outcome, target in run_all(
        _Upload.send,
        uploads,
        concurrency=max_workers,
        memory_of=_Upload.memory,
        progress=description,
        total=len(plan),
        quick=_Upload.settle_without_reading,
    ):
        getattr(report, outcome).append(target)
    return report


def download_files(plan: Sequence[tuple[Datafile, Path | None]], *, max_workers: int | None, description: str) -> None:
    """Download each datafile (to its target, or into the cache for `None`), concurrently and checksum-verified."""

    def fetch(item: tuple[Datafile, Path | None]) -> str:
        file, target = item
        return file.download(local_path=target)

    for _ in run_all(fetch, plan, concurrency=max_workers, progress=description, total=len(plan)):
        pass


__all__ = ["TransferReport", "download_files", "upload_files", "upload_memory_bytes", "upload_memory_of", "upload_one"]
