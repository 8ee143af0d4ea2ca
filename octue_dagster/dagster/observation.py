"""Watching GCS from Dagster: observable source assets whose data version is the crc32c, and a prefix sensor.

Both read only object metadata (one `get` or paged `list` requests), never content, so watching large files is cheap.
"""

import datetime
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    AssetSelection,
    DataVersion,
    DefaultSensorStatus,
    JobDefinition,
    MetadataValue,
    ObserveResult,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    observable_source_asset,
    sensor,
)
from dagster._core.definitions.asset_key import CoercibleToAssetKey
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from octue_dagster.core.listing.prefix_cursor import DEFAULT_SETTLE, decode_cursor, scan
from octue_dagster.core.listing.selection import datafile_objects
from octue_dagster.core.storage.store import ObjectInfo
from octue_dagster.core.storage.gcs_path import GCSPath, parse_gcs_path
from octue_dagster.dagster.addresses import encode_segment
from octue_dagster.dagster.owned_objects import owner_asset_key
from octue_dagster.dagster.ui_metadata import URI_KEY
from octue_dagster.dagster.resources import store_from

#: Run tags set on each run a prefix sensor requests.
OBJECT_TAG = "octue/object"
CRC32C_TAG = "octue/crc32c"
GENERATION_TAG = "octue/generation"


def prefix_hash(objects: Sequence[ObjectInfo]) -> str:
    """One hash for a set of objects, from their names and crc32c: it changes when any object is added, removed,
    renamed or changes content, and not when only metadata changes."""
    digest = hashlib.sha256()
    for info in sorted(objects, key=lambda item: item.path.name):
        digest.update(f"{info.path.name}\x00{info.crc32c or ''}\n".encode())
    return digest.hexdigest()


def _is_prefix(path: GCSPath) -> bool:
    return path.name == "" or path.name.endswith("/")


def gcs_observable_source_asset(
    key: CoercibleToAssetKey,
    path: str,
    *,
    gcs_resource_key: str = "gcs",
    **asset_kwargs: Any,
):
    """An observable source asset for a GCS object, or for every object under a prefix (a path ending in '/').

    Observing it reads metadata only. Its data version is the object's crc32c, or for a prefix a hash of every
    object's name and crc32c, so downstream assets become stale exactly when the content changes. It needs a
    `GCSResource` under `gcs_resource_key`; other keyword arguments go to `@observable_source_asset`.
    """
    location = parse_gcs_path(path, allow_empty_name=True)

    @observable_source_asset(key=key, required_resource_keys={gcs_resource_key}, **asset_kwargs)
    def _observe(context) -> ObserveResult:
        store = store_from(getattr(context.resources, gcs_resource_key))
        if _is_prefix(location):
            objects = list(datafile_objects(store, location))
            return ObserveResult(
                data_version=DataVersion(prefix_hash(objects)),
                metadata={
                    URI_KEY: MetadataValue.path(str(location)),
                    "object_count": MetadataValue.int(len(objects)),
                    "total_size_bytes": MetadataValue.int(sum(info.size for info in objects)),
                },
            )
        info = store.require_object(location)
        metadata: dict[str, Any] = {
            URI_KEY: MetadataValue.path(str(location)),
            "console_url": MetadataValue.url(location.console_url),
            "crc32c": MetadataValue.text(info.crc32c or ""),
            "size_bytes": MetadataValue.int(info.size),
            "generation": MetadataValue.text(str(info.generation)),  # 64-bit: text, as GraphQL Int is 32-bit
        }
        if info.updated is not None:
            metadata["updated"] = MetadataValue.timestamp(info.updated.timestamp())
        return ObserveResult(data_version=DataVersion(info.crc32c or ""), metadata=metadata)

    return _observe


def asset_root(asset_key: AssetKey, uri: str) -> str | None:
    """The folder `gs://bucket/{prefix}/{key parts}/` holding every partition of an asset the I/O manager stored, from
    the `dagster/uri` one of its materializations recorded (an object or a dataset folder in a partition's folder), or
    `None` if the URI is not at one of the I/O manager's addresses for that asset."""
    try:
        location = parse_gcs_path(uri, allow_empty_name=True)
    except ValueError:
        return None
    segments = location.name.rstrip("/").split("/")
    if not location.name.endswith("/") and "=" not in segments[-1]:
        segments.pop()  # an object in a partition's folder (a dataset's folder is recorded with or without its '/')
    partition_folders = 0
    while segments and "=" in segments[-1]:
        segments.pop()
        partition_folders += 1
    key_folders = [encode_segment(part) for part in asset_key.path]
    if not partition_folders or segments[-len(key_folders) :] != key_folders:
        return None
    return f"gs://{location.bucket}/{'/'.join(segments)}/"


def _stored_roots(instance: DagsterInstance | None, asset_keys: frozenset[tuple[str, ...]]) -> tuple[str, ...]:
    """The asset roots of `asset_keys`, from each one's latest recorded materialization (one lookup per asset)."""
    roots = []
    for path in sorted(asset_keys) if instance is not None else ():
        key = AssetKey(list(path))
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key), limit=1).records
        value = records[0].asset_materialization.metadata.get(URI_KEY) if records else None
        root = asset_root(key, str(value.value)) if value is not None else None
        if root is not None:
            roots.append(root)
    return tuple(roots)


def gcs_prefix_sensor(
    name: str,
    prefix: str,
    *,
    job: JobDefinition | UnresolvedAssetJobDefinition | None = None,
    asset_selection: AssetSelection | Sequence[Any] | None = None,
    gcs_resource_key: str = "gcs",
    minimum_interval_seconds: int = 60,
    run_config_fn: Callable[[ObjectInfo], Mapping[str, Any]] | None = None,
    process_existing: bool = True,
    max_runs_per_tick: int | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    settle_seconds: float = DEFAULT_SETTLE.total_seconds(),
    ignore_outputs_of: Sequence[CoercibleToAssetKey] = (),
) -> SensorDefinition:
    """A sensor that requests one run per new or changed object under `gs://bucket/prefix`.

    "Changed" means new content: a new generation of the object (an overwrite, or a delete and re-create).
    Metadata-only changes never trigger runs, even though GCS bumps their `updated` time. Each tick reads the
    listing (metadata only, one request per 1000 objects) and keeps a cursor of bounded size: the newest creation
    time seen, plus the names and generations of the objects created within `settle_seconds` of it (see
    `octue_dagster.core.listing.prefix_cursor`), so the cursor Dagster stores on every tick does not grow with the bucket.
    Objects re-uploaded with identical bytes by other tools are new generations and do trigger runs (`Datafile`
    never re-uploads identical content). Each run is tagged with the object's URI (`octue/object`), crc32c and
    generation, and its run key is `<object name>@<generation>`, so a lost cursor does not start duplicate runs.
    `run_config_fn(object_info)` can supply run config per object. With `process_existing=False`, objects already
    there at the first evaluation are recorded without runs. With `max_runs_per_tick`, the oldest new objects go
    first and the rest are requested on later ticks. Cursors written by the earlier, unbounded version are read
    once and replaced.

    Objects the `DatafileIOManager` stored for the assets in `ignore_outputs_of` never request runs: give the assets
    the requested job materializes when the prefix holds the I/O manager's folder, or each run's own output would
    request the next run. They are told by their ownership mark, and (for Dataset assets, whose files carry none) by
    lying under the asset's folder, found from its latest recorded materialization.
    """
    location = parse_gcs_path(prefix, allow_empty_name=True)
    settle = datetime.timedelta(seconds=settle_seconds)
    ignored = frozenset(tuple(AssetKey.from_coercible(key).path) for key in ignore_outputs_of)

    @sensor(
        name=name,
        job=job,
        asset_selection=asset_selection,
        minimum_interval_seconds=minimum_interval_seconds,
        required_resource_keys={gcs_resource_key},
        default_status=default_status,
        description=f"Requests a run for each new or changed object under {location}.",
    )
    def _sensor(context: SensorEvaluationContext, **resources: Any):
        # Direct invocation (`sensor(build_sensor_context(resources=...))`) passes required resources as keywords.
        gcs = resources.get(gcs_resource_key) or getattr(context.resources, gcs_resource_key)
        store = store_from(gcs)
        roots = _stored_roots(_instance_of(context), ignored) if ignored else ()
        result = scan(
            (
                info
                for info in datafile_objects(store, location)
                if owner_asset_key(info) not in ignored and not str(info.path).startswith(roots)
            ),
            decode_cursor(context.cursor),
            settle=settle,
            limit=max_runs_per_tick,
            report_existing=process_existing,
        )
        run_requests = [
            RunRequest(
                run_key=f"{info.path.name}@{info.generation}",
                run_config=dict(run_config_fn(info)) if run_config_fn is not None else {},
                tags={OBJECT_TAG: str(info.path), CRC32C_TAG: info.crc32c or "", GENERATION_TAG: str(info.generation)},
            )
            for info in result.changed
        ]
        cursor = result.cursor.encode()
        if not run_requests:
            return SensorResult(skip_reason=SkipReason(f"No new or changed objects under {location}."), cursor=cursor)
        return SensorResult(run_requests=run_requests, cursor=cursor)

    return _sensor


def _instance_of(context: SensorEvaluationContext) -> DagsterInstance | None:
    try:
        return context.instance
    except Exception:  # a context built without an instance (direct invocation in tests) has none to consult
        return None


__all__ = [
    "CRC32C_TAG",
    "GENERATION_TAG",
    "OBJECT_TAG",
    "asset_root",
    "gcs_observable_source_asset",
    "gcs_prefix_sensor",
    "prefix_hash",
]
