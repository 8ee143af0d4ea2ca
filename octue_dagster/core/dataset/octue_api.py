"""The Octue-named part of `Dataset` and `Manifest`: the methods an Octue SDK 0.69 user calls, with Octue's meanings.

`Dataset` and `Manifest` inherit these mixins; everything here is written in terms of their public attributes, so the
classes themselves hold only the storage logic. What each name does, and where it deliberately differs from Octue's
SDK, is in the README ("Coming from Octue's SDK").

    dataset = Dataset.deserialise(json_text, from_string=True)   # Octue's serialisation, read
    text = dataset.serialise()                                   # byte-equal with Octue's `Dataset.serialise()`
    manifest.use_signed_urls_for_datasets()                      # each gs:// dataset path becomes a signed URL
"""

from __future__ import annotations

import datetime
import inspect
import os
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from octue_dagster.core.local import hashing
from octue_dagster.core.local.atomic import atomic_replace
from octue_dagster.core.metadata import json_objects
from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage import signing
from octue_dagster.core.datafile.url_datafile import redacted
from octue_dagster.core.dataset.dataset_files import SIGNED_METADATA_DIRECTORY
from octue_dagster.exceptions import (
    CloudLocationNotSpecifiedError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidSerialisationError,
    OctueCompatibilityWarning,
)

T = TypeVar("T")

#: One `update_dataset_paths` at a time in the process, as in Octue's SDK (a manifest shared by threads that ask
#: several services at once has its paths swapped for signed URLs once, not concurrently).
_update_dataset_paths_lock = threading.Lock()


def deserialise_as(cls: type[T], serialised_object: Mapping[str, Any] | str | bytes, from_string: bool) -> T:
    """`cls(**fields)` from Octue's serialisation (a dict, or its JSON text with `from_string=True`), refusing fields
    `cls` does not take with an error naming them (`InvalidSerialisationError`, also a `TypeError` as in Octue)."""
    if from_string:
        try:
            serialised_object = md.decode_json(serialised_object)  # type: ignore[arg-type]
        except ValueError as error:
            raise InvalidSerialisationError(
                f"Cannot deserialise a {cls.__name__}: the text is not JSON ({error})."
            ) from None
    if not isinstance(serialised_object, Mapping):
        raise InvalidSerialisationError(
            f"A serialised {cls.__name__} is a dict of its fields (or its JSON text with from_string=True); got "
            f"{type(serialised_object).__name__}."
        )
    accepted = {
        name
        for name, parameter in inspect.signature(cls).parameters.items()
        if not name.startswith("_") and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    unknown = sorted(str(key) for key in serialised_object if key not in accepted)
    if unknown:
        raise InvalidSerialisationError(
            f"Cannot deserialise a {cls.__name__}: unknown fields {unknown}; it takes {sorted(accepted)}."
        )
    return cls(**serialised_object)


def octue_serialise(primitive: Any, **kwargs: Any) -> str:
    """JSON text exactly as Octue's `Serialisable.serialise()` writes it (its encoder, sorted keys, indent 4)."""
    return md.encode_json(primitive, sort_keys=True, indent=4, **kwargs)


def metadata_hash(name: str | None, labels: Iterable[str], tags: Mapping[str, Any]) -> str:
    """Octue's `metadata_hash_value` of a dataset: the crc32c of the text Octue's `Hashable` makes of its metadata
    without the id, `str(sorted({"name": ..., "tags": ..., "labels": ...}.items()))`.

    Octue prints the labels in its set's iteration order, which for two or more labels depends on the process's
    string-hash seed (so its value changes from run to run); they are sorted here, so the value is stable.
    """
    listed = ", ".join(repr(str(label)) for label in sorted(labels))
    label_text = f"LabelSet({{{listed}}})" if listed else "LabelSet()"
    text = f"[('labels', {label_text}), ('name', {name!r}), ('tags', {dict(tags)!r})]"
    return hashing.crc32c_base64(text.encode())


def warn_if_stored_metadata_wins(dataset: Any, stored: Mapping[str, Any], **given: Any) -> None:
    """Check the name, labels and tags given for `dataset` (they are refused if invalid even where unused) and warn,
    with an `OctueCompatibilityWarning`, about those its stored metadata overrode (as in Octue's SDK; this library's
    releases before 0.3 let given values override stored ones)."""
    if given.get("name") is not None and not isinstance(given["name"], str):
        raise InvalidInputError(f"A dataset name must be a string; got {given['name']!r}.")
    checked = {
        "name": given.get("name"),
        "labels": md.LabelSet(given["labels"]) if given.get("labels") is not None else None,
        "tags": md.TagDict(given["tags"]) if given.get("tags") is not None else None,
    }
    overridden = [
        field
        for field, value in checked.items()
        if value is not None and field in stored and value != getattr(dataset, field)
    ]
    if overridden:
        warnings.warn(
            f"The {', '.join(overridden)} given for {dataset!r} were not used: the metadata stored with it takes "
            f"precedence, as in Octue's SDK. Pass ignore_stored_metadata=True to use what you give, or set the "
            f"attributes and call update_metadata() to change what is stored.",
            OctueCompatibilityWarning,
            stacklevel=4,  # the code that made the dataset (through Dataset.__init__ and its precedence step)
        )


def hash_of_named_hashes(named: Mapping[str, Any]) -> str:
    """Octue's hash of a dict of hashable things (a manifest's datasets): the crc32c of the sorted
    `(name, hash_value)` pairs' text."""
    return hashing.crc32c_base64(str(sorted((name, item.hash_value) for name, item in named.items())).encode())


class OctueSerialisable:
    """Octue's `Serialisable` names: `deserialise`, `serialise`, `from_file` and `to_file` (written atomically)."""

    to_primitive: Callable[..., dict[str, Any]]

    @classmethod
    def deserialise(cls: type[T], serialised_object: Mapping[str, Any] | str, from_string: bool = False) -> T:
        """An instance from Octue's serialisation (`to_primitive()`, or `serialise()` text with `from_string=True`);
        a dataset's stored metadata is read and wins, as in Octue's SDK."""
        return deserialise_as(cls, serialised_object, from_string)

    @classmethod
    def from_file(cls: type[T], path: str | os.PathLike[str]) -> T:
        """An instance from a JSON file written by `to_file()` here or in Octue's SDK."""
        return deserialise_as(cls, Path(path).read_text(encoding="utf-8"), from_string=True)

    def serialise(self, **kwargs: Any) -> str:
        """JSON text byte-equal with Octue's `serialise()` for the same dataset or manifest."""
        return octue_serialise(self.to_primitive(), **kwargs)

    def to_file(self, path: str | os.PathLike[str], **kwargs: Any) -> None:
        """Write `serialise()` to a JSON file, replacing it atomically (a failed write leaves the old file)."""
        with atomic_replace(path) as temporary:
            temporary.write_text(self.serialise(**kwargs), encoding="utf-8")


class OctueDatasetAPI(OctueSerialisable):
    """Octue's `Dataset` methods that are not about storage: serialisation, hashes, labels and tags, signed URLs."""

    # Provided by `Dataset`.
    id: str
    name: str
    path: str
    files: Any
    labels: md.LabelSet
    tags: md.TagDict
    store: Any
    gcs_prefix: Any
    all_files_are_in_cloud: bool
    to_primitive: Callable[..., dict[str, Any]]
    _url: str | None
    _id: str
    metadata_path: str
    update_metadata: Callable[[], None]

    def _use_stored_metadata_first(self, stored: Mapping[str, Any], **given: Any) -> None:
        """Octue's rule for a dataset's metadata: each stored field (id, name, labels, tags) wins over the one given,
        which fills what is not stored. An id that differs from the stored one is refused (Octue's SDK silently keeps
        the stored one), and given values that were not used are named in a warning."""
        stored_id, given_id = stored.get("id"), given["id"]
        if given_id is not None and stored_id is not None and md.validate_id(given_id) != md.validate_id(stored_id):
            raise InvalidInputError(
                f"The id {given_id!r} given for the dataset at {redacted(self.path)} differs from its stored id "
                f"{stored_id!r}; ids cannot be reassigned. Leave id out, or pass ignore_stored_metadata=True."
            )
        try:
            self._id = md.validate_id(stored_id) if stored_id else ""
            self.name = stored["name"] if "name" in stored else None  # type: ignore[misc]
            self.labels = stored.get("labels")  # type: ignore[assignment]
            self.tags = stored.get("tags")  # type: ignore[assignment]
        except InvalidInputError as error:
            where = f"the dataset metadata at {redacted(self.metadata_path)}"
            raise InvalidMetadataError(f"{where} cannot be read: {error}") from None
        self._id = self._id or (md.validate_id(given_id) if given_id is not None else str(uuid.uuid4()))
        for field in ("name", "labels", "tags"):
            if field not in stored:
                setattr(self, field, given[field])
        warn_if_stored_metadata_wins(self, stored, name=given["name"], labels=given["labels"], tags=given["tags"])

    @property
    def hash_value(self) -> str:
        """A crc32c over the sorted crc32c hashes of the files, computed exactly as Octue's SDK computes it."""
        return hashing.crc32c_base64(str(sorted(file.hash_value for file in self.files)).encode())

    @property
    def metadata_hash_value(self) -> str:
        """A hash of the dataset's name, labels and tags (not its id or files), as Octue's SDK computes it."""
        return metadata_hash(self.name, self.labels, self.tags)

    def add_labels(self, *labels: str) -> None:
        """Add labels (each checked against Octue's label rule), as Octue's `add_labels("a", "b")`."""
        for label in labels:
            self.labels.add(label)

    def add_tags(self, tags: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Add or replace tags from a dict and/or keywords, as Octue's `add_tags({"a": 1}, b=2)`."""
        self.tags.update({**(tags or {}), **kwargs})

    @property
    def exists_in_cloud(self) -> bool:
        """Whether the dataset's path is in the cloud: a `gs://` prefix or a (signed) URL, as in Octue's SDK."""
        return self.gcs_prefix is not None or self._url is not None

    @property
    def exists_locally(self) -> bool:
        """Whether the dataset is a local one (as in Octue's SDK: the opposite of `exists_in_cloud`)."""
        return not self.exists_in_cloud

    def generate_signed_url(
        self,
        expiration: datetime.timedelta | datetime.datetime = datetime.timedelta(days=7),
        *,
        credentials: Any = None,
    ) -> str:
        """A signed URL to a new metadata object describing the dataset with signed URLs to each of its files, as
        Octue's SDK makes it (`<folder>/.signed_metadata_files/<name>`), so that the whole dataset can be read
        without credentials until `expiration` (at most 7 days): `Dataset(path=url)` here or in Octue's SDK."""
        prefix = self.gcs_prefix
        if prefix is None or not self.all_files_are_in_cloud:
            raise CloudLocationNotSpecifiedError(
                f"{self!r} and all its files must be in the cloud (gs://) to generate a signed URL for it: upload it "
                f"first."
            )
        signing.expiration_seconds(expiration)
        document = self.to_primitive()
        document["files"] = [file.generate_signed_url(expiration, credentials=credentials) for file in self.files]
        path = prefix.join(SIGNED_METADATA_DIRECTORY, uuid.uuid4().hex)
        json_objects.write_document(self.store, path, document, if_generation_match=0)
        return signing.generate_signed_url(self.store.client, path, expiration, credentials=credentials)

    def __iter__(self) -> Iterator[Any]:
        yield from self.files

    def __len__(self) -> int:
        return len(self.files)

    def __contains__(self, item: object) -> bool:
        return item in self.files

    def get_file_by_label(self, label: str) -> Any:
        """The only file with `label`; `UnexpectedNumberOfResultsError` if there is none or more than one."""
        return self.files.one(labels__contains=label)

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        # Unlike Octue's SDK, which writes whatever the block left, a block that raised persists nothing.
        if exc_type is None:
            self.update_metadata()

    def __repr__(self) -> str:
        # Octue's form: the name if there is one, else the id.
        return f"<{type(self).__name__}({self.name!r})>" if self.name else f"<{type(self).__name__}({self.id})>"


class OctueManifestAPI(OctueSerialisable):
    """Octue's `Manifest` methods that are not about storage: serialisation, hashes and dataset paths."""

    # Provided by `Manifest`.
    id: str
    name: str | None
    datasets: dict[str, Any]

    @property
    def hash_value(self) -> str:
        """A hash of the datasets' names and hashes, as Octue's SDK computes it."""
        return hash_of_named_hashes(self.datasets)

    def update_dataset_paths(self, path_generator: Callable[[Any], str]) -> None:
        """Set each dataset's path to `path_generator(dataset)` (one call at a time in the process, as in Octue).

        Only the path changes (where the manifest says the dataset is); its files are not moved.
        """
        with _update_dataset_paths_lock:
            for name, dataset in self.datasets.items():
                self.datasets[name].path = path_generator(dataset)

    def use_signed_urls_for_datasets(self) -> None:
        """Replace each `gs://` dataset path with a signed URL to the dataset (`Dataset.generate_signed_url()`), so
        the manifest can be handed to a service without credentials for the bucket. Local datasets and datasets
        whose path is already a URL are left as they are, so calling it twice changes nothing more."""

        def signed(dataset: Any) -> str:
            return dataset.generate_signed_url() if dataset.gcs_prefix is not None else dataset.path

        self.update_dataset_paths(signed)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}({self.name!r})>" if self.name else f"<{type(self).__name__}({self.id})>"


__all__ = [
    "OctueDatasetAPI",
    "OctueManifestAPI",
    "OctueSerialisable",
    "deserialise_as",
    "hash_of_named_hashes",
    "metadata_hash",
    "octue_serialise",
    "warn_if_stored_metadata_wins",
]
