"""Atomic replacement of local files: write beside the target under a temporary name, then rename over it.

A reader, or a process killed half way, sees either the old file or the new one. Temporary names carry the writer's
process id, so that leftovers from a killed process are recognised and removed by the next writer in that folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from octue_dagster.exceptions import DatafileExistsError

_SUFFIX = ".octue-tmp"
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}" + re.escape(_SUFFIX) + r"$")


def temporary_path_for(target: str | os.PathLike[str]) -> Path:
    """A fresh hidden temporary path in the same folder as `target` (so that renaming it over `target` is atomic)."""
    target = Path(target)
    return target.with_name(f".{target.name[:100]}.{os.getpid()}.{secrets.token_hex(4)}{_SUFFIX}")


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Say whether `path` is one of this library's temporary files."""
    return bool(_TEMPORARY.match(Path(path).name))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files in `folder` left by processes that no longer run; return what was removed."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _TEMPORARY.match(entry.name)
            if match and not _process_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def check_file_target(target: str | os.PathLike[str]) -> None:
    """Refuse a target that cannot become a file: an existing folder, or a path under an existing file (giving a
    folder to `download()` is a common slip; the builtin errors would come only after the transfer)."""
    target = Path(target)
    if target.is_dir():
        raise DatafileExistsError(
            f"{str(target)!r} is a folder, so no file can be written there: give the path of a file in it "
            f"(such as {str(target / 'name.ext')!r})."
        )
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DatafileExistsError(
                    f"{str(parent)!r} is a file, so {str(target)!r} cannot be written under it: choose another path."
                )
            return


@contextlib.contextmanager
def atomic_replace(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `target` atomically, on error it is removed."""
    target = Path(target)
    check_file_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(target.parent)
    temporary = temporary_path_for(target)
    try:
        yield temporary
        if temporary.exists():
            with open(temporary, "rb") as file:
                os.fsync(file.fileno())
            os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
