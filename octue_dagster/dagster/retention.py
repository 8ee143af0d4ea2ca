"""Retention: find and remove what the I/O manager stored that nothing refers to any more.

Dagster's own I/O managers leave this to the user (dagster-io/dagster#15526). Two kinds of objects go:

- op outputs (`{prefix}/run=.../`) of runs that finished (succeeded, failed or were cancelled) more than N days ago;
- asset objects the I/O manager wrote that no current materialization points to (the latest materialization of
  their asset partition records another `dagster/uri`), last written more than N days ago: for example a file left
  by a run that stopped between storing a renamed output and removing the old one.

Only objects whose ownership mark (`octue_dagster__owner`) names an address, and which lie in exactly that address's
folder, are ever candidates; everything else (Octue's `.octue` objects, other tools' files, copies that carry a
mark but live elsewhere) is counted as foreign and left alone. Asset objects whose asset partition has no recorded
materialization in this Dagster instance, and op outputs of runs it does not know, are kept too: the instance may
simply not be the one that wrote them. So is an asset object written after the latest materialization of its
partition was recorded (less a margin for clock skew between GCS and this machine): it may be the output of a run in
progress, stored but not yet recorded, and removing it would leave that run's `dagster/uri` dangling. Once a later
materialization is recorded, such an object (if still unreferenced) goes. Each deletion is conditional on the
generation listed, so an object rewritten meanwhile is kept.
"""

from __future__ import annotations

import collections
import datetime
import json
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, MultiPartitionKey

from octue_dagster.core.storage.gcs_path import make_gcs_path
from octue_dagster.core.listing.selection import datafile_objects
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.dagster import addresses
from octue_dagster.dagster.owned_objects import owner_of
from octue_dagster.dagster.ui_metadata import URI_KEY
from octue_dagster.exceptions import CloudObjectNotFoundError, ConflictError, InvalidInputError

_FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
#: How much older than the latest materialization's record an unreferenced asset object must be to go: GCS's clock
#: (an object's update time) and this machine's (the record's time) may differ by this much.
CLOCK_SKEW_MARGIN = datetime.timedelta(minutes=5)


class RetentionCounts(collections.Counter):
    """What a retention pass found (and, unless it was a dry run, removed), by key:

    - `scanned`: objects listed under the prefix (Octue's metadata objects are not listed, as Octue's SDK skips them);
    - `foreign`: objects without the I/O manager's mark for the folder they are in, never removed;
    - `kept`: the I/O manager's objects that are still referenced (or too recent to judge);
    - `old_op_outputs`: op outputs of runs that finished before the cutoff;
    - `unreferenced_asset_objects`: asset objects the latest materialization of their partition does not point to;
    - `deleted`: how many of the last two were removed (none in a dry run);
    - `changed_meanwhile`: removable objects that changed after they were listed, and so were kept;
    - `bytes_removable`: bytes in the removable objects.
    """

    KEYS = (
        "scanned", "foreign", "kept", "old_op_outputs", "unreferenced_asset_objects", "deleted", "changed_meanwhile",
        "bytes_removable",
    )

    def as_dict(self) -> dict[str, int]:
        return {key: self[key] for key in self.KEYS}


class RetentionPass:
    """One pass over `gs://{bucket}/{prefix}/`, deciding for each object whether it is still referenced."""

    def __init__(
        self, store: Store, instance: DagsterInstance, *, bucket: str, prefix: str, older_than: datetime.timedelta
    ) -> None:
        if older_than < datetime.timedelta(0):
            raise InvalidInputError(
                f"The retention age threshold (older_than / older_than_days) must be 0 or more; got {older_than}. A "
                f"negative age would make objects removable whatever their age."
            )
        self.store, self.instance = store, instance
        self.bucket, self.prefix = bucket, addresses.validate_prefix(prefix)
        self.cutoff = datetime.datetime.now(datetime.timezone.utc) - older_than
        self._runs: dict[str, bool] = {}
        self._current: dict[tuple[AssetKey, str | None], tuple[str, datetime.datetime] | None] = {}

    def run(self, *, dry_run: bool, log: Any = None) -> RetentionCounts:
        """Count (and unless `dry_run`, delete) what is no longer referenced."""
        counts = RetentionCounts()
        root = make_gcs_path(self.bucket, f"{self.prefix}/" if self.prefix else "", allow_empty_name=True)
        for info in datafile_objects(self.store, root):
            counts["scanned"] += 1
            verdict = self._verdict(info)
            counts[verdict] += 1
            if verdict in ("foreign", "kept"):
                continue
            counts["bytes_removable"] += info.size
            if dry_run:
                continue
            try:
                self.store.delete_object(info.path, if_generation_match=info.generation)
                counts["deleted"] += 1
                if log is not None:
                    log.info(f"Removed {info.path} ({verdict.replace('_', ' ')}).")
            except (CloudObjectNotFoundError, ConflictError):
                counts["changed_meanwhile"] += 1
        return counts

    def _verdict(self, info: ObjectInfo) -> str:
        """`foreign`, `kept`, or the counter of why it can go (`old_op_outputs`, `unreferenced_asset_objects`)."""
        owner = _parse_owner(owner_of(info))
        if owner is None:
            return "foreign"
        try:
            if "run_id" in owner:
                address = addresses.op_output_address(
                    self.bucket, self.prefix, owner["run_id"], owner["step_key"], owner["output"], owner["mapping_key"]
                )
            else:
                address = addresses.asset_address(self.bucket, self.prefix, owner["asset_key"], owner["partition"])
        except ValueError:
            return "foreign"
        if address.owner != owner_of(info) or not _directly_in(info, address):
            return "foreign"  # a mark copied onto an object somewhere else: not the I/O manager's object
        if "run_id" in owner:
            return "old_op_outputs" if self._run_finished_before_cutoff(owner["run_id"]) else "kept"
        if info.updated is None or info.updated >= self.cutoff:
            return "kept"  # recently written: perhaps by a step whose materialization is not recorded yet
        current = self._latest(AssetKey(owner["asset_key"]), _dagster_partition_key(owner["partition"]))
        if current is None or current[0] == str(info.path) or info.updated >= current[1] - CLOCK_SKEW_MARGIN:
            return "kept"  # unrecorded, current, or perhaps stored by a run whose materialization is not recorded yet
        return "unreferenced_asset_objects"

    def _run_finished_before_cutoff(self, run_id: str) -> bool:
        if run_id not in self._runs:
            record = self.instance.get_run_record_by_id(run_id)
            self._runs[run_id] = bool(
                record is not None
                and record.dagster_run.status in _FINISHED
                and record.end_time is not None
                and datetime.datetime.fromtimestamp(record.end_time, datetime.timezone.utc) < self.cutoff
            )
        return self._runs[run_id]

    def _latest(self, asset_key: AssetKey, partition: str | None) -> tuple[str, datetime.datetime] | None:
        """The `dagster/uri` of the latest materialization of an asset partition, and when it was recorded."""
        key = (asset_key, partition)
        if key not in self._current:
            records = self.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition] if partition is not None else None),
                limit=1,
            ).records
            value = records[0].asset_materialization.metadata.get(URI_KEY) if records else None
            self._current[key] = (
                (str(value.value), datetime.datetime.fromtimestamp(records[0].timestamp, datetime.timezone.utc))
                if value is not None
                else None
            )
        return self._current[key]


def _parse_owner(mark: str | None) -> dict[str, Any] | None:
    """An owner mark as the I/O manager writes it, or `None` for anything else (a hand-written or forged mark with
    values of other types is foreign, never passed on to Dagster or the address functions)."""
    try:
        owner = json.loads(mark or "null")
    except ValueError:
        return None
    if not isinstance(owner, dict):
        return None
    if set(owner) == {"run_id", "step_key", "output", "mapping_key"}:
        texts = [owner["run_id"], owner["step_key"], owner["output"]]
        optional = owner["mapping_key"]
        return owner if all(isinstance(text, str) for text in texts) and isinstance(optional, (str, type(None))) else None
    if set(owner) != {"asset_key", "partition"}:
        return None
    asset_key, partition = owner["asset_key"], owner["partition"]
    if not isinstance(asset_key, list) or not asset_key or not all(isinstance(part, str) for part in asset_key):
        return None
    if isinstance(partition, dict):
        valid = all(isinstance(name, str) and isinstance(value, str) for name, value in partition.items())
    else:
        valid = partition is None or isinstance(partition, str)
    return owner if valid else None


def _directly_in(info: ObjectInfo, address: addresses.Address) -> bool:
    folder = address.folder
    return (
        info.path.bucket == folder.bucket
        and info.path.name.startswith(folder.name)
        and "/" not in info.path.name[len(folder.name) :]
    )


def _dagster_partition_key(partition: Any) -> str | None:
    """The partition key Dagster records, from an owner mark's partition (a string, a mapping or null)."""
    if isinstance(partition, dict):
        return str(MultiPartitionKey(partition))
    return partition


__all__ = ["RetentionCounts", "RetentionPass"]
