"""A new user's `dg` project, end to end through the real `dg` CLI: a project laid out as `create-dagster` lays one
out, whose `defs.yaml` declares `DatafileIOManagerComponent`, `DatafileResourceComponent` and a `RetagComponent` (no
Python beyond the generated `definitions.py`). `dg list components` shows the library's components, `dg check defs`
passes (and names the field of a bad attribute), and `dg launch --job` of the YAML re-tag job labels the objects in the
emulator.

`dg` runs in this environment (as after `uv sync`): the temporary project is put on `PYTHONPATH` as if installed, and
the components come from the installed `octue-dagster` distribution's `dagster_dg_cli.registry_modules` entry point.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from octue_dagster import Datafile

ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")
OUR_COMPONENTS = {
    "octue_dagster.DatafileIOManagerComponent",
    "octue_dagster.DatafileResourceComponent",
    "octue_dagster.ExternalDatafilesComponent",
    "octue_dagster.RetagComponent",
    "octue_dagster.RetentionComponent",
}

PYPROJECT = """\
[project]
name = "yaml-only"
requires-python = ">=3.11"
version = "0.1.0"
dependencies = ["octue-dagster"]

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "yaml_only"
registry_modules = ["yaml_only.components.*"]
"""

DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs():
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""

STORAGE = """\
type: octue_dagster.DatafileIOManagerComponent
attributes:
  bucket: "{{ env('E2E_BUCKET') }}"
  prefix: dagster
---
type: octue_dagster.DatafileResourceComponent
attributes:
  concurrency: 8
"""

RETAG = """\
type: octue_dagster.RetagComponent
attributes:
  job_name: mark_reviewed
  prefix: "gs://{{ env('E2E_BUCKET') }}/raw/"
  labels: [raw]
  name_glob: "*.csv"
  add_labels: [reviewed]
  set_tags: {reviewer: dg}
  cron_schedule: "0 3 * * *"
"""

BAD_RETAG = """\
type: octue_dagster.RetagComponent
attributes:
  job_name: mark_reviewed
  prefix: s3://my-bucket/raw/
  labels: [Raw_Data]
  add_labels: [reviewed]
  cron_schedule: "every night"
"""


def make_project(folder: Path, retag: str = RETAG) -> Path:
    """A project as `create-dagster project` lays it out, with components declared in `defs.yaml` only."""
    package = folder / "src" / "yaml_only"
    (package / "defs" / "storage").mkdir(parents=True)
    (package / "defs" / "maintenance").mkdir()
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    (package / "defs" / "__init__.py").write_text("")
    (package / "defs" / "storage" / "defs.yaml").write_text(STORAGE)
    (package / "defs" / "maintenance" / "defs.yaml").write_text(retag)
    return folder


def dg(project: Path, *arguments: str, bucket: str, emulator_url: str, check: bool = True) -> str:
    home = project / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    temporary = project / "tmp"
    temporary.mkdir(exist_ok=True)
    environment = dict(os.environ)
    environment.update(
        {
            # This checkout first (its octue_dagster), then the project, as if both were installed.
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(project / "src")]),
            "DAGSTER_HOME": str(home),
            "TMPDIR": str(temporary),  # dg writes a temporary workspace file
            "STORAGE_EMULATOR_HOST": emulator_url,
            "E2E_BUCKET": bucket,
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    result = subprocess.run(
        [str(DG), *arguments], cwd=project, env=environment, capture_output=True, text=True, timeout=180
    )
    output = result.stdout + result.stderr
    if check:
        assert result.returncode == 0, output
    else:
        assert result.returncode != 0, output
    return output


@pytest.fixture(scope="module")
def dg_ready() -> None:
    assert DG.exists(), f"{DG} is missing: install the dev extra (dagster-dg-cli)."
    entry_points = importlib.metadata.entry_points(group="dagster_dg_cli.registry_modules")
    assert "octue_dagster" in {entry.value for entry in entry_points}, (
        "octue-dagster's dagster_dg_cli.registry_modules entry point is not installed in this environment: entry "
        "points are registered at install time, so reinstall with `pip install -e .` (make test does)."
    )


def test_a_yaml_only_dg_project_lists_checks_and_launches_the_retag_job(
    dg_ready, tmp_path: Path, bucket: str, emulator
) -> None:
    project = make_project(tmp_path / "yaml-only")
    for name, labels in [("a.csv", {"raw"}), ("b.csv", {"raw", "draft"}), ("c.txt", {"raw"}), ("d.csv", {"other"})]:
        local = tmp_path / "uploads" / name
        local.parent.mkdir(exist_ok=True)
        local.write_text(f"{name}\n")
        Datafile(local, labels=labels, ignore_stored_metadata=True).upload(f"gs://{bucket}/raw/{name}")

    listed = json.loads(dg(project, "list", "components", "--json", bucket=bucket, emulator_url=emulator.url))
    keys = {item["key"] for item in listed["items"]}
    assert OUR_COMPONENTS <= keys
    assert "dagster_gcp.components.GCSResourceComponent" in keys  # beside dagster-gcp's, as the issue found them

    checked = dg(project, "check", "defs", bucket=bucket, emulator_url=emulator.url)
    assert "All definitions loaded successfully" in checked

    in_process = json.dumps({"execution": {"config": {"in_process": {}}}})  # one process: quicker to start
    launch = ["launch", "--job", "mark_reviewed", "--config-json", in_process]
    launched = dg(project, *launch, bucket=bucket, emulator_url=emulator.url)
    assert 'Finished execution of run for "mark_reviewed"' in launched or "RUN_SUCCESS" in launched, launched
    after = {name: Datafile(f"gs://{bucket}/raw/{name}") for name in ("a.csv", "b.csv", "c.txt", "d.csv")}
    assert set(after["a.csv"].labels) == {"raw", "reviewed"} and after["a.csv"].tags == {"reviewer": "dg"}
    assert set(after["b.csv"].labels) == {"raw", "draft", "reviewed"}
    assert set(after["c.txt"].labels) == {"raw"} and after["c.txt"].tags == {}  # not *.csv
    assert set(after["d.csv"].labels) == {"other"}  # not labelled raw


def test_dg_check_defs_names_each_bad_attribute(dg_ready, tmp_path: Path, bucket: str, emulator) -> None:
    project = make_project(tmp_path / "bad", retag=BAD_RETAG)
    output = dg(project, "check", "defs", bucket=bucket, emulator_url=emulator.url, check=False)
    assert "attributes.prefix" in output and "'s3://my-bucket/raw/' is not a Google Cloud Storage path" in output
    assert "attributes.labels" in output and "Invalid label 'Raw_Data'" in output
    assert "attributes.cron_schedule" in output and "'every night' is not a cron string" in output
    assert "maintenance/defs.yaml:4" in output  # the line of the bad prefix
