"""Parsing and validation of `gs://bucket/object` paths."""

from __future__ import annotations

import re
from typing import NamedTuple

from octue_dagster.exceptions import InvalidCloudPathError

GS_SCHEME = "gs://"

# Google's bucket naming rules: 3-63 characters (up to 222 with dots), lowercase letters, digits, '-', '_' and '.',
# starting and ending with a letter or digit.
_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_MAX_OBJECT_NAME_BYTES = 1024


class GCSPath(NamedTuple):
    """A validated Google Cloud Storage location: a bucket and an object name (which may be empty for a prefix)."""

    bucket: str
    name: str

    def __str__(self) -> str:
        return f"{GS_SCHEME}{self.bucket}/{self.name}"

    @property
    def uri(self) -> str:
        """The `gs://bucket/name` form of this path."""
        return str(self)

    @property
    def console_url(self) -> str:
        """A link to this object in the Google Cloud Console."""
        return f"https://console.cloud.google.com/storage/browser/_details/{self.bucket}/{self.name}"

    def join(self, *parts: str) -> GCSPath:
        """Append path segments to this path's object name, with exactly one `/` between them."""
        segments = [self.name.strip("/")] + [part.strip("/") for part in parts]
        return make_gcs_path(self.bucket, "/".join(segment for segment in segments if segment))


def is_gcs_path(path: object) -> bool:
    """Say whether `path` is a string in the `gs://` scheme (valid or not)."""
    return isinstance(path, str) and path.startswith(GS_SCHEME)


def validate_bucket_name(bucket: str) -> str:
    """Return `bucket` if it is a valid bucket name, else raise `InvalidCloudPathError` saying why."""
    if not bucket:
        raise InvalidCloudPathError("The bucket name is empty: give a path of the form 'gs://bucket/object'.")
    if not _BUCKET_PATTERN.match(bucket) or ".." in bucket:
        raise InvalidCloudPathError(
            f"{bucket!r} is not a valid bucket name: bucket names have 3 to 222 characters, only lowercase letters, "
            f"digits, '-', '_' and '.', and start and end with a letter or digit."
        )
    return bucket


def validate_object_name(name: str, *, allow_empty: bool = False) -> str:
    """Return `name` if GCS accepts it as an object name, else raise `InvalidCloudPathError` saying why."""
    if not name and not allow_empty:
        raise InvalidCloudPathError(
            "The object name is empty: give a path of the form 'gs://bucket/object', not just a bucket."
        )
    if len(name.encode("utf-8")) > _MAX_OBJECT_NAME_BYTES:
        raise InvalidCloudPathError(
            f"The object name {name[:60]!r}... is longer than GCS's limit of {_MAX_OBJECT_NAME_BYTES} bytes."
        )
    if any(character in name for character in "\r\n\x00"):
        raise InvalidCloudPathError(f"The object name {name!r} contains a newline or NUL character, which GCS rejects.")
    if name in {".", ".."} or name.startswith(".well-known/acme-challenge/"):
        raise InvalidCloudPathError(f"{name!r} is a reserved object name in GCS.")
    return name


def make_gcs_path(bucket: str, name: str, *, allow_empty_name: bool = False) -> GCSPath:
    """Build a validated `GCSPath` from a bucket and object name."""
    return GCSPath(validate_bucket_name(bucket), validate_object_name(name, allow_empty=allow_empty_name))


def parse_gcs_path(path: str, *, allow_empty_name: bool = False) -> GCSPath:
    """Parse `gs://bucket/name` into a `GCSPath`, raising `InvalidCloudPathError` naming what is malformed.

    With `allow_empty_name`, `gs://bucket` and `gs://bucket/prefix/` are accepted as prefixes.
    """
    if not isinstance(path, str):
        raise InvalidCloudPathError(f"A cloud path must be a string like 'gs://bucket/object'; got {path!r}.")
    if not path.startswith(GS_SCHEME):
        raise InvalidCloudPathError(
            f"{path!r} is not a Google Cloud Storage path: it must start with 'gs://', as in 'gs://bucket/object'."
        )
    bucket, _, name = path[len(GS_SCHEME) :].partition("/")
    if not bucket:
        raise InvalidCloudPathError(f"{path!r} has no bucket name: write it as 'gs://bucket/object'.")
    return make_gcs_path(bucket, name, allow_empty_name=allow_empty_name)
