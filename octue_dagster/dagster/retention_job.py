"""A job (and schedule) that removes what the I/O manager stored and nothing refers to any more (see `retention`).

It runs as a dry run unless told otherwise, so the first run only counts; its counts are the op's output metadata.
"""


import datetime
import math
from typing import Any

from dagster import Config, JobDefinition, MetadataValue, OpExecutionContext, RunConfig, ScheduleDefinition
from pydantic import Field

from octue_dagster.core.storage.gcs_path import validate_bucket_name
from octue_dagster.dagster import addresses
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.dagster.retag_job import build_one_op_job, build_retag_schedule, counts_metadata
from octue_dagster.dagster.retention import RetentionPass
from octue_dagster.exceptions import InvalidInputError


#: The largest age threshold: 100 years. The cutoff (`now - older_than_days`) must be a date; to never remove
#: anything, do not schedule the job.
MAX_OLDER_THAN_DAYS = 36525


def validate_older_than_days(days: Any) -> float:
    """`days` as a float if it is a number from 0 to `MAX_OLDER_THAN_DAYS`, else `InvalidInputError` saying so."""
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not math.isfinite(days):
        raise InvalidInputError(f"older_than_days must be a number of days such as 30; got {days!r}.")
    if not 0 <= days <= MAX_OLDER_THAN_DAYS:
        raise InvalidInputError(
            f"older_than_days must be from 0 to {MAX_OLDER_THAN_DAYS} (100 years); got {days!r}. To never remove "
            f"anything, do not schedule the retention job."
        )
    return float(days)


class RetentionConfig(Config):
    """Launch-time options for a retention run."""

    dry_run: bool = Field(default=True, description="Only count what would be removed (the default).")
    older_than_days: float | None = Field(default=None, description="Override the job's age threshold, in days.")


def build_retention_job(
    name: str,
    *,
    bucket: str,
    prefix: str = "dagster",
    older_than_days: float = 30,
    resource_key: str = "datafiles",
    description: str | None = None,
) -> JobDefinition:
    """A job that removes, under `gs://{bucket}/{prefix}/` (the `DatafileIOManager`'s bucket and prefix), op outputs
    of runs that finished more than `older_than_days` ago and asset objects that no current materialization points
    to. It never removes an object the I/O manager did not write. It needs a `DatafileResource` under `resource_key`
    and, like every run, a Dagster instance: the one whose runs and materializations it consults.

    Runs are dry runs unless the run config says `{"ops": {"<name>_op": {"config": {"dry_run": false}}}}`.

    Example::

        cleanup = build_retention_job("storage_retention", bucket="my-bucket", prefix="dagster", older_than_days=30)
        nightly = build_retention_schedule(cleanup, "0 4 * * *")   # runs with dry_run=False
    """
    validate_bucket_name(bucket)
    addresses.validate_prefix(prefix)
    validate_older_than_days(older_than_days)

    def retain(context: OpExecutionContext, datafiles: DatafileResource, config: RetentionConfig) -> dict[str, Any]:
        days = validate_older_than_days(older_than_days if config.older_than_days is None else config.older_than_days)
        retention = RetentionPass(
            datafiles.store, context.instance, bucket=bucket, prefix=prefix, older_than=datetime.timedelta(days=days)
        )
        counts = retention.run(dry_run=config.dry_run, log=context.log)
        context.log.info(f"Retention under gs://{bucket}/{prefix} (dry run: {config.dry_run}): {counts.as_dict()}")
        metadata = counts_metadata(counts.as_dict(), dry_run=config.dry_run)
        metadata["older_than_days"] = MetadataValue.float(float(days))
        return metadata

    return build_one_op_job(
        name,
        retain,
        RetentionConfig,
        resource_key=resource_key,
        op_description=f"Removes unreferenced I/O manager objects under gs://{bucket}/{prefix}.",
        job_description=description or f"Remove unreferenced I/O manager objects under gs://{bucket}/{prefix}.",
    )


def build_retention_schedule(job_def: JobDefinition, cron_schedule: str, **options: Any) -> ScheduleDefinition:
    """A schedule that runs a retention job on `cron_schedule` for real (`dry_run=False`); stopped until turned on.

    `options` are those of `build_retag_schedule` (`name`, `execution_timezone`, `default_status`).
    """
    run_config = RunConfig(ops={f"{job_def.name}_op": RetentionConfig(dry_run=False)})
    return build_retag_schedule(job_def, cron_schedule, run_config=run_config, **options)

__all__ = [
    "MAX_OLDER_THAN_DAYS",
    "RetentionConfig",
    "build_retention_job",
    "build_retention_schedule",
    "validate_older_than_days",
]
