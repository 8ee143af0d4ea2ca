"""Where the I/O manager keeps what it stores: pure path arithmetic, no requests, and the one place paths are built.

Every asset (partition) and every plain op output gets its own *address*: a folder that no other address equals,
contains or is contained in. The layout (under `gs://{bucket}/{prefix}/`):

- an asset's key parts become folders (`AssetKey(["raw", "readings"])` -> `raw/readings/`);
- then its partition, as Hive-style `name=value` folders that BigQuery external tables, DuckDB, Polars and Spark
  read natively: `partition=2024-01-01/` for a single-dimension key, one folder per dimension ordered by name for a
  multi-dimension key (`date=2024-01-01/site=north/`), and the folder `=/` for an unpartitioned asset;
- a plain op output (no asset key) lives under `run={run id}/step={step key}/output={output name}/=/`.

Every key part, dimension name and partition key is percent-encoded (as Hive does), so `/`, `=`, `%`, `.`, `..`,
control characters and non-ASCII text can never change the layout: an encoded key part never holds a bare `=`, so
a segment with `=` is always a partition (or an op output's run), never an asset's name. That is why no two
distinct (asset key, partition key) pairs can share or nest an address (tests/test_addresses.py proves it with
hypothesis), and why an asset called `sites/north` cannot meet partition `north` of asset `sites`.

Inside its address, an output's object is named after the asset (or the op output), keeping the returned file's
extension (`raw/readings/=/readings.csv`), so the URI does not depend on what the local file happened to be called.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from urllib.parse import quote

from octue_dagster.core.storage.gcs_path import GCSPath, make_gcs_path, validate_bucket_name
from octue_dagster.exceptions import InvalidCloudPathError

#: Characters left as they are in a segment; everything else (including `=`, `%` and `/`) is percent-encoded.
_SAFE_CHARACTERS = "-_.~+,@ "
#: The folder of an unpartitioned asset: a bare `=` is what no key part or partition folder can be.
UNPARTITIONED_FOLDER = "="
#: The Hive column name of a single-dimension partition key.
PARTITION_DIMENSION = "partition"
#: Compression suffixes kept together with the extension before them (`.csv.gz`).
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".lz4", ".br"}

PartitionKey = str | Mapping[str, str] | None
#: Octue's SDK's rule for its own metadata objects: a name ending in `.octue`, or holding `.signed_metadata_files`.
_OCTUE_METADATA = ".octue"
_OCTUE_SIGNED_METADATA = ".signed_metadata_files"


def encode_segment(text: str) -> str:
    """Percent-encode one key part, dimension name or partition key into one folder name (injective, decodable).

    The empty string becomes `%` (never produced otherwise, since a literal `%` is always encoded as `%25`), and
    `.`/`..` get their dots encoded because some tools collapse them.
    """
    if not isinstance(text, str):
        raise InvalidCloudPathError(f"Asset key parts and partition keys must be strings; got {text!r}.")
    if text == "":
        return "%"
    encoded = quote(text, safe=_SAFE_CHARACTERS)
    if encoded in {".", ".."} or _OCTUE_SIGNED_METADATA in encoded:
        # `.signed_metadata_files` anywhere in a name makes Octue's SDK (and listings that follow its rule) skip the
        # object as a metadata file, so a key holding it must not put it in the path.
        encoded = encoded.replace(".", "%2E")
    return encoded


def _dimension_name(name: str) -> str:
    """A multi-dimension key's dimension name as a Hive column; `partition` is reserved for single-dimension keys,
    so a dimension of that name is written with its first letter percent-encoded (it still decodes to itself)."""
    encoded = encode_segment(name)
    return "%70" + encoded[1:] if encoded == PARTITION_DIMENSION else encoded


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
        if "\\" in segment or "=" in segment or any(ord(character) < 32 for character in segment):
            raise InvalidCloudPathError(
                f"The prefix {prefix!r} contains a backslash, '=' or control character; give a plain folder such as "
                f"'dagster'."
            )
    return cleaned


def partition_segments(partition_key: PartitionKey) -> list[str]:
    """The Hive-style folders of a partition key: `=` when unpartitioned, `partition=<key>` for one dimension,
    `<dimension>=<key>` per dimension (ordered by name) for a multi-dimension key (a mapping or `MultiPartitionKey`).
    """
    if partition_key is None:
        return [UNPARTITIONED_FOLDER]
    keys_by_dimension = getattr(partition_key, "keys_by_dimension", None)
    if keys_by_dimension is not None:
        partition_key = keys_by_dimension
    if isinstance(partition_key, Mapping):
        if len(partition_key) < 2:
            raise InvalidCloudPathError(
                f"A multi-dimension partition key needs at least two dimensions; got {dict(partition_key)!r}."
            )
        return [f"{_dimension_name(name)}={encode_segment(partition_key[name])}" for name in sorted(partition_key)]
    return [f"{PARTITION_DIMENSION}={encode_segment(str(partition_key))}"]


@dataclasses.dataclass(frozen=True)
class Address:
    """The folder (ending in `/`) owned by one asset partition or op output, and the owner mark of its objects.

    `owner` is written into the custom metadata of every object the I/O manager stores there; only objects whose
    mark equals it are ever replaced, loaded or deleted by the I/O manager.
    """

    folder: GCSPath
    owner: str
    #: The default object name without extension: the asset key's last part, or the op output's name.
    stem: str

    def object_path(self, name: str) -> GCSPath:
        """The object called `name` in this address's folder."""
        # make_gcs_path rejects names over GCS's 1024-byte limit (long asset or partition keys).
        return make_gcs_path(self.folder.bucket, self.folder.name + validate_object_name(name))


def _join(bucket: str, prefix: str, segments: Sequence[str]) -> GCSPath:
    cleaned_prefix = validate_prefix(prefix)
    return make_gcs_path(validate_bucket_name(bucket), "/".join([cleaned_prefix, *segments] if cleaned_prefix else segments) + "/")


def _partition_json(partition_key: PartitionKey) -> object:
    keys_by_dimension = getattr(partition_key, "keys_by_dimension", None)
    if keys_by_dimension is not None:
        return dict(sorted(keys_by_dimension.items()))
    return dict(sorted(partition_key.items())) if isinstance(partition_key, Mapping) else partition_key


def asset_address(
    bucket: str, prefix: str, asset_key_path: Sequence[str], partition_key: PartitionKey = None
) -> Address:
    """The address of one asset (partition): `{prefix}/{key parts}/{partition folders}/`."""
    if not asset_key_path:
        raise InvalidCloudPathError("An asset key must have at least one part.")
    segments = [encode_segment(part) for part in asset_key_path] + partition_segments(partition_key)
    return Address(
        _join(bucket, prefix, segments), asset_owner(asset_key_path, partition_key), encode_segment(asset_key_path[-1])
    )


def asset_owner(asset_key_path: Sequence[str], partition_key: PartitionKey = None) -> str:
    """The owner mark of one asset (partition)'s objects. It does not depend on the bucket or prefix, so whoever
    knows the asset key and partition (an asset check) can tell the I/O manager's objects from others'."""
    return json.dumps(
        {"asset_key": list(asset_key_path), "partition": _partition_json(partition_key)},
        sort_keys=True,
        separators=(",", ":"),
    )


def op_output_address(
    bucket: str, prefix: str, run_id: str, step_key: str, output_name: str, mapping_key: str | None = None
) -> Address:
    """The address of a plain op output: `{prefix}/run={run id}/step={step key}/output={name}/=/` (or, for a
    dynamic output, `.../output={name}/mapping={mapping key}/`)."""
    segments = [f"run={encode_segment(run_id)}", f"step={encode_segment(step_key)}", f"output={encode_segment(output_name)}"]
    # As for assets, the last folder says which instance: `=` for the only one, `mapping=<key>` for a mapped output.
    segments.append(UNPARTITIONED_FOLDER if mapping_key is None else f"mapping={encode_segment(mapping_key)}")
    owner = json.dumps(
        {"run_id": run_id, "step_key": step_key, "output": output_name, "mapping_key": mapping_key},
        sort_keys=True,
        separators=(",", ":"),
    )
    return Address(_join(bucket, prefix, segments), owner, encode_segment(output_name))


def op_outputs_root(bucket: str, prefix: str) -> GCSPath:
    """The listing prefix under which every op output's run folder (`run=...`) lies."""
    cleaned_prefix = validate_prefix(prefix)
    return make_gcs_path(validate_bucket_name(bucket), f"{cleaned_prefix}/run=" if cleaned_prefix else "run=")


def run_folder(bucket: str, prefix: str, run_id: str) -> GCSPath:
    """The folder holding every op output of one run."""
    return _join(bucket, prefix, [f"run={encode_segment(run_id)}"])


def extension_of(file_name: str) -> str:
    """The extension to keep from a file name: `.csv`, `.csv.gz`, or `""`."""
    suffixes = PurePosixPath(file_name).suffixes
    if not suffixes:
        return ""
    if suffixes[-1].lower() in _COMPRESSION_SUFFIXES and len(suffixes) > 1 and suffixes[-2][1:].isalnum():
        return "".join(suffixes[-2:])
    return suffixes[-1]


def validate_object_name(name: str) -> str:
    """Return `name` if it is a plain file name usable as an object name in an address, else raise."""
    if not isinstance(name, str) or not name or "/" in name or name in {".", ".."} or "\x00" in name:
        raise InvalidCloudPathError(
            f"An object name must be a plain file name (no '/'), such as 'readings.csv'; got {name!r}."
        )
    if any(ord(character) < 32 for character in name):
        raise InvalidCloudPathError(f"The object name {name!r} contains a control character.")
    if name.endswith(_OCTUE_METADATA) or _OCTUE_SIGNED_METADATA in name:
        raise InvalidCloudPathError(
            f"The object name {name!r} is one Octue's SDK treats as dataset metadata (a name ending in "
            f"{_OCTUE_METADATA!r} or holding {_OCTUE_SIGNED_METADATA!r}), so it would be skipped by every listing and "
            f"could overwrite a dataset's metadata. Choose another name or extension."
        )
    return name


def default_object_name(address: Address, file_name: str) -> str:
    """The object name for a file stored at `address`: the address's stem with the file's extension."""
    return address.stem + extension_of(file_name)


__all__ = [
    "Address",
    "PARTITION_DIMENSION",
    "UNPARTITIONED_FOLDER",
    "asset_address",
    "asset_owner",
    "default_object_name",
    "encode_segment",
    "extension_of",
    "op_output_address",
    "op_outputs_root",
    "partition_segments",
    "run_folder",
    "validate_object_name",
    "validate_prefix",
]
