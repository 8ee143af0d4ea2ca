"""`OctueMetadata`: the metadata half of a `Datafile` (id, timestamp, labels, tags) and how it is persisted.

It holds the metadata in memory, validates every change, and knows what was last persisted, so that it can tell
what changed and write only that: a metadata patch on the cloud object, merged with other writers' changes (see
`octue_dagster.core.metadata.merge`), and/or the entry in the `.octue` file beside a local file.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import filelock

from octue_dagster.core.cache import copies as cache
from octue_dagster.core.metadata import values as md
from octue_dagster.core.metadata import octue_files as local_metadata
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.metadata.merge import merge
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.exceptions import CloudObjectNotFoundError, OctueCompatibilityWarning


#: The custom metadata keys Octue metadata lives in; the others belong to other tools and people.
OCTUE_KEYS = f"{md.NAMESPACE}__"


class OctueMetadata(md.LabelsAndTags):
    """Octue metadata in memory: an immutable UUID `id`, a `timestamp`, `labels` and `tags`.

    `_persisted` is what the store held when this object last read or wrote it (`None`: nothing stored yet).
    """

    _id: str
    _timestamp: datetime.datetime | None
    _labels: md.LabelSet
    _tags: md.TagDict
    _persisted: md.StoredMetadata | None
    _ignore_stored_metadata: bool
    # Where the datafile is, provided by `Datafile`.
    _cloud: GCSPath | None
    _local: Path | None
    _object: ObjectInfo | None
    store: Store

    def _init_metadata(self, stored: md.StoredMetadata, id: str, timestamp: Any, labels: Any, tags: Any) -> None:
        """Octue's rule: what is stored wins; `timestamp`, `labels` and `tags` given are used where nothing is stored.

        Given values are validated either way, and an `OctueCompatibilityWarning` names any that stored metadata
        overrode (this library's releases before 0.3 let them override it)."""
        given_timestamp = md.normalise_timestamp(timestamp)
        given_labels = md.LabelSet(labels) if labels is not None else None
        given_tags = md.TagDict(tags) if tags is not None else None
        has_stored = stored.id is not None
        self._id = id
        self._timestamp = stored.timestamp if has_stored else given_timestamp
        self._labels = md.LabelSet(stored.labels if stored.labels is not None else given_labels)
        self._tags = md.TagDict(stored.tags if stored.tags is not None else given_tags)
        self._persisted = None
        if has_stored:
            self._mark_persisted(stored)
            overridden = [
                field
                for field, given, kept in (
                    ("timestamp", given_timestamp, self._timestamp),
                    ("labels", given_labels, self._labels),
                    ("tags", given_tags, self._tags),
                )
                if given is not None and given != kept
            ]
            if overridden:
                warnings.warn(
                    f"The {', '.join(overridden)} given for {self} were not used: the metadata stored with it takes "
                    f"precedence, as in Octue's SDK. Pass ignore_stored_metadata=True to use what you give, or set "
                    f"the attributes and call update_metadata() to change what is stored.",
                    OctueCompatibilityWarning,
                    stacklevel=4,
                )

    @property
    def metadata_hash_value(self) -> str:
        """A hash of the metadata (timestamp, labels, tags; not the id), the same in every process."""
        return md.metadata_hash(self._timestamp, self._labels, self._tags)

    @property
    def id(self) -> str:
        """The datafile's UUID. It cannot be reassigned."""
        return self._id

    @property
    def timestamp(self) -> datetime.datetime | None:
        """The datafile's datetime, or `None`. As in Octue's SDK, a datetime is kept as given or stored (naive stays
        naive, an aware one keeps its offset); POSIX seconds set here become an aware UTC datetime."""
        return self._timestamp

    @timestamp.setter
    def timestamp(self, value: datetime.datetime | float | None) -> None:
        self._timestamp = md.normalise_timestamp(value)

    @property
    def posix_timestamp(self) -> float | None:
        """The timestamp as POSIX seconds, or `None`."""
        return md.posix_seconds(self._timestamp) if self._timestamp is not None else None

    def metadata(
        self, include_id: bool = True, include_sdk_version: bool = True, use_octue_namespace: bool = True
    ) -> dict[str, Any]:
        """The metadata as Octue's SDK gives it: `id`, `timestamp`, `tags`, `labels` (a set) and `sdk_version`, with
        names prefixed `octue__` (as stored on objects) unless `use_octue_namespace=False`."""
        record = md.metadata_record(self._id, self._timestamp, self._labels, self._tags)
        if not include_id:
            del record["id"]
        if not include_sdk_version:
            del record["sdk_version"]
        if use_octue_namespace:
            return {f"{md.NAMESPACE}__{key}": value for key, value in record.items()}
        return record

    def _current(self) -> md.StoredMetadata:
        return md.StoredMetadata(self._id, self._timestamp, frozenset(self._labels), dict(self._tags))

    def _metadata_changed(self) -> bool:
        """Whether the in-memory metadata differs from what is stored (nothing stored counts as empty metadata)."""
        baseline = self._persisted or md.StoredMetadata(self._id, None, frozenset(), {})
        return baseline != self._current()

    def _cloud_metadata(self) -> dict[str, str]:
        return md.to_cloud_metadata(self._id, self._timestamp, self._labels, self._tags)

    def _mark_persisted(self, stored: md.StoredMetadata | None = None) -> None:
        """Record what the store now holds (default: exactly the in-memory metadata, just written).

        The one place `_persisted` changes after construction: a difference between it and the in-memory metadata
        is what `update_metadata` writes, and it is the base of every three-way merge.
        """
        self._persisted = stored if stored is not None else self._current()

    def _replaces_stored_metadata(self) -> bool:
        """Whether this datafile was told to ignore what is stored and has not written since: it then replaces the
        stored metadata, however unreadable, instead of merging with it."""
        return self._ignore_stored_metadata and self._persisted is None

    def _adopt(self, stored: md.StoredMetadata) -> None:
        """Make `stored` (just written to or read from the store) both the in-memory and the persisted metadata."""
        self._show(stored)
        self._mark_persisted()

    def _show(self, stored: md.StoredMetadata) -> None:
        """Make `stored` the in-memory metadata (what is persisted is unchanged)."""
        self._id = stored.id or self._id
        self._timestamp = stored.timestamp
        self._labels = md.LabelSet(stored.labels)
        self._tags = md.TagDict(stored.tags)

    def update_metadata(self, *, fresh: bool = False) -> None:
        """Persist the in-memory metadata: a metadata patch on the object (content and generation untouched) and/or
        the `.octue` entry beside a local file. Concurrent patches by other writers are merged, not lost.

        `fresh=True` says this datafile's view of its object was just read (for example from a listing, as
        re-tagging does): the patch is sent at once, conditional on that view's metageneration, in one request, with
        no read before it. If another writer patched since, GCS refuses it (412) and the object is re-read and the
        change re-applied. (fake-gcs-server ignores that precondition; without `fresh`, the object is read again
        under a lock that serialises writers on one machine, which keeps emulator runs exact too.)"""
        if self._object is None and self._local is None:
            raise CloudObjectNotFoundError(
                f"Cannot update the metadata of {self._cloud}: the object does not exist yet. Write or upload it first."
            )
        self._update_stored_metadata(cloud=True, local=True, fresh=fresh)

    def _update_stored_metadata(self, *, cloud: bool, local: bool, fresh: bool = False) -> None:
        # Both stores merge against what this datafile last read, not against each other's result.
        base = self._persisted
        if cloud and self._object is not None:
            self._patch_cloud_metadata(fresh)
        if local and self._local is not None:
            self._write_local_metadata(base=base)

    def _patch_cloud_metadata(self, fresh: bool = False) -> None:
        assert self._cloud is not None
        where = str(self._cloud)
        base, ours = self._persisted or md.StoredMetadata(), self._current()

        def change(info: ObjectInfo) -> dict[str, str]:
            if self._replaces_stored_metadata():
                merged = ours
            else:
                merged = merge(base, ours, md.from_cloud_metadata(info.custom_metadata, where))
            return md.to_cloud_metadata(merged.id or self._id, merged.timestamp, merged.labels or (), merged.tags or {})

        if fresh:
            self._object = self.store.patch_metadata(self._cloud, change, current=self._object)
        else:
            # fake-gcs-server ignores metageneration preconditions, so a cross-process lock also serialises
            # read-modify-patch cycles on one machine; across machines the metageneration precondition does.
            with filelock.FileLock(cache.lock_path(f"patch:{self._cloud}"), timeout=cache.LOCK_TIMEOUT_SECONDS):
                self._object = self.store.patch_metadata(self._cloud, change)
        self._adopt(md.from_cloud_metadata(self._object.custom_metadata, where))

    def _content_write_metadata(self, latest: ObjectInfo | None) -> tuple[dict[str, str], md.StoredMetadata]:
        """The custom metadata to upload with new content over `latest` (the object as it is now; `None`: no object
        yet), and the Octue metadata it holds.

        A content write replaces all of an object's custom metadata, so it follows the rule of a patch: this
        datafile's changes since it read the object (`_persisted` -> in memory) are merged onto what the object holds
        now (`octue_dagster.core.metadata.merge`), and keys outside the `octue__` namespace, which other tools and
        people own, are carried over as they are. A datafile told to ignore stored metadata replaces the Octue keys
        (only).
        """
        ours = self._current()
        if latest is None:
            return self._cloud_metadata(), ours
        if self._replaces_stored_metadata():
            merged = ours
        else:
            theirs = md.from_cloud_metadata(latest.custom_metadata, str(self._cloud))
            merged = merge(self._persisted or md.StoredMetadata(), ours, theirs)
            merged = md.StoredMetadata(merged.id or self._id, merged.timestamp, merged.labels, merged.tags)
        octue = md.to_cloud_metadata(merged.id or self._id, merged.timestamp, merged.labels or (), merged.tags or {})
        foreign = {key: value for key, value in latest.custom_metadata.items() if not key.startswith(OCTUE_KEYS)}
        return {**foreign, **octue}, merged

    def _write_local_metadata(
        self, before_commit: Callable[[], None] | None = None, base: md.StoredMetadata | None = None
    ) -> None:
        """Record the metadata in the `.octue` entry, three-way merged with what another writer (this library or
        Octue's SDK) stored there since this datafile read it (`base`, default: what it last persisted).

        `before_commit` runs under the `.octue` file's lock just before the new file is renamed into place (see
        `octue_files.update_metadata_file`): nothing it does happens unless the entry can be recorded.
        """
        assert self._local is not None
        where = f"{self._local} in its .octue file"
        merged: list[md.StoredMetadata] = []

        def change(raw: Any) -> Any:
            theirs: md.StoredMetadata | None
            if self._replaces_stored_metadata():
                theirs, result = None, self._current()
            else:
                theirs = md.from_local_metadata(raw, where)
                result = merge(base or self._persisted or md.StoredMetadata(), self._current(), theirs)
            merged[:] = [result]
            return md.to_local_entry(raw, theirs, result)

        local_metadata.update_entry(self._local, change, before_commit)
        self._adopt(merged[0])

    def _warn_unsaved_read_changes(self, before: md.StoredMetadata) -> None:
        """After a reading block: as in Octue's SDK nothing is saved, and a warning says so if metadata changed."""
        if self._current() != before:
            warnings.warn(
                f"Metadata of {self} changed inside a reading `open()` block is not saved (as in Octue's SDK); call "
                f"update_metadata() to save it.",
                OctueCompatibilityWarning,
                stacklevel=3,
            )


__all__ = ["OctueMetadata"]
