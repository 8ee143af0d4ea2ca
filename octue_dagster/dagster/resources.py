"""`DatafileResource`: get, create, list and re-tag datafiles from inside Dagster assets, ops, sensors and jobs.

Listing and re-tagging read each object's metadata from the paged listing itself, so they cost one request per
page of up to 1000 objects, not one per object; re-tagging changes only metadata (a patch), never content.
"""


import dataclasses
import fnmatch
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import google.auth.exceptions
from dagster import ConfigurableResource, InitResourceContext, ResourceDependency, get_dagster_logger
from dagster_gcp import GCSResource
from google.cloud import storage as gcs_client
from pydantic import Field, PrivateAttr

from octue_dagster.core import metadata as md
from octue_dagster.core import store as storage
from octue_dagster.core.gcs_path import GCSPath, parse_gcs_path
from octue_dagster.core.datafile import Datafile
from octue_dagster.exceptions import InvalidInputError, InvalidMetadataError, MissingCredentialsError


def client_from(gcs: Any) -> gcs_client.Client:
    """A storage client from a `GCSResource`, or the client Dagster attaches for one (sensors, `context.resources`)."""
    if isinstance(gcs, gcs_client.Client):
        return storage.guard_client(gcs)
    try:
        return storage.guard_client(gcs.get_client())
    except google.auth.exceptions.DefaultCredentialsError:
        raise MissingCredentialsError(
            "No Google Cloud credentials were found for the GCS resource. Run `gcloud auth application-default "
            "login`, set GOOGLE_APPLICATION_CREDENTIALS, or set STORAGE_EMULATOR_HOST to use a GCS emulator."
        ) from None


_MISSING = object()


def matches(datafile: Datafile, labels: Iterable[str] | None = None, tags: Mapping[str, Any] | None = None) -> bool:
    """Whether a datafile has every one of `labels` and every tag in `tags` with the same value."""
    if labels is not None and not set(labels) <= set(datafile.labels):
        return False
    if tags is not None and any(datafile.tags.get(name, _MISSING) != value for name, value in tags.items()):
        return False
    return True


@dataclasses.dataclass
class RetagCounts:
    """What a re-tagging pass did: objects seen, matching the filter, changed, already right, and unreadable."""

    scanned: int = 0
    matched: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    skipped_paths: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "scanned": self.scanned,
            "matched": self.matched,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
        }


def _parse_prefix(prefix: str | GCSPath) -> GCSPath:
    return prefix if isinstance(prefix, GCSPath) else parse_gcs_path(prefix, allow_empty_name=True)


def list_datafiles(
    client: gcs_client.Client,
    prefix: str | GCSPath,
    labels: Iterable[str] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> list[Datafile]:
    """The datafiles under a `gs://bucket/prefix`, built from the listing's own metadata, filtered by labels/tags."""
    result = []
    for info in storage.list_objects(client, _parse_prefix(prefix)):
        if info.path.name.endswith("/"):  # folder placeholder objects made by the console
            continue
        datafile = Datafile.from_object_info(info, storage_client=client)
        if matches(datafile, labels, tags):
            result.append(datafile)
    return result


def retag_objects(
    client: gcs_client.Client,
    prefix: str | GCSPath,
    *,
    add_labels: Iterable[str] = (),
    remove_labels: Iterable[str] = (),
    set_tags: Mapping[str, Any] | None = None,
    remove_tags: Iterable[str] = (),
    labels: Iterable[str] | None = None,
    tags: Mapping[str, Any] | None = None,
    name_glob: str | None = None,
    dry_run: bool = False,
) -> RetagCounts:
    """Change labels/tags on every object under `prefix` that matches the filter, without touching content.

    The filter is `labels` (must have all), `tags` (must have these values) and `name_glob` (an `fnmatch` pattern
    for the file name). Each change is a metadata patch merged with concurrent writers' changes (see
    `Datafile.update_metadata`), so two re-taggers running at once both take effect. Objects whose stored metadata
    cannot be read are skipped and counted, not rewritten. With `dry_run`, `changed` counts the objects that would
    change and nothing is written.
    """
    # Validate the change before touching any object, so a bad label or tag changes nothing.
    add, remove = md.LabelSet(add_labels), md.LabelSet(remove_labels)
    new_tags, drop_tags = md.TagDict(set_tags or {}), list(remove_tags)
    counts = RetagCounts()
    logger = get_dagster_logger()
    for info in storage.list_objects(client, _parse_prefix(prefix)):
        if info.path.name.endswith("/"):
            continue
        counts.scanned += 1
        try:
            datafile = Datafile.from_object_info(info, storage_client=client)
        except InvalidMetadataError as error:
            counts.skipped += 1
            counts.skipped_paths.append(str(info.path))
            logger.warning(f"Skipping {info.path}: {error}")
            continue
        if name_glob is not None and not fnmatch.fnmatchcase(datafile.name, name_glob):
            continue
        if not matches(datafile, labels, tags):
            continue
        counts.matched += 1
        before = (set(datafile.labels), dict(datafile.tags))
        datafile.labels.update(add)
        datafile.labels.difference_update(remove)
        for name, value in new_tags.items():
            datafile.tags[name] = value
        for name in drop_tags:
            datafile.tags.pop(name, None)
        if (set(datafile.labels), dict(datafile.tags)) == before:
            counts.unchanged += 1
            continue
        if not dry_run:
            datafile.update_metadata()
        counts.changed += 1
    return counts


class DatafileResource(ConfigurableResource):
    """Datafiles for assets and ops: `get` one by URI, `new` local ones to return, `list` and `retag` a prefix.

    `new` files live in a working directory for the run (`working_dir/<run id>`, by default under the system
    temporary directory); the default one is removed when the run's resources are torn down, after the I/O manager
    has uploaded whatever was returned.
    """

    gcs: ResourceDependency[GCSResource]
    working_dir: str | None = Field(
        default=None, description="Folder for new local datafiles (a sub-folder per run); default: a temporary folder."
    )

    _client: Any = PrivateAttr(default=None)
    _run_dir: Path | None = PrivateAttr(default=None)
    _owns_run_dir: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._client = client_from(self.gcs)
        run_id = context.run.run_id if context.run is not None else f"no-run-{uuid.uuid4().hex[:12]}"
        base = Path(self.working_dir) if self.working_dir else Path(tempfile.gettempdir()) / "octue-dagster"
        self._run_dir = base / run_id
        self._owns_run_dir = self.working_dir is None

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._owns_run_dir and self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)

    @property
    def client(self) -> gcs_client.Client:
        """The storage client of the `gcs` resource (made once per process)."""
        if self._client is None:
            self._client = client_from(self.gcs)
        return self._client

    @property
    def run_dir(self) -> Path:
        """The working directory where `new` puts local datafiles."""
        if self._run_dir is None:
            base = Path(self.working_dir) if self.working_dir else Path(tempfile.gettempdir()) / "octue-dagster"
            self._run_dir = base / f"no-run-{uuid.uuid4().hex[:12]}"
        return self._run_dir

    def get(self, path: str) -> Datafile:
        """The datafile at a `gs://` URI, from one metadata request (no download until it is opened).

        A missing object raises `CloudObjectNotFoundError` (a `FileNotFoundError`).
        """
        info = storage.require_object(self.client, parse_gcs_path(path))
        return Datafile.from_object_info(info, storage_client=self.client)

    def new(
        self,
        name: str,
        *,
        labels: Iterable[str] | None = None,
        tags: Mapping[str, Any] | None = None,
        timestamp: Any = None,
    ) -> Datafile:
        """A new local datafile called `name` in the run's working directory, to write and return from an asset."""
        if not isinstance(name, str) or not name or "/" in name or os.sep in name or name in {".", ".."}:
            raise InvalidInputError(f"A new datafile needs a plain file name such as 'readings.csv'; got {name!r}.")
        path = self.run_dir / name
        if path.exists():
            raise FileExistsError(f"{path} already exists in this run's working directory; choose another name.")
        path.parent.mkdir(parents=True, exist_ok=True)
        return Datafile(
            path, labels=labels, tags=tags, timestamp=timestamp, ignore_stored_metadata=True, storage_client=self.client
        )

    def list(
        self, prefix: str, labels: Iterable[str] | None = None, tags: Mapping[str, Any] | None = None
    ) -> list[Datafile]:
        """The datafiles under `gs://bucket/prefix` that have all `labels` and the given `tags` values.

        Built from paged list requests that carry each object's metadata: no request per object, no download.
        """
        return list_datafiles(self.client, prefix, labels, tags)

    def retag(
        self,
        prefix: str,
        *,
        add_labels: Iterable[str] = (),
        remove_labels: Iterable[str] = (),
        set_tags: Mapping[str, Any] | None = None,
        remove_tags: Iterable[str] = (),
        labels: Iterable[str] | None = None,
        tags: Mapping[str, Any] | None = None,
        name_glob: str | None = None,
        dry_run: bool = False,
    ) -> RetagCounts:
        """Add/remove labels and set/remove tags on matching objects under `prefix` (see `retag_objects`)."""
        return retag_objects(
            self.client,
            prefix,
            add_labels=add_labels,
            remove_labels=remove_labels,
            set_tags=set_tags,
            remove_tags=remove_tags,
            labels=labels,
            tags=tags,
            name_glob=name_glob,
            dry_run=dry_run,
        )


__all__ = ["DatafileResource", "RetagCounts", "client_from", "list_datafiles", "matches", "retag_objects"]
