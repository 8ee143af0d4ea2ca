"""The example as a `dg` project (example_dg_project/): the same pipeline as example_project, with its wiring declared
in `defs.yaml`. It loads through `dg check defs`, wires exactly what the Python definitions wire, and its YAML jobs
run against the emulator."""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import dagster as dg
import pytest

from example_project import demo
from example_project.definitions import CHECKS_JOB_NAME, RETAG_JOB_NAME, build_definitions
from example_project.partitions import daily_partitions
from octue_dagster import Datafile, DatafileIOManager

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "example_dg_project"
DAY = daily_partitions.get_partition_keys()[0]


@pytest.fixture
def load_yaml_defs(monkeypatch):
    """Load the dg project's definitions for a bucket, as `dg` does (`load_from_defs_folder` over its defs/)."""
    monkeypatch.syspath_prepend(str(PROJECT / "src"))

    def load(bucket: str) -> dg.Definitions:
        monkeypatch.setenv("OCTUE_DAGSTER_BUCKET", bucket)
        return dg.load_from_defs_folder(path_within_project=PROJECT / "src" / "example_dg_project")

    return load


def _schedules(defs: dg.Definitions) -> dict[str, tuple]:
    context = dg.build_schedule_context(scheduled_execution_time=datetime.datetime(2024, 5, 1, 3))
    result = {}
    for schedule in defs.schedules or []:
        [request] = schedule.evaluate_tick(context).run_requests
        run_config = {key: value for key, value in request.run_config.items() if value}
        result[schedule.name] = (
            schedule.cron_schedule, schedule.execution_timezone, schedule.default_status, run_config
        )
    return result


def _checks(defs: dg.Definitions) -> dict[dg.AssetCheckKey, tuple]:
    """Each asset check with what it requires (its description names the labels and tags) and whether it blocks."""
    result = {}
    for checks in defs.asset_checks or []:
        for key in checks.check_keys:
            spec = checks.get_spec_for_check_key(key)
            result[key] = (spec.description, spec.blocking)
    return result


def test_the_yaml_wiring_matches_the_python_wiring(load_yaml_defs) -> None:
    python = build_definitions("wiring-bucket")
    yaml = load_yaml_defs("wiring-bucket")

    assert set(yaml.resolve_all_asset_keys()) == set(python.resolve_all_asset_keys())
    python_jobs = {job.name for job in python.jobs}
    assert python_jobs == {RETAG_JOB_NAME, "storage_retention", CHECKS_JOB_NAME}
    assert python_jobs < {job.name for job in yaml.jobs}
    assert _schedules(yaml) == _schedules(python)
    assert _checks(yaml) == _checks(python)
    python_checks_job, yaml_checks_job = python.resolve_job_def(CHECKS_JOB_NAME), yaml.resolve_job_def(CHECKS_JOB_NAME)
    assert yaml_checks_job.description == python_checks_job.description
    # The checks job runs the stored-object checks (Dagster's schema-change checks run with materializations only).
    job_checks = python_checks_job.asset_layer.asset_graph.asset_check_keys
    assert yaml_checks_job.asset_layer.asset_graph.asset_check_keys == job_checks
    assert job_checks == {key for key in _checks(python) if key.name != "column_schema_change"}

    [python_sensor], [yaml_sensor] = python.sensors, yaml.sensors
    assert yaml_sensor.name == python_sensor.name == "external_files_sensor"
    assert yaml_sensor.minimum_interval_seconds == python_sensor.minimum_interval_seconds
    python_targets = python_sensor.asset_selection.resolve(python.resolve_asset_graph())
    yaml_job = yaml.resolve_job_def(yaml_sensor.job_name)
    assert set(yaml_job.asset_layer.asset_graph.get_all_asset_keys() & python_targets) == python_targets

    io_manager = yaml.resources["io_manager"]
    assert isinstance(io_manager, DatafileIOManager)
    assert (io_manager.bucket, io_manager.prefix) == ("wiring-bucket", "dagster")
    assert {"gcs", "datafiles", "settings", "io_manager"} <= set(yaml.resources)
    assert yaml.resources["settings"].bucket == "wiring-bucket"


def test_the_yaml_wired_jobs_run_against_the_emulator(load_yaml_defs, bucket: str) -> None:
    demo.seed(bucket)
    defs = load_yaml_defs(bucket)
    instance = dg.DagsterInstance.ephemeral()
    materialized = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key=DAY,
        asset_selection=[dg.AssetKey("raw_readings"), dg.AssetKey("cleaned_readings")],
        instance=instance,
    )
    assert materialized.success
    raw = f"gs://{bucket}/dagster/raw_readings/partition={DAY}/raw_readings.csv"
    cleaned = f"gs://{bucket}/dagster/cleaned_readings/partition={DAY}/cleaned_readings.csv"
    generation = Datafile(cleaned).generation

    assert defs.resolve_job_def(RETAG_JOB_NAME).execute_in_process(instance=instance).success
    checked = Datafile(cleaned)
    assert "quality-checked" in checked.labels and checked.tags["qa_rules"].startswith("status-ok")
    assert checked.generation == generation  # a metadata patch: content untouched
    assert "quality-checked" not in Datafile(raw).labels

    checks_run = defs.resolve_job_def(CHECKS_JOB_NAME).execute_in_process(instance=instance, raise_on_error=False)
    evaluations = {
        (evaluation.asset_key.to_user_string(), evaluation.check_name): evaluation
        for evaluation in checks_run.get_asset_check_evaluations()
    }
    for asset in ("raw_readings", "cleaned_readings"):
        for check in ("stored_object_intact", "required_labels_and_tags"):
            assert evaluations[(asset, check)].passed, evaluations[(asset, check)].description
    assert not evaluations[("turbine_summary", "stored_object_intact")].passed  # not materialized yet

    retention = defs.resolve_job_def("storage_retention").execute_in_process(instance=instance)
    [event] = [event for event in retention.all_events if event.is_successful_output]
    counts = {key: value.value for key, value in event.event_specific_data.metadata.items()}
    assert counts["dry_run"] is True and counts["deleted"] == 0  # launched by hand: a dry run


def test_dg_check_defs_loads_the_example(emulator, tmp_path: Path) -> None:
    """What `make dev` starts with: `dg` finds the project, validates every defs.yaml and loads the definitions."""
    environment = dict(os.environ)
    environment.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(PROJECT / "src")]),
            "DAGSTER_HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
            "STORAGE_EMULATOR_HOST": emulator.url,
            "NO_COLOR": "1",
        }
    )
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), "check", "defs"],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "All component YAML validated successfully" in output
    assert "All definitions loaded successfully" in output


REPOSITORY_QUERY = """
query {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { location { name } jobs { name } schedules { name } sensors { name } }
    }
  }
}
"""


def test_dg_dev_serves_the_example(emulator, bucket: str, tmp_path: Path) -> None:
    """What `make dev` runs: `dg dev` in the project starts the webserver and daemon, which load the YAML wiring."""
    from test_ui import LOCATION_QUERY, _graphql, dg_dev

    demo.seed(bucket)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg_dev(emulator.url, bucket, home, tmp_path) as (url, process, log):
        started = time.monotonic()
        while True:  # dg checks every defs.yaml first, then starts the webserver, the daemon and the code server
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(urllib.error.URLError, ConnectionError, OSError, TimeoutError):
                entries = _graphql(url, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
                if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                    break
            assert time.monotonic() - started < 300, f"dg dev did not load the project:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        [repository] = _graphql(url, REPOSITORY_QUERY)["repositoriesOrError"]["nodes"]
        assert repository["location"]["name"] == "example_dg_project"
        assert {job["name"] for job in repository["jobs"]} >= {
            RETAG_JOB_NAME, "storage_retention", "refresh_from_external_files", CHECKS_JOB_NAME
        }
        schedules = {schedule["name"] for schedule in repository["schedules"]}
        assert schedules == {f"{RETAG_JOB_NAME}_schedule", "storage_retention_schedule", f"{CHECKS_JOB_NAME}_schedule"}
        assert [s["name"] for s in repository["sensors"]] == ["external_files_sensor"]
