"""`OctueDatafileAPI`: the names Octue's SDK gives a datafile, on top of ours, so Octue code runs unchanged.

What is here: the context-manager form `with Datafile(path, mode="w") as (datafile, file):`, ordering by name,
`bucket_name` / `path_in_bucket`, `last_modified`, `update_cloud_metadata()` / `update_local_metadata()`, what the
`local_path` and `cloud_path` setters do, `to_primitive()` / `serialise()` / `deserialise()` in Octue's format,
`generate_signed_url()` and Octue's `repr`. Where ours deliberately differs, the method says so (and README's "Coming
from Octue's SDK" lists every difference).
"""

from __future__ import annotations

import datetime
import json
import os
import posixpath
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from octue_dagster.core.local.atomic import atomic_replace
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.storage.store import ObjectInfo
from octue_dagster.exceptions import (
    CloudLocationNotSpecifiedError,
    CloudObjectNotFoundError,
    DatafileExistsError,
    InvalidInputError,
    OctueCompatibilityWarning,
    UnsupportedTypeError,
)


def octue_custom_metadata(custom_metadata: Mapping[str, str]) -> dict[str, Any]:
    """Custom metadata as Octue's SDK holds it: values JSON-decoded where they parse, `octue__` taken off names."""
    decoded = {}
    for key, value in custom_metadata.items():
        try:
            decoded[key.replace(f"{md.NAMESPACE}__", "")] = md.decode_json(value)
        except ValueError:
            decoded[key.replace(f"{md.NAMESPACE}__", "")] = value
    return decoded


def warn_if_octue_names_it_differently(path: GCSPath) -> GCSPath:
    """Return `path`, with an `OctueCompatibilityWarning` if Octue's SDK would address another object for it.

    Object names are used exactly as written here (GCS allows `/tmp/x` and `a//b`); Octue's SDK strips leading
    slashes and normalises the name like a file path, so `gs://bucket//tmp/x` is the object `tmp/x` there.
    """
    octue_name = posixpath.normpath(path.name.strip("/")) if path.name.strip("/") else path.name
    if octue_name != path.name:
        warnings.warn(
            f"{path} names the object {path.name!r} here, but Octue's SDK would read and write {octue_name!r} for the "
            f"same path (it strips leading slashes and normalises the name). Write gs://{path.bucket}/{octue_name} "
            f"to address the object both do.",
            OctueCompatibilityWarning,
            stacklevel=4,
        )
    return path


class OctueDatafileAPI:
    """Octue SDK's datafile names, for `Datafile` (which provides locations, metadata and transfers)."""

    _open_attributes: dict[str, Any]
    _open_context: Any = None
    _cloud: GCSPath | None
    _local: Path | None
    _object: ObjectInfo | None

    # --- `with Datafile(path, mode=...) as (datafile, file):` -------------------------------------------------------

    def __enter__(self) -> tuple[Any, Any]:
        """Open the file with the constructor's `mode`, `update_metadata` and `open` keyword arguments (as Octue's
        SDK does); the block gets the datafile and the open file."""
        if self._open_context is not None:
            raise InvalidInputError(f"{self} is already open in a `with` block; open it again with `.open()`.")
        context = self.open(**self._open_attributes)  # type: ignore[attr-defined]
        file = context.__enter__()
        self._open_context = context
        return self, file

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        context, self._open_context = self._open_context, None
        if context is not None:
            context.__exit__(exc_type, exc, traceback)

    # --- ordering and where the object is ---------------------------------------------------------------------------

    def _name_of(self, other: object) -> str:
        if not isinstance(other, OctueDatafileAPI):
            raise UnsupportedTypeError(
                f"A Datafile can only be ordered against another Datafile (by name); got {type(other).__name__}."
            )
        return other.name  # type: ignore[attr-defined]

    def __lt__(self, other: object) -> bool:
        return self.name < self._name_of(other)  # type: ignore[attr-defined]

    def __gt__(self, other: object) -> bool:
        return self.name > self._name_of(other)  # type: ignore[attr-defined]

    @property
    def bucket_name(self) -> str | None:
        """The bucket of the datafile's object, or `None` for a local-only datafile."""
        return self._cloud.bucket if self._cloud is not None else None

    @property
    def path_in_bucket(self) -> str | None:
        """The object's name in its bucket (`directory/hello.txt`), or `None` for a local-only datafile."""
        return self._cloud.name if self._cloud is not None else None

    @property
    def last_modified(self) -> float | None:
        """When the content or metadata last changed, in POSIX seconds: the object's `updated` time for a cloud
        datafile, else the local file's modification time; `None` if neither exists."""
        if self._object is not None:
            return self._object.updated.timestamp() if self._object.updated is not None else None
        if self._local is not None and self._local.exists():
            return self._local.stat().st_mtime
        return None

    @property
    def _last_modified(self) -> float | None:
        # Octue's SDK's (private) name for `last_modified`, read by code written against it.
        return self.last_modified

    # --- stored metadata, one store at a time -----------------------------------------------------------------------

    def update_cloud_metadata(self) -> None:
        """Persist the in-memory metadata to the object only (a patch, merged with other writers' changes)."""
        if self._cloud is None:
            raise CloudLocationNotSpecifiedError(f"{self} has no cloud path, so it has no cloud metadata to update.")
        if self._object is None:
            raise CloudObjectNotFoundError(f"Cannot update the metadata of {self._cloud}: the object does not exist.")
        self._update_stored_metadata(cloud=True, local=False)  # type: ignore[attr-defined]

    def update_local_metadata(self) -> None:
        """Persist the in-memory metadata to the `.octue` entry beside the local file only (merged as well)."""
        if self._local is None:
            raise InvalidInputError(
                f"{self} has no local path of its own (its copy is in the cache, which keeps no metadata): give "
                f"local_path=... or set datafile.local_path first."
            )
        self._update_stored_metadata(cloud=False, local=True)  # type: ignore[attr-defined]

    # --- what the `local_path` and `cloud_path` setters do ----------------------------------------------------------

    def _move_local_copy(self, path: str | os.PathLike[str] | None) -> None:
        if path is None:
            if self._cloud is None:
                raise CloudLocationNotSpecifiedError(
                    f"The local path of {self} cannot be reset: it only exists locally."
                )
            self._local = None
            return
        new = Path(path).absolute()
        if new.exists():
            raise DatafileExistsError(
                f"{new} already exists: a datafile's local path can only be moved to a path that is free, as its "
                f"content would replace what is there."
            )
        if self._cloud is not None and self._object is not None:
            self.download(new)  # type: ignore[attr-defined]
            return
        old = self._local
        if old is not None and old.is_file():
            new.parent.mkdir(parents=True, exist_ok=True)
            with atomic_replace(new) as temporary:
                shutil.copyfile(old, temporary)
        self._local = new
        if old is not None and old.is_file() and self._cloud is None:
            self._persisted = None  # nothing is stored beside the new path yet
            self._update_stored_metadata(cloud=False, local=True)  # type: ignore[attr-defined]

    def _move_cloud_location(self, path: str | None) -> None:
        if path is not None:
            self.upload(cloud_path=path)  # type: ignore[attr-defined]
            return
        if self._local is None:
            raise CloudLocationNotSpecifiedError(f"The cloud path of {self} cannot be reset: it only exists there.")
        self._cloud, self._object = None, None

    # --- Octue's serialised form ------------------------------------------------------------------------------------

    def _octue_cloud_metadata(self) -> dict[str, Any]:
        """What Octue's SDK keeps as `_cloud_metadata`: the object's custom metadata (decoded, Octue's prefix
        removed) and its system metadata; `{}` without an object."""
        if self._object is None:
            return {}
        return {
            "custom_metadata": octue_custom_metadata(self._object.custom_metadata),
            "crc32c": self._object.crc32c,
            "size": self._object.size,
            "updated": self._object.updated,
            "time_created": self._object.time_created,
            "time_deleted": None,  # a live object's
            "custom_time": None,
        }

    def _known_local_path(self) -> str | None:
        if self._local is not None:
            return str(self._local)
        return str(self._local_target()) if self._has_valid_local_copy() else None  # type: ignore[attr-defined]

    @property
    def _local_path(self) -> str | None:
        # Octue's SDK's (private) name: the local path known now, without downloading.
        return self._known_local_path()

    def to_primitive(self) -> dict[str, Any]:
        """The datafile as Octue's SDK serialises one: `id`, `timestamp`, `tags`, `labels` (sorted), `name`,
        `local_path`, `cloud_path`, `_cloud_metadata` and `path` (the local path if there is one, else the cloud
        path). Unlike Octue's SDK, a cloud file is not downloaded for this: `local_path` is `None` until it is."""
        local = self._known_local_path()
        return {
            "id": self.id,  # type: ignore[attr-defined]
            "timestamp": self.timestamp,  # type: ignore[attr-defined]
            "tags": dict(self.tags),  # type: ignore[attr-defined]
            "labels": sorted(self.labels),  # type: ignore[attr-defined]
            "name": self.name,  # type: ignore[attr-defined]
            "local_path": local,
            "cloud_path": self.cloud_path,  # type: ignore[attr-defined]
            "_cloud_metadata": self._octue_cloud_metadata(),
            "path": local or self.cloud_path,  # type: ignore[attr-defined]
        }

    def serialise(self, **kwargs: Any) -> str:
        """`to_primitive()` as the JSON string Octue's SDK writes (sorted keys, indented by 4)."""
        return json.dumps(self.to_primitive(), cls=md.OctueJSONEncoder, sort_keys=True, indent=4, **kwargs)

    @classmethod
    def deserialise(cls, serialised: Any, from_string: bool = False) -> Any:
        """A datafile from `to_primitive()`'s dict or `serialise()`'s string, ours or Octue's SDK's.

        `_cloud_metadata` is not trusted: the object's metadata is read afresh. A serialised cloud file whose local
        copy is not on this machine (or was never made) becomes a cloud datafile again.
        """
        fields = md.decode_json(serialised) if from_string else dict(serialised)
        if not isinstance(fields, dict) or "path" not in fields:
            raise InvalidInputError(f"A serialised datafile is a dict with a 'path'; got {str(serialised)[:200]!r}.")
        fields.pop("_cloud_metadata", None)
        path, local, cloud = fields.pop("path"), fields.pop("local_path", None), fields.pop("cloud_path", None)
        if cloud is not None and (local is None or not Path(local).exists() or not str(cloud).startswith("gs://")):
            return cls(cloud, **fields)  # a signed URL's copy is downloaded again when read, and checked
        if cloud is not None and path != cloud:
            return cls(path, cloud_path=cloud, **fields)
        return cls(path, local_path=local, **fields)

    # --- signed URLs and repr ---------------------------------------------------------------------------------------

    def generate_signed_url(
        self,
        expiration: datetime.timedelta | datetime.datetime = datetime.timedelta(days=7),
        *,
        credentials: Any = None,
    ) -> str:
        """A V4 signed URL that lets anyone holding it read the object until `expiration` (at most 7 days);
        `Datafile(path=url)` reads it back. As in Octue's SDK it is signed with a service-account key (`credentials`,
        the client's or `GOOGLE_APPLICATION_CREDENTIALS`), else through IAM as the service account the code runs as.
        """
        if self._cloud is None:
            raise CloudLocationNotSpecifiedError(
                f"{self!r} must exist in the cloud for a signed URL to be generated for it: upload it first."
            )
        if self._object is None:
            raise CloudObjectNotFoundError(f"{self._cloud} does not exist, so no signed URL can be made for it.")
        from octue_dagster.core.storage import signing

        client = self.store.client  # type: ignore[attr-defined]
        return signing.generate_signed_url(client, self._cloud, expiration, credentials=credentials)

    def __repr__(self) -> str:
        return f"<Datafile({self.name!r})>"  # type: ignore[attr-defined]


__all__ = ["OctueDatafileAPI", "octue_custom_metadata", "warn_if_octue_names_it_differently"]
