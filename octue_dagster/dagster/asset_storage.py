"""`AssetStorage`: the plain I/O manager behind `DatafileIOManager`: type routing, addresses and transfers.

`DatafileIOManager` holds the configuration Dagster sees and builds one `AssetStorage` per process (as dagster-gcp's
`GCSPickleIOManager` builds its `PickledObjectGCSIOManager`). `AssetStorage` picks a router for each output or input
(see `type_routers`), and offers the routers the operations they need: store one datafile at a partition's address,
load the datafile stored there, and describe an output for error messages.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from dagster import (
    DagsterInvariantViolationError,
    InputContext,
    IOManager,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    OutputContext,
)
from octue_dagster.core.datafile import Datafile
from octue_dagster.core.gcs_path import GCSPath, make_gcs_path
from octue_dagster.core.selection import datafile_objects
from octue_dagster.core.store import ObjectInfo, Store
from octue_dagster.dagster import addresses
from octue_dagster.dagster.recording import record_outputs
from octue_dagster.dagster.type_routers import (
    _NO_VALUE,
    TYPE_ROUTERS,
    PartitionsRouter,
    Slot,
    StoredOutput,
    TypeRouter,
    is_unannotated,
    resolve_router,
)
from octue_dagster.dagster.ui_metadata import datafile_data_version, datafile_metadata
from octue_dagster.exceptions import CloudObjectNotFoundError, ConflictError, InvalidMetadataError

#: Folder (under the prefix) for outputs of plain ops, which have no asset key.
OP_OUTPUTS_FOLDER = "_op_outputs"


class AssetStorage(IOManager):
    """Stores asset outputs in `gs://{bucket}/{prefix}/...` and loads inputs from there, routing by type.

    Example (normally built for you by `DatafileIOManager`)::

        storage = AssetStorage(Store.default(), bucket="my-bucket", prefix="dagster")
        storage.handle_output(context, datafile)
    """

    def __init__(
        self,
        store: Store,
        *,
        bucket: str,
        prefix: str,
        routers: Sequence[type[TypeRouter]] | None = None,
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.prefix = prefix
        self.routers = list(TYPE_ROUTERS if routers is None else routers)

    # --- routing -----------------------------------------------------------------------------------------------------

    def router_for(self, typing_type: Any, value: Any = _NO_VALUE) -> TypeRouter:
        """The router for an annotation (and, for unannotated outputs, the returned value)."""
        return resolve_router(typing_type, self, self.routers, value)

    def _slot(self, context: OutputContext | InputContext) -> Slot:
        if context.has_asset_key and context.has_asset_partitions:
            return Slot(context, tuple(context.asset_partition_keys))
        return Slot(context)

    def _router(self, slot: Slot, value: Any = _NO_VALUE) -> TypeRouter:
        typing_type = slot.context.dagster_type.typing_type
        router = self.router_for(typing_type, value)
        if len(slot.partition_keys) > 1 and not isinstance(router, PartitionsRouter):
            # A run over several partitions exchanges a dict of them, whatever the annotation of one says.
            router = PartitionsRouter(Any if is_unannotated(typing_type) else dict[str, typing_type], self)
        return router

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        """Store a returned value (or, for a run over several partitions, a dict of partition key to value)."""
        slot = self._slot(context)
        stored = self._router(slot, obj).store(slot, obj)
        record_outputs(context, stored, len(slot.partition_keys))

    def load_input(self, context: InputContext) -> Any:
        """The stored value for an input: a lazy cloud `Datafile` (one listing request, no download), or a dict of
        them by partition key when several upstream partitions are loaded."""
        slot = self._slot(context)
        return self._router(slot).load(slot)

    # --- addresses ---------------------------------------------------------------------------------------------------

    def describe(self, slot: Slot) -> str:
        """`asset x partition 'p'` or `output 'result'`, for messages."""
        context = slot.context
        what = f"asset {context.asset_key.to_user_string()}" if context.has_asset_key else f"output {context.name!r}"
        keys = [key for key in slot.partition_keys if key is not None]
        if len(keys) == 1:
            what += f" partition {keys[0]!r}"
        elif keys:
            what += f" ({len(keys)} partitions)"
        return what

    def directory(self, slot: Slot) -> GCSPath:
        """The folder holding the object for this output (or the upstream output of this input)."""
        context = slot.context
        partition_key = slot.partition_key
        if context.has_asset_key:
            return addresses.asset_directory(
                self.bucket, self.prefix, context.asset_key.path, _path_partition_key(context, partition_key)
            )
        output = context if isinstance(context, OutputContext) else context.upstream_output
        if output is None:
            raise DagsterInvariantViolationError("DatafileIOManager cannot load an input that has no upstream output.")
        return addresses.asset_directory(self.bucket, self.prefix, [OP_OUTPUTS_FOLDER, *output.get_identifier()])

    # --- datafiles ---------------------------------------------------------------------------------------------------

    def store_datafile(self, slot: Slot, datafile: Datafile) -> StoredOutput:
        """Put the datafile at its address (upload, server-side copy or nothing) and remove stale siblings."""
        directory = self.directory(slot)
        destination = make_gcs_path(self.bucket, directory.name + datafile.name)
        listing = list(self.store.list_objects(directory, delimiter="/"))
        previous = [info for info in listing if info.path != destination]
        current = next((info for info in listing if info.path == destination), None)
        stored = self._bind(datafile, destination, current, slot)
        stored.upload(str(destination))
        # One object per asset (partition) folder: a differently named file from an earlier run would make loading
        # ambiguous, so it goes once the new one is safely in place (only at the generation we saw).
        for info in previous:
            if not info.path.name.endswith("/"):
                slot.context.log.info(f"Removing {info.path}, replaced by {destination}.")
                try:
                    self.store.delete_object(info.path, if_generation_match=info.generation)
                except (CloudObjectNotFoundError, ConflictError):
                    pass
        return StoredOutput(slot.partition_key, datafile_metadata(stored), datafile_data_version(stored))

    def _bind(
        self, datafile: Datafile, destination: GCSPath, current: ObjectInfo | None, slot: Slot
    ) -> Datafile:
        """A datafile using this I/O manager's client, with the returned datafile's content and metadata, whose
        `upload(destination)` writes it there. `current` is what the destination holds now, if anything."""
        if datafile.cloud_path is None:
            if not os.path.isfile(datafile.local_path):
                raise FileNotFoundError(
                    f"{self.describe(slot)} returned the local datafile {datafile.local_path}, which does not exist: "
                    f"write it (e.g. `with datafile.open('w') as f: ...`) before returning it."
                )
            content = dict(
                cloud_path=str(destination),
                timestamp=datafile.timestamp,
                labels=datafile.labels,
                tags=datafile.tags,
                store=self.store,
            )
            if current is not None and current.crc32c == datafile.hash_value:
                # Same content as stored: it is the same datafile, so it keeps its stored id, and unchanged labels,
                # tags and timestamp mean nothing at all is written (not even a metadata patch).
                try:
                    return Datafile(datafile.local_path, **content)
                except InvalidMetadataError:
                    pass  # unreadable stored metadata: replace it, as for new content
            # One metadata request for the destination; the upload is conditional on the generation it saw.
            return Datafile(datafile.local_path, id=datafile.id, ignore_stored_metadata=True, **content)
        info = datafile.object_info
        if info is None:
            raise CloudObjectNotFoundError(
                f"{self.describe(slot)} returned {datafile.cloud_path}, which does not exist in GCS."
            )
        # Uploading a cloud datafile to another path copies it server side (or only patches metadata if the
        # destination already holds the same content); to its own path, it only patches changed metadata.
        source = Datafile.from_object_info(info, store=self.store)
        source.labels, source.tags, source.timestamp = datafile.labels, datafile.tags, datafile.timestamp
        return source

    def load_datafile(self, slot: Slot) -> Datafile:
        """The datafile stored at the slot's address, from one listing request (no download)."""
        directory = self.directory(slot)
        found = list(datafile_objects(self.store, directory, delimiter="/"))
        if not found:
            self.store.raise_if_bucket_missing(directory)
            raise CloudObjectNotFoundError(
                f"No stored file for {self.describe(slot)}: {directory} is empty. Materialize it first."
            )
        if len(found) > 1:
            # Only possible if a run was interrupted between writing a renamed file and removing the old one.
            found.sort(key=lambda info: (info.updated is not None, info.updated))
            slot.context.log.warning(
                f"{directory} holds {len(found)} objects; loading the most recently updated, {found[-1].path}."
            )
        return Datafile.from_object_info(found[-1], store=self.store)


def _path_partition_key(context: InputContext | OutputContext, partition_key: str | None) -> Any:
    """A partition key as `addresses` wants it: a multi-dimension key becomes its per-dimension mapping."""
    if partition_key is None:
        return None
    if isinstance(partition_key, MultiPartitionKey):
        return partition_key.keys_by_dimension
    partitions_def = context.asset_partitions_def
    if isinstance(partitions_def, MultiPartitionsDefinition):
        return partitions_def.get_partition_key_from_str(partition_key).keys_by_dimension
    return partition_key


__all__ = ["OP_OUTPUTS_FOLDER", "AssetStorage"]
