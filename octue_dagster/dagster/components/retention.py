"""`RetentionComponent`: the retention job (and its schedule) declared in `defs.yaml`."""

from typing import Annotated

import dagster as dg
from pydantic import Field

from octue_dagster.dagster.components.fields import (
    ResourceKey,
    Documented,
    BucketName,
    DefinitionName,
    Folder,
    ScheduleFields,
    bounded,
)
from octue_dagster.dagster.components.scaffolding import RetentionScaffolder
from octue_dagster.dagster.retention_job import MAX_OLDER_THAN_DAYS, RetentionConfig, build_retention_job


@dg.scaffold_with(RetentionScaffolder)
class RetentionComponent(dg.Component, Documented, ScheduleFields):
    """A job that removes what the DatafileIOManager stored under `gs://{bucket}/{prefix}/` and nothing refers to any
    more: op outputs of runs older than `older_than_days`, and asset objects no current materialization points to.
    It never removes an object the I/O manager did not write.

    It uses the DatafileResource bound under `resource_key`. Runs launched by hand are dry runs (they only count)
    unless their run config says `dry_run: false`; scheduled runs follow `dry_run`.

    Example ``defs.yaml``::

        type: octue_dagster.RetentionComponent
        attributes:
          bucket: my-bucket
          prefix: dagster
          older_than_days: 30
          cron_schedule: "0 4 * * *"
          dry_run: false
    """

    job_name: DefinitionName = Field(default="storage_retention", description="The job's name.")
    bucket: BucketName = Field(description="The I/O manager's bucket (without gs://).")
    prefix: Folder = Field(default="dagster", description="The I/O manager's folder inside the bucket.")
    older_than_days: Annotated[float, bounded(0, maximum=MAX_OLDER_THAN_DAYS)] = Field(
        default=30,
        description=f"Remove op outputs of runs that finished more than this many days ago (at most "
        f"{MAX_OLDER_THAN_DAYS}, 100 years).",
    )
    dry_run: bool = Field(
        default=True, description="Scheduled runs only count what they would remove (true) or remove it (false)."
    )
    resource_key: ResourceKey = Field(default="datafiles", description="The key of the DatafileResource the job uses.")
    description: str | None = Field(default=None, description="The job's description in the UI.")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        job = build_retention_job(
            self.job_name,
            bucket=self.bucket,
            prefix=self.prefix,
            older_than_days=self.older_than_days,
            resource_key=self.resource_key,
            description=self.description,
        )
        run_config = dg.RunConfig(ops={f"{job.name}_op": RetentionConfig(dry_run=self.dry_run)})
        return dg.Definitions(jobs=[job], schedules=self.schedules_for(job, run_config=run_config))


__all__ = ["RetentionComponent"]
