"""Local copies of cloud objects: whether a copy on disk holds an object's content, and fetching one that does.

A copy is either in the shared download cache (`octue_dagster.core.cache`, one folder per object, with a record of
what it holds) or at a path the user chose. Every download is verified against the object's crc32c as it is written
(`Store.download_file`) into a temporary file, which is renamed into place only if it matched, so a reader never
sees half a file or a wrong byte. Everything that changes a cached copy or its record (a download, the write-back
after `open("w")`, an eviction) happens under the object's one lock (`cache.object_lock`), so concurrent processes
download each generation once and can never record one generation's bytes under another.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from octue_dagster.core.cache import copies as cache

from octue_dagster.core.local import hashing
from octue_dagster.core.local.atomic import atomic_replace, sweep_stale_temporaries, temporary_path_for
from octue_dagster.core.local.space import is_space_error
from octue_dagster.core.storage.store import ObjectInfo, Store
from octue_dagster.exceptions import ConflictError, InsufficientSpaceError

T = TypeVar("T")


def holds(target: Path, info: ObjectInfo, *, cached: bool) -> bool:
    """Whether the copy at `target` holds the content of `info` (a cached copy by its record or a re-hash, else by
    its hash)."""
    if not target.is_file():
        return False
    if cached:
        with cache.object_lock(info.path):
            return cache.verified_copy(info.path, info.generation, info.crc32c, info.size) is not None
    return hashing.hash_file(target) == info.crc32c


def fetch(store: Store, info: ObjectInfo, target: Path, *, cached: bool) -> Path:
    """Make a local copy hold the content of `info`, downloading only if none provably does, and return its path."""
    if not cached:
        if not holds(target, info, cached=False):
            download_to(store, info, target)
        return target
    with cache.object_lock(info.path):
        copy = _verified_or_downloaded(store, info)
    cache.enforce_limit(keep=[info.path])
    return copy


def open_cached(store: Store, info: ObjectInfo, hold: contextlib.ExitStack, open_file: Callable[[Path], T]) -> T:
    """`open_file(path)` on a cached copy that holds the content of `info` (downloaded first if none does).

    The copy is opened under the object's lock, so what is opened is the very file just verified (a writer could
    otherwise install the next generation at the same path in between), and it is marked in use until `hold`
    closes, so that no eviction, in any process, removes it while it is read.
    """
    with cache.object_lock(info.path):
        copy = _verified_or_downloaded(store, info)
        hold.enter_context(cache.hold(copy))
        opened = open_file(copy)
    cache.enforce_limit(keep=[info.path])
    return opened


def _verified_or_downloaded(store: Store, info: ObjectInfo) -> Path:
    copy = cache.verified_copy(info.path, info.generation, info.crc32c, info.size)
    return copy if copy is not None else _download_into_cache(store, info)


def _download_into_cache(store: Store, info: ObjectInfo) -> Path:
    """Download into a temporary file in the object's cache folder, then install it with its record (called under
    the object's lock). On any failure nothing is left behind.

    A full disk is made room on first, by evicting least recently used copies nobody holds; if that is not enough
    (or the disk fills during the download), `InsufficientSpaceError` names the cache and the bytes needed, and a
    later call, once there is room, downloads normally.
    """
    folder = cache.checked_object_dir(info.path, create=True)
    target = folder / cache.safe_basename(info.path.name)
    sweep_stale_temporaries(folder)
    needed = info.size + cache.RECORD_ALLOWANCE_BYTES
    if not cache.make_room(needed, keep=[info.path]) and cache.free_bytes(folder) is not None:
        raise _no_space(info, folder, needed)
    for attempt in range(2):
        temporary = temporary_path_for(target)
        try:
            crc32c = _download(store, info, temporary)
            return cache.install(
                info.path, temporary, generation=info.generation, crc32c=crc32c, updated_ns=_nanoseconds(info.updated)
            )
        except OSError as error:
            if not is_space_error(error):
                raise
            # Another writer filled the disk meanwhile (or a file size limit): try once more after making room.
            if attempt or not cache.make_room(needed, keep=[info.path]):
                raise _no_space(info, folder, needed) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    raise AssertionError("unreachable")  # pragma: no cover


def _no_space(info: ObjectInfo, folder: Path, needed: int) -> InsufficientSpaceError:
    free = cache.free_bytes(folder)
    return InsufficientSpaceError(
        f"No room in the download cache to read {info.path} (generation {info.generation}): it needs {needed:,} bytes "
        f"in {folder}, and {'an unknown number' if free is None else f'{free:,}'} are free after evicting every copy "
        f"not in use; nothing was kept. Free space on that disk, or set ${cache.CACHE_DIR_VARIABLE} to a folder on a "
        f"larger one (a smaller `OCTUE_DAGSTER_CACHE_MAX_BYTES` keeps the cache itself smaller)."
    )


def download_to(store: Store, info: ObjectInfo, target: Path) -> None:
    """Download the object at exactly `info.generation` into `target` (verified as written, then renamed)."""
    with atomic_replace(target) as temporary:
        crc32c = _download(store, info, temporary)
    hashing.remember_hash(target, crc32c)


def _download(store: Store, info: ObjectInfo, temporary: Path) -> str:
    try:
        with open(temporary, "wb") as file:
            return store.download_file(info, file)
    except ConflictError:
        raise ConflictError(
            f"{info.path} was replaced by another writer after this datafile read it; nothing was downloaded. "
            f"Instantiate the datafile again to read the new content."
        ) from None


def commit_written(temporary: Path, target: Path, info: ObjectInfo, crc32c: str, *, cached: bool) -> None:
    """Make `temporary`, whose content was just uploaded as `info`, the local copy at `target`.

    A cached copy is installed under the object's lock, as downloads are: a reader's download of the previous
    generation can then never land in between and be recorded under this one, or the reverse.
    """
    if cached:
        with cache.object_lock(info.path):
            cache.install(
                info.path, temporary, generation=info.generation, crc32c=info.crc32c or crc32c,
                updated_ns=_nanoseconds(info.updated),
            )
        cache.enforce_limit(keep=[info.path])
    else:
        os.replace(temporary, target)
    hashing.remember_hash(target, info.crc32c or crc32c)


def _nanoseconds(moment: datetime.datetime | None) -> int | None:
    """A datetime as integer POSIX nanoseconds (exact to the microsecond), or `None`."""
    if moment is None:
        return None
    return int(moment.replace(microsecond=0).timestamp()) * 1_000_000_000 + moment.microsecond * 1000


__all__ = ["commit_written", "download_to", "fetch", "holds", "open_cached"]
