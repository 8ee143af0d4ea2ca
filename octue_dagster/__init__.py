"""octue_dagster: Datafiles with Octue metadata on Google Cloud Storage, for Dagster pipelines."""

from octue_dagster.cloud_path import GCSPath, parse_gcs_path
from octue_dagster.datafile import Datafile
from octue_dagster.exceptions import (
    BucketNotFoundError,
    ChecksumMismatchError,
    CloudObjectNotFoundError,
    ConflictError,
    CorruptMetadataFileError,
    InvalidCloudPathError,
    InvalidInputError,
    InvalidLabelError,
    InvalidMetadataError,
    InvalidTagError,
    InvalidTimestampError,
    MissingCredentialsError,
    MissingDependencyError,
    OctueDagsterError,
    StoragePermissionError,
)
from octue_dagster.metadata import LabelSet, TagDict

__version__ = "0.1.0"

__all__ = [
    "BucketNotFoundError",
    "ChecksumMismatchError",
    "CloudObjectNotFoundError",
    "ConflictError",
    "CorruptMetadataFileError",
    "Datafile",
    "GCSPath",
    "InvalidCloudPathError",
    "InvalidInputError",
    "InvalidLabelError",
    "InvalidMetadataError",
    "InvalidTagError",
    "InvalidTimestampError",
    "LabelSet",
    "MissingCredentialsError",
    "MissingDependencyError",
    "OctueDagsterError",
    "StoragePermissionError",
    "TagDict",
    "parse_gcs_path",
]
