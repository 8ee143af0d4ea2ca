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
    MetadataValue,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    OutputContext,
)

from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.core.listing.selection import datafile_objects
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.dagster import addresses, catalog
from octue_dagster.dagster.inputs import ReadOnlyDatafile
from octue_dagster.dagster.owned_objects import Write, owner_of, write_owned
from octue_dagster.dagster.interrupts import deferred_interrupts
from octue_dagster.dagster.recorded_versions import StoreLocks, choose_recorded, recorded_for
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
from octue_dagster.exceptions import (
    CloudObjectNotFoundError,
    ConflictError,
    DatafileNotFoundError,
    InvalidInputError,
    StaleMaterializationError,
)

#: Asset (output) definition metadata: the object name to store this asset's file under, instead of the default.
OBJECT_NAME_KEY = "octue_dagster/object_name"
#: `object_names` settings: name objects after the asset (stable URIs), or keep the returned file's own name.
OBJECT_NAMES = ("asset", "datafile")


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
        object_names: str = "asset",
        routers: Sequence[type[TypeRouter]] | None = None,
        catalog_settings: catalog.CatalogSettings | None = None,
    ) -> None:
        if object_names not in OBJECT_NAMES:
            raise InvalidInputError(
                f"object_names must be 'asset' (name objects after the asset: stable URIs) or 'datafile' (keep the "
                f"returned file's own name); got {object_names!r}."
            )
        self.store = store
        self.bucket = bucket
        self.prefix = prefix
        self.object_names = object_names
        self.routers = list(TYPE_ROUTERS if routers is None else routers)
        self.catalog_settings = catalog_settings or catalog.CatalogSettings()
        self.store_locks = StoreLocks(store)

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
        # Outputs of earlier runs in this process (never torn down) are recorded by now: their locks go.
        self.store_locks.settle(keep_run=context.run_id, log=context.log.info)
        slot = self._slot(context)
        stored = self._router(slot, obj).store(slot, obj)
        record_outputs(context, stored, len(slot.partition_keys))

    def settle(self) -> None:
        """Finish every store of this process once its materialization is recorded (the I/O manager's teardown):
        delete the objects each one superseded and release the partitions' store locks."""
        self.store_locks.settle()

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

    def address(self, slot: Slot) -> addresses.Address:
        """The address of this output (or of the upstream output of this input): its folder and owner mark."""
        context = slot.context
        if context.has_asset_key:
            partition_key = _path_partition_key(context, slot.partition_key)
            return addresses.asset_address(self.bucket, self.prefix, context.asset_key.path, partition_key)
        output = context if isinstance(context, OutputContext) else context.upstream_output
        if output is None:
            raise DagsterInvariantViolationError("DatafileIOManager cannot load an input that has no upstream output.")
        return addresses.op_output_address(
            self.bucket, self.prefix, output.run_id, output.step_key, output.name, output.mapping_key
        )

    def object_name(self, slot: Slot, address: addresses.Address, datafile: Datafile) -> str:
        """The name of the object a datafile is stored as: chosen in the asset's metadata, else after the asset
        (keeping the file's extension), or the file's own name with `object_names="datafile"`."""
        chosen = (slot.context.definition_metadata or {}).get(OBJECT_NAME_KEY)
        if chosen is not None:
            return addresses.validate_object_name(str(getattr(chosen, "value", chosen)))
        if self.object_names == "datafile":
            return addresses.validate_object_name(datafile.name)
        return addresses.default_object_name(address, datafile.name)

    def _owned(self, address: addresses.Address) -> tuple[list[ObjectInfo], list[ObjectInfo]]:
        """The datafile objects in the address's folder (one listing request), and those of them it owns."""
        listing = list(datafile_objects(self.store, address.folder, delimiter="/"))
        return listing, [info for info in listing if owner_of(info) == address.owner]

    # --- datafiles ---------------------------------------------------------------------------------------------------

    def store_datafile(self, slot: Slot, datafile: Datafile) -> StoredOutput:
        """Store a datafile at its address (upload, server-side copy, metadata patch or nothing), then remove the
        objects this address owned under other names (only at the generation listed)."""
        if datafile.cloud_path is None and not os.path.isfile(datafile.local_path):
            problem = "is a folder, not a file" if os.path.isdir(datafile.local_path) else "does not exist"
            raise DatafileNotFoundError(
                f"{self.describe(slot)} returned the local datafile {datafile.local_path}, which {problem}: "
                f"write a file (e.g. `with datafile.open('w') as f: ...`) and return it (a folder of files is a "
                f"Dataset)."
            )
        if datafile.cloud_path is not None and datafile.object_info is None:
            raise CloudObjectNotFoundError(
                f"{self.describe(slot)} returned {datafile.cloud_path}, which does not exist in GCS."
            )
        address = self.address(slot)
        destination = address.object_path(self.object_name(slot, address, datafile))
        # Profiled first: counting a CSV's rows shares the read that hashes it, and the upload reuses that hash.
        catalog_metadata = self.catalog_metadata(slot, datafile)
        context = slot.context
        held = None
        if context.has_asset_key and isinstance(context, OutputContext):
            # One run at a time stores this partition (on this machine), until its materialization is recorded.
            held = self.store_locks.acquire(context, str(address.folder), self.describe(slot))
        listing, owned = self._owned(address)
        current = next((info for info in listing if info.path == destination), None)
        with deferred_interrupts():
            # An interrupt (SIGTERM) while the object is written is held back until `handle_output` has returned,
            # so that a write GCS committed is recorded by Dagster rather than left under a failed run.
            info = write_owned(self.store, Write(datafile, address.owner), destination, current)
        stale = [other for other in owned if other.path != destination]
        if held is not None:
            # Older objects of this address under other names (an earlier extension or name) go once the new
            # record names the new object (`StoreLocks.settle`): until then they may be what the record names.
            held.instance = context.step_context.instance
            held.asset_key, held.partition_key = context.asset_key, slot.partition_key
            held.stored, held.superseded = info, stale
        else:
            for other in stale:
                context.log.info(f"Removing {other.path}, replaced by {destination}.")
                try:
                    self.store.delete_object(other.path, if_generation_match=other.generation)
                except (CloudObjectNotFoundError, ConflictError):
                    pass
        stored = Datafile.from_object_info(info, store=self.store)
        # What is in the file first (the UI lists metadata in this order), then where and what it is stored as.
        metadata = {**catalog_metadata, **datafile_metadata(stored)}
        return StoredOutput(slot.partition_key, metadata, datafile_data_version(stored))

    def catalog_metadata(self, slot: Slot, value: Datafile | Dataset) -> dict[str, MetadataValue]:
        """Column schema, row count and preview of a datafile's (or a dataset's CSV files') local content, for the
        catalog (see `octue_dagster.dagster.catalog`). Nothing is downloaded; a file that cannot be profiled gets a
        note, never a failed store."""
        try:
            if isinstance(value, Dataset):
                profile = catalog.dataset_profile(value, self.catalog_settings)
            else:
                table = catalog.hdf5_table_of(slot.context.definition_metadata)
                profile = catalog.profile_datafile(value, self.catalog_settings, hdf5_table=table)
        except Exception as error:  # the catalog is a view of the data: it must not stop the data being stored
            slot.context.log.warning(f"Could not profile {self.describe(slot)} for the catalog: {error!r}")
            return {catalog.NOTES_KEY: MetadataValue.text(f"not profiled: {type(error).__name__}")}
        return catalog.profile_metadata(
            profile, partitioned=slot.partition_key is not None, preview=self.catalog_settings.preview
        )

    def load_datafile(self, slot: Slot) -> Datafile:
        """The datafile stored at the slot's address, from one listing request (no download), read-only.

        Only objects the I/O manager wrote for this address count; anything else in the folder is ignored. For an
        asset, the object must be the version Dagster's latest materialization recorded (see `recorded_versions`).
        """
        address = self.address(slot)
        listing, owned = self._owned(address)
        recorded = recorded_for(slot.context, slot.partition_key)
        if recorded is not None:
            try:
                chosen = choose_recorded(self.describe(slot), owned, recorded)
            except (StaleMaterializationError, CloudObjectNotFoundError):
                folder = str(address.folder)
                # Another run storing this partition now: once it has recorded, its version is the one to read.
                if not self.store_locks.is_held_elsewhere(folder) or not self.store_locks.wait_for(folder):
                    raise
                listing, owned = self._owned(address)
                recorded = recorded_for(slot.context, slot.partition_key) or recorded
                chosen = choose_recorded(self.describe(slot), owned, recorded)
            return ReadOnlyDatafile.from_object_info(chosen, store=self.store)
        if not owned:
            if not listing:
                self.store.raise_if_bucket_missing(address.folder)
            held = f"holds only objects the I/O manager did not write ({len(listing)})" if listing else "is empty"
            raise CloudObjectNotFoundError(
                f"No stored file for {self.describe(slot)}: {address.folder} {held}. Materialize it first."
            )
        chosen = owned[0] if len(owned) == 1 else self._newest(slot, owned)
        return ReadOnlyDatafile.from_object_info(chosen, store=self.store)

    def _newest(self, slot: Slot, owned: list[ObjectInfo]) -> ObjectInfo:
        """Of several objects of one address with no materialization recorded to tell them apart (an op output, or
        an instance without records), the most recently written."""
        chosen = max(owned, key=lambda info: (info.updated is not None, info.updated))
        slot.context.log.warning(
            f"{self.address(slot).folder} holds {len(owned)} objects of {self.describe(slot)} and no materialization "
            f"says which is current; loading {chosen.path} (the most recently written)."
        )
        return chosen


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


__all__ = ["OBJECT_NAME_KEY", "AssetStorage"]
