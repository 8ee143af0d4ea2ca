"""The `Store`'s conditional writes: uploads, server-side copies and metadata patches.

Every write carries a generation or metageneration precondition, so the client may retry it safely: a retry whose
first attempt was carried out (its answer lost or garbled) finds its own write there, and `_own_write` recognises
that as success rather than a conflict. `ObjectWrites` is a part of `Store` (its base class), kept in its own module
so that each reads on its own; it uses the store's client, retry rules and error translation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING

from google.api_core import exceptions as api_exceptions

from octue_dagster.core.storage.errors import GARBLED_ANSWERS as _GARBLED_ANSWERS
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.object_info import ObjectInfo
from octue_dagster.exceptions import ChecksumMismatchError, ConflictError

if TYPE_CHECKING:
    from octue_dagster.core.storage.store import Store

#: Resumable uploads send the file in chunks of this size, read into one reused buffer (see `_ChunkReader`).
UPLOAD_CHUNK_BYTES = 64 * 1024 * 1024
#: Files up to this size go in one multipart request (content and metadata together).
MULTIPART_LIMIT_BYTES = 8 * 1024 * 1024
#: How many times a metadata patch is re-read and re-applied after losing a race with another writer.
PATCH_ATTEMPTS = 20


class _ChunkReader:
    """A read-only view of a binary file whose `read` fills and returns one reused buffer.

    google-cloud-storage reads each resumable-upload chunk with `stream.read(chunk_size)` and keeps the previous
    chunk alive (through the last response's request body) while reading the next, so plain files cost two chunks of
    memory. Handing out views of one buffer keeps that to one chunk: by the time the buffer is refilled, the request
    that sent it has finished, and a retried chunk is re-read from the file after a `seek`.
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._buffer = bytearray()

    def read(self, size: int = -1) -> memoryview | bytes:
        if size is None or size < 0:
            return self._file.read()
        if size > len(self._buffer):
            self._buffer = bytearray(size)
        view = memoryview(self._buffer)[:size]
        count = self._file.readinto(view)  # type: ignore[attr-defined]
        return view[:count]

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def seekable(self) -> bool:
        return True


class ObjectWrites:
    """Uploads, copies and metadata patches of a `Store` (see the module's docstring)."""

    def upload_file(
        self: Store,
        local_path: str,
        path: GCSPath,
        *,
        crc32c: str,
        custom_metadata: Mapping[str, str],
        if_generation_match: int,
        content_type: str | None = None,
        if_metageneration_match: int | None = None,
    ) -> ObjectInfo:
        """Upload a local file with its custom metadata, only if the object's generation is still `if_generation_match`
        (and, if given, its metageneration `if_metageneration_match`: its metadata as the caller merged against).

        `if_generation_match=0` means "only if the object does not exist". GCS checks `crc32c` before committing the
        object, so a file that changed while being sent is rejected and the old object stays as it was.
        """
        blob = self._bucket(path).blob(path.name, chunk_size=UPLOAD_CHUNK_BYTES)
        blob.metadata = dict(custom_metadata)
        size = os.path.getsize(local_path)
        with self._translate(path, "upload to"), open(local_path, "rb") as file:
            try:
                resumable = size > MULTIPART_LIMIT_BYTES
                # Multipart uploads carry the client's crc32c in the request, which GCS checks before committing.
                # Resumable uploads send ours in the initiation request for the same check (the client's own running
                # checksum would need a copy of every chunk), and the result is compared below as well.
                blob.upload_from_file(
                    _ChunkReader(file) if resumable else file,
                    size=size,
                    content_type=content_type,
                    if_generation_match=if_generation_match,
                    if_metageneration_match=if_metageneration_match,
                    checksum=None if resumable else "crc32c",
                    crc32c_checksum_value=crc32c,
                    retry=self.retry,
                    timeout=self.timeout,
                )
            except api_exceptions.BadRequest as error:
                if "crc32c" in str(error).lower() or "checksum" in str(error).lower():
                    raise ChecksumMismatchError(
                        f"GCS rejected the upload to {path}: the file {local_path!r} changed while it was being uploaded "
                        f"({error.message}). The object was not changed; try again."
                    ) from None
                raise
            except (api_exceptions.PreconditionFailed, api_exceptions.NotFound, *_GARBLED_ANSWERS):
                # A retry of an upload whose answer was lost finds its own object there (412, or 404 from a resumable
                # session that already finished), and an upload whose answer was garbled may have been committed: if
                # the object is exactly ours, that is success, not a conflict.
                own = self._own_write(path, if_generation_match, crc32c, custom_metadata)
                if own is None:
                    raise
                return own
        info = ObjectInfo.from_blob(blob)
        if info.crc32c is not None and info.crc32c != crc32c:
            raise ChecksumMismatchError(
                f"The object stored at {path} (generation {info.generation}) has crc32c {info.crc32c}, but {local_path!r} "
                f"hashed to {crc32c}: the file changed while it was being uploaded. Upload it again."
            )
        return info

    def patch_metadata(
        self: Store,
        path: GCSPath,
        change: Callable[[ObjectInfo], Mapping[str, str | None]],
        *,
        if_generation_match: int | None = None,
        current: ObjectInfo | None = None,
    ) -> ObjectInfo:
        """Apply a metadata change without touching content (the generation stays), safe against concurrent patchers.

        `change` gets the object's current state and returns the custom metadata keys to set (`None` deletes a key). The
        patch is conditional on the metageneration it was computed from; if another writer patched in between, the
        object is re-read and `change` is applied again, so neither writer's change is lost.

        `current` is the object's state as just read (for example by a listing): the first attempt uses it instead
        of reading the object again, so an unchanged object costs one request.
        """
        info = current if current is not None else self.require_object(path)
        for _ in range(PATCH_ATTEMPTS):
            if if_generation_match is not None and info.generation != if_generation_match:
                raise ConflictError(
                    f"Could not update the metadata of {path}: its content was replaced by another writer (generation "
                    f"{info.generation}, expected {if_generation_match}). Re-read the datafile and repeat the change."
                )
            blob = self._bucket(path).blob(path.name)
            wanted = dict(change(info))
            blob.metadata = wanted
            try:
                with self._translate(path, "update the metadata of"):
                    try:
                        blob.patch(
                            if_generation_match=info.generation,
                            if_metageneration_match=info.metageneration,
                            retry=self.retry,
                            timeout=self.timeout,
                        )
                    except _GARBLED_ANSWERS:
                        # The answer was garbled, but the patch may have been applied: if so, it is ours.
                        current = self.require_object(path)
                        if current.generation == info.generation and all(
                            current.custom_metadata.get(key) == value for key, value in wanted.items()
                        ):
                            return current
                        raise
                return ObjectInfo.from_blob(blob)
            except ConflictError:
                info = self.require_object(path)
        raise ConflictError(
            f"Could not update the metadata of {path}: it kept changing under {PATCH_ATTEMPTS} attempts by other writers."
        )

    def copy_object(
        self: Store,
        source: ObjectInfo,
        destination: GCSPath,
        *,
        custom_metadata: Mapping[str, str],
        if_generation_match: int,
    ) -> ObjectInfo:
        """Copy an object server side (no bytes pass through this process), replacing the copy's custom metadata."""
        source_bucket = self._bucket(source.path)
        source_blob = source_bucket.blob(source.path.name)
        destination_blob = self._bucket(destination).blob(destination.name)
        destination_blob.metadata = dict(custom_metadata)
        if source.content_type:
            destination_blob.content_type = source.content_type
        rewrite_token = None
        with self._translate(destination, f"copy {source.path} to"):
            try:
                while True:
                    rewrite_token, _, _ = destination_blob.rewrite(
                        source_blob,
                        token=rewrite_token,
                        if_generation_match=if_generation_match,
                        if_source_generation_match=source.generation,
                        retry=self.retry,
                        timeout=self.timeout,
                    )
                    if rewrite_token is None:
                        break
            except (api_exceptions.PreconditionFailed, *_GARBLED_ANSWERS):
                # A retried copy whose first answer was lost (or a copy whose answer was garbled) finds its own copy
                # there: success, not a conflict.
                own = self._own_write(destination, if_generation_match, source.crc32c, custom_metadata)
                if own is None:
                    raise
                return own
        return ObjectInfo.from_blob(destination_blob)

    def _own_write(
        self: Store,
        path: GCSPath,
        if_generation_match: int,
        crc32c: str | None,
        custom_metadata: Mapping[str, str],
    ) -> ObjectInfo | None:
        """After a 412, the object at `path` if it is exactly what this writer was writing (content and metadata)."""
        current = self.get_object(path)
        if (
            current is None
            or current.generation == if_generation_match
            or current.crc32c != crc32c
            or any(current.custom_metadata.get(key) != value for key, value in custom_metadata.items())
        ):
            return None
        return current


__all__ = ["MULTIPART_LIMIT_BYTES", "ObjectWrites", "PATCH_ATTEMPTS", "UPLOAD_CHUNK_BYTES"]
