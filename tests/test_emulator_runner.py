"""`python -m octue_dagster.testing.emulator` (what `make demo` and `make dev` run) starts an emulator with the
buckets asked for, runs the command against it, and passes its exit status on."""

from __future__ import annotations

import os
import subprocess
import sys

from octue_dagster.testing.emulator import EMULATOR_VARIABLE, REAL_GCS_VARIABLE

CHECK = (
    "import os, sys; from octue_dagster import Store; "
    "store = Store(); "
    "sys.exit(0 if os.environ['STORAGE_EMULATOR_HOST'].startswith('http://127.0.0.1:') "
    "and store.bucket_exists('runner-bucket') and not store.bucket_exists('other-bucket') else 3)"
)


def _run(*command: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in {EMULATOR_VARIABLE, REAL_GCS_VARIABLE}}
    return subprocess.run(
        [sys.executable, "-m", "octue_dagster.testing.emulator", "--bucket", "runner-bucket", "--", *command],
        env=environment, capture_output=True, text=True, timeout=120,
    )


def test_runner_creates_buckets_and_points_the_command_at_a_fresh_emulator():
    result = _run(sys.executable, "-c", CHECK)
    assert result.returncode == 0, result.stderr


def test_runner_passes_the_commands_exit_status_on():
    assert _run(sys.executable, "-c", "import sys; sys.exit(7)").returncode == 7


def test_the_default_log_goes_to_a_private_folder_and_a_planted_link_is_refused(test_temp_folder):
    import stat
    import tempfile

    from octue_dagster.testing.emulator import default_log_folder

    # The runner inherits this test's temporary directory (conftest points TMPDIR at it).
    assert tempfile.gettempdir() == str(test_temp_folder)
    folder = default_log_folder()
    assert folder.parent == test_temp_folder
    assert _run(sys.executable, "-c", "pass").returncode == 0
    assert stat.S_IMODE(folder.lstat().st_mode) == 0o700 and list(folder.glob("fake-gcs-*.log"))

    # Another user's link where the folder would be: the log is not written through it.
    folder.rename(test_temp_folder / "moved")
    elsewhere = test_temp_folder / "victims-files"
    elsewhere.mkdir()
    folder.symlink_to(elsewhere)
    result = _run(sys.executable, "-c", "pass")
    assert result.returncode != 0 and "symbolic link" in result.stderr
    assert list(elsewhere.iterdir()) == []
