"""What `Datafile.upload` must do, decided before anything is sent: a pure function of what is known.

Keeping the decision apart from the requests makes each outcome testable without a server, and makes the rule
readable in one place: content already at the destination is never sent again.
"""

from __future__ import annotations

import enum

from octue_dagster.core.storage.store import ObjectInfo


class UploadAction(enum.Enum):
    """The one thing an upload does."""

    #: The destination already holds this content and metadata.
    NOTHING = "nothing"
    #: The destination holds this content; only its metadata changes (the generation stays).
    PATCH = "patch"
    #: The content is another object's: copy it server side (no bytes pass through this process).
    COPY = "copy"
    #: Send the local bytes.
    UPLOAD = "upload"


def plan_upload(
    *, content_crc32c: str, has_local_bytes: bool, existing: ObjectInfo | None, metadata_differs: bool
) -> UploadAction:
    """Choose the action for content with `content_crc32c` going where `existing` is (`None`: nothing there yet).

    `has_local_bytes` says whether the content exists only as local bytes (else it is a cloud object's);
    `metadata_differs` whether writing the datafile's metadata would change what the destination holds.
    """
    if existing is not None and existing.crc32c == content_crc32c:
        return UploadAction.PATCH if metadata_differs else UploadAction.NOTHING
    return UploadAction.UPLOAD if has_local_bytes else UploadAction.COPY


__all__ = ["UploadAction", "plan_upload"]
