"""`Store`: the one object that talks to Google Cloud Storage, through the official client.

A `Store` holds a client, the retry policy and the per-request timeout, and is passed explicitly (as cloudpathlib
passes its `GSClient`), so that tests and users configure it instead of patching module globals. Every call uses the
client's own retries, generation and metageneration preconditions and checksums, and turns the client's errors into
this library's, which say what went wrong and what to do. Nothing here knows about Datafiles: it moves bytes and
metadata between paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

import google.auth.exceptions
import requests
import requests.adapters
from google.api_core import exceptions as api_exceptions
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.api_core.retry import Retry
from google.cloud.storage.retry import DEFAULT_RETRY

from octue_dagster.core.local import hashing
from octue_dagster.core.storage.bulk import DEFAULT_CONCURRENCY, Outcome, run_concurrently, validate_concurrency
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage import redaction
from octue_dagster.exceptions import (
    BucketNotFoundError,
    ChecksumMismatchError,
    CloudObjectNotFoundError,
    ConflictError,
    InvalidInputError,
    MissingCredentialsError,
    StoragePermissionError,
    StorageRequestError,
    StorageUnavailableError,
)

logger = logging.getLogger(__name__)

#: Failures the client retries; once they escape its retries they mean "GCS is unavailable now".
_TRANSIENT_ERRORS = (
    api_exceptions.RetryError,
    api_exceptions.ServerError,
    api_exceptions.TooManyRequests,
    InvalidResponse,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    ConnectionError,
)

#: An answer GCS sent but that could not be read (garbled or empty JSON). Reads report it as unavailability; writes
#: check whether their write was carried out (see `Store._own_write`).
_GARBLED_ANSWERS = (json.JSONDecodeError,)

#: The environment variable that sets the default retry deadline (seconds) of every `Store`.
RETRY_DEADLINE_VARIABLE = "OCTUE_DAGSTER_RETRY_DEADLINE_SECONDS"
DEFAULT_RETRY_DEADLINE_SECONDS = 30.0

#: Resumable uploads send the file in chunks of this size, read into one reused buffer (see `_ChunkReader`).
UPLOAD_CHUNK_BYTES = 64 * 1024 * 1024
#: Files up to this size go in one multipart request (content and metadata together).
MULTIPART_LIMIT_BYTES = 8 * 1024 * 1024
#: How many times a metadata patch is re-read and re-applied after losing a race with another writer.
PATCH_ATTEMPTS = 20

_default_lock = threading.Lock()
_default_stores: dict[tuple[int, str | None], "Store"] = {}


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


def _size_connection_pool(client: storage.Client, size: int) -> storage.Client:
    """Let `size` requests share the client's session without waiting for or discarding connections.

    google-cloud-storage's client is safe to share between threads (its `requests` session draws connections from
    urllib3's thread-safe pools), but `requests` keeps at most 10 connections per host: more threads than that
    open and throw away a connection per request ("Connection pool is full"). Mounting adapters sized for the
    concurrency keeps every thread on a reused connection. Adapters made for other purposes (mutual TLS) are kept.
    """
    session = client._http
    for scheme in ("https://", "http://"):
        adapter = session.adapters.get(scheme)
        if type(adapter) is not requests.adapters.HTTPAdapter or adapter._pool_maxsize >= size:
            continue
        session.mount(
            scheme,
            requests.adapters.HTTPAdapter(pool_connections=10, pool_maxsize=size, max_retries=adapter.max_retries),
        )
    return client


def make_client(project: str | None = None) -> storage.Client:
    """Create a storage client, turning a missing-credentials failure into a message that says how to fix it."""
    try:
        return guard_client(storage.Client(project=project))
    except google.auth.exceptions.DefaultCredentialsError:
        raise MissingCredentialsError(
            "No Google Cloud credentials were found. Run `gcloud auth application-default login`, set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or set STORAGE_EMULATOR_HOST to use a GCS "
            "emulator."
        ) from None


def guard_client(client: storage.Client) -> storage.Client:
    """Give a client made elsewhere (e.g. by dagster-gcp's `GCSResource`) the check `make_client` adds: an answer
    cut inside its headers is retried as a dropped connection instead of crashing the client (idempotent)."""
    hooks = client._http.hooks["response"]
    for hook in (_reject_unframed_response, _reject_unreadable_answer):
        if hook not in hooks:
            hooks.append(hook)
    return client


def _reject_unframed_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Treat a success without Content-Length or chunked framing as a dropped connection, so that it is retried.

    GCS frames every answer; one without framing was cut inside its headers, and http.client would otherwise hand
    the client an empty 200, which google-cloud-storage fails on with an AttributeError or TypeError.
    """
    if response.status_code in (200, 201, 206) and response.request.method != "HEAD":
        framed = "Content-Length" in response.headers or "chunked" in response.headers.get("Transfer-Encoding", "")
        if not framed:
            raise requests.exceptions.ConnectionError(
                f"The answer to {response.request.method} {response.url} was cut short (no Content-Length).",
                response=response,
            )


def _http_error(error: BaseException) -> BaseException:
    """google-resumable-media's `InvalidResponse` (uploads, downloads) as the api-core error of its HTTP status."""
    if isinstance(error, InvalidResponse) and getattr(error, "response", None) is not None:
        try:
            return api_exceptions.from_http_response(error.response)
        except Exception:  # an answer too broken to describe: keep the original
            return error
    return error


def _emulator() -> str | None:
    return os.environ.get("STORAGE_EMULATOR_HOST")


def _reject_unreadable_answer(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Treat a success whose JSON answer is empty or cut short as a dropped connection, so that it is retried.

    Without this, google-cloud-storage fails on such an answer with a JSONDecodeError, AttributeError or TypeError,
    after a write may already have been carried out. Retried, a read gets a readable answer, and a write (every write
    here carries a generation or metageneration precondition) finds its own write and is recognised by
    `Store._own_write`. Only JSON answers are checked (metadata, listings: never downloaded content), by their first
    and last bytes, without parsing them twice.
    """
    method, url = response.request.method, response.url or ""
    if response.status_code not in (200, 201) or method in ("HEAD", "DELETE") or "Location" in response.headers:
        return  # deletes and resumable-upload initiations answer without a body
    if "json" not in response.headers.get("Content-Type", "") or "alt=media" in url:
        return
    body = response.content.strip()
    if body[:1] not in (b"{", b"[") or body[-1:] not in (b"}", b"]"):
        raise requests.exceptions.ConnectionError(
            f"The answer to {response.request.method} {response.url} could not be read (empty or cut short: "
            f"{body[:60]!r}).",
            response=response,
        )


@contextlib.contextmanager
def translate_errors(
    path: GCSPath | str, action: str, *, endpoint: str | None = None, deadline: float | None = None
) -> Iterator[None]:
    """Re-raise the client's errors as this library's, naming the object, the action and (where it helps) the
    endpoint; every error that reaches users is an `OctueDagsterError` that says what happened, and neither it nor
    the errors chained to it carry a credential (upload session URIs, signatures, tokens: see `redaction`)."""
    with redaction.redacting_errors(), _translated_errors(path, action, endpoint=endpoint, deadline=deadline):
        yield


@contextlib.contextmanager
def _translated_errors(
    path: GCSPath | str, action: str, *, endpoint: str | None = None, deadline: float | None = None
) -> Iterator[None]:
    where = f" at {endpoint}" if endpoint else ""
    try:
        try:
            yield
        except InvalidResponse as error:
            raise _http_error(error) from error
    except api_exceptions.PreconditionFailed:
        raise ConflictError(
            f"Could not {action} {path}: another writer changed the object since it was read, so nothing was "
            f"overwritten. Re-read the datafile (instantiate it again) and repeat the change."
        ) from None
    except api_exceptions.NotFound as error:
        raise CloudObjectNotFoundError(f"Could not {action} {path}: it does not exist ({error.message}).") from None
    except api_exceptions.Forbidden as error:
        raise StoragePermissionError(
            f"Permission denied to {action} {path}: Google Cloud Storage{where} answered 403 Forbidden, so the "
            f"credentials in use lack the needed IAM permission ({error.message})."
        ) from None
    except api_exceptions.Unauthorized as error:
        if _emulator():
            advice = f"the storage emulator set by STORAGE_EMULATOR_HOST={_emulator()} refused the request"
        else:
            advice = "check the Google Cloud credentials in use (`gcloud auth application-default login`)"
        raise MissingCredentialsError(
            f"Could not {action} {path}: Google Cloud Storage{where} answered 401 Unauthorized ({error.message}); "
            f"{advice}."
        ) from None
    except api_exceptions.Conflict as error:
        raise ConflictError(
            f"Could not {action} {path}: Google Cloud Storage{where} answered 409 Conflict ({error.message}): another "
            f"request is changing the same object or bucket. Nothing was changed; try again."
        ) from None
    except google.auth.exceptions.RefreshError as error:
        raise MissingCredentialsError(
            f"Could not {action} {path}: the Google Cloud credentials could not be refreshed ({error}). Run "
            f"`gcloud auth application-default login` again."
        ) from None
    except google.auth.exceptions.DefaultCredentialsError as error:
        if _emulator():
            # Anonymous credentials (used with an emulator) cannot be refreshed, which is how google-auth meets a 401.
            raise MissingCredentialsError(
                f"Could not {action} {path}: the storage emulator set by STORAGE_EMULATOR_HOST={_emulator()} answered "
                f"401 Unauthorized, and the anonymous credentials used with an emulator cannot be refreshed ({error})."
            ) from None
        raise MissingCredentialsError(
            f"Could not {action} {path}: no Google Cloud credentials were found. Run `gcloud auth "
            f"application-default login` or set STORAGE_EMULATOR_HOST."
        ) from None
    except _TRANSIENT_ERRORS as error:
        # Raised once the client's retries are used up: say so, rather than leak the transport's own exception.
        within = f" within the {deadline:g} s retry deadline" if deadline is not None else ""
        raise StorageUnavailableError(
            f"Could not {action} {path}: Google Cloud Storage{where} did not answer successfully{within}, even after "
            f"retries ({type(error).__name__}: {str(error)[:300]}). Each object is as it was or fully changed, never "
            f"half changed; try again later, or allow longer with StoreSettings(retry_deadline_seconds=...) or "
            f"{RETRY_DEADLINE_VARIABLE}."
        ) from error
    except api_exceptions.ClientError as error:
        hint = ""
        if "requester pays" in str(error.message).lower() or "user project" in str(error.message).lower():
            hint = (
                " The bucket is requester-pays: give the project to bill with Store(user_project=...) (or "
                "StoreSettings(user_project=...))."
            )
        raise StorageRequestError(
            f"Could not {action} {path}: Google Cloud Storage{where} refused the request with {error.code} "
            f"{getattr(error, 'reason', None) or type(error).__name__} ({error.message}).{hint}"
        ) from None
    except _GARBLED_ANSWERS as error:
        raise StorageUnavailableError(
            f"Could not {action} {path}: the answer from Google Cloud Storage{where} could not be read (garbled or "
            f"empty: {error}). Nothing is known to have changed; try again."
        ) from None


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


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    """How a `Store` waits and retries, as data: one value to configure, compare and pass between processes.

    Retries follow google-cloud-storage's own rules (which failures are transient); these numbers say how long.
    """

    #: How long one operation keeps retrying transient failures (and an unreachable endpoint) before it raises
    #: `StorageUnavailableError`; the default is 30 s, or `$OCTUE_DAGSTER_RETRY_DEADLINE_SECONDS`. An attempt under
    #: way when the deadline passes still finishes, so the worst case is this plus one connect timeout.
    retry_deadline_seconds: float = dataclasses.field(default_factory=lambda: _deadline_from_environment())
    #: The first pause between retries; each later pause doubles, up to `maximum_retry_delay_seconds`.
    initial_retry_delay_seconds: float = 1.0
    maximum_retry_delay_seconds: float = 60.0
    #: How long to wait for a connection, and then for each answer.
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    #: Objects per list request (GCS allows up to 1000): each page is one request carrying every object's metadata.
    list_page_size: int = 1000
    #: Requests in flight at once for many-object work (re-tagging, bulk deletes): GCS answers in 20-40 ms, so
    #: overlapping requests is what makes thousands of objects fast. 1 runs one request at a time.
    concurrency: int = DEFAULT_CONCURRENCY

    def __post_init__(self) -> None:
        validate_concurrency(self.concurrency)

    #: The project billed for requests to requester-pays buckets (`None`: the bucket's owner pays).
    user_project: str | None = None

    @property
    def retry(self) -> Retry:
        """The client's default retry rules with these pauses and deadline."""
        return DEFAULT_RETRY.with_delay(
            initial=self.initial_retry_delay_seconds, maximum=self.maximum_retry_delay_seconds, multiplier=2.0
        ).with_timeout(self.retry_deadline_seconds)

    @property
    def timeout(self) -> tuple[float, float]:
        """(connect, read) seconds, as `requests` takes them."""
        return (self.connect_timeout_seconds, self.read_timeout_seconds)


def _deadline_from_environment() -> float:
    text = os.environ.get(RETRY_DEADLINE_VARIABLE)
    if not text:
        return DEFAULT_RETRY_DEADLINE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise InvalidInputError(
            f"{RETRY_DEADLINE_VARIABLE}={text!r} is not a retry deadline: give a positive number of seconds, such as 30."
        )
    return value


class Store:
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

    def upload_file(
        self,
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

    def patch_metadata(
        self,
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
        self,
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
        self,
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
            for blob in blobs:
                yield ObjectInfo.from_blob(blob)

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


__all__ = ["ObjectInfo", "Store", "StoreSettings", "guard_client", "make_client", "translate_errors"]
