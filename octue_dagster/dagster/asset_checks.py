"""Asset checks on what the I/O manager stored: is each asset's object in GCS still the one Dagster recorded?

`build_datafile_asset_checks(assets)` attaches, to every Datafile or Dataset asset given, the check
`stored_object_intact` and (when labels or tags are required) `required_labels_and_tags`. A check execution reads the
latest materialization of the asset (of every materialized partition, for a partitioned asset) from the instance,
then asks GCS for each object's metadata only (one request per datafile, one listing per dataset folder), with
requests for many partitions in flight at once (`core.storage.runner.run_concurrently`, bounded). Nothing is downloaded.

Partitioned assets get one check execution covering every materialized partition (Dagster 1.13's partitioned asset
checks are a preview feature, evaluated one partition per run): it fails if any partition fails and names the failing
partitions in its description and in a table in its metadata.

The checks read GCS through a resource of the definitions: by default the asset's own I/O manager (a
`DatafileIOManager`: the same client, credentials and store settings that wrote the objects), or any
`DatafileResource` or `GCSResource` named by `resource_key`.
"""


import json
from collections.abc import Callable, Iterable
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSpec,
    AssetChecksDefinition,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    MultiPartitionsDefinition,
    PartitionsDefinition,
    multi_asset_check,
)
from google.cloud import storage as gcs_client

from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.runner import run_concurrently, validate_concurrency
from octue_dagster.core.dataset.dataset_files import prefix_of
from octue_dagster.core.storage.gcs_path import parse_gcs_path
from octue_dagster.core.storage.store import Store
from octue_dagster.dagster.addresses import asset_owner
from octue_dagster.dagster.check_results import INTACT_CHECK, METADATA_CHECK, Tally
from octue_dagster.dagster.object_findings import Finding, datafile_finding, dataset_finding
from octue_dagster.dagster.owned_objects import owner_of
from octue_dagster.dagster.recorded_objects import RecordedAsset, latest_is_partitioned, latest_records
from octue_dagster.dagster.resources import store_from
from octue_dagster.dagster.ui_metadata import URI_KEY
from octue_dagster.exceptions import InvalidInputError

#: The partitions of an asset given by its key alone: read from its latest materialization when the check runs.
UNKNOWN = object()
#: Dagster's key of the I/O manager an asset uses unless it sets `io_manager_key`.
DEFAULT_IO_MANAGER_KEY = "io_manager"


def build_datafile_asset_checks(
    assets: Iterable[AssetsDefinition | AssetSpec | AssetKey | str],
    *,
    required_labels: Iterable[str] = (),
    required_tags: Iterable[str] = (),
    resource_key: str | None = None,
    concurrency: int | None = None,
    blocking: bool = False,
) -> list[AssetChecksDefinition]:
    """Asset checks for Datafile and Dataset assets stored by `DatafileIOManager`: one definition per asset key.

    `assets` are asset definitions, `AssetSpec`s, or asset keys (`AssetKey` or `"a/b"` strings, as configuration
    gives them: whether such an asset is partitioned is then read from its latest materialization).

    - `stored_object_intact`: the object at the latest materialization's `dagster/uri` still has the recorded
      generation and crc32c (each file of a dataset), and a datafile still carries its owner mark. Re-tagging passes;
      an object overwritten, deleted, restored from an older generation or stripped of its owner mark fails.
    - `required_labels_and_tags` (only if `required_labels` or `required_tags` are given): the stored object (each file
      of a dataset) has every label in `required_labels` and a tag of every name in `required_tags`, now.

    `resource_key` names the resource the checks read GCS through: a `DatafileIOManager`, `DatafileResource` or
    `GCSResource`; by default each asset's own I/O manager (`io_manager` unless the asset sets `io_manager_key`).
    `concurrency` bounds the requests in flight for a partitioned asset (default: that resource's store settings).
    `blocking=True` makes failed checks stop downstream assets in the same run.

    Example::

        from dagster import Definitions
        from octue_dagster import build_datafile_asset_checks

        defs = Definitions(
            assets=[readings, farm],
            asset_checks=build_datafile_asset_checks([readings, farm], required_labels=["raw"]),
            resources={"io_manager": DatafileIOManager(bucket="my-bucket", gcs=gcs)},
        )
    """
    labels = frozenset(md.LabelSet(required_labels))
    tags = frozenset(md.validate_tag_name(name) for name in _strings(required_tags, "required_tags"))
    if concurrency is not None:
        validate_concurrency(concurrency)
    if resource_key is not None and (not isinstance(resource_key, str) or not resource_key.isidentifier()):
        raise InvalidInputError(
            f"resource_key must be the key of a resource, such as 'io_manager'; got {resource_key!r}."
        )
    definitions = []
    seen: set[AssetKey] = set()
    for key, partitions_def, io_manager_key in _asset_keys(assets):
        if key in seen:
            raise InvalidInputError(f"The asset {key.to_user_string()} was given twice; give each asset once.")
        seen.add(key)
        checks = _checks_for(key, partitions_def, labels, tags, resource_key or io_manager_key, concurrency, blocking)
        definitions.append(checks)
    return definitions


def _strings(values: Iterable[str], name: str) -> list[str]:
    if isinstance(values, str):
        raise InvalidInputError(f"{name} must be a list of names, not the single string {values!r}; use [{values!r}].")
    return list(values)


def _asset_keys(
    assets: Iterable[AssetsDefinition | AssetSpec | AssetKey | str],
) -> Iterable[tuple[AssetKey, PartitionsDefinition | None | object, str]]:
    """Each asset key with its partitions (`UNKNOWN` for a bare key) and the key of the I/O manager that stores it."""
    if isinstance(assets, (AssetsDefinition, AssetSpec, AssetKey, str)):
        assets = [assets]
    for asset in assets:
        if isinstance(asset, (AssetKey, str)):
            key = asset if isinstance(asset, AssetKey) else _key_from_string(asset)
            yield key, UNKNOWN, DEFAULT_IO_MANAGER_KEY
        elif isinstance(asset, AssetSpec):
            yield asset.key, asset.partitions_def, DEFAULT_IO_MANAGER_KEY
        elif isinstance(asset, AssetsDefinition):
            for key in asset.keys:
                yield key, asset.specs_by_key[key].partitions_def, asset.get_io_manager_key_for_asset_key(key)
        else:
            raise InvalidInputError(
                f"build_datafile_asset_checks takes assets (functions decorated with @asset or @multi_asset), "
                f"AssetSpecs or asset keys; got {asset!r}."
            )


def _key_from_string(text: str) -> AssetKey:
    if not text or any(part == "" for part in text.split("/")):
        raise InvalidInputError(f"An asset key is its parts joined by '/', such as 'raw/readings'; got {text!r}.")
    return AssetKey.from_user_string(text)


def _checks_for(
    key: AssetKey,
    partitions_def: PartitionsDefinition | None | object,
    labels: frozenset[str],
    tags: frozenset[str],
    resource_key: str,
    concurrency: int | None,
    blocking: bool,
) -> AssetChecksDefinition:
    specs = [
        AssetCheckSpec(
            INTACT_CHECK,
            asset=key,
            blocking=blocking,
            description="The stored object (each file of a dataset) is still the generation and crc32c the latest "
            "materialization recorded, and a datafile still carries the I/O manager's owner mark. Reads metadata only.",
        )
    ]
    if labels or tags:
        wanted = ", ".join(
            [*(f"label {label!r}" for label in sorted(labels)), *(f"tag {tag!r}" for tag in sorted(tags))]
        )
        specs.append(
            AssetCheckSpec(
                METADATA_CHECK,
                asset=key,
                blocking=blocking,
                description=f"The stored object (each file of a dataset) has {wanted}.",
            )
        )

    @multi_asset_check(
        specs=specs,
        name=f"{key.to_python_identifier()}_stored_object_checks",
        can_subset=True,
        required_resource_keys={resource_key},
    )
    def _check(context: AssetCheckExecutionContext) -> Iterable[AssetCheckResult]:
        store = store_of(getattr(context.resources, resource_key), resource_key)
        # In a run that materializes some partitions, the check covers those (a backfill of one run per partition
        # then makes one request per partition, not one per partition per run); run alone, it covers them all.
        if partitions_def is UNKNOWN:
            partitioned = latest_is_partitioned(context.instance, key)
        else:
            partitioned = partitions_def is not None
        in_run = partitioned and (context.has_partition_key or context.has_partition_key_range)
        scope = list(context.partition_keys) if in_run else None
        records = latest_records(context.instance, key, partitioned=partitioned, partitions=scope)
        owner_for = _owner_function(key, partitions_def)

        def inspect(recorded: RecordedAsset) -> Finding:
            return inspect_recorded(store, recorded, owner_for, labels, tags)

        tallies = {name: Tally(name) for name in (INTACT_CHECK, METADATA_CHECK)}
        for outcome in run_concurrently(inspect, records, concurrency=concurrency or store.settings.concurrency):
            finding = outcome.result if outcome.ok else _unreadable(outcome.item, outcome.error)
            for tally in tallies.values():
                tally.add(finding)
        selected = {check_key.name for check_key in context.selected_asset_check_keys if check_key.asset_key == key}
        for spec in specs:
            if spec.name in selected:
                result = tallies[spec.name].result(key, partitioned=partitioned, in_run=in_run)
                context.log.info(f"{spec.name} on {key.to_user_string()}: {result.description}")
                yield result

    return _check


def store_of(resource: Any, resource_key: str) -> Store:
    """The `Store` of a resource: a `DatafileIOManager`'s or `DatafileResource`'s own, or one over a `GCSResource`'s
    client (Dagster hands ops the client itself for a `GCSResource`)."""
    store = getattr(resource, "store", None)
    if isinstance(store, Store):
        return store
    if isinstance(resource, gcs_client.Client) or callable(getattr(resource, "get_client", None)):
        return store_from(resource)
    raise InvalidInputError(
        f"The asset checks read GCS through the resource {resource_key!r}, which is a {type(resource).__name__}: give "
        f"the key of a DatafileIOManager, DatafileResource or GCSResource (build_datafile_asset_checks(..., "
        f"resource_key=...))."
    )


def _owner_function(
    key: AssetKey, partitions_def: PartitionsDefinition | None | object
) -> Callable[[str | None, str | None], str]:
    """The owner mark the asset's object must carry, from its partition key (as the event log spells it) and the mark
    it carries now (used only to tell a multi-dimension key's dimension names when the partitions are not known)."""

    def owner(partition: str | None, mark: str | None) -> str:
        if partition is not None and isinstance(partitions_def, MultiPartitionsDefinition):
            return asset_owner(key.path, partitions_def.get_partition_key_from_str(partition).keys_by_dimension)
        if partitions_def is UNKNOWN and partition is not None and mark is not None:
            return multi_dimension_owner(key, partition, mark) or asset_owner(key.path, partition)
        return asset_owner(key.path, partition)

    return owner


def multi_dimension_owner(key: AssetKey, partition: str, mark: str) -> str | None:
    """`mark` if it is the owner mark of `key`'s multi-dimension partition whose key string is `partition` (Dagster
    joins the dimensions' keys with '|' in the order of their names, as the mark orders them), else `None`."""
    try:
        owner = json.loads(mark)
    except ValueError:
        return None
    dimensions = owner.get("partition") if isinstance(owner, dict) else None
    if not isinstance(dimensions, dict) or owner.get("asset_key") != list(key.path):
        return None
    if not all(isinstance(value, str) for value in dimensions.values()):
        return None
    if "|".join(dimensions[name] for name in sorted(dimensions)) != partition:
        return None
    expected = asset_owner(key.path, dimensions)
    return expected if expected == mark else None


def inspect_recorded(
    store: Store,
    recorded: RecordedAsset,
    owner_for: Callable[[str | None, str | None], str],
    required_labels: frozenset[str] = frozenset(),
    required_tags: frozenset[str] = frozenset(),
) -> Finding:
    """Compare one recorded materialization with GCS: one metadata request for a datafile, one listing for a dataset."""
    if recorded.kind == "unknown" or recorded.uri is None:
        return Finding(
            recorded,
            error=f"The latest materialization{_of_partition(recorded)} records no {URI_KEY}: it was not stored by "
            f"DatafileIOManager, so there is no stored object to check.",
        )
    if recorded.kind == "datafile":
        current = store.get_object(parse_gcs_path(recorded.uri))
        owner = owner_for(recorded.partition, owner_of(current) if current is not None else None)
        return datafile_finding(recorded, current, owner, required_labels, required_tags)
    prefix = prefix_of(parse_gcs_path(recorded.uri, allow_empty_name=True))
    listing = {info.path.name[len(prefix.name) :]: info for info in store.list_objects(prefix)}
    return dataset_finding(recorded, listing, required_labels, required_tags)


def _unreadable(recorded: RecordedAsset, error: Exception | None) -> Finding:
    # The library's storage errors name the object and the cause, and never carry credentials.
    return Finding(recorded, error=f"{recorded.uri or 'The stored object'} could not be read: {error}")


def _of_partition(recorded: RecordedAsset) -> str:
    return f" of partition {recorded.partition!r}" if recorded.partition is not None else ""


__all__ = [
    "INTACT_CHECK",
    "METADATA_CHECK",
    "build_datafile_asset_checks",
    "inspect_recorded",
    "multi_dimension_owner",
    "store_of",
]
