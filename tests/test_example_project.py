"""The example project: its definitions load through the Dagster CLI, and the whole pipeline runs against the emulator
with the outputs, metadata and data versions it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster_gcp import GCSResource

from example_project import demo, readings
from example_project.definitions import CHECKS_JOB_NAME, RETAG_JOB_NAME, build_definitions
from example_project.partitions import daily_partitions
from octue_dagster import Datafile, Dataset

from pipeline_checks import by_path, check_summary, rows

ROOT = Path(__file__).resolve().parents[1]
DAYS = daily_partitions.get_partition_keys()


def test_definitions_validate_through_the_cli(emulator) -> None:
    """`dagster definitions validate -w workspace.yaml` (what `make validate` runs) loads the example cleanly."""
    # No DAGSTER_HOME: validation needs no instance, and must not depend on a developer's.
    environment = {name: value for name, value in os.environ.items() if name != "DAGSTER_HOME"}
    environment["STORAGE_EMULATOR_HOST"] = emulator.url
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "example_project.definitions" in output
    assert "Validation successful" in output


def test_pipeline_materializes_every_asset_against_the_emulator(bucket: str, monkeypatch) -> None:
    monkeypatch.setenv("OCTUE_DAGSTER_BUCKET", bucket)
    site_uri = demo.seed(bucket)
    definitions = build_definitions(bucket)
    instance = dg.DagsterInstance.ephemeral()
    job = definitions.resolve_implicit_global_asset_job_def()
    for day in DAYS:
        result = job.execute_in_process(
            partition_key=day,
            asset_selection=[dg.AssetKey("raw_readings"), dg.AssetKey("cleaned_readings"), dg.AssetKey("turbine_files")],
            instance=instance,
        )
        assert result.success
    summary_run = job.execute_in_process(
        asset_selection=[dg.AssetKey("site_metadata"), dg.AssetKey("turbine_summary")], instance=instance
    )
    assert summary_run.success

    stored = by_path(bucket)
    expected = {site_uri, f"gs://{bucket}/dagster/turbine_summary/=/turbine_summary.h5"}
    expected |= {f"gs://{bucket}/dagster/raw_readings/partition={day}/raw_readings.csv" for day in DAYS}
    expected |= {f"gs://{bucket}/dagster/cleaned_readings/partition={day}/cleaned_readings.csv" for day in DAYS}
    expected |= {
        f"gs://{bucket}/dagster/turbine_files/partition={day}/{turbine}.csv" for day in DAYS for turbine in readings.TURBINES
    }
    assert set(stored) == expected

    total_cleaned = 0
    for day in DAYS:
        raw = stored[f"gs://{bucket}/dagster/raw_readings/partition={day}/raw_readings.csv"]
        cleaned = stored[f"gs://{bucket}/dagster/cleaned_readings/partition={day}/cleaned_readings.csv"]
        raw_rows, cleaned_rows = rows(raw), rows(cleaned)
        # Every turbine reports every 10 minutes; cleaning drops the bad rows and only those.
        assert len(raw_rows) == len(readings.TURBINES) * 144
        assert 0 < len(cleaned_rows) < len(raw_rows)
        assert all(readings.is_good(row) for row in cleaned_rows)
        assert len(cleaned_rows) == sum(readings.is_good(row) for row in raw_rows)
        assert raw.labels == {"turbine-readings", "raw"} and cleaned.labels == {"turbine-readings", "cleaned"}
        assert cleaned.tags["rows"] == len(cleaned_rows)
        assert cleaned.tags["dropped_rows"] == len(raw_rows) - len(cleaned_rows)
        # Provenance: the cleaned file names the raw file it came from by id and crc32c.
        assert cleaned.tags["source_id"] == raw.id and cleaned.tags["source_crc32c"] == raw.hash_value
        assert raw.timestamp.date().isoformat() == day
        total_cleaned += len(cleaned_rows)
        # The day's dataset: one file per turbine, together exactly the cleaned rows, read by Octue's rules.
        dataset = Dataset(f"gs://{bucket}/dagster/turbine_files/partition={day}")
        assert dataset.name == f"turbine-files-{day}" and dataset.tags["source_id"] == cleaned.id
        per_turbine = {file.tags["turbine"]: rows(file) for file in dataset.files}
        assert sorted(per_turbine) == sorted(readings.TURBINES)
        assert sorted(map(str, sum(per_turbine.values(), []))) == sorted(map(str, cleaned_rows))
        assert all(row["turbine_id"] == turbine for turbine, rows in per_turbine.items() for row in rows)

    check_summary(stored, bucket, site_uri, total_cleaned, instance)
    # The re-tagging job changes metadata only: same generations, new label on cleaned files alone.
    generations = {path: datafile.generation for path, datafile in by_path(bucket).items()}
    assert definitions.resolve_job_def(RETAG_JOB_NAME).execute_in_process(instance=instance).success
    after = by_path(bucket)
    assert {path: datafile.generation for path, datafile in after.items()} == generations
    for path, datafile in after.items():
        assert ("quality-checked" in datafile.labels) == ("/cleaned_readings/" in path), path

    # The retention job's first run is a dry run: it finds everything current and removes nothing.
    retention = definitions.resolve_job_def("storage_retention").execute_in_process(instance=instance)
    [event] = [e for e in retention.all_events if e.is_successful_output]
    counts = {key: value.value for key, value in event.event_specific_data.metadata.items()}
    assert counts["dry_run"] is True and counts["deleted"] == 0
    assert counts["kept"] == len(DAYS) * 2 + 1 and counts["old_op_outputs"] == counts["unreferenced_asset_objects"] == 0
    assert set(by_path(bucket)) == set(after)

    # The nightly checks job: every stored object is what Dagster recorded (re-tagging changed metadata only) ...
    checks_job = definitions.resolve_job_def(CHECKS_JOB_NAME)
    evaluations = checks_job.execute_in_process(instance=instance).get_asset_check_evaluations()
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == {
        (asset, check)
        for asset in ("raw_readings", "cleaned_readings", "turbine_files", "turbine_summary")
        for check in ("stored_object_intact", "required_labels_and_tags")
    }
    assert all(evaluation.passed for evaluation in evaluations), [e.description for e in evaluations if not e.passed]
    # ... until one day's raw file is overwritten behind Dagster's back: that asset's check fails, naming the day.
    client = GCSResource().get_client()
    client.bucket(bucket).blob(f"dagster/raw_readings/partition={DAYS[1]}/raw_readings.csv").upload_from_string(b"x")
    evaluations = checks_job.execute_in_process(instance=instance).get_asset_check_evaluations()
    failed = {(e.asset_key.to_user_string(), e.check_name): e for e in evaluations if not e.passed}
    assert set(failed) == {("raw_readings", "stored_object_intact"), ("raw_readings", "required_labels_and_tags")}
    assert failed[("raw_readings", "stored_object_intact")].metadata["failed_partitions"].value == [DAYS[1]]


def test_external_files_sensor_requests_a_summary_rebuild_only_for_new_content(bucket: str) -> None:
    site_uri = demo.seed(bucket)
    definitions = build_definitions(bucket)
    sensor = definitions.resolve_sensor_def("external_files_sensor")
    resources = {"gcs": GCSResource()}

    with dg.build_sensor_context(resources=resources, definitions=definitions) as context:
        first = sensor.evaluate_tick(context)
    # The seeded state is the baseline: no run for files that were there before the sensor first looked.
    assert not first.run_requests

    demo.seed(bucket)  # identical content: the upload is skipped, so still nothing to do
    with dg.build_sensor_context(cursor=first.cursor, resources=resources, definitions=definitions) as context:
        unchanged = sensor.evaluate_tick(context)
    assert not unchanged.run_requests

    operator_copy = Datafile(site_uri)
    with operator_copy.open("w") as file:
        json.dump({**demo.SITE_METADATA, "hub_height_m": 95}, file)
    with dg.build_sensor_context(cursor=unchanged.cursor, resources=resources, definitions=definitions) as context:
        changed = sensor.evaluate_tick(context)
    (request,) = changed.run_requests
    assert request.tags["octue/object"] == site_uri
    assert request.tags["octue/crc32c"] == operator_copy.hash_value
    assert set(sensor.asset_selection.resolve(definitions.resolve_asset_graph())) == {
        dg.AssetKey("site_metadata"),
        dg.AssetKey("turbine_summary"),
    }
