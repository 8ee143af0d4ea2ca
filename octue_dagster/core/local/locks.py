"""Where the library's lock files live, and what happens when that place cannot be written.

Lock files go in the cache's `locks` folder (private to the user, see `folders`), so that they never appear beside
users' files and every process of one user (and one cache) finds the same lock for the same key.

A read-only cache (or a read-only HOME, whose cache folder cannot be made) must not stop work that needs no cache:
a metadata-only change of a cloud object is safe without any local lock, because every patch is conditional on the
object's metageneration (GCS refuses a patch computed from an older state, and `Store.patch_metadata` re-reads and
re-applies it). So `metadata_lock` falls back to the per-user runtime folder, and without one, runs unlocked. What
does need the cache (a download, a copy, eviction) raises `FolderNotWritableError` naming the folder and the setting.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import filelock
import platformdirs

from octue_dagster.core.local.folders import CACHE_DIR_VARIABLE, cache_root, private_folder
from octue_dagster.exceptions import FolderNotWritableError, UnsafeFolderError

#: How long any of the library's file locks is waited for before `filelock.Timeout` is raised: long enough for a
#: multi-GB download by another process to finish, short enough that a lock held by a hung process is reported.
LOCK_TIMEOUT_SECONDS = 600

#: errno values that mean "this folder cannot be written here", as opposed to a real fault.
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def not_writable(error: OSError) -> bool:
    """Whether an `OSError` means a read-only or forbidden folder."""
    return isinstance(error, PermissionError) or error.errno in _NOT_WRITABLE


def cache_locks_folder() -> Path:
    """The cache's `locks` folder (made private if missing); `FolderNotWritableError` if it cannot be made."""
    root = cache_root()
    try:
        return private_folder(root, "locks", what="the download cache's lock files")
    except OSError as error:
        if isinstance(error, (UnsafeFolderError, FolderNotWritableError)) or not not_writable(error):
            raise
        raise FolderNotWritableError(
            f"Cannot write lock files in the download cache {root} ({os.strerror(error.errno or errno.EACCES)}): "
            f"downloads and local copies of cloud objects need a writable cache. Set ${CACHE_DIR_VARIABLE} to a "
            f"writable folder (e.g. one under /tmp or the job's scratch space)."
        ) from None


def lock_path(key: str) -> Path:
    """A lock file for `key` in the cache's `locks` folder (`FolderNotWritableError` if the cache is read-only)."""
    return cache_locks_folder() / f"{_digest(key)}.lock"


def _fallback_folder() -> Path | None:
    """A private folder for lock files when the cache is read-only: the per-user runtime folder, if writable."""
    try:
        with warnings.catch_warnings():  # platformdirs warns when it falls back for a missing XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            runtime = Path(platformdirs.user_runtime_dir("octue-dagster", appauthor=False, ensure_exists=False))
        if not runtime.parent.is_dir():
            return None  # no runtime folder on this system (a container without a login session)
        return private_folder(runtime.parent, runtime.name, "locks", what="the library's lock files",
                              setting="$XDG_RUNTIME_DIR")
    except OSError:
        return None


@contextlib.contextmanager
def metadata_lock(key: str, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Serialise metadata-only changes of one object on this machine, if a lock file can be made anywhere.

    This lock only spares the emulator (which ignores metageneration preconditions) from lost updates; against GCS
    the metageneration precondition is what keeps concurrent patches safe, so a read-only cache and no runtime
    folder mean no lock, not a failure.
    """
    path = optional_lock_path(key)
    if path is None:
        yield
        return
    with filelock.FileLock(path, timeout=timeout):
        yield


def optional_lock_path(key: str) -> Path | None:
    """A lock file for `key` for work that is safe without one (it only narrows races that preconditions or
    checks also catch): in the cache's `locks` folder, else the per-user runtime folder, else `None`."""
    try:
        folder: Path | None = cache_locks_folder()
    except FolderNotWritableError:
        folder = _fallback_folder()
    return None if folder is None else folder / f"{_digest(key)}.lock"


__all__ = [
    "LOCK_TIMEOUT_SECONDS", "cache_locks_folder", "lock_path", "metadata_lock", "not_writable", "optional_lock_path",
]
