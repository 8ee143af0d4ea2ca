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


import os
import typing
from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetKey,
    AutomationCondition,
    ConfigurableIOManager,
    DagsterInvariantViolationError,
    DataVersion,
    InitResourceContext,
    InputContext,
    MaterializeResult,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    Output,
    OutputContext,
    ResourceDependency,
)
from dagster_gcp import GCSResource
from pydantic import Field, PrivateAttr

from octue_dagster.dagster import addresses as paths
from octue_dagster.core.selection import datafile_objects
from octue_dagster.core.store import ObjectInfo, Store
from octue_dagster.core.gcs_path import GCSPath, make_gcs_path, validate_bucket_name
from octue_dagster.dagster.ui_metadata import datafile_data_version, datafile_metadata
from octue_dagster.core.datafile import Datafile
from octue_dagster.exceptions import (
    BucketNotFoundError,
    CloudObjectNotFoundError,
    ConflictError,
    InvalidCloudPathError,
    InvalidMetadataError,
)
from octue_dagster.dagster.resources import StoreConfig, store_from

#: Input metadata key: skip missing upstream partitions instead of failing (as with Dagster's UPathIOManager).
ALLOW_MISSING_PARTITIONS = "allow_missing_partitions"
#: Folder (under the prefix) for outputs of plain ops, which have no asset key.
OP_OUTPUTS_FOLDER = "_op_outputs"


class DatafileIOManager(ConfigurableIOManager):
    """Stores `Datafile` outputs in `gs://{bucket}/{prefix}/...` and loads them as lazy cloud datafiles."""

    bucket: str = Field(description="The GCS bucket to store asset files in (it must exist).")
    prefix: str = Field(default="dagster", description="Folder inside the bucket, e.g. 'dagster' or 'team/assets'.")
    gcs: ResourceDependency[GCSResource]
    store_settings: StoreConfig = Field(default_factory=StoreConfig, description="GCS timeouts and retries.")

    _gcs_store: Store | None = PrivateAttr(default=None)

    # --- configuration -----------------------------------------------------------------------------------------------

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Check the configuration at start-up so a typo fails the run before any asset computes."""
        if not self.bucket or not self.bucket.strip():
            raise InvalidCloudPathError("DatafileIOManager needs a bucket: set `bucket` to the name of a GCS bucket.")
        if self.bucket.startswith("gs://"):
            raise InvalidCloudPathError(
                f"DatafileIOManager's bucket {self.bucket!r} should be a bare bucket name, without 'gs://' or a path."
            )
        validate_bucket_name(self.bucket)
        paths.validate_prefix(self.prefix)
        if not self.store.bucket_exists(self.bucket):
            raise BucketNotFoundError(
                f"DatafileIOManager's bucket {self.bucket!r} does not exist (or is not visible with these "
                f"credentials). Create it or fix the `bucket` setting."
            )

    @property
    def store(self) -> Store:
        """The store over the `gcs` resource's client (made once per process)."""
        if self._gcs_store is None:
            self._gcs_store = store_from(self.gcs, self.store_settings)
        return self._gcs_store

    # --- paths -------------------------------------------------------------------------------------------------------

    def _directory(self, context: InputContext | OutputContext, partition_key: Any = None) -> GCSPath:
        """The folder holding the object for this output (or the upstream output of this input)."""
        if context.has_asset_key:
            return paths.asset_directory(self.bucket, self.prefix, context.asset_key.path, partition_key)
        output = context if isinstance(context, OutputContext) else context.upstream_output
        if output is None:
            raise DagsterInvariantViolationError("DatafileIOManager cannot load an input that has no upstream output.")
        return paths.asset_directory(self.bucket, self.prefix, [OP_OUTPUTS_FOLDER, *output.get_identifier()])

    @staticmethod
    def _path_partition_key(context: InputContext | OutputContext, partition_key: str) -> Any:
        """A partition key as `paths` wants it: a multi-dimension key becomes its per-dimension mapping."""
        if isinstance(partition_key, MultiPartitionKey):
            return partition_key.keys_by_dimension
        partitions_def = context.asset_partitions_def
        if isinstance(partitions_def, MultiPartitionsDefinition):
            return partitions_def.get_partition_key_from_str(partition_key).keys_by_dimension
        return partition_key

    def _describe(self, context: InputContext | OutputContext, partition_key: str | None = None) -> str:
        what = f"asset {context.asset_key.to_user_string()}" if context.has_asset_key else f"output {context.name!r}"
        return what + (f" partition {partition_key!r}" if partition_key is not None else "")

    # --- output ------------------------------------------------------------------------------------------------------

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        """Store a returned `Datafile` (or, for a run over several partitions, a dict of partition key to Datafile)."""
        partition_keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
        if len(partition_keys) > 1:
            if not isinstance(obj, Mapping) or set(map(str, obj)) != set(map(str, partition_keys)):
                raise TypeError(
                    f"{self._describe(context)} materializes {len(partition_keys)} partitions in one run, so it must "
                    f"return a dict of partition key to Datafile for exactly those partitions; got "
                    f"{type(obj).__name__}."
                )
            by_key = {str(key): value for key, value in obj.items()}
            for key in partition_keys:
                self._store(context, self._require_datafile(context, by_key[str(key)], key), key)
            # Per-partition data versions cannot be set from here; each partition's file is recorded by its path.
            context.add_output_metadata({"partitions_stored": len(partition_keys)})
            return
        partition_key = partition_keys[0] if partition_keys else None
        stored = self._store(context, self._require_datafile(context, obj, partition_key), partition_key)
        context.add_output_metadata(datafile_metadata(stored))
        if context.has_asset_key:
            _set_step_data_version(context, context.asset_key, datafile_data_version(stored))

    def _require_datafile(self, context: OutputContext, obj: Any, partition_key: str | None) -> Datafile:
        if isinstance(obj, Datafile):
            return obj
        raise TypeError(
            f"DatafileIOManager can only store a Datafile, but {self._describe(context, partition_key)} returned a "
            f"{type(obj).__module__}.{type(obj).__qualname__}. Return a Datafile (e.g. from DatafileResource.new), "
            f"or give this asset another I/O manager."
        )

    def _store(self, context: OutputContext, datafile: Datafile, partition_key: str | None) -> Datafile:
        """Put the datafile at its asset path (upload, server-side copy or nothing) and remove stale siblings."""
        directory = self._directory(
            context, self._path_partition_key(context, partition_key) if partition_key is not None else None
        )
        destination = make_gcs_path(self.bucket, directory.name + datafile.name)
        listing = list(self.store.list_objects(directory, delimiter="/"))
        previous = [info for info in listing if info.path != destination]
        current = next((info for info in listing if info.path == destination), None)
        stored = self._bind(datafile, destination, current, context, partition_key)
        stored.upload(str(destination))
        # One object per asset (partition) folder: a differently named file from an earlier run would make loading
        # ambiguous, so it goes once the new one is safely in place (only at the generation we saw).
        for info in previous:
            if not info.path.name.endswith("/"):
                context.log.info(f"Removing {info.path}, replaced by {destination}.")
                try:
                    self.store.delete_object(info.path, if_generation_match=info.generation)
                except (CloudObjectNotFoundError, ConflictError):
                    pass
        return stored

    def _bind(
        self,
        datafile: Datafile,
        destination: GCSPath,
        current: ObjectInfo | None,
        context: OutputContext,
        partition_key: str | None,
    ) -> Datafile:
        """A datafile using this I/O manager's client, with the returned datafile's content and metadata, whose
        `upload(destination)` writes it there. `current` is what the destination holds now, if anything."""
        if datafile.cloud_path is None:
            if not os.path.isfile(datafile.local_path):
                raise FileNotFoundError(
                    f"{self._describe(context, partition_key)} returned the local datafile {datafile.local_path}, "
                    f"which does not exist: write it (e.g. `with datafile.open('w') as f: ...`) before returning it."
                )
            if current is not None and current.crc32c == datafile.hash_value:
                # Same content as stored: it is the same datafile, so it keeps its stored id, and unchanged labels,
                # tags and timestamp mean nothing at all is written (not even a metadata patch).
                try:
                    return Datafile(
                        datafile.local_path,
                        cloud_path=str(destination),
                        timestamp=datafile.timestamp,
                        labels=datafile.labels,
                        tags=datafile.tags,
                        store=self.store,
                    )
                except InvalidMetadataError:
                    pass  # unreadable stored metadata: replace it, as for new content
            # One metadata request for the destination; the upload is conditional on the generation it saw.
            return Datafile(
                datafile.local_path,
                cloud_path=str(destination),
                id=datafile.id,
                timestamp=datafile.timestamp,
                labels=datafile.labels,
                tags=datafile.tags,
                ignore_stored_metadata=True,
                store=self.store,
            )
        info = datafile.object_info
        if info is None:
            raise CloudObjectNotFoundError(
                f"{self._describe(context, partition_key)} returned {datafile.cloud_path}, which does not exist in GCS."
            )
        # Uploading a cloud datafile to another path copies it server side (or only patches metadata if the
        # destination already holds the same content); to its own path, it only patches changed metadata.
        source = Datafile.from_object_info(info, store=self.store)
        source.labels, source.tags, source.timestamp = datafile.labels, datafile.tags, datafile.timestamp
        return source

    # --- input -------------------------------------------------------------------------------------------------------

    def load_input(self, context: InputContext) -> Datafile | dict[str, Datafile]:
        """A cloud `Datafile` for the upstream output (one listing request, no download), or a dict of them by
        partition key when several upstream partitions are loaded."""
        if not (context.has_asset_key and context.has_asset_partitions):
            return self._load(context, None)
        partition_keys = list(context.asset_partition_keys)
        if len(partition_keys) == 1 and not _wants_dict(context):
            return self._load(context, partition_keys[0])
        allow_missing = bool((context.definition_metadata or {}).get(ALLOW_MISSING_PARTITIONS, False))
        loaded: dict[str, Datafile] = {}
        for key in partition_keys:
            try:
                loaded[str(key)] = self._load(context, key)
            except FileNotFoundError as error:
                if not allow_missing:
                    raise
                context.log.warning(f"Skipping a missing partition ({ALLOW_MISSING_PARTITIONS}=True): {error}")
        return loaded

    def _load(self, context: InputContext, partition_key: str | None) -> Datafile:
        directory = self._directory(
            context, self._path_partition_key(context, partition_key) if partition_key is not None else None
        )
        found = list(datafile_objects(self.store, directory, delimiter="/"))
        if not found:
            self.store.raise_if_bucket_missing(directory)
            raise CloudObjectNotFoundError(
                f"No stored file for {self._describe(context, partition_key)}: {directory} is empty. Materialize it "
                f"first."
            )
        if len(found) > 1:
            # Only possible if a run was interrupted between writing a renamed file and removing the old one.
            found.sort(key=lambda info: (info.updated is not None, info.updated))
            context.log.warning(
                f"{directory} holds {len(found)} objects; loading the most recently updated, {found[-1].path}."
            )
        return Datafile.from_object_info(found[-1], store=self.store)


def _wants_dict(context: InputContext) -> bool:
    """Whether the input is annotated as a dict (then even one partition is given as a dict, as UPathIOManager does)."""
    typing_type = context.dagster_type.typing_type
    origin = typing.get_origin(typing_type) or typing_type
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _set_step_data_version(context: OutputContext, asset_key: AssetKey, version: DataVersion) -> None:
    """Make `version` the data version Dagster records for this materialization.

    Uses the step's data-version cache (the mechanism behind `OpExecutionContext.set_data_version`), which Dagster
    consults after `handle_output` returns; a data version given explicitly with `Output`/`MaterializeResult` still
    takes precedence. Outside a real run (e.g. `build_output_context`) there is no step and nothing to do.
    """
    try:
        step_context = context.step_context
    except Exception:
        return
    setter = getattr(step_context, "set_data_version", None)
    if setter is not None:
        setter(asset_key, version)


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
