"""Folders private to the user running the library, created and checked as `tempfile.mkdtemp` creates its folders.

Files written in a folder another local user can write to (or owns) can be swapped by that user between being
written and being read back, for example between an asset writing a working file and the upload of it. So every
folder the library makes for its own files is created with mode 0o700, and one that already exists is used only if
it is a real directory (not a symbolic link) owned by the current user and closed to group and others. A folder of
ours that others may read but not write (as made with a usual umask by older versions) is closed (`chmod 0o700`); one
that another user owns or may write to is refused with `UnsafeFolderError`, since its content can no longer be
trusted.

On systems without POSIX ownership (Windows) folders are created as usual and not checked.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from octue_dagster.exceptions import UnsafeFolderError

PRIVATE_MODE = 0o700
_POSIX = hasattr(os, "getuid")


def make_private_folder(folder: Path, *, fix_mode: bool = True) -> Path:
    """Create `folder` (its parent must exist) private to the current user, or check that the existing one is.

    `fix_mode=False` leaves the mode of an existing folder as it is (for a folder the user chose, which is checked to
    be owned by them and not writable by others, but not changed).
    """
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=PRIVATE_MODE)
    check_private_folder(folder, fix_mode=fix_mode)
    return folder


def check_private_folder(folder: Path, *, fix_mode: bool = True) -> None:
    """Raise `UnsafeFolderError` unless `folder` is a directory, not a symbolic link, owned by the current user and
    not writable by group or others; with `fix_mode`, also close it to group and others (`chmod 0o700`)."""
    if not _POSIX:
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        if os.path.islink(folder):
            raise UnsafeFolderError(
                f"The folder {str(folder)!r} is a symbolic link (to {os.readlink(folder)!r}); a private folder must be a "
                f"real directory. Remove the link, or choose another folder."
            ) from None
        if not folder.is_dir() and folder.exists():
            raise UnsafeFolderError(f"{str(folder)!r} is not a folder. Remove it, or choose another folder.") from None
        raise
    try:
        status = os.fstat(descriptor)
        if status.st_uid != os.getuid():
            raise UnsafeFolderError(
                f"The folder {str(folder)!r} belongs to another user (uid {status.st_uid}, not {os.getuid()}), who could "
                f"read or replace the files written in it. Nothing was written there. Choose a folder of your own (for "
                f"a DatafileResource: working_dir=...), or remove that folder if it should not exist."
            )
        if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafeFolderError(
                f"The folder {str(folder)!r} may be written by other users (mode {stat.filemode(status.st_mode)}), who "
                f"could replace the files written in it. Nothing was written there. Run `chmod 700 {folder}` once you "
                f"have checked its content, or choose another folder."
            )
        if fix_mode and status.st_mode & 0o077:
            os.fchmod(descriptor, PRIVATE_MODE)
    finally:
        os.close(descriptor)


def user_suffix() -> str:
    """A name part that differs between the users of one machine: their uid (or user name without POSIX uids)."""
    if _POSIX:
        return str(os.getuid())
    import getpass

    return getpass.getuser()


__all__ = ["PRIVATE_MODE", "check_private_folder", "make_private_folder", "user_suffix"]
