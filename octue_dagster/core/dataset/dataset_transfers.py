"""Moving a dataset's files: the upload and download loops, run concurrently with bounded memory.

`Dataset.upload`/`download` decide what goes where; these functions send it, file by file, on the bounded runner of
`octue_dagster.core.storage.runner`, and report what each file needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

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


def upload_one(datafile: Datafile, target: GCSPath, existing: ObjectInfo | None) -> str:
    """Put one file at `target`, doing nothing if the listed object already holds its content and metadata."""
    if _holds_content(existing, datafile):
        metadata = _wanted_metadata(datafile)
        if all(
            existing.custom_metadata.get(key) == value  # type: ignore[union-attr]
            for key, value in metadata.items()
            if key != f"{md.NAMESPACE}__sdk_version"
        ):
            datafile._switch_to(target, existing)  # type: ignore[arg-type]  # noqa: SLF001
            return "unchanged"
        datafile.upload(str(target))
        return "patched"
    was_in_cloud = datafile.object_info is not None and not datafile.exists_locally
    datafile.upload(str(target))
    return "copied" if was_in_cloud else "transferred"


def upload_memory_of(datafile: Datafile, existing: ObjectInfo | None) -> int:
    """What `upload_one` will hold in memory: nothing for a file already there or copied server side."""
    if _holds_content(existing, datafile) or (datafile.object_info is not None and not datafile.exists_locally):
        return 0
    return upload_memory_bytes(datafile.size_bytes or 0)


def upload_files(
    plan: Sequence[tuple[Datafile, GCSPath]],
    existing: Mapping[str, ObjectInfo],
    *,
    max_workers: int | None,
    description: str,
) -> TransferReport:
    """Put each datafile at its target (`existing` is the destination's listing by object name), concurrently."""
    report = TransferReport()

    def send(item: tuple[Datafile, GCSPath]) -> tuple[str, str]:
        datafile, target = item
        return upload_one(datafile, target, existing.get(target.name)), str(target)

    def memory_of(item: tuple[Datafile, GCSPath]) -> int:
        datafile, target = item
        return upload_memory_of(datafile, existing.get(target.name))

    for outcome, target in run_all(
        send, plan, concurrency=max_workers, memory_of=memory_of, progress=description, total=len(plan)
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
