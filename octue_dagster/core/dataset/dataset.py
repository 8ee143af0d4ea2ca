"""`Dataset`: a folder of Datafiles (local, or a `gs://` prefix) with its own id, name, labels and tags, as in
Octue's SDK 0.69, whose `Dataset` reads what this one writes and the other way round.

A cloud dataset is built from one paged listing of its prefix, whose entries already carry each object's custom
metadata (Octue's SDK makes one request per file), plus one read of the dataset's `.octue` object; no content is
downloaded until a file is opened. Uploads send only files whose crc32c differs from the stored object's (copying
server side when the file is already in GCS), downloads go through the checksum-verified cache, and both run on a
bounded thread pool with bounded memory (see `storage/runner.py`).

The dataset's own metadata lives where Octue keeps it: in the `"dataset"` entry of the folder's `.octue` file, or
in a `<prefix>/.octue` object holding `{"dataset": {...}}`. Entries and keys this library does not own are kept.
"""

from __future__ import annotations

import bisect
import collections
import datetime
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from google.cloud import storage

from octue_dagster.core.local import hashing

from octue_dagster.core.metadata import json_objects

from octue_dagster.core.metadata import values as md

from octue_dagster.core.storage import signing
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.core.local.atomic import atomic_replace
from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.dataset.dataset_metadata import DatasetMetadata
from octue_dagster.core.dataset.dataset_files import (
    METADATA_FILENAME,
    SIGNED_METADATA_DIRECTORY,
    is_octue_metadata_object,
    local_file_paths,
    prefix_of,
    safe_relative_path,
    select_cloud_files,
)
from octue_dagster.core.dataset.dataset_transfers import TransferReport, download_files, upload_files
from octue_dagster.core.dataset.filters import FilterList, FilterSet
from octue_dagster.core.storage.gcs_path import GCSPath, is_gcs_path, parse_gcs_path
from octue_dagster.exceptions import (
    InvalidInputError,
    InvalidMetadataError,
)

#: The keys of the `"dataset"` entry this library owns; other keys found there are kept as they are.
_OWN_KEYS = ("id", "name", "tags", "labels", "path")
_ABSENT = object()


class Dataset(DatasetMetadata):
    """A set of Datafiles in one folder (local or `gs://bucket/prefix`) with an id, name, labels and tags.

    `Dataset(path)` holds every file under the folder (only its top level with `recursive=False`), skipping Octue's
    `.octue` metadata files; `Dataset(path, files=[...])` holds exactly the given Datafiles (or paths, or Octue's
    serialised datafile dicts). `files` is a `FilterSet`: `dataset.files.filter(labels__contains="raw")`,
    `dataset.files.one(name__ends_with=".csv")`, `dataset.files.order_by("timestamp")`.

    Stored metadata (the folder's `.octue` file or object) is read unless `ignore_stored_metadata=True`. Metadata
    given here overrides what is stored, as it does for `Datafile` (Octue's SDK prefers the stored values); an id
    that differs from the stored id is refused. `update_metadata()` (or leaving a `with dataset:` block) persists it.
    `max_workers` bounds concurrent transfers (default 16, or `$OCTUE_DAGSTER_TRANSFER_WORKERS`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        files: Iterable[Datafile | str | Mapping[str, Any]] | None = None,
        recursive: bool = True,
        ignore_stored_metadata: bool = False,
        include_octue_metadata_files: bool = False,
        id: str | None = None,
        name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        labels: Iterable[str] | str | None = None,
        *,
        store: Store | None = None,
        storage_client: storage.Client | None = None,
        max_workers: int | None = None,
        _listing: Iterable[ObjectInfo] | None = None,
    ) -> None:
        self._store = store if store is not None else (Store(storage_client) if storage_client is not None else None)
        self._recursive = recursive
        self._ignore_stored_metadata = ignore_stored_metadata
        self._include_octue_metadata_files = include_octue_metadata_files
        self.max_workers = max_workers
        self._cloud: GCSPath | None = None
        self._local: Path | None = None
        self._metadata_object: ObjectInfo | None = None
        self._stored_document: dict[str, Any] = {}
        self._instantiated_from_files_argument = False
        self.files: FilterSet = FilterSet()

        path = os.getcwd() if path is None else path
        if is_gcs_path(path):
            self._cloud = prefix_of(parse_gcs_path(str(path), allow_empty_name=True))
        elif isinstance(path, (str, os.PathLike)) and os.fspath(path):
            self._local = Path(path).absolute()
        else:
            raise InvalidInputError(f"A dataset path must be a local folder or a gs:// prefix; got {path!r}.")

        if files is not None:
            if isinstance(files, (str, bytes, Mapping)) or not isinstance(files, Iterable):
                raise InvalidInputError(
                    f"`files` must be an iterable of Datafiles, paths or serialised datafiles; got {files!r}."
                )
            self.files = FilterSet(self._instantiate_datafile(file) for file in files)
            self._instantiated_from_files_argument = True
            # As in Octue's SDK, a dataset of given files does not read the folder's stored metadata.
            stored: Mapping[str, Any] = {}
        elif self._cloud is not None:
            stored = self._instantiate_from_cloud(_listing)
        else:
            stored = self._instantiate_from_local_folder()

        stored_id = stored.get("id")
        if id is not None and stored_id is not None and md.validate_id(id) != md.validate_id(stored_id):
            raise InvalidInputError(
                f"The id {id!r} given for the dataset at {self.path} differs from its stored id {stored_id!r}; ids "
                f"cannot be reassigned. Leave id out, or pass ignore_stored_metadata=True."
            )
        where = f"the dataset metadata at {self.metadata_path}"
        try:
            self._id = md.validate_id(id if id is not None else stored_id) if (id or stored_id) else str(uuid.uuid4())
            self._name: str | None = name if name is not None else stored.get("name")
            self.labels = labels if labels is not None else stored.get("labels")
            self.tags = tags if tags is not None else stored.get("tags")
        except InvalidInputError as error:
            if id is None and labels is None and tags is None:
                raise InvalidMetadataError(f"{where} cannot be read: {error}") from None
            raise
        self._persisted = self._own_metadata() if stored else None

    # --- construction ------------------------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store this dataset reaches GCS through (the process-wide `Store.default()` unless one was given)."""
        if self._store is None:
            self._store = Store.default()
        return self._store

    def _instantiate_datafile(self, file: Datafile | str | Mapping[str, Any]) -> Datafile:
        if isinstance(file, Datafile):
            return file
        if isinstance(file, (str, os.PathLike)):
            return Datafile(
                file, ignore_stored_metadata=self._ignore_stored_metadata, store=self._store
            )
        if isinstance(file, Mapping) and "path" in file:
            # Octue's serialised datafile: {"path": ..., "id": ..., "timestamp": ..., "labels": ..., "tags": ...}.
            fields = {key: file[key] for key in ("id", "timestamp", "labels", "tags") if file.get(key) is not None}
            return Datafile(file["path"], store=self._store, **fields)
        raise InvalidInputError(f"Cannot make a Datafile of {file!r}: give a Datafile, a path or a dict with 'path'.")

    def _instantiate_from_cloud(self, listing: Iterable[ObjectInfo] | None) -> Mapping[str, Any]:
        assert self._cloud is not None
        if listing is None:
            listing = self.store.list_objects(self._cloud, delimiter=None if self._recursive else "/")
        infos, self._metadata_object = select_cloud_files(
            listing, self._cloud, recursive=self._recursive, include_octue_metadata_files=self._include_octue_metadata_files
        )
        ignore = self._ignore_stored_metadata
        files = [Datafile(str(info.path), store=self._store, ignore_stored_metadata=ignore, _object=info) for info in infos]
        self.files = FilterSet(files)
        if self._ignore_stored_metadata:
            return {}
        stored = self._read_cloud_document()
        if "files" in stored and not files:
            # A dataset described by its metadata alone (as Octue's signed-URL metadata files are).
            self.files = FilterSet(Datafile(path, store=self._store) for path in stored["files"])
            self._instantiated_from_files_argument = True
        return stored

    def _instantiate_from_local_folder(self) -> Mapping[str, Any]:
        assert self._local is not None
        paths = local_file_paths(
            self._local, recursive=self._recursive, include_octue_metadata_files=self._include_octue_metadata_files
        )
        ignore = self._ignore_stored_metadata
        self.files = FilterSet(Datafile(path, ignore_stored_metadata=ignore, store=self._store) for path in paths)
        return {} if self._ignore_stored_metadata else self._read_local_document()

    # --- identity and metadata ---------------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The dataset's folder: a `gs://bucket/prefix` URI (no trailing `/`) or an absolute local path."""
        if self._cloud is not None:
            return f"gs://{self._cloud.bucket}/{self._cloud.name.rstrip('/')}".rstrip("/")
        return str(self._local)

    @property
    def cloud_path(self) -> str | None:
        """The `gs://` URI of the dataset's folder, or `None` for a local dataset."""
        return self.path if self._cloud is not None else None

    @property
    def gcs_prefix(self) -> GCSPath | None:
        """The listing prefix of a cloud dataset (its folder name ending in `/`), or `None`."""
        return self._cloud

    @property
    def id(self) -> str:
        """The dataset's UUID."""
        return self._id

    @property
    def name(self) -> str:
        """The dataset's name: as given or stored, else the last part of its path."""
        if self._name:
            return self._name
        return self.path.rstrip("/").rsplit("/", 1)[-1] if self._cloud is not None else Path(self.path).name

    @name.setter
    def name(self, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"A dataset name must be a string; got {value!r}.")
        self._name = value

    @property
    def exists_in_cloud(self) -> bool:
        """Whether the dataset is a cloud dataset (its path is a `gs://` prefix)."""
        return self._cloud is not None

    @property
    def exists_locally(self) -> bool:
        """Whether the dataset is a local one (as in Octue's SDK: the opposite of `exists_in_cloud`)."""
        return not self.exists_in_cloud

    @property
    def all_files_are_in_cloud(self) -> bool:
        """Whether every file is known to be stored in GCS (from the listing or the last write: no requests)."""
        return all(file.cloud_path is not None and file.object_info is not None for file in self.files)

    @property
    def metadata_path(self) -> str:
        """Where the dataset's own metadata lives: its folder's `.octue` file or object."""
        if self._cloud is not None:
            return str(self._cloud.join(METADATA_FILENAME))
        return os.path.join(self.path, METADATA_FILENAME)

    @property
    def hash_value(self) -> str:
        """A crc32c over the sorted crc32c hashes of the files, computed exactly as Octue's SDK computes it."""
        return hashing.crc32c_base64(str(sorted(file.hash_value for file in self.files)).encode())

    @property
    def size_bytes(self) -> int:
        """The total size of the files (from the listing for cloud files: nothing is downloaded)."""
        return sum(file.size_bytes or 0 for file in self.files)

    def generate_signed_url(
        self,
        expiration: datetime.timedelta | datetime.datetime = datetime.timedelta(days=7),
        *,
        credentials: Any = None,
    ) -> str:
        """A signed URL to a new metadata object describing the dataset with signed URLs to each of its files, as
        Octue's SDK makes it (`<folder>/.signed_metadata_files/<name>`), so that the whole dataset can be read
        without credentials until `expiration` (at most 7 days)."""
        if self._cloud is None or not self.all_files_are_in_cloud:
            raise InvalidInputError(f"{self} and all its files must be in the cloud to generate a signed URL for it.")
        signing.expiration_seconds(expiration)
        document = self.to_primitive()
        document["files"] = [file.generate_signed_url(expiration, credentials=credentials) for file in self.files]
        path = self._cloud.join(SIGNED_METADATA_DIRECTORY, uuid.uuid4().hex)
        json_objects.write_document(self.store, path, document, if_generation_match=0)
        return signing.generate_signed_url(self.store.client, path, expiration, credentials=credentials)

    # --- the container -----------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Datafile]:
        yield from self.files

    def __len__(self) -> int:
        return len(self.files)

    def __contains__(self, item: object) -> bool:
        return item in self.files

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is None:
            self.update_metadata()

    def __repr__(self) -> str:
        return f"<Dataset({self.name!r}: {len(self.files)} files at {self.path!r})>"

    def get_file_by_label(self, label: str) -> Datafile:
        """The only file with `label`; `UnexpectedNumberOfResultsError` if there is none or more than one."""
        return self.files.one(labels__contains=label)

    def relative_path(self, datafile: Datafile) -> PurePosixPath:
        """Where a file sits inside the dataset's folder (its name alone if it is outside the folder)."""
        if self._cloud is not None and datafile.gcs_path is not None:
            if datafile.gcs_path.bucket == self._cloud.bucket and datafile.gcs_path.name.startswith(self._cloud.name):
                return safe_relative_path(datafile.gcs_path.name[len(self._cloud.name) :], str(datafile))
        local = datafile._local  # noqa: SLF001 - the dataset and its datafiles are one module family
        if self._local is not None and local is not None:
            try:
                return safe_relative_path(local.relative_to(self._local).as_posix(), str(datafile))
            except ValueError:
                pass
        return safe_relative_path(datafile.name, str(datafile))

    def add(self, datafile: Datafile, path_in_dataset: str | None = None) -> Datafile:
        """Add a datafile, putting it inside the dataset's folder (at `path_in_dataset`, else under its own name).

        For a cloud dataset the file is uploaded (or copied server side) there unless it already is in the folder;
        for a local dataset a cloud file is downloaded there and a local file outside the folder is copied in, with
        its metadata. Returns the datafile the dataset now holds.
        """
        if not isinstance(datafile, Datafile):
            raise InvalidInputError(f"Only Datafiles can be added to a dataset; got {datafile!r}.")
        relative = safe_relative_path(path_in_dataset or datafile.name, "path_in_dataset")
        if self._cloud is not None:
            destination = self._cloud.join(str(relative))
            inside = datafile.gcs_path is not None and datafile.gcs_path.name.startswith(self._cloud.name)
            if not inside or (path_in_dataset is not None and datafile.gcs_path != destination):
                datafile.upload(str(destination))
            self.files.add(datafile)
            return datafile
        assert self._local is not None
        target = self._local / Path(*relative.parts)
        if datafile.gcs_path is not None and datafile._cloud_is_source:  # noqa: SLF001
            datafile.download(local_path=target)
        elif datafile._local is not None and not _is_within(datafile._local, self._local):  # noqa: SLF001
            datafile = _copy_local_datafile(datafile, target)
        self.files.add(datafile)
        return datafile

    # --- transfers ---------------------------------------------------------------------------------------------------

    def upload(self, cloud_path: str | None = None, update_cloud_metadata: bool = True) -> str:
        """Upload the dataset to `cloud_path` (default: its own cloud folder) and make that its path; return it.

        One listing of the destination finds what is there: files whose crc32c and metadata match are not sent,
        files whose content matches get a metadata patch, files already in GCS are copied server side, and only the
        rest are uploaded, concurrently. Each write is conditional on the object version just listed.
        """
        self.upload_with_report(cloud_path, update_cloud_metadata=update_cloud_metadata)
        return self.path

    def upload_with_report(
        self,
        cloud_path: str | None = None,
        update_cloud_metadata: bool = True,
        *,
        listing: Iterable[ObjectInfo] | None = None,
    ) -> TransferReport:
        """Like `upload`, returning what was sent, copied, patched or left unchanged, and what else is there.

        `listing` is the destination's listing if the caller has just made it (it saves listing it again).
        """
        if cloud_path is None and self._cloud is None:
            raise InvalidInputError(f"{self} is local: give upload() a cloud path such as 'gs://bucket/folder'.")
        destination = prefix_of(parse_gcs_path(cloud_path, allow_empty_name=True)) if cloud_path else self._cloud
        assert destination is not None
        plan = [(file, destination.join(str(self.relative_path(file)))) for file in self.files]
        names = collections.Counter(target.name for _, target in plan)
        duplicates = {name for name, count in names.items() if count > 1}
        if duplicates:
            raise InvalidInputError(
                f"Several files of {self} would be uploaded to the same objects {sorted(duplicates)[:5]}: give them "
                f"distinct paths inside the dataset folder (Dataset.add(..., path_in_dataset=...))."
            )
        found = listing if listing is not None else self.store.list_objects(destination)
        existing = {info.path.name: info for info in found}
        report = upload_files(plan, existing, max_workers=self.max_workers, description=f"Uploading {self.name}")
        metadata_name = destination.name + METADATA_FILENAME
        report.others = [info for name, info in existing.items() if name not in names and name != metadata_name]
        if destination != self._cloud:
            # Metadata read elsewhere is no base for merging with what is at the destination: this dataset's wins.
            self._persisted = None
            self._metadata_object = existing.get(metadata_name)
            self._stored_document = {}
            if update_cloud_metadata:
                self._read_cloud_document()
        self._cloud = destination
        if update_cloud_metadata:
            stored_entry = self._stored_document.get("dataset") or {}
            if stored_entry != {**stored_entry, **self._own_metadata()}:
                self.update_cloud_metadata()
        return report

    def download(self, local_directory: str | os.PathLike[str] | None = None) -> str | None:
        """Download every file, concurrently and checksum-verified, and return the directory.

        With `local_directory`, each file goes to its place under it (a copy already there with the right crc32c is
        kept); without, files go to the shared download cache (each file's `local_path` says where) and `None` is
        returned, where Octue's SDK would use a temporary directory.
        """
        if self._cloud is None:
            raise InvalidInputError(f"Only cloud datasets can be downloaded; {self} is at {self.path!r}.")
        root = Path(local_directory).absolute() if local_directory is not None else None
        plan: list[tuple[Datafile, Path | None]] = []
        for file in self.files:
            if file.gcs_path is None:
                continue
            target = root.joinpath(*self.relative_path(file).parts) if root is not None else None
            plan.append((file, target))
        download_files(plan, max_workers=self.max_workers, description=f"Downloading {self.name}")
        return str(root) if root is not None else None


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _copy_local_datafile(datafile: Datafile, target: Path) -> Datafile:
    """Copy a local datafile (content and metadata, same id) to `target`, which must not exist."""
    if target.exists():
        raise FileExistsError(f"Cannot add {datafile} to the dataset: {target} already exists.")
    with atomic_replace(target) as temporary:
        shutil.copyfile(datafile.local_path, temporary)
    copy = Datafile(
        target,
        id=datafile.id,
        timestamp=datafile.timestamp,
        labels=datafile.labels,
        tags=datafile.tags,
        ignore_stored_metadata=True,
    )
    copy.update_metadata()
    return copy


def list_datasets(
    store: Store,
    prefix: str | GCSPath,
    labels: Iterable[str] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> FilterList:
    """The datasets under a `gs://bucket/prefix` (every folder holding a dataset `.octue` object), with all `labels`
    and the given `tags` values, sorted by path; filter them further with Octue's syntax (`.filter(name__...)`).

    Built from one paged listing of the prefix plus one read of each dataset's `.octue` object.
    """
    root = prefix if isinstance(prefix, GCSPath) else parse_gcs_path(prefix, allow_empty_name=True)
    listing = list(store.list_objects(root))
    folders = sorted(
        {info.path.name[: -len(METADATA_FILENAME)] for info in listing if info.path.name.rsplit("/", 1)[-1] == METADATA_FILENAME}
    )
    # Each folder's objects are one run of the listing sorted by name (bisected), not a scan of the whole listing per
    # folder, which grew as folders x objects.
    listing.sort(key=lambda info: info.path.name)
    sorted_names = [info.path.name for info in listing]
    found = []
    for folder in folders:
        start = bisect.bisect_left(sorted_names, folder)
        end = start
        while end < len(sorted_names) and sorted_names[end].startswith(folder):
            end += 1
        within = listing[start:end]
        dataset = Dataset(f"gs://{root.bucket}/{folder}", store=store, _listing=within)
        if labels is not None and not set(md.LabelSet(labels)) <= set(dataset.labels):
            continue
        if tags is not None and any(dataset.tags.get(name, _ABSENT) != value for name, value in tags.items()):
            continue
        found.append(dataset)
    return FilterList(found)


__all__ = ["Dataset", "TransferReport", "is_octue_metadata_object", "list_datasets", "prefix_of"]
