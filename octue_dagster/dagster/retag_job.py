"""A job (and schedule) that sets labels and tags on every object under a prefix that matches a filter.

Only metadata changes: each object gets a metadata patch, merged with concurrent writers' changes, so content is never
downloaded or re-uploaded and generations stay the same. The counts are reported as the op's output metadata.
"""

from collections.abc import Callable, Mapping
from typing import Any

from dagster import (
    Failure,
    Config,
    DefaultScheduleStatus,
    JobDefinition,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    ScheduleDefinition,
    job,
    op,
)

from octue_dagster.core.storage.gcs_path import parse_gcs_path
from octue_dagster.core.listing.selection import RetagSpec
from octue_dagster.dagster.resources import DatafileResource
from octue_dagster.exceptions import InvalidInputError


def counts_metadata(counts: Mapping[str, int], *, dry_run: bool) -> dict[str, MetadataValue]:
    """A maintenance op's counts as Dagster output metadata, with whether it was a dry run."""
    metadata: dict[str, MetadataValue] = {key: MetadataValue.int(value) for key, value in counts.items()}
    metadata["dry_run"] = MetadataValue.bool(dry_run)
    return metadata


def build_one_op_job(
    name: str,
    work: Callable[[OpExecutionContext, DatafileResource, Any], Mapping[str, MetadataValue]],
    config_class: type[Config],
    *,
    resource_key: str,
    op_description: str,
    job_description: str,
) -> JobDefinition:
    """A job of one op, `<name>_op`, that runs `work(context, datafiles, config)` with the `DatafileResource` under
    `resource_key` and its launch-time config, and reports what `work` returns as the op's output metadata."""

    @op(name=f"{name}_op", required_resource_keys={resource_key}, out=Out(Nothing), description=op_description)
    def _op(context: OpExecutionContext, config: config_class):  # type: ignore[valid-type]
        yield Output(None, metadata=dict(work(context, getattr(context.resources, resource_key), config)))

    @job(name=name, description=job_description)
    def _job():
        _op()

    return _job


class RetagConfig(Config):
    """Launch-time options for a re-tagging run."""

    dry_run: bool = False


def build_retag_job(
    name: str,
    prefix: str,
    spec: RetagSpec | None = None,
    *,
    resource_key: str = "datafiles",
    description: str | None = None,
    **fields: Any,
) -> JobDefinition:
    """A job with one op that re-tags every datafile under `gs://bucket/prefix` that `spec` selects.

    Give a `RetagSpec`, or its fields as keywords (`labels`, `tags`, `name_glob` filter; `add_labels`,
    `remove_labels`, `set_tags`, `remove_tags` change). The spec is validated here, when the job is defined. The job
    needs a `DatafileResource` under `resource_key`. Run config `{"ops": {"<name>_op": {"config": {"dry_run": true}}}}`
    counts what would change without changing anything.

    Example::

        nightly = build_retag_job(
            "mark_validated", "gs://my-bucket/readings/", labels=["cleaned"], add_labels=["validated"]
        )
        schedule = build_retag_schedule(nightly, "0 3 * * *")
    """
    location = parse_gcs_path(prefix, allow_empty_name=True)
    if spec is not None and fields:
        raise InvalidInputError("Give build_retag_job either a RetagSpec or its fields as keywords, not both.")
    spec = spec if spec is not None else RetagSpec(**fields)

    def retag(context: OpExecutionContext, datafiles: DatafileResource, config: RetagConfig) -> dict[str, Any]:
        counts = datafiles.retag(str(location), spec, dry_run=config.dry_run)
        context.log.info(f"Re-tagging {location}: {counts.as_dict()}")
        for path in counts.skipped_paths[:100]:
            context.log.warning(f"Skipped {path}: its stored metadata cannot be read.")
        metadata = counts_metadata(counts.as_dict(), dry_run=config.dry_run)
        metadata["prefix"] = MetadataValue.path(str(location))
        if counts.skipped_paths:
            metadata["skipped_paths"] = MetadataValue.json(counts.skipped_paths[:100])
        if counts.failures:
            metadata["failures"] = MetadataValue.json(dict(list(counts.failures.items())[:100]))
        if counts.failed:
            # Every other object was re-tagged; failing the step makes the failures visible and retryable (a rerun
            # finds the changed objects already right and patches only the rest).
            raise Failure(
                description=f"{counts.failed} of {counts.matched} matching objects under {location} could not be "
                f"re-tagged; the other {counts.changed} were changed. See the failures metadata for each object.",
                metadata=metadata,
            )
        return metadata

    return build_one_op_job(
        name,
        retag,
        RetagConfig,
        resource_key=resource_key,
        op_description=f"Re-tags objects under {location}.",
        job_description=description or f"Set labels and tags on matching objects under {location}.",
    )


def build_retag_schedule(
    job_def: JobDefinition,
    cron_schedule: str,
    *,
    name: str | None = None,
    execution_timezone: str = "UTC",
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
    run_config: Any = None,
) -> ScheduleDefinition:
    """A schedule that runs a re-tagging job on `cron_schedule` (e.g. `"0 3 * * *"` for 03:00 every day), with
    `run_config` if given. Also used for the other jobs this library builds."""
    return ScheduleDefinition(
        name=name or f"{job_def.name}_schedule",
        job=job_def,
        run_config=run_config,
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        default_status=default_status,
    )


__all__ = ["RetagConfig", "build_retag_job", "build_retag_schedule"]
