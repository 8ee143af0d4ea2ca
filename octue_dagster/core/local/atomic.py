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


@contextlib.contextmanager
def atomic_replace(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `target` atomically, on error it is removed."""
    target = Path(target)
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
