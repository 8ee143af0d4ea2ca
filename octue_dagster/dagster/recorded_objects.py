"""What Dagster's event log says the I/O manager stored: the latest materialization of each asset (partition).

The I/O manager records, with every materialization (see `recording.py` and `ui_metadata.py`), where the object is
(`dagster/uri`), its crc32c and its GCS generation (as text: generations are 64-bit); for a dataset, a table of its
files with each file's crc32c and generation. The asset checks compare that record with what GCS holds now, so they
need, per partition, only the metadata of the latest materialization: `latest_records` reads it from the instance in
bounded batches (one query for every partition's latest storage id, then one query per `batch_size` records), lazily,
so a check over thousands of partitions holds only a window of them in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance

from octue_dagster.dagster.ui_metadata import URI_KEY

#: Materialization records read from the instance per query.
RECORDS_PER_QUERY = 100


@dataclasses.dataclass(frozen=True)
class RecordedFile:
    """One stored object as a materialization recorded it: its name inside a dataset folder (`""` for a datafile
    asset's only object), crc32c and generation (`None` when the record predates generations being recorded)."""

    name: str
    crc32c: str | None
    generation: int | None


@dataclasses.dataclass(frozen=True)
class RecordedAsset:
    """The latest materialization of one asset partition (`partition` is `None` for an unpartitioned asset).

    `kind` is `"datafile"` (one object at `uri`), `"dataset"` (the files of the dataset folder at `uri`), or
    `"unknown"` (no `dagster/uri`: not stored by `DatafileIOManager`). `files_not_recorded` counts dataset files the
    record's table left out (it lists at most `ui_metadata.DATASET_TABLE_ROWS`); `files_digest` then covers them all.
    """

    partition: str | None
    uri: str | None
    kind: str
    files: tuple[RecordedFile, ...] = ()
    files_not_recorded: int = 0
    run_id: str | None = None
    #: For a dataset whose table leaves files out: the digest of every file's (relative path, crc32c).
    files_digest: str | None = None


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _generation(text: Any) -> int | None:
    try:
        return int(str(text)) if text not in (None, "") else None
    except ValueError:
        return None


def recorded_asset(partition: str | None, metadata: Mapping[str, Any], run_id: str | None = None) -> RecordedAsset:
    """What one materialization's metadata says was stored (pure: no request)."""
    uri = _value(metadata, URI_KEY)
    if uri is None:
        return RecordedAsset(partition, None, "unknown", run_id=run_id)
    table = _value(metadata, "files")
    if table is not None and hasattr(table, "records"):
        files = tuple(
            RecordedFile(str(row.data.get("name")), row.data.get("crc32c"), _generation(row.data.get("generation")))
            for row in table.records
        )
        not_recorded = _value(metadata, "files_not_listed") or 0
        digest = _value(metadata, "files_digest")
        return RecordedAsset(
            partition, str(uri), "dataset", files, int(not_recorded), run_id, str(digest) if digest else None
        )
    crc32c = _value(metadata, "crc32c")
    file = RecordedFile("", str(crc32c) if crc32c is not None else None, _generation(_value(metadata, "generation")))
    return RecordedAsset(partition, str(uri), "datafile", (file,), run_id=run_id)


def latest_is_partitioned(instance: DagsterInstance, asset_key: AssetKey) -> bool:
    """Whether the asset's latest materialization was of a partition (for an asset known by its key alone)."""
    result = instance.fetch_materializations(AssetRecordsFilter(asset_key=asset_key), limit=1)
    return any(record.partition_key is not None for record in result.records)


def latest_records(
    instance: DagsterInstance,
    asset_key: AssetKey,
    *,
    partitioned: bool,
    partitions: Iterable[str] | None = None,
    batch_size: int = RECORDS_PER_QUERY,
) -> Iterator[RecordedAsset]:
    """The latest materialization of each materialized partition of `asset_key` (only of `partitions`, if given), or
    of the asset, lazily.

    Partitions come in key order, read `batch_size` records per query. An asset never materialized yields nothing.
    """
    if not partitioned:
        result = instance.fetch_materializations(AssetRecordsFilter(asset_key=asset_key), limit=1)
        for record in result.records:
            materialization = record.asset_materialization
            if materialization is not None:
                yield recorded_asset(None, materialization.metadata, record.run_id)
        return
    latest = instance.get_latest_storage_id_by_partition(
        asset_key, DagsterEventType.ASSET_MATERIALIZATION, set(partitions) if partitions is not None else None
    )
    by_storage_id = {storage_id: partition for partition, storage_id in latest.items()}
    ordered = sorted(latest.items())
    for start in range(0, len(ordered), batch_size):
        storage_ids = [storage_id for _, storage_id in ordered[start : start + batch_size]]
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, storage_ids=storage_ids), limit=len(storage_ids)
        )
        found = {record.storage_id: record for record in result.records}
        for storage_id in storage_ids:
            record = found.get(storage_id)
            materialization = record.asset_materialization if record is not None else None
            if materialization is not None:
                yield recorded_asset(by_storage_id[storage_id], materialization.metadata, record.run_id)


__all__ = [
    "RECORDS_PER_QUERY",
    "RecordedAsset",
    "RecordedFile",
    "latest_is_partitioned",
    "latest_records",
    "recorded_asset",
]
