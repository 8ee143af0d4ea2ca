"""`DatasetMetadata`: a dataset's own metadata (id, name, labels, tags) and where it is persisted, as Octue does.

The metadata lives in the `"dataset"` entry of the folder's `.octue` file, or in a `<prefix>/.octue` object holding
`{"dataset": {...}}`. Entries and keys this library does not own are kept; concurrent writers of the cloud object are
merged by the library's one rule (`octue_dagster.core.metadata.merge`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from octue_dagster.core.metadata import json_objects

from octue_dagster.core.metadata import octue_files
from octue_dagster.core.metadata import values as md
from octue_dagster.core.dataset.dataset_files import METADATA_FILENAME
from octue_dagster.core.dataset.filters import FilterSet
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.metadata.merge import merge
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.exceptions import ConflictError, CorruptMetadataFileError, InvalidInputError, ReadOnlyDatasetError

#: How often a `.octue` object write is re-read and re-applied after losing a race with another writer.
_METADATA_WRITE_ATTEMPTS = 10


class DatasetMetadata(md.LabelsAndTags):
    """The metadata half of a `Dataset`: reading, merging and writing its `"dataset"` entry."""

    # Provided by `Dataset`.
    _cloud: GCSPath | None
    _local: Path | None
    _url: str | None
    _metadata_object: ObjectInfo | None
    _stored_document: dict[str, Any]
    _persisted: dict[str, Any] | None
    _name: str | None
    files: FilterSet
    id: str
    name: str | None
    path: str
    store: Store

    def _read_cloud_document(self) -> Mapping[str, Any]:
        """The `"dataset"` entry of the dataset's `.octue` object (one download, if the listing found the object)."""
        if self._metadata_object is None:
            return {}
        self._stored_document = json_objects.read_document(self.store, self._metadata_object)
        return self._stored_document.get("dataset") or {}

    def _read_local_document(self) -> Mapping[str, Any]:
        assert self._local is not None
        records = octue_files.read_metadata_file(self._local / METADATA_FILENAME)
        entry = records.get("dataset") or {}
        if not isinstance(entry, Mapping):
            raise CorruptMetadataFileError(str(self._local / METADATA_FILENAME), "its 'dataset' entry is not an object")
        return entry

    def metadata(self) -> dict[str, Any]:
        """The dataset's metadata: `id`, `name`, `tags` and `labels`."""
        return {"id": self.id, "name": self.name, "tags": dict(self.tags), "labels": set(self.labels)}

    def to_primitive(self, include_files: bool = True) -> dict[str, Any]:
        """The dataset as JSON-ready primitives in Octue's shape (labels as a sorted list, files as sorted paths)."""
        primitive: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "tags": dict(self.tags),
            "labels": sorted(self.labels),
            "path": self.path,
        }
        if include_files:
            primitive["files"] = sorted(file.cloud_path or str(file) for file in self.files)
        return primitive

    def _own_metadata(self) -> dict[str, Any]:
        return self.to_primitive(include_files=False)

    def _refuse_if_signed(self, action: str) -> None:
        """A dataset read from a signed URL only reads: say so instead of writing anything."""
        if self._url is not None:
            raise ReadOnlyDatasetError(
                f"{self!r} was read from a signed URL, which only reads: cannot {action}. Download it "
                f"(dataset.download('folder')) and make a Dataset of that folder to change or upload it."
            )

    def update_metadata(self) -> None:
        """Persist the dataset's metadata: to its `.octue` object for a cloud dataset, else its folder's `.octue` file."""
        self._refuse_if_signed("update its metadata")
        if self._cloud is not None:
            self.update_cloud_metadata()
        else:
            self.update_local_metadata()

    def update_local_metadata(self) -> None:
        """Write the `"dataset"` entry of the local folder's `.octue` file, keeping every other entry and key."""
        self._refuse_if_signed("update its metadata")
        if self._local is None:
            raise InvalidInputError(f"{self} is a cloud dataset; use update_cloud_metadata().")
        self._local.mkdir(parents=True, exist_ok=True)
        own = self._own_metadata()

        def change(records: dict[str, Any]) -> None:
            existing = records.get("dataset") if isinstance(records.get("dataset"), dict) else {}
            records["dataset"] = {**existing, **own}

        octue_files.update_metadata_file(self._local / METADATA_FILENAME, change)
        self._persisted = own

    def update_cloud_metadata(self) -> None:
        """Write the dataset's `.octue` object, conditional on the version this dataset read.

        If another writer changed it since, their version is read again and this dataset's own changes (labels and
        tags added or removed, a new name) are applied on top, so neither writer's change is lost.
        """
        self._refuse_if_signed("update its metadata")
        if self._cloud is None:
            raise InvalidInputError(f"{self} is a local dataset: upload it first, or use update_local_metadata().")
        path = self._cloud.join(METADATA_FILENAME)
        for _ in range(_METADATA_WRITE_ATTEMPTS):
            entry = (
                self._stored_document.get("dataset") if isinstance(self._stored_document.get("dataset"), dict) else {}
            )
            own = _merge_dataset_entry(self._persisted, self._own_metadata(), entry) if self._persisted else None
            own = own or self._own_metadata()
            document = {**self._stored_document, "dataset": {**entry, **own}}
            try:
                self._metadata_object = json_objects.write_document(
                    self.store,
                    path,
                    document,
                    if_generation_match=self._metadata_object.generation if self._metadata_object else 0,
                )
            except ConflictError:
                self._metadata_object = self.store.get_object(path)
                self._stored_document = {}
                self._read_cloud_document()
                continue
            self._adopt(own)
            self._stored_document = document
            return
        raise ConflictError(f"Could not update {path}: other writers kept changing it. Try again.")

    def _adopt(self, own: Mapping[str, Any]) -> None:
        self._name = own.get("name")
        self._labels = md.LabelSet(own.get("labels"))
        self._tags = md.TagDict(own.get("tags"))
        self._persisted = self._own_metadata()


def _as_stored(entry: Mapping[str, Any]) -> md.StoredMetadata:
    return md.StoredMetadata(
        id=entry.get("id"), labels=frozenset(entry.get("labels") or ()), tags=dict(entry.get("tags") or {})
    )


def _merge_dataset_entry(base: Mapping[str, Any], ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    """Apply our changes since `base` onto `theirs` (another writer's newer entry), by the library's one merge rule;
    the name is ours if we changed it, else theirs."""
    merged = merge(_as_stored(base), _as_stored(ours), _as_stored(theirs))
    name = ours.get("name") if ours.get("name") != base.get("name") else theirs.get("name", ours.get("name"))
    return {**ours, "name": name, "labels": sorted(merged.labels or ()), "tags": merged.tags}


__all__ = ["DatasetMetadata"]
