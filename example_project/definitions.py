"""The example's Dagster definitions, loaded by `workspace.yaml` and by the `dagster` CLI (`-m example_project.definitions`).

Every asset's file goes to `gs://{bucket}/dagster/{asset key}/{partition folder}/` through `DatafileIOManager` (see the
README's "Where files go"); a nightly retention job (a dry run until its schedule is turned on) removes op outputs of
old runs and superseded objects the I/O manager wrote. The bucket comes from
`OCTUE_DAGSTER_BUCKET` (default `octue-dagster-demo`). GCS is the emulator when `STORAGE_EMULATOR_HOST` is set
(`make demo`, `make dev`), else real GCS with default credentials.
"""

import dagster as dg
from dagster_gcp import GCSResource

from example_project import config
from example_project.assets import cleaned_readings, raw_readings, turbine_files, turbine_summary
from example_project.sources import build_external_files_sensor, build_site_metadata
from octue_dagster import (
    DatafileIOManager,
    DatafileResource,
    build_datafile_asset_checks,
    build_retag_job,
    build_retag_schedule,
    build_retention_job,
    build_retention_schedule,
)

RETAG_JOB_NAME = config.RETAG_JOB_NAME
CHECKS_JOB_NAME = config.CHECKS_JOB_NAME


def build_retag(bucket: str) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """A nightly job that marks every cleaned readings file as quality-checked (a metadata patch; no content moves)."""
    retag_job = build_retag_job(
        RETAG_JOB_NAME,
        f"gs://{bucket}/{config.PREFIX}/cleaned_readings/",
        labels=["cleaned"],
        add_labels=["quality-checked"],
        set_tags={"qa_rules": "status-ok,power-in-range,wind-non-negative"},
        description="Mark cleaned turbine readings as quality-checked.",
    )
    return retag_job, build_retag_schedule(retag_job, "0 3 * * *")


def build_checks() -> tuple[list[dg.AssetChecksDefinition], dg.JobDefinition, dg.ScheduleDefinition]:
    """Checks that each asset's objects in GCS are still what Dagster recorded (not overwritten, deleted or restored
    behind its back) and carry their labels and tags; they run after each materialization and nightly."""
    checks = [
        *build_datafile_asset_checks(
            [raw_readings, cleaned_readings], required_labels=["turbine-readings"], required_tags=["day"]
        ),
        *build_datafile_asset_checks([turbine_files], required_labels=["turbine-readings"], required_tags=["turbine"]),
        *build_datafile_asset_checks([turbine_summary], required_labels=["turbine-summary"]),
    ]
    job = dg.define_asset_job(
        CHECKS_JOB_NAME,
        selection=dg.AssetSelection.checks(*checks),
        description="Check every stored object against its latest materialization (metadata only; no download).",
    )
    return checks, job, dg.ScheduleDefinition(job=job, cron_schedule="30 4 * * *", execution_timezone="UTC")


def build_definitions(bucket: str, executor: dg.ExecutorDefinition | None = None) -> dg.Definitions:
    """The pipeline's definitions for one bucket (tests build them for a throwaway bucket).

    `executor` runs the steps elsewhere (default: Dagster's multiprocess executor), for example
    `dagster_dask.dask_executor` or `dagster_k8s.k8s_job_executor`: every input and output goes through GCS, so steps
    need no shared disk.
    """
    gcs = GCSResource()
    retag_job, retag_schedule = build_retag(bucket)
    retention_job = build_retention_job("storage_retention", bucket=bucket, prefix=config.PREFIX, older_than_days=30)
    checks, checks_job, checks_schedule = build_checks()
    return dg.Definitions(
        assets=[build_site_metadata(bucket), raw_readings, cleaned_readings, turbine_files, turbine_summary],
        asset_checks=checks,
        jobs=[retag_job, retention_job, checks_job],
        schedules=[retag_schedule, build_retention_schedule(retention_job, "0 4 * * *"), checks_schedule],
        sensors=[build_external_files_sensor(bucket)],
        resources={
            "gcs": gcs,
            "io_manager": DatafileIOManager(bucket=bucket, prefix=config.PREFIX, gcs=gcs),
            "datafiles": DatafileResource(gcs=gcs),
            "settings": config.PipelineSettings(bucket=bucket),
        },
        executor=executor,
    )


defs = build_definitions(config.bucket())
