"""The library's own folders on disk (the download cache, its locks, working folders): private to their user,
never through a link.

Every folder the library creates for itself is made with mode 0o700, and every time it is used each level from the
cache root down is checked with `lstat` (never following a link): it must be a real folder (not a symbolic link),
owned by the user running the process, and writable by nobody else. Anything else is another user's or another
tool's, and the library refuses to use it (`UnsafeFolderError`, naming the folder and the fix) rather than read,
write or delete through it. A copy of a cloud object or a cache record is opened with `O_NOFOLLOW` for the same reason
(see `open_no_follow`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

import platformdirs

from octue_dagster.exceptions import FolderNotWritableError, UnsafeFolderError

#: The environment variable that chooses the cache folder (else the platform's user cache folder).
CACHE_DIR_VARIABLE = "OCTUE_DAGSTER_CACHE_DIR"
#: What a private folder of the library is created with.
PRIVATE_MODE = 0o700

_resolved_roots: dict[tuple[str | None, ...], Path] = {}


def cache_root() -> Path:
    """The cache folder: `$OCTUE_DAGSTER_CACHE_DIR`, else the platform's user cache folder (resolved once)."""
    configured = os.environ.get(CACHE_DIR_VARIABLE)
    # The default depends on HOME and XDG_CACHE_HOME, which a job may set after the library was imported.
    key = (configured, None, None) if configured else (None, os.environ.get("XDG_CACHE_HOME"), os.environ.get("HOME"))
    root = _resolved_roots.get(key)
    if root is None:
        # Resolving costs system calls; it is done once per configured value, not on every hash or open. A link in
        # the configured path itself is the user's choice and is resolved here; links below the root never are.
        base = Path(configured) if configured else Path(platformdirs.user_cache_dir("octue-dagster", appauthor=False))
        root = _resolved_roots[key] = base.resolve()
    return root


def _geteuid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def problem_with(status: os.stat_result) -> str | None:
    """Why a folder with this `lstat` result is not private to this user, or `None` if it is."""
    if stat.S_ISLNK(status.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(status.st_mode):
        return "is not a folder"
    uid = _geteuid()
    if uid is not None and status.st_uid != uid:
        return f"is owned by user id {status.st_uid}, not by this process's user ({uid})"
    return None


def _tighten(folder: Path, status: os.stat_result, mode: int) -> None:
    """Make one of this user's folders private (an older version, or a umask of 002, made it group-writable)."""
    if _geteuid() is not None:
        try:
            os.chmod(folder, mode)
        except (NotImplementedError, OSError):
            if status.st_mode & 0o022:
                raise


def _refuse(folder: Path, problem: str, what: str, setting: str) -> UnsafeFolderError:
    return UnsafeFolderError(
        f"Refusing to use {folder} ({what}): it {problem}, so another user or tool could read or replace what the "
        f"library keeps there. Remove or fix it (`chmod 700`, owned by you, not a link), or choose another folder "
        f"with {setting}."
    )


def _not_writable(folder: Path, error: OSError, what: str, setting: str) -> OSError:
    if not (isinstance(error, PermissionError) or error.errno in (errno.EROFS, errno.EACCES, errno.EPERM)):
        return error
    return FolderNotWritableError(
        f"Cannot create {folder} ({what}): {os.strerror(error.errno or errno.EACCES)}. Set {setting} to a writable "
        f"folder (e.g. one under /tmp or the job's scratch space)."
    )


def _check_root(root: Path, what: str, setting: str) -> None:
    try:
        status = os.lstat(root)
    except FileNotFoundError:
        try:
            os.makedirs(root, mode=PRIVATE_MODE, exist_ok=True)
        except OSError as error:
            raise _not_writable(root, error, what, setting) from None
        status = os.lstat(root)
    problem = problem_with(status)
    if problem is not None:
        raise _refuse(root, problem, what, setting)
    if status.st_mode & 0o022:
        if created_by_library(root):
            # The default cache folder, made by an older version (or under umask 002): made private again.
            _tighten_or_refuse(root, status, what, setting, PRIVATE_MODE)
        else:
            # A folder the user chose (`/tmp`, a shared folder) is never changed: refused.
            raise _refuse(root, f"is writable by other users (mode {stat.S_IMODE(status.st_mode):o})", what, setting)


def created_by_library(root: Path) -> bool:
    """Whether `root` is the default cache folder (made by the library), not one the user chose."""
    if os.environ.get(CACHE_DIR_VARIABLE):
        return False
    return root == Path(platformdirs.user_cache_dir("octue-dagster", appauthor=False)).resolve()


def _tighten_or_refuse(folder: Path, status: os.stat_result, what: str, setting: str, mode: int) -> None:
    try:
        _tighten(folder, status, mode)
    except OSError:
        raise _refuse(
            folder, f"is writable by other users (mode {stat.S_IMODE(status.st_mode):o}) and could not be made private",
            what, setting,
        ) from None


def private_folder(
    root: Path, *parts: str, what: str = "the download cache", setting: str = f"${CACHE_DIR_VARIABLE}",
    create: bool = True,
) -> Path:
    """`root/parts...`, each level below `root` created with mode 0o700 if missing (when `create`) and checked with
    `lstat`: a real folder, this user's, writable by nobody else. Raises `UnsafeFolderError` otherwise, and
    `FileNotFoundError` for a missing level when not `create`.

    Example::

        locks = private_folder(cache_root(), "locks")
    """
    _check_root(root, what, setting)
    folder = root
    for part in parts:
        folder = folder / part
        try:
            status = os.lstat(folder)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(folder, PRIVATE_MODE)
            except FileExistsError:
                pass  # another process made it; checked below like any other
            except OSError as error:
                raise _not_writable(folder, error, what, setting) from None
            status = os.lstat(folder)
        problem = problem_with(status)
        if problem is not None:
            raise _refuse(folder, problem, what, setting)
        if status.st_mode & 0o077:
            _tighten_or_refuse(folder, status, what, setting, PRIVATE_MODE)
    return folder


def is_private_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` (not followed if a link) is a real folder private to this user."""
    try:
        return problem_with(os.lstat(folder)) is None
    except OSError:
        return False


def open_no_follow(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """`os.open` that never follows a symbolic link at the last component: a link raises `OSError(ELOOP)`."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), mode)


def is_link_error(error: OSError) -> bool:
    """Whether an `OSError` from `open_no_follow` means the path was a symbolic link."""
    return error.errno in (errno.ELOOP, errno.EMLINK)


# --- folders the library makes outside the cache (working folders, the emulator's logs) ----------------------------
#
# Files written in a folder another local user can write to (or owns) can be swapped by that user between being
# written and being read back, for example between an asset writing a working file and the upload of it. So such a
# folder is created with mode 0o700, and one that already exists is used only if it is a real directory (not a
# symbolic link) owned by the current user and closed to group and others. A folder of ours that others may read but
# not write (as made with a usual umask by older versions) is closed (`chmod 0o700`); one that another user owns or may
# write to is refused with `UnsafeFolderError`, since its content can no longer be trusted. On systems without POSIX
# ownership (Windows) these folders are created as usual and not checked.

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
    except OSError:
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


__all__ = [
    "CACHE_DIR_VARIABLE",
    "PRIVATE_MODE",
    "cache_root",
    "check_private_folder",
    "is_link_error",
    "is_private_folder",
    "make_private_folder",
    "open_no_follow",
    "private_folder",
    "problem_with",
    "user_suffix",
]
