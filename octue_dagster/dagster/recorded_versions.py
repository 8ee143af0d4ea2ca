"""What Dagster recorded for an asset partition, and holding loads and stores to it.

Loads: the datafile a downstream step receives must be the version the upstream asset's latest materialization
recorded (`dagster/uri`, `generation`, `crc32c`): an object restored from an older generation outside Dagster keeps
the owner mark, and an interrupted or concurrent run can leave an object no materialization describes. So a load
takes the object at the recorded URI and checks its generation (or, failing that, its crc32c: the same bytes are the
same data version); anything else raises `StaleMaterializationError` naming both versions and the fix, or, while
another run is storing that partition, waits for it to finish and checks again.

Stores: one run at a time stores an asset partition on a machine, and keeps the partition's store lock until its
materialization is recorded. Dagster records it after `handle_output` returns, so the lock is released (and the
objects it superseded deleted) at the I/O manager's teardown: the end of the step's process, or of the run when its
steps share one process (so the run's downstream steps read its own output); in a long-lived process that never
tears the I/O manager down, at the next output of another run. A second run of the partition waits, then stores
over the first run's recorded object. The previously recorded object is deleted only once the new record names the
new one, so the recorded `dagster/uri` always exists and holds the recorded crc32c.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import filelock
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, InputContext, OutputContext

from octue_dagster.core.local.locks import LOCK_TIMEOUT_SECONDS, optional_lock_path
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.dagster.recorded_objects import recorded_asset
from octue_dagster.exceptions import (
    CloudObjectNotFoundError,
    ConflictError,
    PartitionBusyError,
    StaleMaterializationError,
)


@dataclasses.dataclass(frozen=True)
class RecordedVersion:
    """What Dagster's latest materialization of one asset partition recorded about its object."""

    uri: str
    generation: str | None
    crc32c: str | None
    run_id: str

    def describe(self) -> str:
        return f"{self.uri} generation {self.generation or '?'} crc32c {self.crc32c or '?'} (run {self.run_id})"


def _instance(context: OutputContext | InputContext) -> DagsterInstance:
    return context.instance if isinstance(context, InputContext) else context.step_context.instance


def latest_recorded(instance: DagsterInstance, asset_key: AssetKey, partition_key: str | None) -> RecordedVersion | None:
    """The URI, generation and crc32c the latest materialization of the asset partition recorded, if any."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=asset_key, asset_partitions=[str(partition_key)] if partition_key is not None else None
        ),
        limit=1,
    ).records
    materialization = records[0].asset_materialization if records else None
    if materialization is None:
        return None
    # Read by the same parser as the asset checks' (`recorded_objects`): one reading of what a record says.
    recorded = recorded_asset(partition_key, materialization.metadata, records[0].run_id)
    if recorded.uri is None:
        return None
    file = recorded.files[0] if recorded.kind == "datafile" else None
    generation = str(file.generation) if file is not None and file.generation is not None else None
    return RecordedVersion(recorded.uri, generation, file.crc32c if file is not None else None, records[0].run_id)


def recorded_for(context: OutputContext | InputContext, partition_key: str | None) -> RecordedVersion | None:
    """`latest_recorded` for a context's asset; `None` without an asset key or an instance that keeps records."""
    if not context.has_asset_key:
        return None
    try:
        instance = _instance(context)
    except Exception:  # direct invocation without an instance: nothing recorded to compare with
        return None
    return latest_recorded(instance, context.asset_key, partition_key)


def matches(info: ObjectInfo, recorded: RecordedVersion) -> bool:
    """Whether an object holds the recorded version: its generation, or (rewritten with identical bytes) its crc32c."""
    if str(info.path) != recorded.uri:
        return False
    if recorded.generation is not None and str(info.generation) == recorded.generation:
        return True
    return recorded.crc32c is not None and info.crc32c == recorded.crc32c


def choose_recorded(what: str, owned: Sequence[ObjectInfo], recorded: RecordedVersion) -> ObjectInfo:
    """The owned object holding the recorded version, else an error naming what was recorded and what is there."""
    at_uri = next((info for info in owned if str(info.path) == recorded.uri), None)
    if at_uri is not None and matches(at_uri, recorded):
        return at_uri
    fix = (
        f"Re-materialize {what} so that the stored object and Dagster's record agree again (or restore generation "
        f"{recorded.generation} if the bucket keeps old versions)."
    )
    if at_uri is None:
        others = ", ".join(f"{info.path} generation {info.generation}" for info in owned[:3]) or "nothing"
        raise CloudObjectNotFoundError(
            f"The latest materialization of {what} recorded {recorded.describe()}, but that object is gone (the "
            f"I/O manager's objects of it: {others}); nothing was read. {fix}"
        )
    raise StaleMaterializationError(
        f"The stored object of {what} is not the version Dagster recorded: the latest materialization recorded "
        f"{recorded.describe()}, but {at_uri.path} now holds generation {at_uri.generation} crc32c {at_uri.crc32c}, "
        f"written outside that materialization (restored from an older generation, or by an interrupted or "
        f"concurrent run); nothing was read. {fix}"
    )


@dataclasses.dataclass
class _Held:
    """One partition's store lock held by this process, and what to do once its materialization is recorded."""

    lock: filelock.BaseFileLock | None
    run_id: str
    step_key: str
    instance: DagsterInstance | None = None
    asset_key: AssetKey | None = None
    partition_key: str | None = None
    stored: ObjectInfo | None = None
    superseded: list[ObjectInfo] = dataclasses.field(default_factory=list)


class StoreLocks:
    """The store locks this process holds, one per asset partition, until each partition's record is written."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._held: dict[str, _Held] = {}
        self._guard = threading.Lock()

    @staticmethod
    def lock_key(folder: str) -> str:
        return f"store:{folder}"

    def acquire(self, context: OutputContext, folder: str, what: str) -> _Held:
        """Hold the store lock of the partition at `folder` (waiting for another run that holds it)."""
        # Keyed by run as well: a retried step of the same run takes its own lock again, while a run of the same
        # partition in another thread of this process waits for the file lock like any other process.
        key = f"{context.run_id}\0{folder}"
        with self._guard:
            held = self._held.get(key)
        if held is None:
            path = optional_lock_path(self.lock_key(folder))
            lock = filelock.FileLock(path, timeout=LOCK_TIMEOUT_SECONDS, thread_local=False) if path else None
            if lock is not None:
                try:
                    lock.acquire()
                except filelock.Timeout:
                    raise PartitionBusyError(
                        f"Another run has been storing {what} for over {LOCK_TIMEOUT_SECONDS} s (its lock is "
                        f"{path}), so nothing was stored. Try again once that run has finished."
                    ) from None
            held = _Held(lock, context.run_id, context.step_key)
            with self._guard:
                self._held[key] = held
        held.step_key = context.step_key
        return held

    def is_held_elsewhere(self, folder: str) -> bool:
        """Whether another process is storing the partition at `folder` now."""
        with self._guard:
            if any(key.endswith(f"\0{folder}") for key in self._held):
                return False  # this process stores it (its own run): nothing to wait for
        path = optional_lock_path(self.lock_key(folder))
        if path is None:
            return False
        probe = filelock.FileLock(path, timeout=0, thread_local=False)
        try:
            probe.acquire()
        except filelock.Timeout:
            return True
        probe.release()
        return False

    def wait_for(self, folder: str) -> bool:
        """Wait until no other process is storing the partition at `folder`; `False` if it took too long."""
        path = optional_lock_path(self.lock_key(folder))
        if path is not None:
            try:
                with filelock.FileLock(path, timeout=LOCK_TIMEOUT_SECONDS, thread_local=False):
                    pass
            except filelock.Timeout:
                return False
        return True

    def settle(self, *, keep_run: str | None = None, log: Callable[[str], Any] | None = None) -> None:
        """For every partition stored by a run other than `keep_run`: if its latest record now names the stored
        object, delete the objects it superseded (each at the generation listed); then release the lock. A store
        that was never recorded (the step failed after it) deletes nothing."""
        with self._guard:
            done = {key: held for key, held in self._held.items() if held.run_id != keep_run}
            for key in done:
                del self._held[key]
        for held in done.values():
            try:
                self._remove_superseded(held, log)
            except Exception as error:  # noqa: BLE001 - leftovers are removed by the next store or by retention
                if log is not None:
                    log(f"Could not remove the objects {held.stored.path if held.stored else ''} superseded: {error}")
            finally:
                if held.lock is not None:
                    held.lock.release(force=True)

    def _remove_superseded(self, held: _Held, log: Callable[[str], Any] | None) -> None:
        if not held.superseded or held.stored is None or held.instance is None or held.asset_key is None:
            return
        recorded = latest_recorded(held.instance, held.asset_key, held.partition_key)
        if recorded is None or not matches(held.stored, recorded):
            return  # never recorded (the step failed after storing): what the record names stays
        for stale in held.superseded:
            if log is not None:
                log(f"Removing {stale.path}, replaced by {held.stored.path}.")
            try:
                self.store.delete_object(stale.path, if_generation_match=stale.generation)
            except (CloudObjectNotFoundError, ConflictError):
                pass


__all__ = ["RecordedVersion", "StoreLocks", "choose_recorded", "latest_recorded", "matches", "recorded_for"]
