"""The suite leaves nothing in the system's temporary directory, and the package ships `py.typed`.

Each check runs pytest (or the build backend) in a subprocess with a temporary directory of its own (`TMPDIR`), so
that other processes on the machine (other test runs) cannot make it flake: only what this subprocess writes is there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from scratch import SCRATCH_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
#: A small sample of the suite that writes through every route to the temporary directory the suite has: helpers'
#: scratch folders, Dagster instances and runs (in process and in step processes), working folders with their
#: default base, the download cache, and a subprocess (the emulator runner) that logs to its default place.
SAMPLE = [
    "tests/test_emulator_runner.py::test_runner_passes_the_commands_exit_status_on",
    "tests/test_retagging.py::test_retag_job_changes_matching_objects_metadata_only_and_reports_counts",
    "tests/test_working_files.py::test_the_default_base_is_per_user_and_every_working_folder_is_private",
    "tests/test_working_files.py::test_a_retried_step_gets_a_fresh_folder_for_the_same_names",
    "tests/test_datafile_cloud.py::test_localities",
]


def _pytest(arguments: list[str], system_tmp: Path, basetemp: Path, cwd: Path, **extra: str):
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {SCRATCH_VARIABLE, "OCTUE_RELIABILITY_SUMMARY_DIR", "PYTEST_ADDOPTS"}
    }
    environment.update(TMPDIR=str(system_tmp), **extra)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}", *arguments],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=900,
    )


def _entries(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_a_sample_of_the_suite_leaves_nothing_in_its_temporary_directory(tmp_path):
    system_tmp, basetemp = tmp_path / "system-tmp", tmp_path / "basetemp"
    system_tmp.mkdir()
    result = _pytest(SAMPLE, system_tmp, basetemp, ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{len(SAMPLE)} passed" in result.stdout
    assert _entries(system_tmp) == []
    # Nor did anything reach the run's stand-in for the temporary directory outside a test (conftest checks it too).
    assert _entries(basetemp / "system-tmp") == []
    # It all went to the tests' own folders in pytest's basetemp.
    assert any(path.name.startswith("octue-dagster-") for path in basetemp.glob("tmp*/*"))


def test_a_run_that_leaves_something_in_the_temporary_directory_fails_and_names_it(tmp_path):
    # A test module that writes to "the temporary directory" when it is collected, outside any test.
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_leaky.py").write_text(
        "import pathlib, tempfile\n"
        "pathlib.Path(tempfile.gettempdir(), 'left-by-collection.txt').write_text('left')\n"
        "def test_passes():\n"
        "    assert True\n"
    )
    system_tmp, basetemp = tmp_path / "system-tmp", tmp_path / "basetemp"
    system_tmp.mkdir()
    python_path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    result = _pytest(["-p", "conftest", "test_leaky.py"], system_tmp, basetemp, project, PYTHONPATH=python_path)
    assert "1 passed" in result.stdout
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "left-by-collection.txt" in result.stdout and "outside any test" in result.stdout
    assert _entries(system_tmp) == []  # caught in pytest's basetemp, not left in the system's


def test_a_built_wheel_ships_py_typed(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "octue_dagster", source / "octue_dagster", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-c", f"import setuptools.build_meta as b; print(b.build_wheel({str(out)!r}))"],
        cwd=source, capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = out / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        record = archive.read(next(name for name in names if name.endswith(".dist-info/RECORD"))).decode()
    assert "octue_dagster/py.typed" in names and "octue_dagster/py.typed," in record
    assert "octue_dagster/core/datafile/datafile.py" in names
