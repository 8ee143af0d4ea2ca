"""A job (and schedule) that sets labels and tags on every object under a prefix that matches a filter.

Only metadata changes: each object gets a metadata patch, merged with concurrent writers' changes, so content is never
downloaded or re-uploaded and generations stay the same. The counts are reported as the op's output metadata.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from dagster import (
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

from octue_dagster.core import metadata as md
from octue_dagster.core.gcs_path import parse_gcs_path
from octue_dagster.dagster.resources import DatafileResource


class RetagConfig(Config):
    """Launch-time options for a re-tagging run."""

    dry_run: bool = False


def build_retag_job(
    name: str,
    prefix: str,
    *,
    add_labels: Iterable[str] = (),
    remove_labels: Iterable[str] = (),
    set_tags: Mapping[str, Any] | None = None,
    remove_tags: Iterable[str] = (),
    labels: Iterable[str] | None = None,
    tags: Mapping[str, Any] | None = None,
    name_glob: str | None = None,
    resource_key: str = "datafiles",
    description: str | None = None,
) -> JobDefinition:
    """A job with one op that re-tags every object under `gs://bucket/prefix` matching the filter.

    The filter is `labels` (objects must have all), `tags` (must have these values) and `name_glob` (an `fnmatch`
    pattern for the file name). The change is `add_labels`, `remove_labels`, `set_tags` and `remove_tags`. Labels and
    tags are validated here, when the job is defined. It needs a `DatafileResource` under `resource_key`. Run config
    `{"ops": {"<name>_op": {"config": {"dry_run": true}}}}` counts what would change without changing anything.
    """
    location = parse_gcs_path(prefix, allow_empty_name=True)
    change = dict(
        add_labels=sorted(md.LabelSet(add_labels)),
        remove_labels=sorted(md.LabelSet(remove_labels)),
        set_tags=dict(md.TagDict(set_tags or {})),
        remove_tags=list(remove_tags),
    )
    where = dict(labels=sorted(md.LabelSet(labels)) if labels is not None else None, tags=tags, name_glob=name_glob)

    @op(
        name=f"{name}_op",
        required_resource_keys={resource_key},
        out=Out(Nothing),
        description=f"Re-tags objects under {location}.",
    )
    def _retag(context: OpExecutionContext, config: RetagConfig):
        datafiles: DatafileResource = getattr(context.resources, resource_key)
        counts = datafiles.retag(str(location), **change, **where, dry_run=config.dry_run)
        context.log.info(f"Re-tagging {location}: {counts.as_dict()}")
        metadata: dict[str, Any] = {key: MetadataValue.int(value) for key, value in counts.as_dict().items()}
        metadata["prefix"] = MetadataValue.path(str(location))
        metadata["dry_run"] = MetadataValue.bool(config.dry_run)
        if counts.skipped_paths:
            metadata["skipped_paths"] = MetadataValue.json(counts.skipped_paths[:100])
        yield Output(None, metadata=metadata)

    @job(name=name, description=description or f"Set labels and tags on matching objects under {location}.")
    def _job():
        _retag()

    return _job


def build_retag_schedule(
    job_def: JobDefinition,
    cron_schedule: str,
    *,
    name: str | None = None,
    execution_timezone: str = "UTC",
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
) -> ScheduleDefinition:
    """A schedule that runs a re-tagging job on `cron_schedule` (e.g. `"0 3 * * *"` for 03:00 every day)."""
    return ScheduleDefinition(
        name=name or f"{job_def.name}_schedule",
        job=job_def,
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        default_status=default_status,
    )


__all__ = ["RetagConfig", "build_retag_job", "build_retag_schedule"]
