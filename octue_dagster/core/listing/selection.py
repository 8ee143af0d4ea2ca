"""Choosing datafiles under a prefix by name, labels and tags, and re-tagging them: plain functions over a `Store`.

Everything here reads each object's metadata from the paged listing itself, so it costs one request per page of up
to 1000 objects, not one per object. Objects that are not datafiles (folder placeholders made by the console, and
the metadata objects Octue's SDK keeps beside datasets) are skipped, as Octue's SDK skips them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from octue_dagster.core.metadata import values as md
from octue_dagster.core.storage.runner import run_concurrently
from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.dataset.dataset_files import is_octue_metadata_object
from octue_dagster.core.storage.gcs_path import GCSPath, parse_gcs_path
from octue_dagster.core.storage.redaction import RedactingFilter
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.exceptions import CloudObjectNotFoundError, InvalidInputError, InvalidMetadataError

logger = logging.getLogger(__name__)
logger.addFilter(RedactingFilter())  # its lines quote errors, which must not carry credentials


_MISSING = object()


def is_datafile_object(name: str) -> bool:
    """Whether an object name is a datafile: not a folder placeholder, not one of Octue's metadata objects."""
    return bool(name) and not name.endswith("/") and not is_octue_metadata_object(name)


def as_prefix(prefix: str | GCSPath) -> GCSPath:
    """A `GCSPath` for `gs://bucket` or `gs://bucket/folder/...` (an empty object name means the whole bucket)."""
    return prefix if isinstance(prefix, GCSPath) else parse_gcs_path(prefix, allow_empty_name=True)


def datafile_objects(store: Store, prefix: str | GCSPath, *, delimiter: str | None = None) -> Iterator[ObjectInfo]:
    """The datafile objects under a prefix, with their metadata, from paged list requests."""
    for info in store.list_objects(as_prefix(prefix), delimiter=delimiter):
        if is_datafile_object(info.path.name):
            yield info


def matches(datafile: Datafile, labels: Iterable[str] | None = None, tags: Mapping[str, Any] | None = None) -> bool:
    """Whether a datafile has every one of `labels` and every tag in `tags` with the same value."""
    if labels is not None and not set(labels) <= set(datafile.labels):
        return False
    if tags is not None and any(datafile.tags.get(name, _MISSING) != value for name, value in tags.items()):
        return False
    return True


def list_datafiles(
    store: Store,
    prefix: str | GCSPath,
    labels: Iterable[str] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> list[Datafile]:
    """The datafiles under a `gs://bucket/prefix`, built from the listing's own metadata, filtered by labels/tags.

    A `Datafile` is built only for objects that may match: the filter is first checked on the listed labels and tags
    alone (one field each), so a filter that selects few objects costs little more than the listing itself.
    """
    wanted_labels = None if labels is None else frozenset(md.LabelSet(labels))
    wanted_tags = None if tags is None else dict(tags)
    result = []
    for info in datafile_objects(store, prefix):
        if not may_match(info.custom_metadata, wanted_labels, wanted_tags):
            continue
        datafile = Datafile.from_object_info(info, store=store)
        if matches(datafile, wanted_labels, wanted_tags):
            result.append(datafile)
    return result


def may_match(
    custom_metadata: Mapping[str, str], labels: frozenset[str] | None, tags: Mapping[str, Any] | None
) -> bool:
    """False only if an object's stored labels and tags (as listed) certainly fail the filter.

    Reads only the fields the filter needs. A field that cannot be read here says "may match", so that building the
    `Datafile` reports it as it always has.
    """
    if labels:
        stored = md.stored_field(custom_metadata, "labels")
        if stored is not md.UNREADABLE and not labels <= (stored or frozenset()):
            return False
    if tags:
        stored = md.stored_field(custom_metadata, "tags")
        if stored is not md.UNREADABLE and any(
            (stored or {}).get(name, _MISSING) != value for name, value in tags.items()
        ):
            return False
    return True


@dataclasses.dataclass(frozen=True)
class RetagSpec:
    """Which objects to re-tag (the filter) and how (the change), validated once when it is made.

    The filter is `labels` (objects must have all), `tags` (must have these values) and `name_glob` (an `fnmatch`
    pattern for the file name). The change adds and removes labels and sets and removes tags.

    Example::

        spec = RetagSpec(labels=["raw"], name_glob="*.csv", add_labels=["validated"], set_tags={"qc": "passed"})
        counts = retag_objects(Store.default(), "gs://my-bucket/readings/", spec)
    """

    add_labels: frozenset[str] = frozenset()
    remove_labels: frozenset[str] = frozenset()
    set_tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    remove_tags: tuple[str, ...] = ()
    labels: frozenset[str] | None = None
    tags: Mapping[str, Any] | None = None
    name_glob: str | None = None

    def __post_init__(self) -> None:
        # Normalise and validate every field up front, so that a bad label or tag changes no object at all.
        set_field = object.__setattr__
        set_field(self, "add_labels", frozenset(md.LabelSet(self.add_labels)))
        set_field(self, "remove_labels", frozenset(md.LabelSet(self.remove_labels)))
        set_field(self, "set_tags", dict(md.TagDict(self.set_tags or {})))
        if isinstance(self.remove_tags, str):
            raise InvalidInputError(f"remove_tags must be a list of tag names, not the string {self.remove_tags!r}.")
        set_field(self, "remove_tags", tuple(md.validate_tag_name(name) for name in self.remove_tags))
        # Adding and removing the same label (or setting and removing one tag) would silently remove it.
        for what, added, removed in (
            ("label", ("add_labels", self.add_labels), ("remove_labels", self.remove_labels)),
            ("tag", ("set_tags", self.set_tags), ("remove_tags", self.remove_tags)),
        ):
            both = sorted(set(added[1]) & set(removed[1]))
            if both:
                raise InvalidInputError(
                    f"The re-tag change both adds and removes the {what}(s) {', '.join(map(repr, both))}: keep each "
                    f"{what} in only one of {added[0]} and {removed[0]}."
                )
        if self.labels is not None:
            set_field(self, "labels", frozenset(md.LabelSet(self.labels)))
        if self.tags is not None:
            set_field(self, "tags", dict(md.TagDict(self.tags)))
        if self.name_glob is not None and not isinstance(self.name_glob, str):
            raise InvalidInputError(f"name_glob must be a pattern such as '*.csv'; got {self.name_glob!r}.")
        if self.name_glob is not None and (not self.name_glob or "/" in self.name_glob):
            # It is matched against the file name alone, which never is empty nor holds a '/'.
            raise InvalidInputError(
                f"name_glob {self.name_glob!r} can never match: it is matched against the file name (the part after "
                f"the last '/'), such as '*.csv'; choose the folder with the prefix instead."
            )

    def selects(self, datafile: Datafile) -> bool:
        """Whether the filter selects this datafile."""
        if self.name_glob is not None and not fnmatch.fnmatchcase(datafile.name, self.name_glob):
            return False
        return matches(datafile, self.labels, self.tags)

    def apply(self, datafile: Datafile) -> bool:
        """Apply the change to the datafile's in-memory labels and tags; return whether anything changed."""
        before = (set(datafile.labels), dict(datafile.tags))
        datafile.labels.update(self.add_labels)
        datafile.labels.difference_update(self.remove_labels)
        datafile.tags.update(self.set_tags)
        for name in self.remove_tags:
            datafile.tags.pop(name, None)
        return (set(datafile.labels), dict(datafile.tags)) != before

    def describe(self) -> dict[str, Any]:
        """The spec as plain JSON-ready values (for run metadata and logs)."""
        return {
            "add_labels": sorted(self.add_labels),
            "remove_labels": sorted(self.remove_labels),
            "set_tags": dict(self.set_tags),
            "remove_tags": list(self.remove_tags),
            "labels": sorted(self.labels) if self.labels is not None else None,
            "tags": dict(self.tags) if self.tags is not None else None,
            "name_glob": self.name_glob,
        }


@dataclasses.dataclass
class RetagCounts:
    """What a re-tagging pass did, exactly: objects seen, matching the filter, changed, already right, unreadable
    (skipped), and those whose patch failed (`failures`: path -> what went wrong) or that were deleted after the
    listing (`vanished`). Every matching object is in exactly one of changed, unchanged, failed and vanished."""

    scanned: int = 0
    matched: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    vanished: int = 0
    skipped_paths: list[str] = dataclasses.field(default_factory=list)
    failures: dict[str, str] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {
            "scanned": self.scanned,
            "matched": self.matched,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "failed": self.failed,
            "vanished": self.vanished,
        }


#: Failure messages kept per pass (the count stays exact beyond it), so that memory stays flat.
MAX_REPORTED_FAILURES = 1000


def retag_objects(
    store: Store, prefix: str | GCSPath, spec: RetagSpec, *, dry_run: bool = False, concurrency: int | None = None
) -> RetagCounts:
    """Change labels/tags on every datafile under `prefix` that `spec` selects, without touching content.

    The listing streams page by page; each selected object's patch is built from the metadata the listing returned
    and sent at once (one request per object, none to read it again), `concurrency` patches at a time (default:
    `store.settings.concurrency`), with at most twice that many objects held in memory. Each patch is conditional on
    the listed metageneration, so a concurrent writer's change is re-read and merged, never lost. One object's
    failure is counted and reported in `failures` and does not stop the others. Objects whose stored metadata
    cannot be read are skipped and counted, not rewritten. With `dry_run`, `changed` counts the objects that would
    change and nothing is written.
    """
    counts = RetagCounts()

    def to_patch() -> Iterator[Datafile]:
        # Runs in the calling thread (the pool pulls from it), so the counts need no lock.
        for info in datafile_objects(store, prefix):
            counts.scanned += 1
            try:
                datafile = Datafile.from_object_info(info, store=store)
            except InvalidMetadataError as error:
                counts.skipped += 1
                counts.skipped_paths.append(str(info.path))
                logger.warning("Skipping %s: %s", info.path, error)
                continue
            if not spec.selects(datafile):
                continue
            counts.matched += 1
            if not spec.apply(datafile):
                counts.unchanged += 1
            elif dry_run:
                counts.changed += 1
            else:
                yield datafile

    def patch(datafile: Datafile) -> None:
        datafile.update_metadata(fresh=True)

    workers = store.settings.concurrency if concurrency is None else concurrency
    for outcome in run_concurrently(patch, to_patch(), concurrency=workers):
        if outcome.ok:
            counts.changed += 1
        elif isinstance(outcome.error, CloudObjectNotFoundError):
            counts.vanished += 1
        else:
            counts.failed += 1
            path = str(outcome.item.cloud_path)
            if len(counts.failures) < MAX_REPORTED_FAILURES:
                counts.failures[path] = f"{type(outcome.error).__name__}: {outcome.error}"
            logger.warning("Could not re-tag %s: %s", path, outcome.error)
    return counts


__all__ = [
    "RetagCounts",
    "RetagSpec",
    "as_prefix",
    "datafile_objects",
    "is_datafile_object",
    "list_datafiles",
    "matches",
    "may_match",
    "retag_objects",
]
