"""`Datafile`: one file, local, in Google Cloud Storage, or both, with Octue metadata and crc32c hashes.

A cloud datafile is built from one metadata request and holds no content until something reads it. Content changes
go to GCS with the metadata in one upload, conditional on the generation this datafile last saw; metadata changes
are patches that keep the generation and merge with other writers' changes. Local files and `.octue` files are
replaced atomically, so a failure leaves the previous state on disk and in the bucket.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from google.cloud import storage

from octue_dagster.core.cache import copies as cache

from octue_dagster.core.local import hashing

from octue_dagster.core.cache import local_copy

from octue_dagster.core.metadata import octue_files as local_metadata
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.core.storage.gcs_path import GCSPath, is_gcs_path, parse_gcs_path
from octue_dagster.core.datafile.datafile_metadata import OctueMetadata
from octue_dagster.core.datafile.opener import DatafileOpener
from octue_dagster.core.datafile.datafile_transfers import DatafileTransfers
from octue_dagster.core.datafile.octue_api import OctueDatafileAPI, warn_if_octue_names_it_differently
from octue_dagster.exceptions import InvalidInputError

T = TypeVar("T")
HDF5_EXTENSIONS = (".hdf5", ".h5")
EMPTY_HASH = hashing.crc32c_base64(b"")



class Datafile(DatafileTransfers, OctueDatafileAPI, OctueMetadata):
    """One file with Octue metadata (id, timestamp, labels, tags), local, in GCS (`gs://bucket/name`) or both.

    `path` is a local path, a `gs://` URI or an `https://` URL (a signed URL: read-only, see `url_datafile`). For a
    cloud path, `local_path` names a local copy, downloaded at once unless it already holds the object's content. For
    a local path, `cloud_path` names the object it mirrors: an existing local file is uploaded to it at once. As in
    Octue's SDK, metadata stored with the file (the object's, or the `.octue` entry) wins over the `timestamp`,
    `labels` and `tags` given here (a warning says so when they differ); `ignore_stored_metadata=True` uses what is
    given. To change stored metadata, set attributes and call `update_metadata()`.

    Octue's context-manager form opens the file with `mode` (and `update_metadata`, and `open`'s keyword arguments):

        with Datafile("gs://bucket/readings.csv", mode="w") as (datafile, file):
            file.write("a,b\n")
            datafile.labels.add("raw")
    """

    def __new__(cls, path: Any = None, *args: Any, **kwargs: Any) -> Datafile:
        if cls is Datafile and isinstance(path, str) and path.lower().startswith(("https://", "http://")):
            from octue_dagster.core.datafile.url_datafile import UrlDatafile

            cls = UrlDatafile
        return super().__new__(cls)

    def __init__(
        self,
        path: str | os.PathLike[str],
        local_path: str | os.PathLike[str] | None = None,
        cloud_path: str | None = None,
        timestamp: datetime.datetime | float | None = None,
        mode: str = "r",
        update_metadata: bool = True,
        ignore_stored_metadata: bool = False,
        id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        labels: Iterable[str] | str | None = None,
        *,
        store: Store | None = None,
        storage_client: storage.Client | None = None,
        name: str | None = None,
        _object: ObjectInfo | None = None,
        **open_kwargs: Any,
    ) -> None:
        self._store = store if store is not None else (Store(storage_client) if storage_client is not None else None)
        self._object: ObjectInfo | None = None
        self._local: Path | None = None
        self._cloud: GCSPath | None = None
        self._open_attributes = {"mode": mode, "update_metadata": update_metadata, **open_kwargs}
        self._locate(path, local_path, cloud_path, _object)

        self._ignore_stored_metadata = ignore_stored_metadata
        stored = md.StoredMetadata() if ignore_stored_metadata else self._read_stored_metadata()
        if id is not None and stored.id is not None and md.validate_id(id) != stored.id:
            raise InvalidInputError(
                f"The id {id!r} given for {self} differs from its stored id {stored.id!r}; ids cannot be reassigned. "
                f"Leave id out, or pass ignore_stored_metadata=True to replace the stored metadata."
            )
        new_id = md.validate_id(id) if id is not None else (stored.id or str(uuid.uuid4()))
        self._init_metadata(stored, new_id, timestamp, labels, tags)
        if name is not None and name != self.name:
            raise InvalidInputError(
                f"The name {name!r} given for {self} differs from its file name {self.name!r}: a datafile's name is "
                f"the last part of its path here (Octue's SDK lets it differ). Leave name out."
            )
        self._after_init()

    def _locate(self, path: Any, local_path: Any, cloud_path: Any, _object: ObjectInfo | None) -> None:
        """Set where the datafile is (`_cloud`, `_local`, `_object`) from the constructor's arguments."""
        self._cloud_is_source = is_gcs_path(path)
        if self._cloud_is_source:
            if cloud_path is not None and cloud_path != path:
                raise InvalidInputError("Give cloud_path only with a local path; `path` is already a gs:// path.")
            self._cloud = parse_gcs_path(str(path))
            if _object is None:  # a path written by the user, not a name read from a listing
                warn_if_octue_names_it_differently(self._cloud)
            self._local = Path(local_path).absolute() if local_path is not None else None
        else:
            if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
                raise InvalidInputError(f"A datafile path must be a non-empty local path or gs:// URI; got {path!r}.")
            if "\x00" in str(os.fspath(path)):
                raise InvalidInputError(f"The local path {path!r} contains a NUL character, which no file system allows.")
            self._local = Path(path).absolute()
            if local_path is not None and Path(local_path).absolute() != self._local:
                raise InvalidInputError(
                    f"`path` {str(path)!r} is already a local path, and local_path {str(local_path)!r} names another; "
                    f"give local_path only with a gs:// path."
                )
            if cloud_path is not None:
                self._cloud = warn_if_octue_names_it_differently(parse_gcs_path(cloud_path))
        if _object is not None:
            self._object = _object
        elif self._cloud is not None:
            self._object = self.store.get_object(self._cloud)

    def _after_init(self) -> None:
        """Octue's construction rules for a second location: a cloud datafile's chosen `local_path` is made to hold the
        object's content now, and an existing local file given a `cloud_path` is uploaded now."""
        if self._cloud is None or self._local is None:
            return
        if self._cloud_is_source:
            if self._object is not None and not self._has_valid_local_copy():
                self.download()
        elif self._local.is_file():
            self.upload()

    # --- construction helpers --------------------------------------------------------------------------------------

    @classmethod
    def from_object_info(cls, info: ObjectInfo, store: Store | None = None) -> Datafile:
        """A cloud datafile from metadata already fetched (for example by a listing): no request is made."""
        return cls(str(info.path), store=store, _object=info)

    @property
    def store(self) -> Store:
        """The store this datafile reaches GCS through (the process-wide `Store.default()` unless one was given)."""
        if self._store is None:
            self._store = Store.default()
        return self._store

    def _read_stored_metadata(self) -> md.StoredMetadata:
        if self._object is not None:
            return md.from_cloud_metadata(self._object.custom_metadata, str(self._cloud))
        if self._local is not None:
            return md.from_local_metadata(local_metadata.read_entry(self._local), f"{self._local} in its .octue file")
        return md.StoredMetadata()

    # --- locations ---------------------------------------------------------------------------------------------------

    @property
    def cloud_path(self) -> str | None:
        """The `gs://bucket/name` URI of this datafile's object, or `None` for a local-only datafile.

        Setting it uploads there (as in Octue's SDK); setting `None` detaches a local datafile from its object."""
        return str(self._cloud) if self._cloud is not None else None

    @cloud_path.setter
    def cloud_path(self, path: str | None) -> None:
        self._move_cloud_location(path)

    @property
    def gcs_path(self) -> GCSPath | None:
        """The parsed cloud location, or `None`."""
        return self._cloud

    @property
    def object_info(self) -> ObjectInfo | None:
        """What GCS said about the object when this datafile last read or wrote it (`None` if it did not exist)."""
        return self._object

    @property
    def generation(self) -> int | None:
        """The object's generation as last seen by this datafile, or `None`."""
        return self._object.generation if self._object is not None else None

    def _local_target(self) -> Path:
        """Where this datafile's local copy is or would be."""
        if self._local is not None:
            return self._local
        assert self._cloud is not None
        return cache.cached_path(self._cloud)

    def _uses_cache(self) -> bool:
        return self._local is None and self._cloud is not None

    def _has_valid_local_copy(self) -> bool:
        """Whether a local copy is on disk that reflects this datafile (for cloud files: its current generation)."""
        target = self._local_target()
        if not target.is_file():
            return False
        if self._cloud is None or self._object is None:
            return True
        if self._uses_cache() or self._cloud_is_source:
            # A download target chosen by the user may hold an older version: only the object's content counts.
            return local_copy.holds(target, self._object, cached=self._uses_cache())
        return True

    @property
    def local_path(self) -> str:
        """The path of a local copy, downloading the object first if there is no valid copy yet.

        Setting it (as in Octue's SDK) makes a new path, which must not exist yet, the local copy (downloaded or
        copied there); setting `None` makes a cloud datafile forget its chosen local copy and use the cache."""
        return str(self._ready_local_copy())

    @local_path.setter
    def local_path(self, path: str | os.PathLike[str] | None) -> None:
        self._move_local_copy(path)

    def _ready_local_copy(self) -> Path:
        if self._cloud is not None and self._object is not None:
            if self._uses_cache():
                return Path(self.download())
            if not self._has_valid_local_copy():
                self.download()
        return self._local_target()

    def _open_content(self, hold: contextlib.ExitStack, open_file: Callable[[Path], T]) -> T:
        """`open_file(path)` on a local copy of the content; a cached copy is held against eviction until `hold`
        closes."""
        if self._uses_cache() and self._object is not None:
            self._fetched = True
            return local_copy.open_cached(self.store, self._object, hold, open_file)
        return open_file(Path(self.local_path))

    @property
    def name(self) -> str:
        """The file name (the last part of the local path or object name)."""
        if self._local is not None and self._cloud is None:
            return self._local.name
        assert self._cloud is not None
        return self._cloud.name.rstrip("/").rsplit("/", 1)[-1]

    @property
    def extension(self) -> str:
        """The file extension without its dot (`"csv"`), or `""`."""
        suffix = Path(self.name).suffix
        return suffix[1:] if suffix else ""

    @property
    def exists_locally(self) -> bool:
        """As in Octue's SDK: whether the datafile has a local path (given, or a copy this datafile downloaded). It
        says nothing of what the file holds now: see `has_local_copy`."""
        return self._local is not None or (self._fetched and self._has_valid_local_copy())

    @property
    def exists_in_cloud(self) -> bool:
        """As in Octue's SDK: whether the datafile has a cloud location (no request is made; `object_info` is what
        GCS said when the datafile last read or wrote the object, `None` if there was none)."""
        return self.cloud_path is not None

    @property
    def has_local_copy(self) -> bool:
        """Whether a local copy is on disk now that holds the datafile's content (for a cloud file: its generation)."""
        return self._has_valid_local_copy()

    @property
    def size_bytes(self) -> int | None:
        """The content size: of the local copy if there is one, else of the object (no download); `None` if neither."""
        if self._has_valid_local_copy():
            return self._local_target().stat().st_size
        if self._object is not None:
            return self._object.size
        return None

    # --- hashes ------------------------------------------------------------------------------------------------------

    @property
    def hash_value(self) -> str:
        """The base64 crc32c of the content: the string GCS reports as the object's `crc32c`.

        For a cloud datafile without a local copy it comes from the object's metadata, without downloading.
        """
        if self._uses_cache() and self._object is not None and self._object.crc32c:
            return self._object.crc32c  # a cached copy is only ever used if it holds exactly these bytes
        if self._has_valid_local_copy():
            return hashing.hash_file(self._local_target())
        if self._object is not None and self._object.crc32c:
            return self._object.crc32c
        return EMPTY_HASH

    # --- open --------------------------------------------------------------------------------------------------------

    def open(self, mode: str = "r", update_metadata: bool = True, **kwargs: Any) -> DatafileOpener:
        """Open the content like the builtin `open` (`.h5`/`.hdf5` files as `h5py.File`), as a context manager.

        Reading modes download a cloud object first; `w` and `x` do not. When a writing block ends normally, the
        content is uploaded with the metadata (unless `update_metadata=False`) in one request. As in Octue's SDK,
        metadata changed inside a reading block is not saved (a warning says so): call `update_metadata()`. If the
        block raises, nothing is uploaded and the local file is as it was.
        """
        self._open_attributes["mode"] = mode
        before = self._current()
        return DatafileOpener(
            mode,
            kwargs,
            name=str(self),
            hdf5=self._is_hdf5(),
            exists=self._content_exists(),
            open_content=self._open_content,
            target=self._local_target(),
            commit=functools.partial(self._commit_written_file, update_metadata=update_metadata),
            after_read=functools.partial(self._warn_unsaved_read_changes, before),
        )

    def _content_exists(self) -> bool:
        return self._object is not None if self._cloud is not None else self._local_target().is_file()

    def _is_hdf5(self) -> bool:
        return Path(self.name).suffix.lower() in HDF5_EXTENSIONS

    def __str__(self) -> str:
        return self.cloud_path or str(self._local)

    def __fspath__(self) -> str:
        return self.local_path
