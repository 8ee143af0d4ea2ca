"""Where the Dagster I/O manager keeps each asset's file in GCS: pure path arithmetic, no requests.

The layout is `gs://{bucket}/{prefix}/{asset key path}/{partition part}/{file name}`:

- the asset key's components become directories (`AssetKey(["raw", "readings"])` -> `raw/readings`);
- a single-dimension partition key is one directory; a multi-dimension key is one directory per dimension, ordered by
  dimension name (`{"date": "2024-01-01", "site": "x"}` -> `2024-01-01/x`), as Dagster's `UPathIOManager` does;
- the file name is the datafile's own name, so its extension is kept and the object is recognisable in the console.
  Each asset (partition) directory holds one object: the I/O manager removes the previous object when the name
  changes, and finds the object again by listing the directory (one request that returns its metadata).

Path components are percent-encoded where they would otherwise change the layout (`/`, a lone `.` or `..`, control
characters), so any partition key maps to exactly one directory and back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote

from octue_dagster.core.gcs_path import GCSPath, make_gcs_path, validate_bucket_name
from octue_dagster.exceptions import InvalidCloudPathError

#: Characters left as they are in a path component; everything else is percent-encoded.
_SAFE_CHARACTERS = "-_.~:=+,@ "

PartitionKey = str | Mapping[str, str] | None


def encode_component(component: str) -> str:
    """Make one asset-key component or partition key safe to use as a single directory name."""
    if not isinstance(component, str) or component == "":
        raise InvalidCloudPathError(
            f"Asset key components and partition keys must be non-empty strings; got {component!r}."
        )
    encoded = quote(component, safe=_SAFE_CHARACTERS)
    # "." and ".." would be collapsed by some tools (and are reserved object names), so encode their dots.
    if encoded in {".", ".."}:
        encoded = encoded.replace(".", "%2E")
    return encoded


def validate_prefix(prefix: str) -> str:
    """Return the prefix without a trailing '/', or raise `InvalidCloudPathError` saying what is wrong with it.

    A prefix is a relative folder inside the bucket, such as `dagster` or `team/pipelines`; `""` means the bucket root.
    """
    if not isinstance(prefix, str):
        raise InvalidCloudPathError(f"The prefix must be a string such as 'dagster'; got {prefix!r}.")
    if prefix.startswith("gs://"):
        raise InvalidCloudPathError(
            f"The prefix {prefix!r} is a full gs:// URI; give the bucket separately and only the folder as the "
            f"prefix (e.g. bucket='my-bucket', prefix='dagster')."
        )
    if prefix.startswith("/"):
        raise InvalidCloudPathError(f"The prefix {prefix!r} starts with '/'; give a relative folder such as 'dagster'.")
    cleaned = prefix[:-1] if prefix.endswith("/") else prefix
    if cleaned == "":
        return ""
    for segment in cleaned.split("/"):
        if segment in {"", ".", ".."}:
            raise InvalidCloudPathError(
                f"The prefix {prefix!r} contains an empty, '.' or '..' segment; give a plain folder such as "
                f"'dagster' or 'team/pipelines'."
            )
        if "\\" in segment or any(ord(character) < 32 for character in segment):
            raise InvalidCloudPathError(f"The prefix {prefix!r} contains a backslash or control character.")
    return cleaned


def partition_segments(partition_key: PartitionKey) -> list[str]:
    """The directory names for a partition key: none, one, or one per dimension ordered by dimension name.

    A multi-dimension key is given as a mapping of dimension name to key (a `MultiPartitionKey`'s
    `keys_by_dimension`).
    """
    if partition_key is None:
        return []
    keys_by_dimension = getattr(partition_key, "keys_by_dimension", None)
    if keys_by_dimension is not None:
        partition_key = keys_by_dimension
    if isinstance(partition_key, Mapping):
        return [encode_component(partition_key[dimension]) for dimension in sorted(partition_key)]
    return [encode_component(str(partition_key))]


def asset_directory(
    bucket: str, prefix: str, asset_key_path: Sequence[str], partition_key: PartitionKey = None
) -> GCSPath:
    """The folder (ending in '/') that holds the object of one asset, or of one partition of it."""
    if not asset_key_path:
        raise InvalidCloudPathError("An asset key must have at least one component.")
    cleaned_prefix = validate_prefix(prefix)
    segments = [cleaned_prefix] if cleaned_prefix else []
    segments += [encode_component(part) for part in asset_key_path]
    segments += partition_segments(partition_key)
    return make_gcs_path(validate_bucket_name(bucket), "/".join(segments) + "/")


def asset_object_path(
    bucket: str, prefix: str, asset_key_path: Sequence[str], partition_key: PartitionKey, file_name: str
) -> GCSPath:
    """`gs://{bucket}/{prefix}/{asset key path}/{partition part}/{file name}` for one asset (partition)."""
    if not file_name or "/" in file_name or file_name in {".", ".."}:
        raise InvalidCloudPathError(
            f"A datafile's name must be a plain file name (no '/'), such as 'readings.csv'; got {file_name!r}."
        )
    directory = asset_directory(bucket, prefix, asset_key_path, partition_key)
    return make_gcs_path(directory.bucket, directory.name + file_name)


__all__ = [
    "asset_directory",
    "asset_object_path",
    "encode_component",
    "partition_segments",
    "validate_prefix",
]
