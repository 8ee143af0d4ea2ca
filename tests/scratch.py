"""Scratch folders for test helpers and assets that have no `tmp_path` at hand (a helper used by many tests, an asset
body that Dagster runs, perhaps in another process).

`scratch_folder()` makes a new folder under the running test's own temporary folder, which tests/conftest.py makes
in pytest's basetemp for each test and names in `$OCTUE_TEST_SCRATCH` (inherited by the processes a test starts), so
that nothing a test writes lands in the system's temporary directory.
"""

from __future__ import annotations

import os
import tempfile

SCRATCH_VARIABLE = "OCTUE_TEST_SCRATCH"


def scratch_folder() -> str:
    """A new, empty folder under the running test's temporary folder (in pytest's basetemp)."""
    folder = os.environ.get(SCRATCH_VARIABLE)
    if not folder:
        raise RuntimeError(f"scratch_folder() is for tests: ${SCRATCH_VARIABLE} is set by tests/conftest.py per test.")
    return tempfile.mkdtemp(dir=folder)
