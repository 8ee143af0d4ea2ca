"""`Dataset`: a folder of Datafiles (local, or a `gs://` prefix) with its own id, name, labels and tags, as in
Octue's SDK 0.69, whose `Dataset` reads what this one writes and the other way round.

A cloud dataset is built from one paged listing of its prefix, whose entries already carry each object's custom
metadata (Octue's SDK makes one request per file), plus one read of the dataset's `.octue` object; no content is
downloaded until a file is opened. Uploads send only files whose crc32c differs from the stored object's (copying
server side when the file is already in GCS), downloads go through the checksum-verified cache, and both run on a
bounded thread pool with bounded memory (see `storage/runner.py`).

The dataset's own metadata lives where Octue keeps it: in the `"dataset"` entry of the folder's `.octue` file, or
in a `<prefix>/.octue` object holding `{"dataset": {...}}`. Entries and keys this library does not own are kept.
A dataset can also be read (not written) from a signed URL made by `generate_signed_url()` here or in Octue's SDK.
The Octue-named methods that are not about storage (serialisation, hashes, signed URLs) are in `octue_api.py`.
"""

from __future__ import annotations

import bisect
import collections
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from google.cloud import storage

from octue_dagster.core.metadata import values as md

from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.dataset.dataset_metadata import DatasetMetadata
from octue_dagster.core.dataset.dataset_files import (
    METADATA_FILENAME,
    download_targets,
    is_octue_metadata_object,
    local_file_paths,
    prefix_of,
    safe_relative_path,
    select_cloud_files,
    stored_file_paths,
)
from octue_dagster.core.dataset.dataset_transfers import TransferReport, download_files, upload_files
from octue_dagster.core.dataset.filters import FilterList, FilterSet
from octue_dagster.core.dataset.octue_api import OctueDatasetAPI
from octue_dagster.core.dataset import signed_datasets
from octue_dagster.core.storage.gcs_path import GCSPath, is_gcs_path, parse_gcs_path
from octue_dagster.exceptions import (
    CloudLocationNotSpecifiedError,
    InvalidInputError,
)

#: The keys of the `"dataset"` entry this library owns; other keys found there are kept as they are.
_OWN_KEYS = ("id", "name", "tags", "labels", "path")
_ABSENT = object()
logger = logging.getLogger(__name__)


class Dataset(DatasetMetadata, OctueDatasetAPI):
    """A set of Datafiles in one folder (local or `gs://bucket/prefix`) with an id, name, labels and tags.

    `Dataset(path)` holds every file under the folder (only its top level with `recursive=False`), skipping Octue's
    `.octue` metadata files; `Dataset(path, files=[...])` holds exactly the given Datafiles (or paths, or Octue's
    serialised datafile dicts). `files` is a `FilterSet`: `dataset.files.filter(labels__contains="raw")`,
    `dataset.files.one(name__ends_with=".csv")`, `dataset.files.order_by("timestamp")`.

    Stored metadata (the folder's `.octue` file or object) is read unless `ignore_stored_metadata=True`, and, as in
    Octue's SDK, what is stored wins over the id, name, labels and tags given here (they are used for what is not
    stored); an id that differs from the stored id is refused rather than dropped. `update_metadata()` (or leaving a
    `with dataset:` block) persists the metadata. `path` may also be a signed URL from `generate_signed_url()` (here
    or Octue's SDK): such a dataset is read-only.
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
        self._metadata_object: ObjectInfo | None = None
        self._stored_document: dict[str, Any] = {}
        self._instantiated_from_files_argument = False
        self.files: FilterSet = FilterSet()

        self._locate(os.getcwd() if path is None else path)

        if files is not None:
            if isinstance(files, (str, bytes, Mapping)) or not isinstance(files, Iterable):
                raise InvalidInputError(
                    f"`files` must be an iterable of Datafiles, paths or serialised datafiles; got {files!r}."
                )
            self.files = FilterSet(self._instantiate_datafile(file) for file in files)
            self._instantiated_from_files_argument = True
            # As in Octue's SDK, a dataset of given files does not read the folder's stored metadata.
            stored: Mapping[str, Any] = {}
        elif self._url is not None:
            stored = {} if ignore_stored_metadata else self._instantiate_from_signed_url()
        elif self._cloud is not None:
            stored = self._instantiate_from_cloud(_listing)
        else:
            stored = self._instantiate_from_local_folder()

        self._use_stored_metadata_first(stored, id=id, name=name, labels=labels, tags=tags)
        self._persisted = self._own_metadata() if stored else None
        if self._local is not None and files is None and not self.files:
            logger.warning("%r is empty at instantiation time (path %r).", self, self.path)

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
            # Its files are in storage (gs:// or URLs), never local paths: an object in a bucket must not make this
            # process read its own files.
            listed = stored_file_paths(stored["files"], self.metadata_path)
            self.files = FilterSet(Datafile(path, store=self._store) for path in listed)
            self._instantiated_from_files_argument = True
        return stored

    def _instantiate_from_signed_url(self) -> Mapping[str, Any]:
        assert self._url is not None
        document, files = signed_datasets.read_signed_dataset(self._url, self._store)
        self.files = FilterSet(files)
        return document

    def _instantiate_from_local_folder(self) -> Mapping[str, Any]:
        assert self._local is not None
        paths = local_file_paths(
            self._local, recursive=self._recursive, include_octue_metadata_files=self._include_octue_metadata_files
        )
        ignore = self._ignore_stored_metadata
        self.files = FilterSet(Datafile(path, ignore_stored_metadata=ignore, store=self._store) for path in paths)
        return {} if self._ignore_stored_metadata else self._read_local_document()

    # --- identity and metadata ---------------------------------------------------------------------------------------

    @staticmethod
    def _location_of(path: str | os.PathLike[str]) -> tuple[GCSPath | None, Path | None, str | None]:
        """Where `path` is, as (`gs://` prefix, local folder, signed URL), one of them set; a bad path is refused."""
        if signed_datasets.is_url(path):
            return None, None, str(path)
        if is_gcs_path(path):
            return prefix_of(parse_gcs_path(str(path), allow_empty_name=True)), None, None
        if isinstance(path, (str, os.PathLike)) and os.fspath(path):
            if "\x00" in str(os.fspath(path)):
                raise InvalidInputError(
                    f"The dataset path {path!r} contains a NUL character, which no file system allows."
                )
            return None, Path(path).absolute(), None
        raise InvalidInputError(f"A dataset path must be a local folder, a gs:// prefix or a signed URL; got {path!r}.")

    def _locate(self, path: str | os.PathLike[str]) -> None:
        """Point the dataset at `path` (a local folder, a `gs://` prefix or a signed URL); its files do not move."""
        self._cloud, self._local, self._url = self._location_of(path)
        if self._local is not None:
            self._local_path_as_given = os.fspath(path)

    @property
    def path(self) -> str:
        """The dataset's folder: a `gs://bucket/prefix` URI (no trailing `/`), a signed URL, or the local path as
        given (as in Octue's SDK; the default is the current directory)."""
        if self._url is not None:
            return self._url
        if self._cloud is not None:
            return f"gs://{self._cloud.bucket}/{self._cloud.name.rstrip('/')}".rstrip("/")
        return str(self._local_path_as_given)

    @path.setter
    def path(self, value: str | os.PathLike[str]) -> None:
        # What the manifest says the dataset is (Octue's `Manifest.update_dataset_paths`): the files stay where they
        # are, and metadata read at the old place is no base for writing at the new one.
        self._locate(value)
        self._metadata_object, self._stored_document, self._persisted = None, {}, None

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
        if self._url is not None:
            return signed_datasets.url_name(self._url)
        return self.path.rstrip("/").rsplit("/", 1)[-1] if self._cloud is not None else self._local.name  # type: ignore[union-attr]

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = _checked_name(value)

    @property
    def all_files_are_in_cloud(self) -> bool:
        """Whether every file has a cloud location (as in Octue's SDK; no requests are made to check the objects)."""
        return all(file.cloud_path is not None for file in self.files)

    @property
    def metadata_path(self) -> str:
        """Where the dataset's own metadata lives: its folder's `.octue` file or object (or its signed URL)."""
        if self._url is not None:
            return self._url
        if self._cloud is not None:
            return str(self._cloud.join(METADATA_FILENAME))
        return os.path.join(str(self._local), METADATA_FILENAME)

    @property
    def size_bytes(self) -> int:
        """The total size of the files (from the listing for cloud files: nothing is downloaded)."""
        return sum(file.size_bytes or 0 for file in self.files)

    # --- the files ---------------------------------------------------------------------------------------------------

    def relative_path(self, datafile: Datafile) -> PurePosixPath:
        """Where a file sits inside the dataset's folder (its name alone if it is outside the folder)."""
        if self._url is not None and signed_datasets.is_url(datafile.cloud_path):
            relative = signed_datasets.relative_path_in_signed_dataset(self._url, str(datafile.cloud_path))
            return safe_relative_path(relative or datafile.name, datafile.name)
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
        self._refuse_if_signed("add files to it")
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
            # As in Octue's SDK: the datafile's local path becomes a copy inside the folder (content and metadata,
            # same id); the original file stays where it was.
            datafile.local_path = str(target)
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
        self._refuse_if_signed("upload it")
        if cloud_path is None and self._cloud is None:
            raise CloudLocationNotSpecifiedError(
                f"{self!r} is local: give upload() a cloud path such as 'gs://bucket/folder'."
            )
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
        if self._cloud is None and self._url is None:
            raise CloudLocationNotSpecifiedError(
                f"Only cloud datasets (gs:// or signed URLs) can be downloaded; {self!r} is at {self.path!r}."
            )
        root = Path(local_directory).absolute() if local_directory is not None else None
        files = [file for file in self.files if file.gcs_path is not None or self._url is not None]
        plan: list[tuple[Datafile, Path | None]] = [(file, None) for file in files]
        if root is not None:
            # Names that meet on disk, or that the disk cannot hold, are refused before anything is downloaded.
            places = [
                (file.gcs_path.name if file.gcs_path is not None else str(file), str(self.relative_path(file)))
                for file in files
            ]
            plan = list(zip(files, download_targets(places, root)))
        download_files(plan, max_workers=self.max_workers, description=f"Downloading {self.name}")
        logger.info("Downloaded %r to %r.", self, str(root) if root is not None else "the download cache")
        return str(root) if root is not None else None


def _checked_name(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"A dataset name must be a string; got {value!r}.")
    return value


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


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
