"""`Datafile`: one file, local, in Google Cloud Storage, or both, with Octue metadata and crc32c hashes.

A cloud datafile is built from one metadata request and holds no content until something reads it. Content changes
go to GCS with the metadata in one upload, conditional on the generation this datafile last saw; metadata changes
are patches that keep the generation and merge with other writers' changes. Local files and `.octue` files are
replaced atomically, so a failure leaves the previous state on disk and in the bucket.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import filelock
from google.cloud import storage

from octue_dagster.core import cache, hashing, octue_files as local_metadata
from octue_dagster.core import metadata as md
from octue_dagster.core.store import ObjectInfo, Store
from octue_dagster.core.atomic import atomic_replace, sweep_stale_temporaries, temporary_path_for
from octue_dagster.core.gcs_path import GCSPath, is_gcs_path, parse_gcs_path
from octue_dagster.core.merge import merge
from octue_dagster.core.upload_plan import UploadAction, plan_upload
from octue_dagster.exceptions import (
    CloudObjectNotFoundError,
    ChecksumMismatchError,
    ConflictError,
    InvalidInputError,
    MissingDependencyError,
)

HDF5_EXTENSIONS = (".hdf5", ".h5")
EMPTY_HASH = hashing.crc32c_base64(b"")
_VALID_MODES = {"r", "w", "a", "x", "r+", "w+", "a+", "x+"}


def _parse_mode(mode: str) -> tuple[str, bool]:
    """Split an `open` mode into its base (`r`, `w+`, ...) and whether it is binary; reject anything else."""
    if not isinstance(mode, str):
        raise InvalidInputError(f"The file mode must be a string such as 'r' or 'wb'; got {mode!r}.")
    binary = "b" in mode
    base = mode.replace("b", "").replace("t", "")
    if base not in _VALID_MODES or mode.count("b") + mode.count("t") > 1 or ("b" in mode and "t" in mode):
        raise InvalidInputError(
            f"Invalid file mode {mode!r}: use one of r, w, a, x, optionally with '+' and 'b' or 't' (as with open())."
        )
    return base, binary


class Datafile:
    """One file with Octue metadata (id, timestamp, labels, tags), local, in GCS (`gs://bucket/name`) or both.

    `path` is a local path or a `gs://` URI. For a cloud path, `local_path` says where to keep a downloaded copy
    (else a private cache is used). For a local path, `cloud_path` names the object it is uploaded to. Metadata given
    here overrides what is stored; `ignore_stored_metadata=True` does not read stored metadata at all.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        local_path: str | os.PathLike[str] | None = None,
        cloud_path: str | None = None,
        timestamp: datetime.datetime | float | None = None,
        id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        labels: Iterable[str] | str | None = None,
        ignore_stored_metadata: bool = False,
        store: Store | None = None,
        storage_client: storage.Client | None = None,
        _object: ObjectInfo | None = None,
    ) -> None:
        self._store = store if store is not None else (Store(storage_client) if storage_client is not None else None)
        self._object: ObjectInfo | None = None
        self._local: Path | None = None
        self._cloud: GCSPath | None = None

        self._cloud_is_source = is_gcs_path(path)
        if self._cloud_is_source:
            if cloud_path is not None:
                raise InvalidInputError("Give cloud_path only with a local path; `path` is already a gs:// path.")
            self._cloud = parse_gcs_path(str(path))
            self._local = Path(local_path).absolute() if local_path is not None else None
        else:
            if local_path is not None:
                raise InvalidInputError("Give local_path only with a gs:// path; `path` is already a local path.")
            if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
                raise InvalidInputError(f"A datafile path must be a non-empty local path or gs:// URI; got {path!r}.")
            if "\x00" in str(os.fspath(path)):
                raise InvalidInputError(f"The local path {path!r} contains a NUL character, which no file system allows.")
            self._local = Path(path).absolute()
            self._cloud = parse_gcs_path(cloud_path) if cloud_path is not None else None

        if _object is not None:
            self._object = _object
        elif self._cloud is not None:
            self._object = self.store.get_object(self._cloud)

        stored = md.StoredMetadata() if ignore_stored_metadata else self._read_stored_metadata()
        if id is not None and stored.id is not None and md.validate_id(id) != stored.id:
            raise InvalidInputError(
                f"The id {id!r} given for {self} differs from its stored id {stored.id!r}; ids cannot be reassigned. "
                f"Leave id out, or pass ignore_stored_metadata=True to replace the stored metadata."
            )
        self._id = md.validate_id(id) if id is not None else (stored.id or str(uuid.uuid4()))
        self._timestamp = md.normalise_timestamp(timestamp) if timestamp is not None else stored.timestamp
        self._labels = md.LabelSet(labels if labels is not None else stored.labels)
        self._tags = md.TagDict(tags if tags is not None else stored.tags)
        # What the store holds now; a difference from the in-memory metadata is what update_metadata() persists.
        self._persisted = stored if stored.id is not None else None

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
        """The `gs://bucket/name` URI of this datafile's object, or `None` for a local-only datafile."""
        return str(self._cloud) if self._cloud is not None else None

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
        if self._uses_cache():
            return cache.read_cached_generation(self._cloud) == self._object.generation
        if self._cloud_is_source:
            # A download target chosen by the user may hold an older version: only the object's content counts.
            return hashing.hash_file(target) == self._object.crc32c
        return True

    @property
    def local_path(self) -> str:
        """The path of a local copy, downloading the object first if there is no valid copy yet."""
        if self._cloud is not None and self._object is not None and not self._has_valid_local_copy():
            self.download()
        return str(self._local_target())

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
        """Whether a local copy is on disk now."""
        return self._has_valid_local_copy()

    @property
    def exists_in_cloud(self) -> bool:
        """Whether the object exists in GCS now (one metadata request)."""
        if self._cloud is None:
            return False
        return self.store.get_object(self._cloud) is not None

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
        if self._has_valid_local_copy():
            return hashing.hash_file(self._local_target())
        if self._object is not None and self._object.crc32c:
            return self._object.crc32c
        return EMPTY_HASH

    @property
    def metadata_hash_value(self) -> str:
        """A hash of the metadata (timestamp, labels, tags; not the id), the same in every process."""
        return md.metadata_hash(self._timestamp, self._labels, self._tags)

    # --- metadata ----------------------------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The datafile's UUID. It cannot be reassigned."""
        return self._id

    @property
    def timestamp(self) -> datetime.datetime | None:
        """A timezone-aware UTC datetime, or `None`."""
        return self._timestamp

    @timestamp.setter
    def timestamp(self, value: datetime.datetime | float | None) -> None:
        self._timestamp = md.normalise_timestamp(value)

    @property
    def posix_timestamp(self) -> float | None:
        """The timestamp as POSIX seconds, or `None`."""
        return self._timestamp.timestamp() if self._timestamp is not None else None

    @property
    def labels(self) -> md.LabelSet:
        """The labels: a set of lowercase strings, checked as they are added."""
        return self._labels

    @labels.setter
    def labels(self, value: Iterable[str] | str | None) -> None:
        self._labels = md.LabelSet(value)

    @property
    def tags(self) -> md.TagDict:
        """The tags: a dict of tag names to JSON-serialisable values, checked as they are set."""
        return self._tags

    @tags.setter
    def tags(self, value: Mapping[str, Any] | None) -> None:
        self._tags = md.TagDict(value)

    def metadata(self, include_id: bool = True, include_sdk_version: bool = True) -> dict[str, Any]:
        """The metadata as a dict: `id`, `timestamp`, `tags`, `labels` (a set) and `sdk_version`."""
        record = md.metadata_record(self._id, self._timestamp, self._labels, self._tags)
        if not include_id:
            del record["id"]
        if not include_sdk_version:
            del record["sdk_version"]
        return record

    def _current(self) -> md.StoredMetadata:
        return md.StoredMetadata(self._id, self._timestamp, frozenset(self._labels), dict(self._tags))

    def _metadata_changed(self) -> bool:
        """Whether the in-memory metadata differs from what is stored (nothing stored counts as empty metadata)."""
        baseline = self._persisted or md.StoredMetadata(self._id, None, frozenset(), {})
        return baseline != self._current()

    def _cloud_metadata(self) -> dict[str, str]:
        return md.to_cloud_metadata(self._id, self._timestamp, self._labels, self._tags)

    def _adopt(self, stored: md.StoredMetadata) -> None:
        """Make `stored` (just written to or read from the store) both the in-memory and the persisted metadata."""
        self._id = stored.id or self._id
        self._timestamp = stored.timestamp
        self._labels = md.LabelSet(stored.labels)
        self._tags = md.TagDict(stored.tags)
        self._persisted = self._current()

    def update_metadata(self) -> None:
        """Persist the in-memory metadata: a metadata patch on the object (content and generation untouched) and/or
        the `.octue` entry beside a local file. Concurrent patches by other writers are merged, not lost."""
        if self._object is None and self._local is None:
            raise CloudObjectNotFoundError(
                f"Cannot update the metadata of {self._cloud}: the object does not exist yet. Write or upload it first."
            )
        if self._object is not None:
            self._patch_cloud_metadata()
        if self._local is not None:
            self._write_local_metadata()

    def _patch_cloud_metadata(self) -> None:
        assert self._cloud is not None
        where = str(self._cloud)
        base, ours = self._persisted or md.StoredMetadata(), self._current()

        def change(info: ObjectInfo) -> dict[str, str]:
            merged = merge(base, ours, md.from_cloud_metadata(info.custom_metadata, where))
            return md.to_cloud_metadata(merged.id or self._id, merged.timestamp, merged.labels or (), merged.tags or {})

        # fake-gcs-server ignores metageneration preconditions, so a cross-process lock also serialises
        # read-modify-patch cycles on one machine; across machines the metageneration precondition does.
        with filelock.FileLock(cache.lock_path(f"patch:{self._cloud}"), timeout=cache.LOCK_TIMEOUT_SECONDS):
            self._object = self.store.patch_metadata(self._cloud, change)
        self._adopt(md.from_cloud_metadata(self._object.custom_metadata, where))

    def _write_local_metadata(self) -> None:
        assert self._local is not None
        local_metadata.write_entry(
            self._local, md.to_local_metadata(self._id, self._timestamp, self._labels, self._tags)
        )
        self._persisted = self._current()

    # --- moving content ----------------------------------------------------------------------------------------------

    def download(self, local_path: str | os.PathLike[str] | None = None) -> str:
        """Download the object (checksum-verified, to a temporary name, then renamed) and return the local path.

        A copy already downloaded at the object's current generation is reused. Giving `local_path` makes that the
        datafile's local copy.
        """
        if self._cloud is None:
            raise InvalidInputError(f"{self} has no cloud path to download from.")
        if local_path is not None:
            self._local = Path(local_path).absolute()
        if self._object is None:
            self._object = self.store.require_object(self._cloud)
        target = self._local_target()
        if self._uses_cache():
            with filelock.FileLock(cache.lock_path(f"download:{self._cloud}"), timeout=cache.LOCK_TIMEOUT_SECONDS):
                if cache.read_cached_generation(self._cloud) != self._object.generation:
                    self._download_to(target)
                    cache.write_cached_generation(self._cloud, self._object.generation)
        elif not (target.is_file() and hashing.hash_file(target) == self._object.crc32c):
            self._download_to(target)
        return str(target)

    def _download_to(self, target: Path) -> None:
        assert self._object is not None
        with atomic_replace(target) as temporary:
            try:
                with open(temporary, "wb") as file:
                    self.store.download_file(self._object, file)
            except ConflictError:
                raise ConflictError(
                    f"{self._cloud} was replaced by another writer after this datafile read it; nothing was downloaded. "
                    f"Instantiate the datafile again to read the new content."
                ) from None
            if temporary.stat().st_size != self._object.size:
                raise ChecksumMismatchError(
                    f"Downloaded {temporary.stat().st_size} bytes of {self._cloud}, expected {self._object.size}."
                )
        if self._object.crc32c:
            hashing.remember_hash(target, self._object.crc32c)

    def upload(self, cloud_path: str | None = None, update_metadata: bool = True) -> str:
        """Upload to `cloud_path` (default: this datafile's own) and return the `gs://` URI.

        The transfer is skipped when the object already holds the same crc32c; a cloud-only datafile going to another
        path is copied server side. The upload is conditional on the generation this datafile knows, so another
        writer's object is never silently overwritten (a `ConflictError` says so).
        """
        destination = parse_gcs_path(cloud_path) if cloud_path is not None else self._cloud
        if destination is None:
            raise InvalidInputError(f"{self} has no cloud path: call upload('gs://bucket/name').")
        own_path = destination == self._cloud
        existing = self._existing_at(destination, own_path)
        local_crc32c = self._local_content_crc32c()
        if local_crc32c is None and self._object is None:
            raise CloudObjectNotFoundError(f"Cannot upload {self}: it has neither a local file nor a cloud object.")
        metadata = self._cloud_metadata() if update_metadata else {}
        if own_path:
            metadata_differs = update_metadata and self._metadata_changed()
        else:
            stored = dict(existing.custom_metadata) if existing is not None else {}
            metadata_differs = update_metadata and {**stored, **metadata} != stored
        action = plan_upload(
            content_crc32c=local_crc32c or self._object.crc32c,  # type: ignore[union-attr]
            has_local_bytes=local_crc32c is not None,
            existing=existing,
            metadata_differs=metadata_differs,
        )
        if action is UploadAction.PATCH and own_path:
            self._patch_cloud_metadata()
            return str(destination)
        if action is UploadAction.NOTHING and own_path:
            return str(destination)
        if action is UploadAction.PATCH:
            info = self.store.patch_metadata(destination, lambda _: metadata)
        elif action is UploadAction.NOTHING:
            info = existing
        elif action is UploadAction.COPY:
            info = self.store.copy_object(
                self._object,
                destination,
                custom_metadata=metadata or dict(self._object.custom_metadata),
                if_generation_match=existing.generation if existing else 0,
            )
        else:
            info = self.store.upload_file(
                str(self._local_target()),
                destination,
                crc32c=local_crc32c,
                custom_metadata=metadata,
                if_generation_match=existing.generation if existing else 0,
            )
        self._switch_to(destination, info)
        return str(destination)

    def _existing_at(self, destination: GCSPath, own_path: bool) -> ObjectInfo | None:
        """What `destination` holds now; for this datafile's own object, checked to be the generation it last saw."""
        if not own_path or self._object is None:
            return self._object if own_path else self.store.get_object(destination)
        # Check that nobody replaced the object since we read it, before deciding anything from its hash.
        latest = self.store.get_object(destination)
        if latest is None or latest.generation != self._object.generation:
            raise ConflictError(
                f"Could not upload to {destination}: another writer replaced or deleted it since this datafile "
                f"read it, so nothing was overwritten. Re-read the datafile and repeat the change."
            )
        return latest

    def _local_content_crc32c(self) -> str | None:
        """The crc32c of local bytes that would have to be sent, or `None` if there are none.

        A user's own local file counts whatever it holds; a cached copy only if it is of the current generation; a
        local copy identical to this datafile's object adds nothing, as the object can be copied server side.
        """
        has_local = self._local_target().is_file() if self._local is not None else self._has_valid_local_copy()
        if not has_local:
            return None
        local_crc32c = hashing.hash_file(self._local_target())
        if self._object is not None and local_crc32c == self._object.crc32c:
            return None
        return local_crc32c

    def _switch_to(self, destination: GCSPath, info: ObjectInfo) -> None:
        """After writing `info` at `destination`, make that this datafile's cloud location."""
        self._cloud, self._object = destination, info
        if info.custom_metadata:
            self._persisted = md.from_cloud_metadata(info.custom_metadata, str(destination))

    # --- open --------------------------------------------------------------------------------------------------------

    def open(self, mode: str = "r", **kwargs: Any) -> _DatafileOpener:
        """Open the content like the builtin `open` (`.h5`/`.hdf5` files as `h5py.File`), as a context manager.

        Reading modes download a cloud object first; `w` and `x` do not. When the block ends normally, changed
        content is uploaded with the metadata in one request and other metadata changes are persisted as a patch.
        If the block raises, nothing is uploaded and the local file is as it was.
        """
        return _DatafileOpener(self, mode, kwargs)

    def _is_hdf5(self) -> bool:
        return Path(self.name).suffix.lower() in HDF5_EXTENSIONS

    def _commit_written_file(self, temporary: Path) -> None:
        """Make a fully written temporary file this datafile's content: upload first (if cloud), then rename."""
        target = self._local_target()
        if self._cloud is not None:
            info = self.store.upload_file(
                str(temporary),
                self._cloud,
                crc32c=hashing.hash_file(temporary),
                custom_metadata=self._cloud_metadata(),
                if_generation_match=self._object.generation if self._object is not None else 0,
            )
            os.replace(temporary, target)
            self._object = info
            self._persisted = self._current()
            if self._uses_cache():
                cache.write_cached_generation(self._cloud, info.generation)
            else:
                self._write_local_metadata()
            if info.crc32c:
                hashing.remember_hash(target, info.crc32c)
        else:
            os.replace(temporary, target)
            self._write_local_metadata()

    def __repr__(self) -> str:
        return f"<Datafile({self.cloud_path or str(self._local)!r})>"

    def __str__(self) -> str:
        return self.cloud_path or str(self._local)

    def __fspath__(self) -> str:
        return self.local_path


class _DatafileOpener:
    """The context manager returned by `Datafile.open`."""

    def __init__(self, datafile: Datafile, mode: str, kwargs: dict[str, Any]) -> None:
        self.datafile = datafile
        self.mode = mode
        self.base, self.binary = _parse_mode(mode)
        self.kwargs = kwargs
        self.file: Any = None
        self.temporary: Path | None = None

    def _open(self, path: Path, mode: str) -> Any:
        if self.datafile._is_hdf5():
            try:
                import h5py
            except ImportError:
                raise MissingDependencyError(
                    f"Opening {self.datafile.name} needs h5py: pip install 'octue-dagster[hdf5]'."
                ) from None
            hdf5_mode = {"r": "r", "r+": "r+", "w": "w", "w+": "w", "a": "a", "a+": "a", "x": "w-", "x+": "w-"}
            return h5py.File(path, hdf5_mode[self.base], **self.kwargs)
        return open(path, mode, **self.kwargs)

    def __enter__(self) -> IO[Any]:
        datafile = self.datafile
        if self.base == "r":
            self._require_existing()
            self.file = self._open(Path(datafile.local_path), self.mode)
            return self.file

        if self.base.startswith("x") and self._exists_anywhere():
            raise FileExistsError(f"{datafile} already exists; mode {self.mode!r} only creates new files.")
        target = datafile._local_target()
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temporaries(target.parent)
        self.temporary = temporary_path_for(target)
        try:
            if self.base.startswith("a") or self.base == "r+":
                if self.base == "r+":
                    self._require_existing()
                if self._exists_anywhere():
                    shutil.copyfile(datafile.local_path, self.temporary)
            mode = self.mode.replace("x", "w")
            if self.base == "r+" and not self.temporary.exists():
                mode = mode.replace("r", "w")
            self.file = self._open(self.temporary, mode)
        except BaseException:
            self._discard()
            raise
        return self.file

    def _exists_anywhere(self) -> bool:
        datafile = self.datafile
        if datafile._cloud is not None:
            return datafile._object is not None
        return datafile._local_target().is_file()

    def _require_existing(self) -> None:
        if not self._exists_anywhere():
            raise FileNotFoundError(f"{self.datafile} does not exist, so it cannot be opened with mode {self.mode!r}.")

    def _discard(self) -> None:
        if self.temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temporary)

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        try:
            if self.file is not None:
                self.file.close()
        except BaseException:
            self._discard()
            raise
        if exc_type is not None:
            self._discard()
            return
        try:
            if self.temporary is not None:
                self.datafile._commit_written_file(self.temporary)
            elif self.datafile._metadata_changed():
                self.datafile.update_metadata()
        finally:
            self._discard()

    def __iter__(self) -> Iterator[Any]:  # pragma: no cover - guidance for a common mistake
        raise TypeError("Use Datafile.open() in a `with` block: `with datafile.open() as f: ...`.")
