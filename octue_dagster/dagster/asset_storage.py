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
    AssetRecordsFilter,
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
from octue_dagster.dagster.ui_metadata import URI_KEY, datafile_data_version, datafile_metadata
from octue_dagster.exceptions import CloudObjectNotFoundError, ConflictError, DatafileNotFoundError, InvalidInputError

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
        listing, owned = self._owned(address)
        current = next((info for info in listing if info.path == destination), None)
        info = write_owned(self.store, Write(datafile, address.owner), destination, current)
        # The new object is in place: older objects of this address under other names (an earlier extension or
        # name) go now. A crash before this leaves them; loads pick the recorded one and the next store removes them.
        for stale in owned:
            if stale.path != destination:
                slot.context.log.info(f"Removing {stale.path}, replaced by {destination}.")
                try:
                    self.store.delete_object(stale.path, if_generation_match=stale.generation)
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

        Only objects the I/O manager wrote for this address count; anything else in the folder is ignored.
        """
        address = self.address(slot)
        listing, owned = self._owned(address)
        if not owned:
            if not listing:
                self.store.raise_if_bucket_missing(address.folder)
            held = f"holds only objects the I/O manager did not write ({len(listing)})" if listing else "is empty"
            raise CloudObjectNotFoundError(
                f"No stored file for {self.describe(slot)}: {address.folder} {held}. Materialize it first."
            )
        chosen = owned[0] if len(owned) == 1 else self._recorded_or_newest(slot, owned)
        return ReadOnlyDatafile.from_object_info(chosen, store=self.store)

    def _recorded_or_newest(self, slot: Slot, owned: list[ObjectInfo]) -> ObjectInfo:
        """Of several objects of one address (a run stopped between storing a renamed file and removing the old
        one), the one Dagster's latest materialization points to, else the most recently written."""
        uri = _recorded_uri(slot)
        recorded = [info for info in owned if str(info.path) == uri]
        chosen = recorded[0] if recorded else max(owned, key=lambda info: (info.updated is not None, info.updated))
        slot.context.log.warning(
            f"{self.address(slot).folder} holds {len(owned)} objects of {self.describe(slot)}; loading {chosen.path} "
            f"({'the latest materialization' if recorded else 'the most recently written'})."
        )
        return chosen


def _recorded_uri(slot: Slot) -> str | None:
    """The `dagster/uri` of the latest materialization of the slot's asset partition, if it can be read."""
    context = slot.context
    if not context.has_asset_key:
        return None
    try:
        instance = context.instance if isinstance(context, InputContext) else context.step_context.instance
        records = instance.fetch_materializations(
            AssetRecordsFilter(
                asset_key=context.asset_key,
                asset_partitions=[slot.partition_key] if slot.partition_key is not None else None,
            ),
            limit=1,
        ).records
        metadata = records[0].asset_materialization.metadata if records else {}
        value = metadata.get(URI_KEY)
        return str(value.value) if value is not None else None
    except Exception:  # an instance without records (direct invocation) cannot tell; fall back to the newest
        return None


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
