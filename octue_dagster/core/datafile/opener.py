"""`DatafileOpener`: what `Datafile.open` returns, a context manager with the builtin `open`'s modes.

Reads open the local copy. Writes go to a temporary file beside the target; when the block ends normally the
datafile commits it (upload first for cloud files, then an atomic rename), and if the block raises, the temporary
file is discarded and nothing changes. The opener knows nothing of GCS: the datafile hands it what it needs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from octue_dagster.core.local.atomic import sweep_stale_temporaries, temporary_path_for
from octue_dagster.exceptions import (
    DatafileExistsError,
    DatafileNotFoundError,
    InvalidInputError,
    MissingDependencyError,
)

_VALID_MODES = {"r", "w", "a", "x", "r+", "w+", "a+", "x+"}
_HDF5_MODES = {"r": "r", "r+": "r+", "w": "w", "w+": "w", "a": "a", "a+": "a", "x": "w-", "x+": "w-"}


def parse_mode(mode: str) -> tuple[str, bool]:
    """Split an `open` mode into its base (`r`, `w+`, ...) and whether it is binary; reject anything else."""
    if not isinstance(mode, str):
        raise InvalidInputError(f"The file mode must be a string such as 'r' or 'wb'; got {mode!r}.")
    binary = "b" in mode
    base = mode.replace("b", "").replace("t", "")
    if base not in _VALID_MODES or mode.count("b") + mode.count("t") > 1 or ("b" in mode and "t" in mode):
        raise InvalidInputError(
            f"Invalid file mode {mode!r}: use one of r, w, a, x, optionally with '+' and 'b' or 't' (as with open())."
        )
    return base, binary


class DatafileOpener:
    """The context manager returned by `Datafile.open`.

    `open_content(hold, open_file)` calls `open_file` on the path of the current content (downloading it if
    needed), kept from eviction until the `hold` stack closes; `target` is where new content goes, `commit(temporary)` makes a fully written temporary file the datafile's content, and `after_read()`
    persists metadata changes made while the file was open for reading.
    """

    def __init__(
        self,
        mode: str,
        kwargs: dict[str, Any],
        *,
        name: str,
        hdf5: bool,
        exists: bool,
        open_content: Callable[[contextlib.ExitStack, Callable[[Path], Any]], Any],
        target: Path,
        commit: Callable[[Path], None],
        after_read: Callable[[], None],
    ) -> None:
        self.mode = mode
        self.base, self.binary = parse_mode(mode)
        self.kwargs = kwargs
        self.name, self.hdf5, self.exists = name, hdf5, exists
        self._open_content, self._target, self._commit, self._after_read = open_content, target, commit, after_read
        self.file: Any = None
        self.temporary: Path | None = None
        self._holds = contextlib.ExitStack()

    def _open(self, path: Path, mode: str) -> Any:
        if self.hdf5:
            try:
                importlib.metadata.version("h5py")  # as Octue's SDK checks it: an installed distribution
                import h5py
            except (ImportError, importlib.metadata.PackageNotFoundError):
                raise MissingDependencyError(
                    f"Opening {self.name} needs h5py: pip install 'octue-dagster[hdf5]'."
                ) from None
            return h5py.File(path, _HDF5_MODES[self.base], **self.kwargs)
        return open(path, mode, **self.kwargs)

    def __enter__(self) -> IO[Any]:
        if self.base == "r":
            self._require_existing()
            with contextlib.ExitStack() as hold:
                self.file = self._open_content(hold, lambda path: self._open(path, self.mode))
                self._holds = hold.pop_all()  # released when the file is closed
            return self.file

        if self.base.startswith("x") and self.exists:
            raise DatafileExistsError(f"{self.name} already exists; mode {self.mode!r} only creates new files.")
        self._target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temporaries(self._target.parent)
        self.temporary = temporary_path_for(self._target)
        try:
            if self.base.startswith("a") or self.base == "r+":
                if self.base == "r+":
                    self._require_existing()
                if self.exists:
                    with contextlib.ExitStack() as hold:
                        self._open_content(hold, lambda path: shutil.copyfile(path, self.temporary))
            mode = self.mode.replace("x", "w")
            if self.base == "r+" and not self.temporary.exists():
                mode = mode.replace("r", "w")
            self.file = self._open(self.temporary, mode)
        except BaseException:
            self._discard()
            raise
        return self.file

    def _require_existing(self) -> None:
        if not self.exists:
            raise DatafileNotFoundError(f"{self.name} does not exist, so it cannot be opened with mode {self.mode!r}.")

    def _discard(self) -> None:
        if self.temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temporary)

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        try:
            with self._holds:
                if self.file is not None:
                    self.file.close()
        except BaseException:
            self._discard()
            raise
        if exc_type is not None:
            self._discard()
            return
        try:
            if self.temporary is not None:
                self._commit(self.temporary)
            else:
                self._after_read()
        finally:
            self._discard()

    def __iter__(self) -> Iterator[Any]:  # pragma: no cover - guidance for a common mistake
        raise TypeError("Use Datafile.open() in a `with` block: `with datafile.open() as f: ...`.")


__all__ = ["DatafileOpener", "parse_mode"]
