"""`ObjectInfo`: what GCS says about one object (its path, generation, checksums and custom metadata), no content.

Every `Store` call that reads or writes an object answers with one, and a listing yields one per object, so code above
the store never handles google-cloud-storage's `Blob`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from google.cloud import storage
from google.cloud._helpers import _rfc3339_nanos_to_datetime

from octue_dagster.core.storage.gcs_path import GCSPath


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """What GCS says about one object, from a single metadata request: no content."""

    path: GCSPath
    generation: int
    metageneration: int
    size: int
    crc32c: str | None
    md5_hash: str | None
    content_type: str | None
    updated: datetime.datetime | None
    custom_metadata: Mapping[str, str]
    #: When this generation (this content) was created; metadata patches change `updated`, never this.
    time_created: datetime.datetime | None = None

    @classmethod
    def from_blob(cls, blob: storage.Blob) -> ObjectInfo:
        """The object a blob describes, from the resource (the JSON GCS sent) the blob holds."""
        resource = blob._properties  # noqa: SLF001 - the resource the blob's own properties read
        return cls.from_resource(blob.bucket.name, resource if "name" in resource else {**resource, "name": blob.name})

    @classmethod
    def from_resource(cls, bucket: str, resource: Mapping[str, Any]) -> ObjectInfo:
        """The object described by a JSON resource of GCS's API (as a metadata read or each item of a listing has it).

        A listing makes one of these per object, so this is the cost per listed object: the values are read once
        from the resource, without a `Blob` (whose properties deep-copy the custom metadata and parse timestamps with
        `strptime`: together 5x the cost of the plain client's listing), and timestamps are parsed with
        `fromisoformat`.
        """
        metadata = resource.get("metadata")
        return cls(
            path=GCSPath(bucket, resource["name"]),
            generation=int(resource.get("generation")),  # type: ignore[arg-type]
            metageneration=int(resource.get("metageneration") or 1),
            size=int(resource.get("size") or 0),
            crc32c=resource.get("crc32c"),
            md5_hash=resource.get("md5Hash"),
            content_type=resource.get("contentType"),
            updated=_timestamp(resource.get("updated")),
            custom_metadata=dict(metadata) if metadata else {},
            time_created=_timestamp(resource.get("timeCreated")),
        )


def _timestamp(value: str | None) -> datetime.datetime | None:
    """An RFC 3339 timestamp from GCS as an aware datetime (as the client parses it, `fromisoformat`'s speed)."""
    if value is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return _rfc3339_nanos_to_datetime(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.timezone.utc)


__all__ = ["ObjectInfo"]
