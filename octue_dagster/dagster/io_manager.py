"""`DatafileIOManager`: assets return `Datafile`s, which are stored in GCS by content hash, never pickled.

An asset returns a `Datafile` (local, or already in GCS). The I/O manager puts it at
`gs://{bucket}/{prefix}/{asset key}/{partition}/{datafile name}` (see `octue_dagster.dagster.addresses`):

- a local file is uploaded with its metadata in one request, unless the object already holds the same crc32c, in which
  case nothing is uploaded, the object's generation and Octue id stay the same, and only changed labels, tags or
  timestamp are patched;
- a datafile already in GCS elsewhere is copied server side (or left alone if the content is already there);
- anything else is rejected with an error naming the asset and the type received.

Downstream assets get a cloud `Datafile` built from one listing request: nothing is downloaded until it is opened.

Data versions: the asset's Dagster data version is the file's crc32c, so re-materializing identical content leaves
downstream assets fresh and changed content makes them stale. Dagster 1.13 has no public way for an I/O manager to
set a data version; `handle_output` sets it through the step's data-version cache (what
`OpExecutionContext.set_data_version` does), which Dagster reads when it records the materialization after the I/O
manager returns. `datafile_output` / `materialize_datafile` set it through public API (`Output(data_version=...)` /
`MaterializeResult(data_version=...)`) for code that prefers not to rely on that.
"""


from typing import Any, Optional

from dagster import (
    AutomationCondition,
    ConfigurableIOManager,
    InitResourceContext,
    InputContext,
    MaterializeResult,
    Output,
    OutputContext,
    ResourceDependency,
)
from dagster_gcp import GCSResource
from pydantic import Field, PrivateAttr

from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.storage.gcs_path import validate_bucket_name
from octue_dagster.core.storage.store import Store
from octue_dagster.dagster import addresses
from octue_dagster.dagster.asset_storage import AssetStorage
from octue_dagster.dagster.catalog import CatalogSettings
from octue_dagster.dagster.resources import StoreConfig, store_from
from octue_dagster.dagster.type_routers import ALLOW_MISSING_PARTITIONS
from octue_dagster.dagster.ui_metadata import datafile_data_version
from octue_dagster.exceptions import BucketNotFoundError, InvalidCloudPathError

class DatafileIOManager(ConfigurableIOManager):
    """Stores `Datafile` outputs in `gs://{bucket}/{prefix}/...` and loads them as lazy cloud datafiles.

    The configuration Dagster sees; the work is done by an `AssetStorage` built once per process.

    Example::

        from dagster import Definitions, asset
        from dagster_gcp import GCSResource
        from octue_dagster import Datafile, DatafileIOManager, DatafileResource

        @asset
        def readings(datafiles: DatafileResource) -> Datafile:
            datafile = datafiles.new("readings.csv")
            with datafile.open("w") as file:
                file.write("t,v\\n0,1\\n")
            return datafile

        gcs = GCSResource(project="my-project")
        # Catalog metadata (column schema, row count, preview) is on by default; e.g. count rows up to 64 MiB only
        # with `DatafileIOManager(..., catalog_max_bytes=64 * 1024**2)`, or keep rows out of Dagster's event log
        # with `catalog_preview=False`.
        defs = Definitions(
            assets=[readings],
            resources={
                "io_manager": DatafileIOManager(bucket="my-bucket", prefix="dagster", gcs=gcs),
                "datafiles": DatafileResource(gcs=gcs),
            },
        )
    """

    bucket: str = Field(description="The GCS bucket to store asset files in (it must exist).")
    prefix: str = Field(default="dagster", description="Folder inside the bucket, e.g. 'dagster' or 'team/assets'.")
    gcs: ResourceDependency[GCSResource]
    object_names: str = Field(
        default="asset",
        description=(
            "How stored objects are named: 'asset' (after the asset key's last part, keeping the returned file's "
            "extension, so re-materializing keeps the URI whatever the local file was called) or 'datafile' (the "
            "returned file's own name). One asset can choose its own name with the definition metadata "
            "'octue_dagster/object_name'."
        ),
    )
    store_settings: StoreConfig = Field(default_factory=StoreConfig, description="GCS timeouts and retries.")
    catalog_metadata: bool = Field(
        default=True,
        description=(
            "Record catalog metadata for CSV and HDF5 outputs (column schema, row count, a preview), profiled from "
            "the local file the asset wrote (never downloaded)."
        ),
    )
    catalog_preview: bool = Field(
        default=True,
        description=(
            "Copy the first rows of CSV and HDF5 tables into Dagster's event log as a preview. Turn off for data "
            "that must not be stored there (column schema and row count are still recorded)."
        ),
    )
    catalog_max_bytes: Optional[int] = Field(
        default=None,
        description=(
            "Files up to this size are read whole to count their rows (in the pass that hashes them); bigger ones "
            "get column schema and preview from their first rows and no row count. Default: "
            "$OCTUE_DAGSTER_CATALOG_MAX_BYTES, else 268435456 (256 MiB). 0 never counts."
        ),
    )

    _storage: AssetStorage | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Check the configuration at start-up so a typo fails the run before any asset computes."""
        if not self.bucket or not self.bucket.strip():
            raise InvalidCloudPathError("DatafileIOManager needs a bucket: set `bucket` to the name of a GCS bucket.")
        if self.bucket.startswith("gs://"):
            raise InvalidCloudPathError(
                f"DatafileIOManager's bucket {self.bucket!r} should be a bare bucket name, without 'gs://' or a path."
            )
        validate_bucket_name(self.bucket)
        addresses.validate_prefix(self.prefix)
        self._internal_io_manager  # checks object_names
        if not self.store.bucket_exists(self.bucket):
            raise BucketNotFoundError(
                f"DatafileIOManager's bucket {self.bucket!r} does not exist (or is not visible with these "
                f"credentials). Create it or fix the `bucket` setting."
            )

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """After the step (or, in one process, the run): every output stored is recorded by now, so the objects the
        new ones superseded are deleted and the partitions' store locks released (see `recorded_versions`)."""
        if self._storage is not None:
            self._storage.settle()

    @property
    def _internal_io_manager(self) -> AssetStorage:
        """The plain I/O manager doing the work (made once per process, over the `gcs` resource's client)."""
        if self._storage is None:
            self._storage = AssetStorage(
                store_from(self.gcs, self.store_settings),
                bucket=self.bucket,
                prefix=self.prefix,
                object_names=self.object_names,
                catalog_settings=CatalogSettings.resolve(
                    self.catalog_metadata, self.catalog_max_bytes, self.catalog_preview
                ),
            )
        return self._storage

    @property
    def store(self) -> Store:
        """The store over the `gcs` resource's client (made once per process)."""
        return self._internal_io_manager.store

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        """Store a returned `Datafile` (or, for a run over several partitions, a dict of partition key to Datafile)."""
        self._internal_io_manager.handle_output(context, obj)

    def load_input(self, context: InputContext) -> Any:
        """A cloud `Datafile` for the upstream output (one listing request, no download), or a dict of them by
        partition key when several upstream partitions are loaded."""
        return self._internal_io_manager.load_input(context)


# --- public helpers for data versions and automation ------------------------------------------------------------------


def datafile_output(datafile: Datafile, **kwargs: Any) -> Output:
    """`Output(datafile, data_version=<crc32c>)`: return this from an asset to set its data version via public API.

    The crc32c is computed from the local file (or read from the object's metadata) before the I/O manager runs.
    """
    return Output(datafile, data_version=datafile_data_version(datafile), **kwargs)


def materialize_datafile(datafile: Datafile, **kwargs: Any) -> MaterializeResult:
    """`MaterializeResult(value=datafile, data_version=<crc32c>)`: the same as `datafile_output` for assets that
    return `MaterializeResult`. Dagster passes `value` to the I/O manager, which stores the file."""
    return MaterializeResult(value=datafile, data_version=datafile_data_version(datafile), **kwargs)


def on_upstream_data_version_change() -> AutomationCondition:
    """Run an asset when an upstream asset's data version (its file's crc32c) changes, or when it is missing.

    Like `AutomationCondition.eager()`, but `eager()` fires whenever an upstream asset is materialized, even with
    identical content. This fires only for upstream materializations (or observations) that changed the data version,
    i.e. new content. It does not wait for upstream assets requested on the same tick; it reacts once they are done.
    """
    return (
        AutomationCondition.in_latest_time_window()
        & (
            AutomationCondition.newly_missing()
            | AutomationCondition.any_deps_match(AutomationCondition.data_version_changed())
        ).since_last_handled()
        & ~AutomationCondition.any_deps_missing()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
    ).with_label("on_upstream_data_version_change")


__all__ = [
    "ALLOW_MISSING_PARTITIONS",
    "DatafileIOManager",
    "datafile_output",
    "materialize_datafile",
    "on_upstream_data_version_change",
]
