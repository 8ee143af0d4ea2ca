"""`Manifest`: named Datasets, serialised in Octue's SDK 0.69 JSON format so that either tool reads the other's.

The JSON form is `{"datasets": {"<name>": "<path>" | {<serialised dataset>}}, "id": "<uuid>", "name": ...}`: a
dataset found at a path is written as its path; one made from an explicit list of files is written whole (with
its files), as Octue's SDK does. The Octue-named methods that are not about storage (`deserialise`, `hash_value`,
`update_dataset_paths`, `use_signed_urls_for_datasets`) are in `octue_api.py`.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.cloud import storage

from octue_dagster.core.metadata import json_objects

from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.store import Store
from octue_dagster.core.dataset.dataset import Dataset
from octue_dagster.core.dataset.octue_api import OctueManifestAPI
from octue_dagster.core.storage.gcs_path import parse_gcs_path
from octue_dagster.core.storage.runner import default_workers
from octue_dagster.exceptions import InvalidInputError


logger = logging.getLogger(__name__)


class Manifest(OctueManifestAPI):
    """Named datasets (`{"training": Dataset(...), ...}`) with an id, as in Octue's SDK.

    Each value of `datasets` may be a `Dataset`, a path to one (local or `gs://`), or a serialised dataset dict.
    Datasets given as paths are instantiated concurrently (each cloud one costs a listing and one metadata read).
    """

    def __init__(
        self,
        datasets: Mapping[str, Dataset | str | Mapping[str, Any]] | None = None,
        ignore_stored_metadata: bool = False,
        id: str | None = None,
        name: str | None = None,
        *,
        store: Store | None = None,
        storage_client: storage.Client | None = None,
    ) -> None:
        if datasets is not None and not isinstance(datasets, Mapping):
            raise InvalidInputError(
                f"A manifest's datasets must be a mapping of names to datasets or paths; got {datasets!r}."
            )
        self._store = store if store is not None else (Store(storage_client) if storage_client is not None else None)
        self._ignore_stored_metadata = ignore_stored_metadata
        self.id = md.validate_id(id) if id is not None else str(uuid.uuid4())
        self.name = name
        items = list((datasets or {}).items())
        for key, _ in items:
            if not isinstance(key, str) or not key:
                raise InvalidInputError(f"Dataset names in a manifest must be non-empty strings; got {key!r}.")
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(default_workers(), max(1, len(items)))) as pool:
            self.datasets: dict[str, Dataset] = dict(
                zip([key for key, _ in items], pool.map(self._instantiate_dataset, [value for _, value in items]))
            )

    def _instantiate_dataset(self, dataset: Dataset | str | Mapping[str, Any]) -> Dataset:
        if isinstance(dataset, Dataset):
            return dataset
        common = {"ignore_stored_metadata": self._ignore_stored_metadata, "store": self._store}
        if isinstance(dataset, (str, os.PathLike)):
            return Dataset(path=dataset, recursive=True, **common)
        if isinstance(dataset, Mapping):
            # Unlike Octue's SDK, which drops them for cloud datasets, the serialised id, name, labels and tags are kept.
            fields = {key: dataset[key] for key in ("path", "files", "id", "name", "tags", "labels") if key in dataset}
            return Dataset(recursive=True, **fields, **common)
        raise InvalidInputError(f"Cannot make a Dataset of {dataset!r}: give a Dataset, a path or a serialised dataset.")

    @classmethod
    def from_cloud(
        cls,
        cloud_path: str,
        ignore_stored_metadata: bool = False,
        *,
        store: Store | None = None,
        storage_client: storage.Client | None = None,
    ) -> Manifest:
        """Read a manifest from its JSON object in GCS (`gs://bucket/path/manifest.json`)."""
        store = store or (Store(storage_client) if storage_client is not None else Store.default())
        document = json_objects.read_document(store, store.require_object(parse_gcs_path(cloud_path)))
        return cls.from_primitive(document, ignore_stored_metadata=ignore_stored_metadata, store=store)

    @classmethod
    def from_primitive(
        cls,
        document: Mapping[str, Any],
        ignore_stored_metadata: bool = False,
        *,
        store: Store | None = None,
    ) -> Manifest:
        """A manifest from its decoded JSON form (Octue's `Manifest.to_primitive()` or ours)."""
        datasets = document.get("datasets", {})
        if not isinstance(datasets, Mapping):
            raise InvalidInputError(f"The manifest's 'datasets' entry must be a JSON object; got {datasets!r}.")
        return cls(
            datasets=datasets,
            ignore_stored_metadata=ignore_stored_metadata,
            id=document.get("id"),
            name=document.get("name"),
            store=store,
        )

    def to_primitive(self) -> dict[str, Any]:
        """The manifest as JSON-ready primitives in Octue's shape."""
        return {
            "id": self.id,
            "name": self.name,
            "datasets": {
                key: dataset.to_primitive() if dataset._instantiated_from_files_argument else dataset.path  # noqa: SLF001
                for key, dataset in self.datasets.items()
            },
        }

    def to_cloud(self, cloud_path: str) -> str:
        """Write the manifest's JSON to `cloud_path` (replacing what is there, conditionally on the version seen)."""
        store = self._store or Store.default()
        path = parse_gcs_path(cloud_path)
        existing = store.get_object(path)
        json_objects.write_document(
            store,
            path,
            self.to_primitive(),
            if_generation_match=existing.generation if existing else 0,
            indent=4,
            sort_keys=True,
        )
        return cloud_path

    @property
    def all_datasets_are_in_cloud(self) -> bool:
        """Whether every file of every dataset is known to be stored in GCS."""
        return all(dataset.all_files_are_in_cloud for dataset in self.datasets.values())

    def get_dataset(self, key: str) -> Dataset:
        """The dataset named `key`; a missing name raises an error listing the names there are."""
        try:
            return self.datasets[key]
        except KeyError:
            raise InvalidInputError(
                f"The manifest has no dataset {key!r}; its datasets are {sorted(self.datasets)}."
            ) from None

    def download(
        self, paths: Mapping[str, str | os.PathLike[str]] | None = None, download_all: bool = True
    ) -> dict[str, str]:
        """Download the datasets, each into `paths[name]` if given, else into `<a temporary directory>/<name>`, and
        return each downloaded dataset's directory by name, as Octue's SDK does.

        With `download_all=False`, only the datasets named in `paths` are downloaded. The temporary directory (one
        per call) is removed when the interpreter exits, as Octue's is; files are checksum-verified as they arrive.
        """
        if paths is None:
            paths, download_all = {}, True
        if not isinstance(paths, Mapping):
            raise InvalidInputError(
                f"`paths` must be a mapping of dataset names to folders, such as {{'training': 'data/training'}}; "
                f"got {type(paths).__name__}."
            )
        unknown = sorted(str(key) for key in paths if key not in self.datasets)
        if unknown:
            # Octue's SDK ignores them; a misspelt name would otherwise download nothing (download_all=False) or
            # put the dataset in a temporary folder, silently.
            raise InvalidInputError(
                f"`paths` names datasets the manifest does not have: {unknown}; its datasets are "
                f"{sorted(self.datasets)}."
            )
        _check_distinct_folders({key: target for key, target in paths.items() if target})
        result: dict[str, str] = {}
        temporary: str | None = None
        for key, dataset in self.datasets.items():
            target = paths.get(key)
            if not target and not download_all:
                logger.info("%r dataset download skipped as its download path wasn't specified.", key)
                continue
            if not target:
                _check_folder_name(key)
                temporary = temporary or _temporary_directory()
                target = os.path.join(temporary, key)
            result[key] = dataset.download(local_directory=target)  # type: ignore[assignment]
        return result


def _check_distinct_folders(folders: Mapping[str, str | os.PathLike[str]]) -> None:
    """Refuse two datasets downloaded into one folder, or one inside the other: their files would mix, and one
    dataset's file could overwrite another's of the same name."""
    resolved = sorted((Path(folder).absolute(), key) for key, folder in folders.items())
    for (first, first_key), (second, second_key) in itertools.combinations(resolved, 2):
        if first == second or second.is_relative_to(first):
            relation = "the same folder" if first == second else "a folder inside the other's"
            raise InvalidInputError(
                f"The datasets {first_key!r} and {second_key!r} would be downloaded into {relation} ({str(second)!r}); "
                f"give each dataset a folder of its own in `paths`."
            )


def _check_folder_name(key: str) -> None:
    """Refuse a dataset name that would not stay one folder inside the temporary directory (names come from the
    manifest, which may come from someone else: `../x` or `/home/me` must not choose where files land)."""
    if key in (".", "..") or "/" in key or os.sep in key or (os.altsep and os.altsep in key) or "\x00" in key:
        raise InvalidInputError(
            f"The manifest's dataset name {key!r} cannot be a folder name (it is '.', '..', or holds a path "
            f"separator or NUL), so it is not downloaded into the temporary directory: give it a folder with "
            f"download(paths={{{key!r}: 'some/folder'}})."
        )


def _temporary_directory() -> str:
    """A new temporary directory, removed when the interpreter exits (Octue's `RegisteredTemporaryDirectory`)."""
    path = tempfile.mkdtemp(prefix="octue-dagster-datasets-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


__all__ = ["Manifest"]
