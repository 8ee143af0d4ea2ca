"""Objects the I/O manager owns: ownership marks, the metadata it last wrote, and writing one object safely.

Every object the I/O manager stores carries two custom metadata keys of its own (outside Octue's `octue__`
namespace, which Octue's SDK reads and writes):

- `octue_dagster__owner`: the address's owner mark (asset key + partition, or run + step + output). The I/O manager
  replaces, loads and deletes only objects whose mark equals the address's; everything else in the folder (Octue's
  `.octue` and `.signed_metadata_files/`, files put there by people or other tools) is left alone.
- `octue_dagster__written`: the labels, tags and timestamp the asset returned when the I/O manager last wrote the
  object: the base of the three-way merge on the next write. Labels and tags that others added since (the re-tag
  job, a person, Octue's SDK) are in the object but not in the base, so they stay; what the asset stopped returning
  is in the base but not in its new output, so it goes.

Other writers' custom metadata keys are carried over on every write (a patch leaves them; an upload or copy of new
content copies them onto the new generation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import filelock

from octue_dagster.core.cache import copies as cache
from octue_dagster.core.metadata import values as md
from octue_dagster.core.datafile.datafile import Datafile
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.core.metadata.merge import merge
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.exceptions import ConflictError, ForeignObjectError, InvalidMetadataError

OWNER_KEY = "octue_dagster__owner"
WRITTEN_KEY = "octue_dagster__written"
_OWN_PREFIXES = (f"{md.NAMESPACE}__", "octue_dagster__")
#: How many times storing new content re-reads and re-merges metadata that other writers keep patching.
UPLOAD_ATTEMPTS = 5


def owner_of(info: ObjectInfo) -> str | None:
    """The owner mark of an object, or `None` if the I/O manager did not write it."""
    return info.custom_metadata.get(OWNER_KEY)


def written_base(info: ObjectInfo) -> md.StoredMetadata | None:
    """What the I/O manager last wrote on this object (labels, tags, timestamp), or `None` if unknown."""
    raw = info.custom_metadata.get(WRITTEN_KEY)
    if raw is None:
        return None
    try:
        return md.from_local_metadata(md.decode_json(raw), f"{info.path}'s {WRITTEN_KEY}")
    except (InvalidMetadataError, ValueError, RecursionError, OverflowError):
        # Tampered with or garbled (deeply nested, a timestamp out of range): treated as unknown, as if absent.
        return None


@dataclasses.dataclass(frozen=True)
class Write:
    """One output to store: its content (a local file or a cloud object) and the metadata the asset returned."""

    datafile: Datafile
    owner: str

    @property
    def ours(self) -> md.StoredMetadata:
        datafile = self.datafile
        return md.StoredMetadata(datafile.id, datafile.timestamp, frozenset(datafile.labels), dict(datafile.tags))

    @property
    def content_hash(self) -> str | None:
        datafile = self.datafile
        if datafile.cloud_path is None:
            return datafile.hash_value
        info = datafile.object_info
        return info.crc32c if info is not None else None

    def custom_metadata(self, current: ObjectInfo | None, same_content: bool) -> dict[str, str]:
        """The object's custom metadata after this write, merged three ways with what `current` holds."""
        ours = self.ours
        if current is None:
            merged = ours
        else:
            try:
                theirs = md.from_cloud_metadata(current.custom_metadata, str(current.path))
            except InvalidMetadataError:
                theirs = md.StoredMetadata()  # unreadable: replaced by ours, as a new object would be
            base = written_base(current) or theirs
            merged = merge(base, ours, theirs)
            # Identical content is the same datafile and keeps its id; new content is a new version with the
            # returned datafile's id.
            merged = dataclasses.replace(merged, id=(theirs.id or ours.id) if same_content else ours.id)
        others = {
            key: value
            for key, value in (current.custom_metadata.items() if current is not None else ())
            if not key.startswith(_OWN_PREFIXES)
        }
        result = dict(others)
        result.update(
            md.to_cloud_metadata(merged.id or ours.id, merged.timestamp, merged.labels or (), merged.tags or {})
        )
        result[OWNER_KEY] = self.owner
        if _size(result) > md.GCS_CUSTOM_METADATA_LIMIT_BYTES:
            raise InvalidMetadataError(
                f"The custom metadata for this output would take {_size(result)} bytes (its Octue metadata, the I/O "
                f"manager's owner mark and {len(others)} key(s) other writers set on the stored object), over "
                f"GCS's limit of {md.GCS_CUSTOM_METADATA_LIMIT_BYTES} bytes. Keep large values in the file itself."
            )
        record = md.encode_json(
            {"labels": set(ours.labels or ()), "tags": ours.tags or {}, "timestamp": ours.timestamp},
            sort_keys=True,
            separators=(",", ":"),
        )
        if _size({**result, WRITTEN_KEY: record}) <= md.GCS_CUSTOM_METADATA_LIMIT_BYTES:
            # Without the record (metadata too large for both), the next write treats the object's labels and tags
            # as the asset's own: correct for the asset's changes, but others' additions are not told apart.
            result[WRITTEN_KEY] = record
        return result


def _size(custom_metadata: Mapping[str, str]) -> int:
    return sum(len(key.encode()) + len(value.encode()) for key, value in custom_metadata.items())


def _changes(current: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in wanted.items() if current.get(key) != value}


def write_owned(store: Store, write: Write, destination: GCSPath, current: ObjectInfo | None) -> ObjectInfo:
    """Store `write` at `destination`, which holds `current` (an object with the same owner mark, or nothing).

    Identical content (same crc32c) uploads nothing and keeps the generation: at most a metadata patch, merged
    again if another writer patched first. New content is uploaded (or copied server side from a cloud datafile),
    only if the object is still at the generation read, so a concurrent writer's object is never overwritten.
    """
    if current is not None and owner_of(current) != write.owner:
        raise ForeignObjectError(
            f"{destination} exists but was not written by the I/O manager for this asset partition (its owner mark "
            f"is {owner_of(current)!r}, expected {write.owner!r}), so it was left as it was. Move or delete it, or "
            f"store the output under another name (the `octue_dagster/object_name` asset metadata)."
        )
    same_content = current is not None and current.crc32c == write.content_hash
    if same_content:
        assert current is not None
        wanted = write.custom_metadata(current, same_content=True)
        if not _changes(current.custom_metadata, wanted):
            return current

        def change(latest: ObjectInfo) -> dict[str, str]:
            return _changes(latest.custom_metadata, write.custom_metadata(latest, same_content=True))

        # As `Datafile.update_metadata` does: the lock also serialises patches on one machine where the server
        # ignores metageneration preconditions (the emulator); across machines the precondition does.
        with filelock.FileLock(cache.lock_path(f"patch:{destination}"), timeout=cache.LOCK_TIMEOUT_SECONDS):
            return store.patch_metadata(destination, change, if_generation_match=current.generation)
    generation = current.generation if current is not None else 0
    datafile = write.datafile
    if datafile.cloud_path is None:
        for _ in range(UPLOAD_ATTEMPTS):
            try:
                # Conditional on the metageneration merged against too: a re-tag landing before the upload makes
                # GCS refuse it (412), and the merge is redone over the re-tagged metadata instead of dropping it.
                return store.upload_file(
                    datafile.local_path,
                    destination,
                    crc32c=datafile.hash_value,
                    custom_metadata=write.custom_metadata(current, same_content=False),
                    if_generation_match=generation,
                    if_metageneration_match=current.metageneration if current is not None else None,
                )
            except ConflictError:
                latest = store.get_object(destination) if current is not None else None
                if latest is None or latest.generation != generation or owner_of(latest) != write.owner:
                    raise  # new content, a new object or another owner mark, from another writer: never overwritten
                current = latest
        raise ConflictError(
            f"Could not store {destination}: its metadata kept changing under {UPLOAD_ATTEMPTS} attempts by other "
            f"writers. Nothing was overwritten; try again."
        )
    metadata = write.custom_metadata(current, same_content=False)
    source = datafile.object_info or store.require_object(datafile.gcs_path)  # type: ignore[arg-type]
    return store.copy_object(source, destination, custom_metadata=metadata, if_generation_match=generation)


__all__ = ["OWNER_KEY", "WRITTEN_KEY", "Write", "owner_of", "write_owned", "written_base"]
