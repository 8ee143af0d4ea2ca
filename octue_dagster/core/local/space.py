"""Disk space: telling a full disk from other failures, and proving a write will fit before committing elsewhere.

A write that fails half way on a full disk must leave nothing behind and say which folder needs how much room. Where
a local write follows a cloud write (a cloud datafile kept at a chosen `local_path`), the local side is proved first
(`require_room` writes and removes a probe of the size needed), so that a full disk stops the call before the object
is replaced, not after.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from octue_dagster.core.local.atomic import temporary_path_for
from octue_dagster.exceptions import FolderNotWritableError, InsufficientSpaceError

_SPACE_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_PROBE_CHUNK = 64 * 1024


def is_space_error(error: BaseException) -> bool:
    """Whether an error means a full disk, a full quota, or a file size limit (`RLIMIT_FSIZE`)."""
    return isinstance(error, OSError) and error.errno in _SPACE_ERRORS


def free_bytes(folder: str | os.PathLike[str]) -> int | None:
    """The bytes this user can still write on `folder`'s file system (`None` if the system cannot tell)."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return stats.f_bavail * stats.f_frsize


def require_room(folder: str | os.PathLike[str], needed: int, what: str) -> None:
    """Prove that `needed` bytes can be written in `folder` now, by writing (and removing) a probe file of that size;
    `InsufficientSpaceError` (or `FolderNotWritableError`) naming the folder, the bytes and `what` they are for."""
    folder = Path(folder)
    probe = temporary_path_for(folder / "space-probe")
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(descriptor, "wb") as file:
            remaining = needed
            block = bytes(min(_PROBE_CHUNK, max(needed, 1)))
            while remaining > 0:
                remaining -= file.write(block[: min(remaining, len(block))])
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        if is_space_error(error):
            free = free_bytes(folder)
            raise InsufficientSpaceError(
                f"No room in {folder} for {what}: it needs {needed:,} bytes and "
                f"{'an unknown number' if free is None else f'{free:,}'} are free; nothing was changed. Free space "
                f"there and try again."
            ) from None
        if isinstance(error, PermissionError) or error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise FolderNotWritableError(
                f"Cannot write in {folder} for {what} ({os.strerror(error.errno or errno.EACCES)}); nothing was "
                f"changed. Make it writable, or choose another local_path."
            ) from None
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


__all__ = ["free_bytes", "is_space_error", "require_room"]
