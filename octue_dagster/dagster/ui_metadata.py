"""Turning a datafile's (or dataset's) cloud state and Octue metadata into Dagster metadata values for the UI and event log."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from dagster import DataVersion, MetadataValue, TableColumn, TableRecord, TableSchema

from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.core.metadata.values import OctueJSONEncoder

#: The standard Dagster metadata key for where an asset's data is stored.
URI_KEY = "dagster/uri"


class _PlainJSONEncoder(OctueJSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, (set, frozenset)):
            return sorted(o, key=str)
        if hasattr(o, "isoformat"):
            return o.isoformat()
        return super().default(o)


def _json_safe(value: Any) -> Any:
    """Tag values may hold sets and datetimes; give Dagster plain JSON (sets as sorted lists, datetimes as ISO text)."""
    return json.loads(json.dumps(value, cls=_PlainJSONEncoder))


def datafile_metadata(datafile: Datafile) -> dict[str, MetadataValue]:
    """The output metadata recorded for a datafile stored in GCS: where it is, its hash, size and Octue metadata.

    Everything comes from what the datafile already knows (its last object metadata), so no request is made.
    """
    info = datafile.object_info
    path = datafile.gcs_path
    metadata: dict[str, MetadataValue] = {}
    if path is not None:
        metadata[URI_KEY] = MetadataValue.path(str(path))
        metadata["console_url"] = MetadataValue.url(path.console_url)
    metadata["crc32c"] = MetadataValue.text(datafile.hash_value)
    size = datafile.size_bytes
    if size is not None:
        metadata["size_bytes"] = MetadataValue.int(int(size))
    metadata["labels"] = MetadataValue.json(sorted(datafile.labels))
    metadata["tags"] = MetadataValue.json(_json_safe(dict(datafile.tags)))
    if datafile.posix_timestamp is not None:
        metadata["timestamp"] = MetadataValue.timestamp(datafile.posix_timestamp)
    metadata["datafile_id"] = MetadataValue.text(datafile.id)
    if info is not None:
        # Text, not int: generations are 64-bit and GraphQL's Int is 32-bit, so API clients would get null.
        metadata["generation"] = MetadataValue.text(str(info.generation))
    return metadata


def datafile_data_version(datafile: Datafile) -> DataVersion:
    """A datafile's Dagster data version: its content's crc32c, so it changes exactly when the content does."""
    return DataVersion(datafile.hash_value)


#: At most this many files are listed in a dataset's table in the UI (the count and size cover all of them).
DATASET_TABLE_ROWS = 500


def dataset_data_version(dataset: Dataset) -> DataVersion:
    """A dataset's Dagster data version: a hash of its files' (relative path, crc32c) pairs, in path order.

    It changes exactly when a file is added, removed, renamed or changed, whatever the order the files were listed
    or written in, and metadata-only changes (labels, tags) keep it, as for a single datafile.
    """
    return DataVersion(files_digest((str(dataset.relative_path(file)), file.hash_value) for file in dataset.files))


def files_digest(pairs: Iterable[tuple[str, str | None]]) -> str:
    """A digest of a dataset's (relative path, crc32c) pairs, whatever their order: its data version, and what the
    asset checks compare a folder's listing with for files beyond the recorded table."""
    return hashlib.sha256(json.dumps(sorted(pairs)).encode()).hexdigest()[:32]


def dataset_metadata(dataset: Dataset) -> dict[str, MetadataValue]:
    """The output metadata recorded for a stored dataset: where it is, its files (count, size, a table) and its own
    Octue metadata. Everything comes from the listing the dataset was built from: no request is made."""
    files = sorted(dataset.files, key=lambda file: str(dataset.relative_path(file)))
    metadata: dict[str, MetadataValue] = {}
    prefix = dataset.gcs_prefix
    if prefix is not None:
        metadata[URI_KEY] = MetadataValue.path(dataset.path)
        metadata["console_url"] = MetadataValue.url(
            f"https://console.cloud.google.com/storage/browser/{prefix.bucket}/{prefix.name}"
        )
    metadata["file_count"] = MetadataValue.int(len(files))
    metadata["total_size_bytes"] = MetadataValue.int(sum(file.size_bytes or 0 for file in files))
    metadata["dataset_id"] = MetadataValue.text(dataset.id)
    metadata["dataset_name"] = MetadataValue.text(dataset.name)
    metadata["labels"] = MetadataValue.json(sorted(dataset.labels))
    metadata["tags"] = MetadataValue.json(_json_safe(dict(dataset.tags)))
    rows = [
        TableRecord(
            {
                "name": str(dataset.relative_path(file)),
                "size_bytes": int(file.size_bytes or 0),
                "crc32c": file.hash_value,
                "labels": ", ".join(sorted(file.labels)),
                # Text: generations are 64-bit (GraphQL's Int is 32-bit). The asset checks compare it with GCS's.
                "generation": str(file.object_info.generation) if file.object_info is not None else "",
            }
        )
        for file in files[:DATASET_TABLE_ROWS]
    ]
    metadata["files"] = MetadataValue.table(rows, schema=_FILES_SCHEMA)
    if len(files) > DATASET_TABLE_ROWS:
        metadata["files_not_listed"] = MetadataValue.int(len(files) - DATASET_TABLE_ROWS)
        # The asset checks compare the files the table leaves out through this digest of every file.
        metadata["files_digest"] = MetadataValue.text(
            files_digest((str(dataset.relative_path(file)), file.hash_value) for file in files)
        )
    return metadata


_FILES_SCHEMA = TableSchema(
    columns=[
        TableColumn("name", "string", description="Path inside the dataset folder"),
        TableColumn("size_bytes", "int"),
        TableColumn("crc32c", "string", description="The object's crc32c, as GCS reports it"),
        TableColumn("labels", "string"),
        TableColumn("generation", "string", description="The object's GCS generation when it was stored"),
    ]
)


__all__ = [
    "URI_KEY",
    "dataset_data_version",
    "dataset_metadata",
    "datafile_data_version",
    "datafile_metadata",
    "files_digest",
]
