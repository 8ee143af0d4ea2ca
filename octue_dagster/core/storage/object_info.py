"""`ObjectInfo`: what GCS says about one object (its path, generation, checksums and custom metadata), no content.

Every `Store` call that reads or writes an object answers with one, and a listing yields one per object, so code above
the store never handles google-cloud-storage's `Blob`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping

from google.cloud import storage

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
        return cls(
            path=GCSPath(blob.bucket.name, blob.name),
            generation=int(blob.generation),
            metageneration=int(blob.metageneration or 1),
            size=int(blob.size or 0),
            crc32c=blob.crc32c,
            md5_hash=blob.md5_hash,
            content_type=blob.content_type,
            updated=blob.updated,
            custom_metadata=dict(blob.metadata or {}),
            time_created=blob.time_created,
        )


__all__ = ["ObjectInfo"]
