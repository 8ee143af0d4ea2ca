"""Local copies of cloud objects: whether a copy on disk holds an object's content, and fetching one that does.

A copy is either in the shared download cache (`octue_dagster.core.cache`, one folder per object, with a record of
what it holds) or at a path the user chose. Fetching writes to a temporary file and renames it into place, so a
reader never sees half a file; copies in the cache are fetched under the object's lock, so concurrent processes
download each generation once.
"""

from __future__ import annotations

from pathlib import Path

import filelock

from octue_dagster.core import cache, hashing
from octue_dagster.core.atomic import atomic_replace
from octue_dagster.core.store import ObjectInfo, Store
from octue_dagster.exceptions import ChecksumMismatchError, ConflictError


def holds(target: Path, info: ObjectInfo, *, cached: bool) -> bool:
    """Whether the copy at `target` holds the content of `info` (a cached copy by its record, else by its hash)."""
    if not target.is_file():
        return False
    if cached:
        return cache.read_cached_generation(info.path) == info.generation
    return hashing.hash_file(target) == info.crc32c


def fetch(store: Store, info: ObjectInfo, target: Path, *, cached: bool) -> None:
    """Make `target` hold the content of `info`, downloading only if it does not already."""
    if not cached:
        if not holds(target, info, cached=False):
            download_to(store, info, target)
        return
    with filelock.FileLock(cache.lock_path(f"download:{info.path}"), timeout=cache.LOCK_TIMEOUT_SECONDS):
        if cache.read_cached_generation(info.path) != info.generation:
            download_to(store, info, target)
            cache.write_cached_generation(info.path, info.generation)


def download_to(store: Store, info: ObjectInfo, target: Path) -> None:
    """Download the object at exactly `info.generation` into `target` (checksum-verified, then renamed)."""
    with atomic_replace(target) as temporary:
        try:
            with open(temporary, "wb") as file:
                store.download_file(info, file)
        except ConflictError:
            raise ConflictError(
                f"{info.path} was replaced by another writer after this datafile read it; nothing was downloaded. "
                f"Instantiate the datafile again to read the new content."
            ) from None
        if temporary.stat().st_size != info.size:
            raise ChecksumMismatchError(
                f"Downloaded {temporary.stat().st_size} bytes of {info.path}, expected {info.size}."
            )
    if info.crc32c:
        hashing.remember_hash(target, info.crc32c)


def record_written(target: Path, info: ObjectInfo, *, cached: bool) -> None:
    """After `target` was renamed into place as the content just uploaded as `info`, remember what it holds."""
    if cached:
        cache.write_cached_generation(info.path, info.generation)
    if info.crc32c:
        hashing.remember_hash(target, info.crc32c)


__all__ = ["download_to", "fetch", "holds", "record_written"]
