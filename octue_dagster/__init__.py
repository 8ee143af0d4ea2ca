"""octue_dagster: Datafiles with Octue metadata on Google Cloud Storage, for Dagster pipelines."""

import importlib
from typing import TYPE_CHECKING, Any

from octue_dagster.core.storage.gcs_path import GCSPath, parse_gcs_path
from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.core.dataset.filters import FilterDict, FilterList, FilterSet
from octue_dagster.core.dataset.manifest import Manifest
from octue_dagster.exceptions import (
    BrokenSequenceError,
    BucketNotFoundError,
    ChecksumMismatchError,
    CloudObjectNotFoundError,
    ConflictError,
    CorruptMetadataFileError,
    DatafileExistsError,
    DatafileNotFoundError,
    ForeignObjectError,
    InvalidCloudPathError,
    InvalidFilterError,
    InvalidInputError,
    InvalidLabelError,
    InvalidMetadataError,
    InvalidTagError,
    InvalidTimestampError,
    InvalidTimestampTypeError,
    LocalFileChangedError,
    CloudLocationNotSpecifiedError,
    OctueCompatibilityWarning,
    MetadataFileBusyError,
    MissingCredentialsError,
    MissingDependencyError,
    OctueDagsterError,
    ReadOnlyDatafileError,
    ReadOnlyDatasetError,
    InvalidSerialisationError,
    StoragePermissionError,
    StorageRequestError,
    StorageUnavailableError,
    UnexpectedNumberOfResultsError,
    UnsafeFolderError,
    UnknownArgumentError,
    UnsupportedTypeError,
)
from octue_dagster.exceptions import (  # the recorded version, the library's folders, disk space (issue 17)
    FolderNotWritableError,
    InsufficientSpaceError,
    PartitionBusyError,
    StaleMaterializationError,
)
from octue_dagster.core.metadata.values import LabelSet, TagDict
from octue_dagster.core.listing.selection import RetagCounts, RetagSpec, list_datafiles, retag_objects
from octue_dagster.core.storage.store import Store, StoreSettings

# The Dagster layer is imported on first use, so that scripts and worker processes that only handle Datafiles do not
# pay for importing dagster (seconds per process).
_DAGSTER_NAMES = {
    "build_datafile_asset_checks": "octue_dagster.dagster.asset_checks",
    "datafile_data_version": "octue_dagster.dagster.ui_metadata",
    "datafile_metadata": "octue_dagster.dagster.ui_metadata",
    "DatafileIOManager": "octue_dagster.dagster.io_manager",
    "datafile_output": "octue_dagster.dagster.io_manager",
    "materialize_datafile": "octue_dagster.dagster.io_manager",
    "on_upstream_data_version_change": "octue_dagster.dagster.io_manager",
    "gcs_observable_source_asset": "octue_dagster.dagster.observation",
    "gcs_prefix_sensor": "octue_dagster.dagster.observation",
    "DatafileResource": "octue_dagster.dagster.resources",
    "StoreConfig": "octue_dagster.dagster.resources",
    "build_retag_job": "octue_dagster.dagster.retag_job",
    "build_retag_schedule": "octue_dagster.dagster.retag_job",
    "build_retention_job": "octue_dagster.dagster.retention_job",
    "build_retention_schedule": "octue_dagster.dagster.retention_job",
    # Components for `defs.yaml` (types `octue_dagster.<name>`; `dg list components` lists them).
    "DatafileIOManagerComponent": "octue_dagster.dagster.components",
    "DatafileResourceComponent": "octue_dagster.dagster.components",
    "ExternalDatafilesComponent": "octue_dagster.dagster.components",
    "RetagComponent": "octue_dagster.dagster.components",
    "RetentionComponent": "octue_dagster.dagster.components",
}

if TYPE_CHECKING:
    from octue_dagster.dagster.asset_checks import build_datafile_asset_checks
    from octue_dagster.dagster.ui_metadata import datafile_data_version, datafile_metadata
    from octue_dagster.dagster.io_manager import (
        DatafileIOManager,
        datafile_output,
        materialize_datafile,
        on_upstream_data_version_change,
    )
    from octue_dagster.dagster.observation import gcs_observable_source_asset, gcs_prefix_sensor
    from octue_dagster.dagster.resources import DatafileResource, StoreConfig
    from octue_dagster.dagster.retag_job import build_retag_job, build_retag_schedule
    from octue_dagster.dagster.retention_job import build_retention_job, build_retention_schedule
    from octue_dagster.dagster.components import (
        DatafileIOManagerComponent,
        DatafileResourceComponent,
        ExternalDatafilesComponent,
        RetagComponent,
        RetentionComponent,
    )


def __getattr__(name: str) -> Any:
    module = _DAGSTER_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'octue_dagster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The lazy names too, so that `dir()` and tools that list a module's contents (dg's component registry) see them.
    return sorted(set(globals()) | set(_DAGSTER_NAMES))


__version__ = "0.2.0"

__all__ = [
    "DatafileIOManagerComponent",
    "DatafileResourceComponent",
    "ExternalDatafilesComponent",
    "RetagComponent",
    "RetentionComponent",
    "DatafileIOManager",
    "DatafileResource",
    "StoreConfig",
    "build_retag_job",
    "build_retag_schedule",
    "build_retention_job",
    "build_retention_schedule",
    "build_datafile_asset_checks",
    "datafile_data_version",
    "datafile_metadata",
    "datafile_output",
    "gcs_observable_source_asset",
    "gcs_prefix_sensor",
    "materialize_datafile",
    "on_upstream_data_version_change",
    "BrokenSequenceError",
    "BucketNotFoundError",
    "ChecksumMismatchError",
    "CloudObjectNotFoundError",
    "ConflictError",
    "CorruptMetadataFileError",
    "Datafile",
    "DatafileExistsError",
    "DatafileNotFoundError",
    "ForeignObjectError",
    "Dataset",
    "FilterDict",
    "FilterList",
    "FilterSet",
    "GCSPath",
    "InvalidCloudPathError",
    "InvalidFilterError",
    "InvalidInputError",
    "InvalidLabelError",
    "InvalidMetadataError",
    "InvalidTagError",
    "InvalidTimestampError",
    "InvalidTimestampTypeError",
    "LocalFileChangedError",
    "CloudLocationNotSpecifiedError",
    "OctueCompatibilityWarning",
    "MetadataFileBusyError",
    "LabelSet",
    "RetagCounts",
    "RetagSpec",
    "Store",
    "StoreSettings",
    "Manifest",
    "MissingCredentialsError",
    "MissingDependencyError",
    "OctueDagsterError",
    "ReadOnlyDatafileError",
    "ReadOnlyDatasetError",
    "InvalidSerialisationError",
    "StoragePermissionError",
    "StorageRequestError",
    "StorageUnavailableError",
    "TagDict",
    "list_datafiles",
    "UnexpectedNumberOfResultsError",
    "UnsafeFolderError",
    "UnknownArgumentError",
    "UnsupportedTypeError",
    "parse_gcs_path",
    "retag_objects",
    "FolderNotWritableError",
    "InsufficientSpaceError",
    "PartitionBusyError",
    "StaleMaterializationError",
]
