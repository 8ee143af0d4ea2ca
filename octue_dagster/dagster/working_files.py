"""Working folders for new local datafiles: one per step attempt, created and removed by the process that uses it.

A run's steps may run at once in separate processes (Dagster's default multiprocess executor), be retried (a
`RetryPolicy`) or re-executed, and two assets may both call `datafiles.new("data.csv")`. So each step attempt gets
its own folder, `{base}/{run id}/{step key}/attempt-{n}/`, found from the step that is running
(`OpExecutionContext.get()`), and each `WorkingFolders` removes only the folders it created itself, once their step
is over and its outputs stored: when its process starts the next step, or when the resource is torn down (at the
end of the step's own process under the multiprocess executor). Another step's folder, and the run's folder while
other steps use it, are never touched.

Every one of these folders is private to the user running the step (see `octue_dagster.core.local.folders`):
created with mode 0o700, and refused (`UnsafeFolderError`) if another user made it first, since that user could swap
a working file between the asset writing it and its upload. The default base is per user,
`{temporary directory}/octue-dagster-{uid}`; a `working_dir` given by the user must be theirs and not writable by
others (its mode is left as it is).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from dagster import DagsterInvariantViolationError, OpExecutionContext

from octue_dagster.core.local.folders import make_private_folder, user_suffix
from octue_dagster.dagster.addresses import encode_segment

#: Outside a step (a sensor, a schedule, direct invocation), new files go to a folder of the resource instance.
OUTSIDE_STEPS = "outside-steps"


def current_step() -> tuple[str, str, int] | None:
    """(run id, step key, attempt number) of the step running in this thread, or `None` outside a step."""
    try:
        context = OpExecutionContext.get()
    except DagsterInvariantViolationError:
        return None
    step = context.get_step_execution_context().step
    return context.run_id, step.key, context.retry_number


class WorkingFolders:
    """The step-attempt working folders one resource instance has created under `base` (see the module docstring).

    With `keep=False`, a step attempt's folder goes as soon as that step is over: when the same process starts
    another step (Dagster runs one step at a time per process: the in-process executor one after another, the
    multiprocess executor one per process), or when the resource is torn down, whichever comes first.
    """

    def __init__(self, base: Path, *, keep: bool = False, chosen: bool = True) -> None:
        # A folder the user chose may be reached through symbolic links they made; the default one may not.
        self.base = Path(os.path.realpath(base)) if chosen else base
        self.keep = keep
        self.chosen = chosen
        self._created: dict[tuple[str, str, int] | None, Path] = {}

    def folder_for_current_step(self) -> Path:
        """This step attempt's folder (created on first use)."""
        step = current_step()
        folder = self._created.get(step)
        if folder is None:
            if step is None:
                folder = self.base / OUTSIDE_STEPS / uuid.uuid4().hex
            else:
                # Earlier steps of this process are over, and their outputs stored: their files are not needed.
                self._remove([earlier for earlier in self._created if earlier is not None])
                run_id, step_key, attempt = step
                folder = self.base / encode_segment(run_id) / encode_segment(step_key) / f"attempt-{attempt}"
            self._make_folder(folder)
            self._created[step] = folder
        return folder

    def remove_all(self) -> None:
        """Remove every folder this instance created (unless `keep`), and their parents if that left them empty."""
        self._remove(list(self._created))

    def _make_folder(self, folder: Path, attempts: int = 5) -> None:
        """Create `folder` and the folders between it and the base, each private to this user (see the module
        docstring); another process removing an emptied parent at that moment is retried."""
        levels = [folder, *(parent for parent in folder.parents if self.base in parent.parents)]
        for attempt in range(attempts):
            try:
                if not self.chosen:
                    make_private_folder(self.base)
                else:
                    self.base.parent.mkdir(parents=True, exist_ok=True)
                    make_private_folder(self.base, fix_mode=False)
                for level in reversed(levels):
                    make_private_folder(level)
                return
            except FileNotFoundError:
                if attempt == attempts - 1:
                    raise

    def _remove(self, steps: list[tuple[str, str, int] | None]) -> None:
        if self.keep:
            return
        for step in steps:
            folder = self._created.pop(step)
            shutil.rmtree(folder, ignore_errors=True)
            for parent in folder.parents:
                if parent == self.base or self.base not in parent.parents:
                    break
                with contextlib.suppress(OSError):  # not empty: another step's folder is still in it
                    parent.rmdir()


def default_base() -> Path:
    """Where working folders go unless `working_dir` is set: this user's folder under the system's temporary
    directory (private to them; see the module docstring)."""
    return Path(tempfile.gettempdir()) / f"octue-dagster-{user_suffix()}"


__all__ = ["OUTSIDE_STEPS", "WorkingFolders", "current_step", "default_base"]
