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
    StorageUnavailableError,
)
from octue_dagster.metadata import LabelSet, TagDict

# The Dagster layer (imports dagster).
from octue_dagster.dagster_metadata import datafile_data_version, datafile_metadata
from octue_dagster.io_manager import (
    DatafileIOManager,
    datafile_output,
    materialize_datafile,
    on_upstream_data_version_change,
)
from octue_dagster.observation import gcs_observable_source_asset, gcs_prefix_sensor
from octue_dagster.resource import DatafileResource, RetagCounts
from octue_dagster.retagging import build_retag_job, build_retag_schedule

__version__ = "0.1.0"

__all__ = [
    "DatafileIOManager",
    "DatafileResource",
    "RetagCounts",
    "build_retag_job",
    "build_retag_schedule",
    "datafile_data_version",
    "datafile_metadata",
    "datafile_output",
    "gcs_observable_source_asset",
    "gcs_prefix_sensor",
    "materialize_datafile",
    "on_upstream_data_version_change",
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
    "StorageUnavailableError",
    "TagDict",
    "parse_gcs_path",
]
