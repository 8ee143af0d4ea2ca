"""`DatafileTransfers`: the part of `Datafile` that moves content between a local file and its GCS object.

Downloads are checksum-verified into a temporary file and renamed into place; uploads are conditional on the
generation the datafile last saw, so another writer's object is never silently overwritten; content written through
`open()` is committed here (upload first, then an atomic rename).
"""

from __future__ import annotations

import os
from pathlib import Path

from octue_dagster.core.cache import local_copy
from octue_dagster.core.datafile.octue_api import warn_if_octue_names_it_differently
from octue_dagster.core.datafile.upload_plan import UploadAction, plan_upload
from octue_dagster.core.local import hashing
from octue_dagster.core.metadata import octue_files as local_metadata
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.gcs_path import GCSPath, parse_gcs_path
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.exceptions import (
    CloudLocationNotSpecifiedError,
    CloudObjectNotFoundError,
    ConflictError,
)


#: How many times a content write re-reads and re-merges metadata that other writers keep patching.
CONTENT_WRITE_ATTEMPTS = 5


class DatafileTransfers:
    """Download, upload and the commit of written content, for `Datafile` (which provides the locations)."""

    _cloud: GCSPath | None
    _local: Path | None
    _object: ObjectInfo | None
    store: Store
    #: Whether this datafile downloaded (or opened) its cached copy: Octue's `exists_locally` for a cloud file.
    _fetched: bool = False

    def download(self, local_path: str | os.PathLike[str] | None = None) -> str:
        """Download the object (checksum-verified, to a temporary name, then renamed) and return the local path.

        A copy already downloaded at the object's current generation is reused. Giving `local_path` makes that the
        datafile's local copy.
        """
        if self._cloud is None:
            raise CloudLocationNotSpecifiedError(f"{self} has no cloud path to download from.")
        if local_path is not None:
            self._local = Path(local_path).absolute()
        if self._object is None:
            self._object = self.store.require_object(self._cloud)
        path = local_copy.fetch(self.store, self._object, self._local_target(), cached=self._uses_cache())
        self._fetched = True
        return str(path)

    def upload(
        self, cloud_path: str | None = None, update_cloud_metadata: bool = True, update_metadata: bool | None = None
    ) -> str:
        """Upload to `cloud_path` (default: this datafile's own) and return the `gs://` URI.

        `update_cloud_metadata` (Octue's name) or `update_metadata` (the same) sends the in-memory metadata too. The
        transfer is skipped when the object already holds the same crc32c; a cloud-only datafile going to another
        path is copied server side. The upload is conditional on the generation this datafile knows, so another
        writer's object is never silently overwritten (a `ConflictError` says so).
        """
        update_metadata = update_cloud_metadata if update_metadata is None else update_metadata
        destination = (
            warn_if_octue_names_it_differently(parse_gcs_path(cloud_path)) if cloud_path is not None else self._cloud
        )
        if destination is None:
            raise CloudLocationNotSpecifiedError(f"{self} has no cloud path: call upload('gs://bucket/name').")
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
        elif own_path:
            _, merged = self._upload_content(
                self._local_target(), local_crc32c, existing, with_metadata=update_metadata  # type: ignore[arg-type]
            )
            self._settle(merged, update_metadata)
            return str(destination)
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


    def _upload_content(
        self, source: Path, crc32c: str, latest: ObjectInfo | None, with_metadata: bool = True
    ) -> tuple[ObjectInfo, md.StoredMetadata]:
        """Upload `source` as the new content of this datafile's own object, which holds `latest` now (`None`: no
        object yet); return the object written (now this datafile's `object_info`) and the Octue metadata it holds,
        for the caller to adopt.

        The upload carries this datafile's metadata changes merged onto the object's current metadata, with its
        foreign keys (see `_content_write_metadata`), and is conditional on the generation this datafile read (the
        content is not another writer's) and on the metageneration merged against. If another writer patched the
        metadata in between (a re-tag), GCS refuses the upload (412): the object is read again and the merge redone,
        so that writer's labels and tags are kept rather than silently dropped. `with_metadata=False` (Octue's
        `update_metadata=False`) keeps the object's metadata as it is.
        """
        assert self._cloud is not None
        for _ in range(CONTENT_WRITE_ATTEMPTS):
            if self._object is not None and (latest is None or latest.generation != self._object.generation):
                raise ConflictError(
                    f"Could not upload to {self._cloud}: another writer replaced or deleted it since this datafile "
                    f"read it, so nothing was overwritten. Re-read the datafile and repeat the change."
                )
            if with_metadata:
                custom_metadata, merged = self._content_write_metadata(latest)
            else:
                custom_metadata = dict(latest.custom_metadata) if latest is not None else {}
                merged = md.from_cloud_metadata(custom_metadata, str(self._cloud))
            try:
                info = self.store.upload_file(
                    str(source),
                    self._cloud,
                    crc32c=crc32c,
                    custom_metadata=custom_metadata,
                    if_generation_match=self._object.generation if self._object is not None else 0,
                    if_metageneration_match=latest.metageneration if latest is not None else None,
                )
            except ConflictError:
                if self._object is None:
                    raise  # the object was created by another writer since this datafile found none
                latest = self.store.get_object(self._cloud)
                continue
            self._object = info
            return info, merged
        raise ConflictError(
            f"Could not upload to {self._cloud}: its metadata kept changing under {CONTENT_WRITE_ATTEMPTS} attempts by "
            f"other writers. Nothing was overwritten; try again."
        )

    def _settle(self, merged: md.StoredMetadata, with_metadata: bool) -> None:
        """After a content write: `merged` is what the object holds; without metadata, in-memory changes stay unsaved."""
        if with_metadata:
            self._adopt(merged)
        else:
            self._mark_persisted(merged)

    def _commit_written_file(self, temporary: Path, update_metadata: bool = True) -> None:
        """Make a fully written temporary file this datafile's content: upload first (if cloud), then rename."""
        target = self._local_target()
        if self._cloud is not None:
            crc32c = hashing.hash_file(temporary)
            if not self._uses_cache() and update_metadata:
                # Refuse before uploading if the local copy's metadata could not be recorded afterwards.
                local_metadata.read_metadata_file(local_metadata.metadata_path_for(target))
            base = self._persisted
            latest = self.store.get_object(self._cloud) if self._object is not None else None
            info, merged = self._upload_content(temporary, crc32c, latest, with_metadata=update_metadata)
            if self._uses_cache() or not update_metadata:
                local_copy.commit_written(temporary, target, info, crc32c, cached=self._uses_cache())
                self._settle(merged, update_metadata)
            else:
                self._show(merged)  # what the object now holds, recorded in the .octue file below
                # Merged against what this datafile read before the upload; the content is renamed into place only
                # once its metadata entry is ready to be committed.
                self._write_local_metadata(
                    before_commit=lambda: local_copy.commit_written(temporary, target, info, crc32c, cached=False),
                    base=base,
                )
        elif not update_metadata:
            os.replace(temporary, target)
        else:
            # The content is renamed into place only once its metadata entry is written and can be committed.
            self._write_local_metadata(before_commit=lambda: os.replace(temporary, target))


__all__ = ["DatafileTransfers"]
