"""Turning a datafile's cloud state and Octue metadata into Dagster metadata values for the UI and event log."""

from __future__ import annotations

import json
from typing import Any

from dagster import DataVersion, MetadataValue

from octue_dagster.core.datafile import Datafile
from octue_dagster.core.metadata import OctueJSONEncoder

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


__all__ = ["URI_KEY", "datafile_data_version", "datafile_metadata"]
