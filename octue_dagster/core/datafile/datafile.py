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
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from google.cloud import storage

from octue_dagster.core.cache import copies as cache

from octue_dagster.core.local import hashing
from octue_dagster.core.local.space import is_space_error, require_room

from octue_dagster.core.cache import local_copy

from octue_dagster.core.metadata import octue_files as local_metadata
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.core.storage.gcs_path import GCSPath, is_gcs_path, parse_gcs_path
from octue_dagster.core.datafile.datafile_metadata import OctueMetadata
from octue_dagster.core.datafile.opener import DatafileOpener
from octue_dagster.core.datafile.upload_plan import UploadAction, plan_upload
from octue_dagster.exceptions import (
    CloudObjectNotFoundError,
    ConflictError,
    InsufficientSpaceError,
    InvalidInputError,
)

T = TypeVar("T")
HDF5_EXTENSIONS = (".hdf5", ".h5")
EMPTY_HASH = hashing.crc32c_base64(b"")
#: Room a rewritten `.octue` file may need beyond the current one's size (one entry's metadata, rounded up).
_METADATA_ROOM_BYTES = 64 * 1024


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Datafile(OctueMetadata):
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

        self._ignore_stored_metadata = ignore_stored_metadata
        stored = md.StoredMetadata() if ignore_stored_metadata else self._read_stored_metadata()
        if id is not None and stored.id is not None and md.validate_id(id) != stored.id:
            raise InvalidInputError(
                f"The id {id!r} given for {self} differs from its stored id {stored.id!r}; ids cannot be reassigned. "
                f"Leave id out, or pass ignore_stored_metadata=True to replace the stored metadata."
            )
        new_id = md.validate_id(id) if id is not None else (stored.id or str(uuid.uuid4()))
        self._init_metadata(stored, new_id, timestamp, labels, tags)

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
        if self._uses_cache() or self._cloud_is_source:
            # A download target chosen by the user may hold an older version: only the object's content counts.
            return local_copy.holds(target, self._object, cached=self._uses_cache())
        return True

    @property
    def local_path(self) -> str:
        """The path of a local copy, downloading the object first if there is no valid copy yet."""
        if self._cloud is not None and self._object is not None:
            if self._uses_cache():
                return self.download()
            if not self._has_valid_local_copy():
                self.download()
        return str(self._local_target())

    def _open_content(self, hold: contextlib.ExitStack, open_file: Callable[[Path], T]) -> T:
        """`open_file(path)` on a local copy of the content; a cached copy is held against eviction until `hold`
        closes."""
        if self._uses_cache() and self._object is not None:
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
        if self._uses_cache() and self._object is not None and self._object.crc32c:
            return self._object.crc32c  # a cached copy is only ever used if it holds exactly these bytes
        if self._has_valid_local_copy():
            return hashing.hash_file(self._local_target())
        if self._object is not None and self._object.crc32c:
            return self._object.crc32c
        return EMPTY_HASH

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
        return str(local_copy.fetch(self.store, self._object, self._local_target(), cached=self._uses_cache()))

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

        A user's own local file counts whatever it holds. A cached copy never does: content changed through the
        library (`open` in a write mode) is uploaded when the file is closed, and a copy that differs from its object
        was changed by something else, so it is neither served nor sent. A local copy identical to this datafile's
        object adds nothing either, as the object can be copied server side.
        """
        if self._local is None or not self._local_target().is_file():
            return None
        local_crc32c = hashing.hash_file(self._local_target())
        if self._object is not None and local_crc32c == self._object.crc32c:
            return None
        return local_crc32c

    def _switch_to(self, destination: GCSPath, info: ObjectInfo) -> None:
        """After writing `info` at `destination`, make that this datafile's cloud location."""
        self._cloud, self._object = destination, info
        if info.custom_metadata:
            self._mark_persisted(md.from_cloud_metadata(info.custom_metadata, str(destination)))

    # --- open --------------------------------------------------------------------------------------------------------

    def open(self, mode: str = "r", **kwargs: Any) -> DatafileOpener:
        """Open the content like the builtin `open` (`.h5`/`.hdf5` files as `h5py.File`), as a context manager.

        Reading modes download a cloud object first; `w` and `x` do not. When the block ends normally, changed
        content is uploaded with the metadata in one request and other metadata changes are persisted as a patch.
        If the block raises, nothing is uploaded and the local file is as it was.
        """
        exists = self._object is not None if self._cloud is not None else self._local_target().is_file()
        return DatafileOpener(
            mode,
            kwargs,
            name=str(self),
            hdf5=self._is_hdf5(),
            exists=exists,
            open_content=self._open_content,
            target=self._local_target(),
            commit=self._commit_written_file,
            after_read=self._persist_metadata_changes,
        )

    def _is_hdf5(self) -> bool:
        return Path(self.name).suffix.lower() in HDF5_EXTENSIONS

    def _commit_written_file(self, temporary: Path) -> None:
        """Make a fully written temporary file this datafile's content: upload first (if cloud), then rename."""
        target = self._local_target()
        if self._cloud is not None:
            crc32c = hashing.hash_file(temporary)
            if not self._uses_cache():
                # Refuse before uploading if the local copy's metadata could not be recorded afterwards: the `.octue`
                # file must parse, and a new one must fit on the disk (a full disk would otherwise stop the call
                # after the object was replaced, leaving the cloud new and the local copy old).
                metadata_file = local_metadata.metadata_path_for(target)
                local_metadata.read_metadata_file(metadata_file)
                require_room(target.parent, _size_or_zero(metadata_file) + _METADATA_ROOM_BYTES, "its .octue file")
            info = self.store.upload_file(
                str(temporary),
                self._cloud,
                crc32c=crc32c,
                custom_metadata=self._cloud_metadata(),
                if_generation_match=self._object.generation if self._object is not None else 0,
            )
            # The object is this datafile's own write now, whatever happens to the local copy next: a retry writes
            # over this generation instead of taking it for another writer's (and a read downloads it again).
            self._object = info
            try:
                if self._uses_cache():
                    local_copy.commit_written(temporary, target, info, crc32c, cached=True)
                else:
                    # Merged against what this datafile read before the upload; the content is renamed into place
                    # only once its metadata entry is ready to be committed.
                    self._write_local_metadata(
                        before_commit=lambda: local_copy.commit_written(temporary, target, info, crc32c, cached=False)
                    )
            except OSError as error:
                if not is_space_error(error):
                    raise
                raise InsufficientSpaceError(
                    f"{self._cloud} now holds the new content (generation {info.generation}), but its local copy at "
                    f"{target} could not be updated: {target.parent} is full (the disk filled after the check). The "
                    f"local copy is as it was; free space there, then read the datafile (it is downloaded again) or "
                    f"write again (this datafile knows the new generation is its own)."
                ) from None
            self._mark_persisted()
        else:
            # The content is renamed into place only once its metadata entry is written and can be committed.
            self._write_local_metadata(before_commit=lambda: os.replace(temporary, target))

    def generate_signed_url(
        self,
        expiration: datetime.timedelta | datetime.datetime = datetime.timedelta(days=7),
        *,
        credentials: Any = None,
    ) -> str:
        """A V4 signed URL that lets anyone holding it read the object until `expiration` (at most 7 days).

        Signed with a service-account key (`credentials`, the client's, or `GOOGLE_APPLICATION_CREDENTIALS`), with
        no request; else through IAM as the service account the code runs as.
        """
        if self._cloud is None or self._object is None:
            raise CloudObjectNotFoundError(f"{self} must exist in the cloud for a signed URL to be generated for it.")
        from octue_dagster.core.storage import signing

        return signing.generate_signed_url(self.store.client, self._cloud, expiration, credentials=credentials)

    def __repr__(self) -> str:
        return f"<Datafile({self.cloud_path or str(self._local)!r})>"

    def __str__(self) -> str:
        return self.cloud_path or str(self._local)

    def __fspath__(self) -> str:
        return self.local_path
