"""The shared download cache: where copies of cloud objects live, how they are proven to hold the object's bytes,
one lock per object for every change, and a size limit with least-recently-used eviction.

Layout: each object gets its own folder, named by a hash of `bucket/name`, holding the file under its (sanitised)
base name, so that it keeps its extension, beside a record (`.record.json`). Hashing the name means that
`a/../../x`, absolute names, names with NUL bytes or 1,000-byte names can never make a path outside the cache, and
that objects `a` and `a/b` never collide.

Integrity: a record names the generation and crc32c the copy was verified against, and the identity of the file at
that moment (device, inode, size, mtime_ns, ctime_ns). A copy is reused only while its identity is unchanged; if any
part differs, the file is hashed again and reused only if the bytes are still the object's. The copy's mtime is set
at least two seconds in the past when it is recorded, so that any later write (which sets the mtime to the present,
even on file systems with coarse timestamps) changes its identity.

Locks: every change to a copy or its record (a download, a write-back after `open("w")`, an eviction) happens under
the object's lock (`object_lock`), kept in the cache's `locks` folder. A reader that opens a copy holds a shared
`flock` on it (`hold`), and eviction skips a copy that anyone holds, in this process or another.

Size: after each new copy the cache's total size is estimated (a small shared counter, corrected by a full scan
whenever it passes the limit); over the limit, the least recently used copies that nobody holds are removed until
it is down to 90% of the limit. The limit is `configure(max_bytes=...)`, else `$OCTUE_DAGSTER_CACHE_MAX_BYTES`,
else 10 GiB.
`python -m octue_dagster.core.cache clear` (or `clear()`) removes every copy not in use.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import filelock

from octue_dagster.core.local import hashing
from octue_dagster.core.local.atomic import sweep_stale_temporaries, temporary_path_for
from octue_dagster.core.local.folders import (
    CACHE_DIR_VARIABLE,
    cache_root,
    is_private_folder,
    open_no_follow,
    private_folder,
)
from octue_dagster.core.local.locks import LOCK_TIMEOUT_SECONDS, lock_path
from octue_dagster.core.local.space import free_bytes
from octue_dagster.core.storage.gcs_path import GCSPath
from octue_dagster.exceptions import InvalidCloudPathError, InvalidInputError

try:  # POSIX: shared locks mark copies in use. Elsewhere an open file cannot be deleted, which protects it instead.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MAX_BYTES_VARIABLE = "OCTUE_DAGSTER_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 10 * 2**30
#: Over the limit, eviction goes down to this fraction of it, so that a full cache evicts once per several
#: downloads rather than on every one (each eviction scans the cache).
LOW_WATER_FRACTION = 0.9
#: How far in the past a recorded copy's mtime is set: more than the coarsest file system timestamp (FAT: 2 s).
MTIME_MARGIN_NS = 2_000_000_000

_RECORD_NAME = ".record.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_MAX_BASENAME = 120
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")

_configured_max_bytes: list[int | None] = []


# --- where things are -------------------------------------------------------------------------------------------------


def safe_basename(object_name: str) -> str:
    """A file name for an object that keeps its extension and contains no separators or special names."""
    base = object_name.rstrip("/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).lstrip(".") or "object"
    if len(base) > _MAX_BASENAME:
        stem, dot, extension = base.rpartition(".")
        extension = extension[:20] if dot else ""
        base = base[: _MAX_BASENAME - len(extension) - 1] + ("." + extension if extension else "")
    return base


def _objects_root() -> Path:
    return cache_root() / "objects"


def object_cache_dir(path: GCSPath) -> Path:
    """The folder that holds the cached copy of one object."""
    # Defence in depth: bucket names are validated when parsed, but a GCSPath can be built by hand. The rest of the
    # path is a hex digest, so this check is all it takes to keep the folder inside the cache.
    if not path.bucket or "/" in path.bucket or "\\" in path.bucket or path.bucket.strip(".") == "":
        raise InvalidCloudPathError(
            f"Refusing to cache an object of the bucket {path.bucket!r}: not a bucket name."
        )
    digest = hashlib.sha256(f"{path.bucket}/{path.name}".encode("utf-8", "surrogatepass")).hexdigest()
    return _objects_root() / path.bucket / digest[:2] / digest[2:34]


def cached_path(path: GCSPath) -> Path:
    """Where the downloaded copy of `path` lives (it may not exist yet)."""
    return object_cache_dir(path) / safe_basename(path.name)


def checked_object_dir(path: GCSPath, *, create: bool) -> Path:
    """The cache folder of `path`, every level from the cache root down checked with `lstat` (a real folder, private
    to this user: never a link) and, with `create`, made if missing. Raises `UnsafeFolderError` for a link or another
    user's folder, and `FileNotFoundError` for a missing level when not `create`."""
    folder = object_cache_dir(path)
    return private_folder(cache_root(), *folder.relative_to(cache_root()).parts, create=create)


def _folder_lock(folder: Path, timeout: float) -> filelock.FileLock:
    # Keyed by the folder (not the object name) so that eviction, which finds folders, takes the same lock.
    return filelock.FileLock(lock_path(f"object:{folder.relative_to(_objects_root())}"), timeout=timeout)


def object_lock(path: GCSPath, timeout: float = LOCK_TIMEOUT_SECONDS) -> filelock.FileLock:
    """The one lock under which the cached copy of `path` and its record change: downloads, write-backs, evictions."""
    return _folder_lock(object_cache_dir(path), timeout)


# --- records -----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CacheRecord:
    """What the cache knows of a copy: the object content it was verified to hold, and the file's identity then."""

    bucket: str
    name: str
    generation: int
    crc32c: str
    size: int
    device: int
    inode: int
    mtime_ns: int
    ctime_ns: int

    def identity(self) -> tuple[int, int, int, int, int]:
        return (self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns)


def _identity(stat: os.stat_result) -> tuple[int, int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _read_no_follow(file: Path) -> bytes:
    """A small file's bytes, refusing a symbolic link (`OSError`)."""
    descriptor = open_no_follow(file)
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read()


def read_record(path: GCSPath) -> CacheRecord | None:
    """The record of the cached copy of `path`, or `None` if there is none (or it is unreadable, or of another name).

    A link anywhere in the cache folder's chain raises `UnsafeFolderError`; a record that is a link is not a record.
    """
    try:
        folder = checked_object_dir(path, create=False)
    except FileNotFoundError:
        return None
    try:
        data = json.loads(_read_no_follow(folder / _RECORD_NAME))
        record = CacheRecord(**{field.name: data[field.name] for field in dataclasses.fields(CacheRecord)})
        if record.bucket != path.bucket or record.name != path.name or not isinstance(record.generation, int):
            return None
        return record
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_cached_generation(path: GCSPath) -> int | None:
    """The generation the cached copy of `path` holds, if its record is there and the file is unchanged since."""
    record = read_record(path)
    try:
        if record is None or _identity(os.lstat(cached_path(path))) != record.identity():
            return None
    except OSError:
        return None
    return record.generation


def _write_record(path: GCSPath, record: CacheRecord) -> None:
    target = checked_object_dir(path, create=False) / _RECORD_NAME
    temporary = temporary_path_for(target)  # named so that a killed writer's leftover is swept
    try:
        write_new_file(temporary, json.dumps(dataclasses.asdict(record)).encode())
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_new_file(file: Path, data: bytes) -> None:
    """Create `file` (it must not exist: never through a link someone planted) holding `data`, flushed to disk."""
    descriptor = open_no_follow(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def forget(path: GCSPath) -> None:
    """Remove the record of `path`'s copy (caller holds `object_lock`), so that the next read downloads again."""
    with contextlib.suppress(FileNotFoundError):
        (checked_object_dir(path, create=False) / _RECORD_NAME).unlink()


def _mark_used(folder: Path) -> None:
    """Least-recently-used order is the entry folder's mtime, set on every use."""
    with contextlib.suppress(OSError):
        os.utime(folder)


def _backdate(file: IO[bytes], updated_ns: int | None) -> None:
    # The object's update time (as the plain client's download_to_filename sets it), at least MTIME_MARGIN_NS ago.
    now = time.time_ns()
    mtime = min(updated_ns if updated_ns is not None else now, now - MTIME_MARGIN_NS)
    os.utime(file.fileno() if os.utime in os.supports_fd else file.name, ns=(now, mtime))


def verified_copy(path: GCSPath, generation: int, crc32c: str | None, size: int) -> Path | None:
    """The cached copy of `path` if it provably holds the object's content at `generation`, else `None`.

    Call it under `object_lock(path)`. An unchanged identity proves the content; a changed one (touched, replaced,
    edited in place) is settled by hashing the bytes again, and a copy that still holds them is recorded afresh.
    """
    record = read_record(path)
    if record is None or record.generation != generation or record.size != size or crc32c is None:
        return None
    if record.crc32c != crc32c:
        return None
    target = cached_path(path)
    try:
        with os.fdopen(open_no_follow(target), "rb") as file:  # a link planted as the copy is never served
            before = os.fstat(file.fileno())
            if _identity(before) != record.identity():
                # Hash through our descriptor: the very inode whose identity is then recorded.
                if before.st_size != size or hashing.read_stream_hash(file) != crc32c:
                    return None
                if _identity(os.fstat(file.fileno())) != _identity(before):
                    return None  # changed while being hashed
                _backdate(file, None)
                _write_record(path, dataclasses.replace(record, **_identity_fields(os.fstat(file.fileno()))))
    except OSError:
        return None
    _mark_used(target.parent)
    return target


def _identity_fields(stat: os.stat_result) -> dict[str, int]:
    return {"device": stat.st_dev, "inode": stat.st_ino, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "ctime_ns": stat.st_ctime_ns}


def install(
    path: GCSPath, temporary: Path, *, generation: int, crc32c: str, updated_ns: int | None = None
) -> Path:
    """Make a complete, verified temporary file (in the object's cache folder) the cached copy of `path` at
    `generation`, with its record. Call it under `object_lock(path)`; returns the copy's path."""
    target = cached_path(path)
    previous = _folder_bytes(target.parent) - _size_or_zero(temporary)
    with os.fdopen(open_no_follow(temporary), "rb") as file:
        os.fsync(file.fileno())
        _backdate(file, updated_ns)
        forget(path)  # no moment where the old record describes the new file, or the reverse
        os.replace(temporary, target)
        # The identity of the very inode that was verified: fstat on our descriptor, not a stat of the name.
        stat = os.fstat(file.fileno())
    try:
        _write_record(path, CacheRecord(path.bucket, path.name, generation, crc32c, **_identity_fields(stat)))
    except BaseException:
        # A copy without a record is never served, but it would hold space no eviction accounts for: it goes.
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    _mark_used(target.parent)
    _add_usage(_folder_bytes(target.parent) - previous)  # the copy and its record, as a scan counts them
    return target


def _size_or_zero(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def hold(copy: str | os.PathLike[str]) -> Iterator[None]:
    """Mark a cached copy as in use while the block runs (a shared lock, seen by eviction in every process).

    Take it while holding the object's lock, right after `verified_copy`, so that nothing evicts the copy between
    the check and the use.
    """
    with os.fdopen(open_no_follow(copy), "rb") as file:
        if fcntl is not None:
            fcntl.flock(file.fileno(), fcntl.LOCK_SH)
        yield


# --- size limit and eviction ---------------------------------------------------------------------------------------


def parse_size(text: str, source: str) -> int | None:
    """Bytes from `"10GiB"`, `"500 MB"`, `"1073741824"`; `"unlimited"`/`"none"` means no limit."""
    value = text.strip().lower()
    if value in ("unlimited", "none", "inf", "infinity"):
        return None
    match = _SIZE.match(value)
    if not match or match.group(2) not in _UNITS:
        raise InvalidInputError(
            f"{source} = {text!r} is not a size. Give bytes (1073741824), a size with a unit (500MB, 10GiB), or "
            f"'unlimited'."
        )
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def configure(*, max_bytes: int | str | None | object = ...) -> None:
    """Set this process's cache size limit (bytes, a size such as `"10GiB"`, or `None` for no limit); it overrides
    `$OCTUE_DAGSTER_CACHE_MAX_BYTES`. `configure()` with no argument goes back to the environment/default."""
    _configured_max_bytes.clear()
    if max_bytes is ...:
        return
    if isinstance(max_bytes, str):
        max_bytes = parse_size(max_bytes, "max_bytes")
    if max_bytes is not None and (not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0):
        raise InvalidInputError(f"max_bytes must be a number of bytes >= 0, a size such as '10GiB', or None; got "
                                f"{max_bytes!r}.")
    _configured_max_bytes.append(max_bytes)  # type: ignore[arg-type]


def max_bytes() -> int | None:
    """The cache size limit in bytes now in force (`None`: unlimited)."""
    if _configured_max_bytes:
        return _configured_max_bytes[0]
    configured = os.environ.get(MAX_BYTES_VARIABLE)
    if configured is None or not configured.strip():
        return DEFAULT_MAX_BYTES
    return parse_size(configured, f"${MAX_BYTES_VARIABLE}")


@dataclasses.dataclass
class Entry:
    """One object's folder in the cache, as a scan finds it."""

    folder: Path
    size: int
    last_used_ns: int


@dataclasses.dataclass
class EvictionReport:
    """What an eviction or `clear` did."""

    removed: int = 0
    removed_bytes: int = 0
    kept_in_use: int = 0
    remaining_bytes: int = 0


def entries() -> list[Entry]:
    """Every object folder in the cache, with the bytes it holds and when it was last used."""
    found = []
    objects = _objects_root()
    if not is_private_folder(objects) or not is_private_folder(cache_root()):
        return found  # a link or another user's folder is never listed, let alone emptied
    for bucket in _private_folders(objects):
        for prefix in _private_folders(bucket.path):
            for folder in _private_folders(prefix.path):
                try:
                    found.append(Entry(Path(folder.path), _folder_bytes(folder.path),
                                       folder.stat(follow_symlinks=False).st_mtime_ns))
                except FileNotFoundError:  # evicted by another process since the listing
                    continue
    return found


def _private_folders(folder: str | Path) -> list[os.DirEntry[str]]:
    """The sub-folders of a cache folder that are real folders of this user's: a link, or a folder someone else
    owns, is foreign and skipped (so neither eviction nor `clear` ever reaches outside the cache through it)."""
    return [entry for entry in _scandir(folder) if is_private_folder(entry.path)]


def _folder_bytes(folder: str | Path) -> int:
    """The bytes of the files in one object's folder (its copy, record and any temporary file); a file renamed or
    evicted by another thread or process between the listing and the stat counts as 0."""
    total = 0
    for item in _scandir(folder):
        with contextlib.suppress(OSError):
            if item.is_file(follow_symlinks=False):
                total += item.stat(follow_symlinks=False).st_size
    return total


def _scandir(folder: str | Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as iterator:
            return list(iterator)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _usage_file() -> Path:
    return cache_root() / "usage.json"


def _usage_lock() -> filelock.FileLock:
    return filelock.FileLock(lock_path("cache-usage"), timeout=LOCK_TIMEOUT_SECONDS)


def _read_usage() -> int | None:
    try:
        return int(json.loads(_read_no_follow(_usage_file()))["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_usage(total: int) -> None:
    """Replace the shared estimate; if it cannot be written (a full disk), remove it, so that the next reader
    rebuilds it by a scan instead of trusting a stale one."""
    target = _usage_file()
    temporary = temporary_path_for(target)
    try:
        write_new_file(temporary, json.dumps({"bytes": max(total, 0)}).encode())
        os.replace(temporary, target)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _add_usage(delta: int) -> None:
    """Add to the shared estimate of the cache's size (a missing or garbled estimate is rebuilt by a scan)."""
    with _usage_lock():
        current = _read_usage()
        if current is None:
            current = sum(entry.size for entry in entries()) - delta
        _write_usage(current + delta)


def usage_bytes() -> int:
    """The cache's size now, in bytes, from a full scan."""
    return sum(entry.size for entry in entries())


def enforce_limit(keep: Iterable[GCSPath] = ()) -> EvictionReport | None:
    """If the cache's estimated size is over the limit, evict least recently used copies (never those in `keep`
    or in use) down to `LOW_WATER_FRACTION` of it. Cheap when under the limit: one small read. Returns what was
    done, or `None`."""
    limit = max_bytes()
    if limit is None:
        return None
    estimate = _read_usage()
    if estimate is not None and estimate <= limit:
        return None
    return evict(int(limit * LOW_WATER_FRACTION), keep=keep)


def evict(limit: int, keep: Iterable[GCSPath] = (), *, wait: bool = False) -> EvictionReport:
    """Remove least recently used copies nobody holds until the cache holds at most `limit` bytes.

    One evictor runs at a time: without `wait`, a process that finds another one at work leaves the job to it.
    """
    report = EvictionReport()
    kept = {object_cache_dir(path) for path in keep}
    try:
        with filelock.FileLock(lock_path("cache-eviction"), timeout=LOCK_TIMEOUT_SECONDS if wait else 0):
            found = sorted(entries(), key=lambda entry: entry.last_used_ns)
            total = sum(entry.size for entry in found)
            for entry in found:
                if total <= limit:
                    break
                if entry.folder in kept or entry.size == 0:  # an evicted object's empty folder frees nothing
                    continue
                freed = _evict_entry(entry.folder)
                if freed is None:
                    report.kept_in_use += 1
                    continue
                total -= freed
                report.removed += 1
                report.removed_bytes += freed
            with _usage_lock():
                _write_usage(total)
            report.remaining_bytes = total
    except filelock.Timeout:
        pass
    return report


def _evict_entry(folder: Path) -> int | None:
    """Delete one copy and its record, if nobody is changing or holding it; the bytes freed, or `None` if in use."""
    try:
        with _folder_lock(folder, timeout=0):
            files = [Path(item.path) for item in _scandir(folder) if item.is_file(follow_symlinks=False)]
            copies = [file for file in files if not file.name.startswith(".")]
            if not is_private_folder(folder):
                return None  # replaced by a link since it was listed: foreign, never emptied
            for copy in copies:
                with os.fdopen(open_no_follow(copy), "rb") as handle:
                    if fcntl is not None:
                        try:
                            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        except BlockingIOError:
                            return None
            freed = 0
            record = folder / _RECORD_NAME
            # The record goes first: a copy without a record is never served, whatever happens next.
            for file in ([record] if record in files else []) + copies:
                with contextlib.suppress(FileNotFoundError):
                    size = file.stat().st_size
                    file.unlink()
                    freed += size
            sweep_stale_temporaries(folder)
            return freed
    except filelock.Timeout:
        return None
    except PermissionError:  # an open file on a system without shared locks (Windows) cannot be deleted
        return None


#: What a copy needs beside its bytes: its record and the file system's block rounding.
RECORD_ALLOWANCE_BYTES = 64 * 1024
def make_room(needed: int, keep: Iterable[GCSPath] = ()) -> bool:
    """Evict least recently used copies nobody holds until `needed` more bytes fit on the cache's file system;
    whether they now fit (copies in use, and files that are not the cache's, are never removed)."""
    free = free_bytes(cache_root())
    if free is None or free >= needed:
        return free is not None
    evict(max(usage_bytes() - (needed - free), 0), keep=keep, wait=True)
    after = free_bytes(cache_root())
    return after is not None and after >= needed


def clear() -> EvictionReport:
    """Remove every cached copy that nobody is using now (copies in use stay, and are counted)."""
    report = evict(0, wait=True)
    for entry in entries():
        with contextlib.suppress(OSError):
            entry.folder.rmdir()  # only empty folders go; one a writer is using holds its temporary file
    return report


# --- command line ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m octue_dagster.core.cache {info,clear,evict}`."""
    parser = argparse.ArgumentParser(prog="python -m octue_dagster.core.cache", description="The download cache.")
    parser.add_argument("command", choices=("info", "clear", "evict"),
                        help="info: where the cache is and its size; clear: remove every copy not in use; "
                             "evict: shrink it to the limit now")
    arguments = parser.parse_args(argv)
    limit = max_bytes()
    if arguments.command == "clear":
        report: Any = clear()
    elif arguments.command == "evict":
        report = evict(limit, wait=True) if limit is not None else EvictionReport(remaining_bytes=usage_bytes())
    else:
        found = entries()
        print(f"cache: {cache_root()}\ncopies: {len(found)}\nbytes: {sum(entry.size for entry in found)}\n"
              f"limit: {'unlimited' if limit is None else limit}")
        return 0
    print(f"removed {report.removed} copies ({report.removed_bytes} bytes); {report.kept_in_use} in use kept; "
          f"{report.remaining_bytes} bytes remain in {cache_root()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
