"""`Store`: the one object that talks to Google Cloud Storage, through the official client.

A `Store` holds a client, the retry policy and the per-request timeout, and is passed explicitly (as cloudpathlib
passes its `GSClient`), so that tests and users configure it instead of patching module globals. Every call uses the
client's own retries, generation and metageneration preconditions and checksums, and turns the client's errors into
this library's, which say what went wrong and what to do. Nothing here knows about Datafiles: it moves bytes and
metadata between paths.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from typing import IO

from google.api_core import exceptions as api_exceptions
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption

from octue_dagster.core.local import hashing
from octue_dagster.core.storage.client import emulator_host as _emulator
from octue_dagster.core.storage.client import guard_client, make_client
from octue_dagster.core.storage.client import size_connection_pool as _size_connection_pool
from octue_dagster.core.storage.errors import GARBLED_ANSWERS as _GARBLED_ANSWERS
from octue_dagster.core.storage.errors import translate_errors
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.object_info import ObjectInfo
from octue_dagster.core.storage.runner import Outcome, run_concurrently
from octue_dagster.core.storage.settings import (
    DEFAULT_RETRY_DEADLINE_SECONDS,
    RETRY_DEADLINE_VARIABLE,
    StoreSettings,
)
from octue_dagster.core.storage.writes import MULTIPART_LIMIT_BYTES, PATCH_ATTEMPTS, UPLOAD_CHUNK_BYTES, ObjectWrites
from octue_dagster.exceptions import BucketNotFoundError, ChecksumMismatchError, CloudObjectNotFoundError, ConflictError

_default_lock = threading.Lock()
_default_stores: dict[tuple[int, str | None], "Store"] = {}


class Store(ObjectWrites):
    """A GCS client with the settings every call uses: the library's only way to reach GCS.

    Reads are retried on transient failures; writes are retried by the client because each carries a generation or
    metageneration precondition, which makes a repeat safe (a repeat that finds its own write is recognised as
    success). Give a `Store` to `Datafile(..., store=...)` and the listing functions; without one, the process-wide
    `Store.default()` is used.

    Example::

        store = Store(settings=StoreSettings(retry_deadline_seconds=30))
        datafile = Datafile("gs://my-bucket/readings.csv", store=store)
    """

    def __init__(
        self,
        client: storage.Client | None = None,
        *,
        settings: StoreSettings = StoreSettings(),
        project: str | None = None,
    ) -> None:
        self._client = _size_connection_pool(guard_client(client), settings.concurrency) if client is not None else None
        self._project = project
        self.settings = settings
        self.retry = settings.retry
        self.timeout = settings.timeout

    @classmethod
    def default(cls) -> Store:
        """The process-wide store: the emulator's when `STORAGE_EMULATOR_HOST` is set, else default credentials."""
        key = (os.getpid(), os.environ.get("STORAGE_EMULATOR_HOST"))
        with _default_lock:
            store = _default_stores.get(key)
            if store is None:
                store = _default_stores[key] = cls(make_client())
            return store

    @property
    def client(self) -> storage.Client:
        """The google-cloud-storage client (made on first use, so that a store can be built before credentials)."""
        if self._client is None:
            self._client = _size_connection_pool(make_client(self._project), self.settings.concurrency)
        return self._client

    def with_settings(self, settings: StoreSettings) -> Store:
        """A store sharing this one's client, with other settings."""
        return Store(self._client, settings=settings, project=self._project)

    def __repr__(self) -> str:
        return f"Store({self.settings!r})"

    def _bucket(self, path: GCSPath) -> storage.Bucket:
        return self.client.bucket(path.bucket, user_project=self.settings.user_project)

    @property
    def endpoint(self) -> str:
        """The address requests go to (GCS's, or the emulator's)."""
        connection = getattr(self._client, "_connection", None)
        return str(getattr(connection, "API_BASE_URL", None) or _emulator() or "https://storage.googleapis.com")

    def _translate(self, path: GCSPath | str, action: str) -> contextlib.AbstractContextManager[None]:
        return translate_errors(path, action, endpoint=self.endpoint, deadline=self.settings.retry_deadline_seconds)

    def bucket_exists(self, bucket: str) -> bool:
        """Whether a bucket exists and is visible with these credentials (one request)."""
        with self._translate(GCSPath(bucket, ""), "find the bucket"):
            return self.client.lookup_bucket(bucket) is not None

    def raise_if_bucket_missing(self, path: GCSPath) -> None:
        """Raise `BucketNotFoundError` if `path`'s bucket does not exist (used only on error paths)."""
        if not self.bucket_exists(path.bucket):
            raise BucketNotFoundError(
                f"The bucket {path.bucket!r} of {path} does not exist. Create it, or check the bucket name."
            )

    def get_object(self, path: GCSPath) -> ObjectInfo | None:
        """Read an object's metadata in one request; `None` if there is no such object."""
        with self._translate(path, "read the metadata of"):
            blob = self._bucket(path).get_blob(path.name, retry=self.retry, timeout=self.timeout)
        return None if blob is None else ObjectInfo.from_blob(blob)

    def require_object(self, path: GCSPath) -> ObjectInfo:
        """Like `get_object`, but a missing object or bucket raises a `FileNotFoundError` that says which."""
        info = self.get_object(path)
        if info is None:
            self.raise_if_bucket_missing(path)
            raise CloudObjectNotFoundError(f"There is no object at {path}.")
        return info

    def download_file(self, info: ObjectInfo, file: IO[bytes]) -> str:
        """Stream the object's content, at exactly `info.generation`, into an open binary file, verifying every byte.

        The bytes are hashed as they are written (one pass, no re-read) and compared with the crc32c and size of the
        object's metadata, whatever the response's headers say: google-cloud-storage skips its own check when
        `X-Goog-Hash` is missing. The bytes are fetched as stored (`raw_download`), so that the hash is of the same
        bytes as GCS's crc32c. Returns the crc32c. On a mismatch, `ChecksumMismatchError` names the object; `file`
        then holds bad bytes, which the caller discards.
        """
        blob = self._bucket(info.path).blob(info.path.name)
        writer = hashing.HashingWriter(file)
        with self._translate(info.path, "download"):
            try:
                blob.download_to_file(
                    writer,
                    if_generation_match=info.generation,
                    raw_download=True,
                    # Our check replaces the client's; with no crc32c in the metadata, the client's is all there is.
                    checksum=None if info.crc32c else "auto",
                    retry=self.retry,
                    timeout=self.timeout,
                )
            except DataCorruption:
                raise ChecksumMismatchError(
                    f"The content downloaded from {info.path} (generation {info.generation}) failed its checksum: it "
                    f"was corrupted in transit; nothing was kept. Try again."
                ) from None
        writer.flush()
        if writer.bytes_written != info.size or (info.crc32c is not None and writer.crc32c != info.crc32c):
            current = self.get_object(info.path)
            if current is None or current.generation != info.generation:
                # A server that ignored the generation precondition served the new object's bytes.
                raise ConflictError(
                    f"Could not download {info.path} at generation {info.generation}: another writer replaced or "
                    f"deleted it during the download, and the bytes received were not that generation's; nothing "
                    f"was kept. Re-read the datafile to get the current content."
                )
            raise ChecksumMismatchError(
                f"The content downloaded from {info.path} (generation {info.generation}) does not match the object: "
                f"{writer.bytes_written} bytes with crc32c {writer.crc32c}, expected {info.size} bytes with crc32c "
                f"{info.crc32c}. It was corrupted in transit; nothing was kept. Try again."
            )
        return writer.crc32c

    def list_objects(
        self, prefix: GCSPath, *, delimiter: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Every object under a prefix, with its metadata, from paged list requests (no request per object).

        With `delimiter="/"`, only the objects directly in the prefix's folder, not those in its sub-folders.
        """
        with self._translate(prefix, "list"):
            blobs = self.client.list_blobs(
                prefix.bucket,
                prefix=prefix.name or None,
                page_size=self.settings.list_page_size,
                delimiter=delimiter,
                retry=self.retry,
                timeout=self.timeout,
            )
            # Each item becomes an ObjectInfo straight from its JSON resource, not through a Blob first (which costs
            # as much as the rest of the listing): `item_to_value` is api-core's hook for what an item becomes.
            blobs.item_to_value = lambda iterator, resource: ObjectInfo.from_resource(prefix.bucket, resource)
            yield from blobs

    def delete_object(self, path: GCSPath, *, if_generation_match: int | None = None) -> None:
        """Delete an object (only at the given generation, if one is given).

        An object that is already gone is not an error: a delete retried after its answer was lost finds nothing.
        """
        with self._translate(path, "delete"):
            try:
                self._bucket(path).blob(path.name).delete(
                    if_generation_match=if_generation_match, retry=self.retry, timeout=self.timeout
                )
            except api_exceptions.NotFound:
                return
            except _GARBLED_ANSWERS:
                # A garbled answer to a delete that was carried out: the object (at that generation) is gone.
                current = self.get_object(path)
                if current is None or (if_generation_match is not None and current.generation != if_generation_match):
                    return
                raise

    def delete_objects(self, objects: Iterable[ObjectInfo]) -> Iterator[Outcome[ObjectInfo, None]]:
        """Delete many objects, `settings.concurrency` requests at a time, each only at the generation listed.

        `objects` is consumed lazily (a listing streams through a bounded window), and each object's `Outcome` is
        yielded as it completes: an object replaced since it was listed is not deleted (its outcome is a
        `ConflictError`), one already gone is a `CloudObjectNotFoundError`, and neither stops the others.
        """

        def delete(info: ObjectInfo) -> None:
            self.delete_object(info.path, if_generation_match=info.generation)

        return run_concurrently(delete, objects, concurrency=self.settings.concurrency)

    def ensure_bucket(self, bucket: str) -> None:
        """Create a bucket if it does not exist (for emulators, demos and tests)."""
        with self._translate(GCSPath(bucket, ""), "create the bucket"):
            try:
                self.client.create_bucket(bucket)
            except api_exceptions.Conflict:
                pass


__all__ = [
    "DEFAULT_RETRY_DEADLINE_SECONDS",
    "MULTIPART_LIMIT_BYTES",
    "ObjectInfo",
    "PATCH_ATTEMPTS",
    "RETRY_DEADLINE_VARIABLE",
    "Store",
    "StoreSettings",
    "UPLOAD_CHUNK_BYTES",
    "guard_client",
    "make_client",
    "translate_errors",
]
