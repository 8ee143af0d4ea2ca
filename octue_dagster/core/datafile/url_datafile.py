"""`UrlDatafile`: a datafile read from an `http(s)://` URL, such as a V4 signed URL an Octue service passed on.

`Datafile(path="https://...")` makes one (as Octue's SDK does, the URL becomes the datafile's `cloud_path`). It costs
one `HEAD` request: the object's Octue metadata comes from its `x-goog-meta-octue__*` headers (read whatever their
case, so also from servers that keep the header case, where Octue's SDK finds none), its size from `Content-Length`
and its crc32c from `x-goog-hash`. The content is downloaded on first read, into the cache (or `local_path`), checked
against that crc32c before it is renamed into place. A URL grants reading only: writing modes, uploads and metadata
updates raise `ReadOnlyDatafileError` (also Octue's `ReadOnlyResource` when Octue's SDK is imported). Nothing
logged or raised contains the URL's query string, which holds the signature.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from octue_dagster.core.cache import copies as cache
from octue_dagster.core.datafile.datafile import Datafile, EMPTY_HASH
from octue_dagster.core.datafile.octue_api import octue_custom_metadata
from octue_dagster.core.local import hashing
from octue_dagster.core.local.atomic import atomic_replace
from octue_dagster.core.metadata import values as md
from octue_dagster.exceptions import (
    ChecksumMismatchError,
    DatafileNotFoundError,
    InvalidInputError,
    ReadOnlyDatafileError,
)

logger = logging.getLogger(__name__)
TIMEOUT_SECONDS = (30, 300)
_META_PREFIX = "x-goog-meta-"
_WRITING = ("w", "a", "x", "+")


def is_url(path: object) -> bool:
    """Whether `path` is an `http://` or `https://` URL (a signed URL, or a public object's URL)."""
    return isinstance(path, str) and path.lower().startswith(("https://", "http://"))


def redacted(url: str) -> str:
    """The URL without its query string (where a signed URL's credentials are), for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _crc32c_of(headers: Any) -> str | None:
    for part in (headers.get("x-goog-hash") or "").split(","):
        kind, _, value = part.strip().partition("=")
        if kind == "crc32c" and value:
            return value
    return None


@dataclass(frozen=True)
class RemoteObject:
    """What a `HEAD` of the URL said about the object."""

    size: int | None
    crc32c: str | None
    updated: datetime.datetime | None
    custom_metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_headers(cls, headers: Any) -> RemoteObject:
        length = headers.get("Content-Length")
        modified = headers.get("Last-Modified")
        return cls(
            size=int(length) if length and length.isdigit() else None,
            crc32c=_crc32c_of(headers),
            updated=email.utils.parsedate_to_datetime(modified) if modified else None,
            custom_metadata={
                key.lower()[len(_META_PREFIX):]: value
                for key, value in headers.items()
                if key.lower().startswith(_META_PREFIX)
            },
        )


def head(url: str) -> RemoteObject | None:
    """The object's size, crc32c and custom metadata, or `None` (logged, as Octue's SDK does) if it cannot be read."""
    try:
        response = requests.head(url, timeout=TIMEOUT_SECONDS, allow_redirects=True)
        response.raise_for_status()
    except requests.exceptions.RequestException as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        # Octue's SDK's message, word for word (services may match on it); the reason follows in a second record.
        logger.error("Couldn't access cloud datafile metadata at %r; proceeding without cloud metadata.", redacted(url))
        logger.info("Reason: %s", f"HTTP {status}" if status else type(error).__name__)
        return None
    return RemoteObject.from_headers(response.headers)


def download(url: str, target: Path, expected_crc32c: str | None) -> None:
    """Download the URL's content to `target` through a temporary file, checked against its crc32c."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        response = requests.get(url, timeout=TIMEOUT_SECONDS, stream=True)
        response.raise_for_status()
    except requests.exceptions.RequestException as error:
        raise DatafileNotFoundError(
            f"The datafile at {redacted(url)!r} couldn't be downloaded ({type(error).__name__}); the URL may have "
            f"expired or the object may be gone."
        ) from None
    expected = _crc32c_of(response.headers) or expected_crc32c
    with atomic_replace(target) as temporary:
        with open(temporary, "wb") as file:
            for block in response.iter_content(chunk_size=1024 * 1024):
                file.write(block)
        received = hashing.hash_file(temporary)
        if expected is not None and received != expected:
            raise ChecksumMismatchError(
                f"The content downloaded from {redacted(url)!r} has crc32c {received}, not {expected}; nothing "
                f"was kept."
            )


class UrlDatafile(Datafile):
    """A read-only datafile whose content and metadata come from an `http(s)://` URL (see the module docstring)."""

    _url: str
    _remote: RemoteObject | None
    #: The crc32c of the copy this datafile downloaded, when the server's HEAD gave none to check copies against.
    _downloaded: str | None = None

    def _locate(self, path: Any, local_path: Any, cloud_path: Any, _object: Any) -> None:
        if cloud_path is not None:
            raise InvalidInputError("Give cloud_path only with a local path; `path` is already a URL.")
        self._url = str(path)
        self._local = Path(local_path).absolute() if local_path is not None else None
        self._remote = head(self._url)

    def _read_stored_metadata(self) -> md.StoredMetadata:
        if self._remote is None or not self._remote.custom_metadata:
            return md.StoredMetadata()
        return md.from_cloud_metadata(self._remote.custom_metadata, redacted(self._url))

    def _after_init(self) -> None:
        if self._local is not None and not self._has_valid_local_copy():
            self.download()

    @property
    def cloud_path(self) -> str:
        """The URL (as in Octue's SDK, a URL datafile's `cloud_path` is its URL)."""
        return self._url

    @property
    def bucket_name(self) -> str | None:
        """The bucket, read from a path-style URL (`https://storage.googleapis.com/bucket/name?...`)."""
        return self._path_parts()[0]

    @property
    def path_in_bucket(self) -> str | None:
        """The object's name in its bucket, read from a path-style URL."""
        return self._path_parts()[1]

    def _path_parts(self) -> tuple[str | None, str | None]:
        bucket, _, name = urllib.parse.unquote(urllib.parse.urlsplit(self._url).path).lstrip("/").partition("/")
        return (bucket or None, name or None)

    @property
    def name(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self._url).path).rstrip("/").rsplit("/", 1)[-1]

    def _local_target(self) -> Path:
        if self._local is not None:
            return self._local
        digest = hashlib.sha256(redacted(self._url).encode("utf-8", "surrogatepass")).hexdigest()
        return cache.cache_root() / "urls" / digest[:2] / digest[2:34] / cache.safe_basename(self.name)

    def _uses_cache(self) -> bool:
        return False

    def _has_valid_local_copy(self) -> bool:
        target = self._local_target()
        if not target.is_file():
            return False
        # Without a crc32c from the server's HEAD, only a copy this datafile downloaded (and checked) counts.
        expected = self._remote.crc32c if self._remote is not None and self._remote.crc32c else self._downloaded
        return expected is not None and hashing.hash_file(target) == expected

    def _content_exists(self) -> bool:
        return True  # known only by trying: a failed download says why

    def _ready_local_copy(self) -> Path:
        if not self._has_valid_local_copy():
            self.download()
        return self._local_target()

    def _octue_cloud_metadata(self) -> dict[str, Any]:
        """As Octue's SDK keeps it for a URL: what the headers gave (custom metadata, size, crc32c)."""
        if self._remote is None:
            return {}
        return {
            "custom_metadata": octue_custom_metadata(self._remote.custom_metadata),
            "size": self._remote.size,
            "crc32c": self._remote.crc32c,
        }

    @property
    def hash_value(self) -> str:
        if self._remote is not None and self._remote.crc32c:
            return self._remote.crc32c
        return hashing.hash_file(self._local_target()) if self._local_target().is_file() else EMPTY_HASH

    @property
    def size_bytes(self) -> int | None:
        return self._remote.size if self._remote is not None else None

    @property
    def last_modified(self) -> float | None:
        updated = self._remote.updated if self._remote is not None else None
        return updated.timestamp() if updated is not None else None

    def download(self, local_path: str | os.PathLike[str] | None = None) -> str:
        """Download the content (checked against the crc32c the server reports) and return the local path."""
        if local_path is not None:
            self._local = Path(local_path).absolute()
        target = self._local_target()
        if not self._has_valid_local_copy():
            download(self._url, target, self._remote.crc32c if self._remote is not None else None)
            self._downloaded = hashing.hash_file(target)
        return str(target)

    def _refuse(self, action: str) -> ReadOnlyDatafileError:
        return ReadOnlyDatafileError(
            f"{self!r} was made from a URL, which only grants reading, so it cannot {action}. Download it "
            f"(`datafile.download(path)`), then make a Datafile of that path to change and upload it."
        )

    def open(self, mode: str = "r", update_metadata: bool = True, **kwargs: Any) -> Any:
        if any(character in mode for character in _WRITING):
            raise self._refuse(f"be opened with mode {mode!r}")
        return super().open(mode, update_metadata, **kwargs)

    def upload(self, cloud_path: str | None = None, update_cloud_metadata: bool = True, **kwargs: Any) -> str:
        raise self._refuse("be uploaded")

    def update_metadata(self, *, fresh: bool = False) -> None:
        raise self._refuse("have its stored metadata updated")

    update_cloud_metadata = update_local_metadata = update_metadata

    def generate_signed_url(self, expiration: Any = None, **kwargs: Any) -> str:
        """The URL itself: it already grants reading (so signing a manifest's datafiles twice changes nothing)."""
        return self._url


__all__ = ["RemoteObject", "UrlDatafile", "download", "head", "is_url", "redacted"]
