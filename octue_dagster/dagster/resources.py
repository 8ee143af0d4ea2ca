"""`DatafileResource`: get, create, list and re-tag datafiles (and datasets) from inside Dagster assets, ops, sensors and jobs.

A configuration shell over the core: listing and re-tagging are `octue_dagster.core.listing.selection`'s functions, run
through a `Store` made from the `GCSResource`'s client.
"""


import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import google.auth.exceptions
from dagster import Config, ConfigurableResource, InitResourceContext, ResourceDependency
from dagster_gcp import GCSResource
from google.cloud import storage as gcs_client
from pydantic import Field, PrivateAttr

from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.dataset.dataset import Dataset, list_datasets, prefix_of
from octue_dagster.core.dataset.filters import FilterList
from octue_dagster.core.storage.gcs_path import parse_gcs_path
from octue_dagster.core.metadata.octue_files import METADATA_FILENAME
from octue_dagster.core.listing.selection import RetagCounts, RetagSpec, list_datafiles, retag_objects
from octue_dagster.core.storage.store import Store, StoreSettings, guard_client
from octue_dagster.dagster.working_files import WorkingFolders, default_base
from octue_dagster.exceptions import DatafileExistsError, InvalidInputError, MissingCredentialsError


_DEFAULTS = StoreSettings()
#: The longest file name common file systems (ext4, APFS, NTFS) allow, in bytes.
_MAX_NAME_BYTES = 255


class StoreConfig(Config):
    """How the library waits for and retries GCS requests (see `octue_dagster.core.storage.store.StoreSettings`).

    Example: `DatafileIOManager(bucket="b", gcs=gcs, store=StoreConfig(retry_deadline_seconds=30))`.
    """

    retry_deadline_seconds: float = Field(default=_DEFAULTS.retry_deadline_seconds, description="Retry for this long.")
    initial_retry_delay_seconds: float = Field(default=_DEFAULTS.initial_retry_delay_seconds)
    maximum_retry_delay_seconds: float = Field(default=_DEFAULTS.maximum_retry_delay_seconds)
    connect_timeout_seconds: float = Field(default=_DEFAULTS.connect_timeout_seconds)
    read_timeout_seconds: float = Field(default=_DEFAULTS.read_timeout_seconds)
    list_page_size: int = Field(default=_DEFAULTS.list_page_size, description="Objects per list request (max 1000).")
    user_project: Optional[str] = Field(default=None, description="The project billed for requester-pays buckets.")
    concurrency: int = Field(
        default=_DEFAULTS.concurrency, description="Requests in flight at once for many-object work such as re-tagging."
    )

    def to_settings(self) -> StoreSettings:
        return StoreSettings(**self.model_dump())


def store_from(gcs: Any, config: StoreConfig | None = None) -> Store:
    """A `Store` over the client of a `GCSResource` (or over a client Dagster attached for one), or a
    `DatafileResource`'s own store (the components watch GCS through it, so that it alone chooses the client)."""
    if isinstance(gcs, DatafileResource):
        return gcs.store if config is None else gcs.store.with_settings(config.to_settings())
    return Store(client_from(gcs), settings=config.to_settings() if config is not None else _DEFAULTS)


def client_from(gcs: Any) -> gcs_client.Client:
    """A storage client from a `GCSResource`, or the client Dagster attaches for one (sensors, `context.resources`)."""
    if isinstance(gcs, gcs_client.Client):
        return guard_client(gcs)
    try:
        return guard_client(gcs.get_client())
    except google.auth.exceptions.DefaultCredentialsError:
        raise MissingCredentialsError(
            "No Google Cloud credentials were found for the GCS resource. Run `gcloud auth application-default "
            "login`, set GOOGLE_APPLICATION_CREDENTIALS, or set STORAGE_EMULATOR_HOST to use a GCS emulator."
        ) from None


class DatafileResource(ConfigurableResource):
    """Datafiles for assets and ops: `get` one by URI, `new` local ones to return, `list` and `retag` a prefix.

    `new` files live in a working folder of their own step attempt (`working_dir/<run id>/<step key>/attempt-<n>/`,
    by default under the system's temporary directory), each private to the user (created with mode 0o700; a folder
    another user made first is refused with `UnsafeFolderError`), so parallel steps, retries and re-executions never meet;
    each folder is removed by the process that made it once the step is over and the I/O manager has stored its
    outputs (`keep_working_files=True` keeps them, e.g. for debugging).

    Example::

        from dagster import Definitions, asset
        from dagster_gcp import GCSResource
        from octue_dagster import DatafileIOManager, DatafileResource

        @asset
        def readings(datafiles: DatafileResource):
            datafile = datafiles.new("readings.csv", labels=["raw"])
            with datafile.open("w") as file:
                file.write("time,speed\n")
            return datafile

        gcs = GCSResource(project="my-project")
        defs = Definitions(
            assets=[readings],
            resources={
                "datafiles": DatafileResource(gcs=gcs),
                "io_manager": DatafileIOManager(bucket="my-bucket", gcs=gcs),
            },
        )
    """

    gcs: ResourceDependency[GCSResource]
    store_settings: StoreConfig = Field(default_factory=StoreConfig, description="GCS timeouts and retries.")
    working_dir: str | None = Field(
        default=None,
        description="Folder for new local datafiles (a sub-folder per step attempt); default: a temporary folder.",
    )
    keep_working_files: bool = Field(
        default=False, description="Keep each step's working folder after the step instead of removing it."
    )

    _gcs_store: Store | None = PrivateAttr(default=None)
    _folders: WorkingFolders | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._gcs_store = store_from(self.gcs, self.store_settings)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._folders is not None:
            self._folders.remove_all()

    @property
    def store(self) -> Store:
        """The store over the `gcs` resource's client (made once per process)."""
        if self._gcs_store is None:
            self._gcs_store = store_from(self.gcs, self.store_settings)
        return self._gcs_store

    def working_folder(self) -> Path:
        """The working folder of the step attempt running now, where `new` puts local datafiles."""
        if self._folders is None:
            if self.working_dir:
                self._folders = WorkingFolders(Path(self.working_dir), keep=self.keep_working_files)
            else:
                self._folders = WorkingFolders(default_base(), keep=self.keep_working_files, chosen=False)
        return self._folders.folder_for_current_step()

    def get(self, path: str) -> Datafile:
        """The datafile at a `gs://` URI, from one metadata request (no download until it is opened).

        A missing object raises `CloudObjectNotFoundError` (a `FileNotFoundError`).
        """
        info = self.store.require_object(parse_gcs_path(path))
        return Datafile.from_object_info(info, store=self.store)

    def new(
        self,
        name: str,
        *,
        labels: Iterable[str] | None = None,
        tags: Mapping[str, Any] | None = None,
        timestamp: Any = None,
    ) -> Datafile:
        """A new local datafile called `name` in this step attempt's working folder, to write and return.

        Different steps (and attempts) may use the same names; one step asking for one name twice gets
        `DatafileExistsError`, so that it cannot overwrite a file it made earlier.
        """
        if not isinstance(name, str) or not name or "/" in name or os.sep in name or name in {".", ".."}:
            raise InvalidInputError(f"A new datafile needs a plain file name such as 'readings.csv'; got {name!r}.")
        if name.endswith(METADATA_FILENAME):
            # `.octue` is the folder's metadata file (every new file's metadata is written into it), and Octue's SDK
            # skips any name ending so.
            raise InvalidInputError(
                f"A new datafile cannot be called {name!r}: names ending in {METADATA_FILENAME!r} are Octue's metadata "
                f"files. Choose another name or extension."
            )
        if "\x00" in name or len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
            raise InvalidInputError(
                f"A new datafile's name must be at most {_MAX_NAME_BYTES} bytes without NUL characters (what file "
                f"systems allow); got {name[:40]!r}... ({len(name.encode('utf-8', 'surrogatepass'))} bytes)."
            )
        path = self.working_folder() / name
        if path.exists():
            raise DatafileExistsError(
                f"{path} already exists: this step already made a new datafile called {name!r}; choose another name."
            )
        return Datafile(
            path, labels=labels, tags=tags, timestamp=timestamp, ignore_stored_metadata=True, store=self.store
        )

    def list(
        self, prefix: str, labels: Iterable[str] | None = None, tags: Mapping[str, Any] | None = None
    ) -> list[Datafile]:
        """The datafiles under `gs://bucket/prefix` that have all `labels` and the given `tags` values.

        Built from paged list requests that carry each object's metadata: no request per object, no download.
        """
        return list_datafiles(self.store, prefix, labels, tags)

    def retag(self, prefix: str, spec: RetagSpec | None = None, *, dry_run: bool = False, **fields: Any) -> RetagCounts:
        """Re-tag matching objects under `prefix`: give a `RetagSpec`, or its fields as keywords.

        `datafiles.retag("gs://b/readings/", labels=["raw"], add_labels=["validated"])` adds the label `validated`
        to every datafile labelled `raw`; see `RetagSpec` and `octue_dagster.core.listing.selection.retag_objects`.
        """
        if spec is not None and fields:
            raise InvalidInputError("Give either a RetagSpec or its fields as keywords, not both.")
        return retag_objects(self.store, prefix, spec if spec is not None else RetagSpec(**fields), dry_run=dry_run)

    # --- datasets ----------------------------------------------------------------------------------------------------

    def new_dataset(
        self, name: str, *, labels: Iterable[str] | None = None, tags: Mapping[str, Any] | None = None
    ) -> Dataset:
        """A new, empty local dataset: a folder called `name` in the step's working directory (where `new` puts
        files), to fill and return from an asset. Write each file inside it and add it::

            farm = datafiles.new_dataset("farm", labels={"wind"})
            datafile = Datafile(Path(farm.path) / "t1.csv", tags={"turbine": "T1"})
            with datafile.open("w") as f:
                f.write(...)
            farm.add(datafile)
        """
        # `new` checks the name and that nothing is there yet, in the same working directory as its files.
        folder = Path(self.new(name).local_path)
        folder.mkdir(parents=True)
        return Dataset(folder, name=name, labels=labels, tags=tags, store=self.store)

    def dataset(self, path: str, *, recursive: bool = True) -> Dataset:
        """The Octue dataset in the folder `gs://bucket/folder`, from one listing and one read of its `.octue` object.

        Nothing is downloaded until a file is opened; filter its files with `dataset.files.filter(...)`.
        """
        return Dataset(path, recursive=recursive, store=self.store)

    def list_datasets(
        self, prefix: str, labels: Iterable[str] | None = None, tags: Mapping[str, Any] | None = None
    ) -> FilterList:
        """The datasets under `gs://bucket/prefix` with all `labels` and the given `tags` values, sorted by path
        (one listing, plus one read per dataset's `.octue` object); filter further with `.filter(name__...)`."""
        return list_datasets(self.store, prefix, labels, tags)

    def retag_dataset(
        self, path: str, spec: RetagSpec | None = None, *, dry_run: bool = False, **fields: Any
    ) -> RetagCounts:
        """Re-tag the files of the dataset at `path` (a metadata patch per changed file; the dataset's `.octue`
        object and content are untouched): `datafiles.retag_dataset("gs://b/farm/2024-05-01", add_labels=["qa"])`."""
        return self.retag(str(prefix_of(parse_gcs_path(path, allow_empty_name=True))), spec, dry_run=dry_run, **fields)


__all__ = ["DatafileResource", "StoreConfig", "client_from", "store_from"]
