"""Storing and loading `Dataset` assets: each asset (partition) folder holds one Octue dataset.

An asset that returns a `Dataset` (a local folder or a cloud one) gets it stored as an Octue dataset folder at its
address: the files under their paths relative to the dataset's folder, and the dataset's `.octue` object, which
Octue's SDK reads as the dataset's metadata. One listing of the folder tells what is there; only files whose crc32c
differs are uploaded (server-side copies for files already in GCS), and a file whose content is unchanged keeps its
stored Octue id, so an identical re-materialization writes nothing. Files the asset no longer returns are deleted,
but only those this I/O manager wrote there: their relative paths are recorded under the `"octue_dagster"` key of
the `.octue` object (a key Octue's SDK does not use; if it rewrites the object, nothing is deleted until the next
write records ownership again). Downstream inputs get a lazy cloud `Dataset` from one listing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from octue_dagster.core.storage.store import Store
from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.dataset.dataset import METADATA_FILENAME, Dataset, prefix_of
from octue_dagster.core.dataset.filters import FilterSet
from octue_dagster.dagster.inputs import ReadOnlyDatafile
from octue_dagster.exceptions import CloudObjectNotFoundError, ConflictError, ForeignObjectError

#: The key of the dataset's `.octue` object under which the I/O manager records the files it wrote.
OWNER_KEY = "octue_dagster"


class DatasetHost(Protocol):
    """What storing a dataset needs from the I/O manager's worker."""

    store: Store

    def address(self, slot: Any) -> Any: ...

    def describe(self, slot: Any) -> str: ...


def _written_by_us(stored: Dataset) -> set[str]:
    record = stored._stored_document.get(OWNER_KEY)  # noqa: SLF001
    files = record.get("files") if isinstance(record, Mapping) else None
    return {name for name in files if isinstance(name, str)} if isinstance(files, list) else set()


def _bind_files(dataset: Dataset, stored: Dataset, store: Store) -> Dataset:
    """The dataset to upload: the returned files, using the I/O manager's client, where a file whose content equals
    the stored file at the same place keeps that file's id (it is the same file), and the dataset keeps its stored id."""
    stored_by_path = {str(stored.relative_path(file)): file for file in stored.files}
    files = []
    for file in dataset.files:
        relative = str(dataset.relative_path(file))
        previous = stored_by_path.get(relative)
        # Writes go through the I/O manager's store (its GCSResource's client and credentials), as for datafiles.
        file._store = store  # noqa: SLF001
        if previous is not None and previous.id != file.id and previous.hash_value == file.hash_value:
            file = _with_id(file, previous.id, store)
        files.append(file)
    return Dataset(
        dataset.cloud_path or dataset.path,
        files=files,
        id=stored.id if stored._persisted is not None else dataset.id,  # noqa: SLF001
        name=dataset.name,
        labels=dataset.labels,
        tags=dataset.tags,
        store=store,
        max_workers=dataset.max_workers,
    )


def _with_id(file: Datafile, id: str, store: Store) -> Datafile:
    """The same content and metadata as `file`, under the id of the stored file it is identical to."""
    if file.gcs_path is not None and file.object_info is not None and not file.exists_locally:
        copy = Datafile.from_object_info(file.object_info, store=store)
        copy._id = id  # noqa: SLF001 - an in-memory rebinding; nothing stored under the source's id changes
    else:
        copy = Datafile(file.local_path, id=id, ignore_stored_metadata=True, store=store)
    copy.timestamp, copy.labels, copy.tags = file.timestamp, file.labels, file.tags
    return copy


def store_dataset(host: DatasetHost, slot: Any, dataset: Dataset) -> Dataset:
    """Store `dataset` as the Octue dataset at the slot's folder and return the stored (cloud) dataset."""
    folder = prefix_of(host.address(slot).folder)
    listing = list(host.store.list_objects(folder))  # one listing serves reading what is there and the upload plan
    stored = Dataset(str(folder), store=host.store, _listing=listing)
    owned_before = _written_by_us(stored)
    to_upload = _bind_files(dataset, stored, host.store)
    _refuse_foreign_targets(host, slot, folder, listing, owned_before, to_upload)
    report = to_upload.upload_with_report(str(folder), update_cloud_metadata=False, listing=listing)
    # The folder's `.octue` object was read with `stored`: this dataset's metadata replaces it, keeping other keys.
    to_upload._metadata_object, to_upload._stored_document = stored._metadata_object, stored._stored_document  # noqa: SLF001
    current = {str(to_upload.relative_path(file)) for file in to_upload.files}
    for info in report.others:
        relative = info.path.name[len(folder.name) :]
        if relative not in owned_before or relative.endswith(METADATA_FILENAME):
            continue
        slot.context.log.info(f"Removing {info.path}: {host.describe(slot)} no longer returns it.")
        try:
            host.store.delete_object(info.path, if_generation_match=info.generation)
        except (CloudObjectNotFoundError, ConflictError):
            pass  # gone already, or replaced by another writer since the listing: not ours to delete now
    entry = to_upload._stored_document.get("dataset") or {}  # noqa: SLF001
    record = {"files": sorted(current)}
    if (
        to_upload._stored_document.get(OWNER_KEY) != record  # noqa: SLF001
        or entry != {**entry, **to_upload.to_primitive(include_files=False)}
    ):
        to_upload._stored_document[OWNER_KEY] = record  # noqa: SLF001
        to_upload.update_cloud_metadata()
    return to_upload


def _refuse_foreign_targets(
    host: DatasetHost, slot: Any, folder: Any, listing: list, owned: set[str], to_upload: Dataset
) -> None:
    """Raise `ForeignObjectError` if storing would replace an object this I/O manager did not write.

    An object already holding the very content to be stored is not replaced (nothing is written), so it is no
    conflict: that is also how files written just before a crash, whose ownership was never recorded, are taken back.
    """
    existing = {info.path.name[len(folder.name) :]: info for info in listing}
    for file in to_upload.files:
        relative = str(to_upload.relative_path(file))
        info = existing.get(relative)
        if info is not None and relative not in owned and info.crc32c != file.hash_value:
            raise ForeignObjectError(
                f"{info.path} was not written by the I/O manager, and storing {host.describe(slot)} would replace it, "
                f"so nothing was written. Move or delete that object, or return the file under another path."
            )


def load_dataset(host: DatasetHost, slot: Any) -> Dataset:
    """The dataset stored at the slot's folder, from one listing and one read of its `.octue` object."""
    folder = prefix_of(host.address(slot).folder)
    dataset = Dataset(str(folder), store=host.store)
    if len(dataset) == 0 and dataset._metadata_object is None:  # noqa: SLF001
        host.store.raise_if_bucket_missing(folder)
        raise CloudObjectNotFoundError(
            f"No stored dataset for {host.describe(slot)}: {folder} is empty. Materialize it first."
        )
    # Only the files the I/O manager stored are the asset's: anything else in the folder is someone else's. Without
    # a record (Octue's SDK rewrote the `.octue` object), every file is taken, as Octue's SDK would take them.
    owned = _written_by_us(dataset)
    files = [file for file in dataset.files if not owned or str(dataset.relative_path(file)) in owned]
    # Inputs are read-only, file by file, as a single datafile input is: the files belong to the upstream asset.
    dataset.files = FilterSet(ReadOnlyDatafile.from_object_info(file.object_info, store=host.store) for file in files)
    return dataset


__all__ = ["OWNER_KEY", "load_dataset", "store_dataset"]
