"""`RetagComponent`: a re-tagging job (and its schedule) declared in `defs.yaml`, with no Python."""

import dagster as dg
from pydantic import Field, model_validator

from octue_dagster.core.listing.selection import RetagSpec
from octue_dagster.dagster.components.fields import (
    ResourceKey,
    Documented,
    DefinitionName,
    GcsPrefix,
    Label,
    TagName,
    ScheduleFields,
    Tags,
)
from octue_dagster.dagster.components.scaffolding import RetagScaffolder
from octue_dagster.dagster.retag_job import build_retag_job
from octue_dagster.exceptions import InvalidInputError


@dg.scaffold_with(RetagScaffolder)
class RetagComponent(dg.Component, Documented, ScheduleFields):
    """A job that sets labels and tags on every datafile under a `gs://` prefix that matches a filter, optionally on a
    cron schedule. Only metadata changes (merged patches): no content is downloaded or uploaded.

    It uses the DatafileResource bound under `resource_key` (declare a DatafileResourceComponent). Launch it with
    run config `{"ops": {"<job_name>_op": {"config": {"dry_run": true}}}}` to count without changing anything.

    Example ``defs.yaml``::

        type: octue_dagster.RetagComponent
        attributes:
          job_name: mark_checked
          prefix: gs://my-bucket/dagster/cleaned_readings/
          labels: [cleaned]
          add_labels: [quality-checked]
          set_tags: {qa_rules: status-ok}
          cron_schedule: "0 3 * * *"
    """

    job_name: DefinitionName = Field(description="The job's name (letters, digits and '_').")
    prefix: GcsPrefix = Field(description="Re-tag datafiles under this prefix: gs://bucket or gs://bucket/folder/.")
    labels: list[Label] | None = Field(default=None, description="Filter: only datafiles with all these labels.")
    tags: Tags | None = Field(default=None, description="Filter: only datafiles with these tag values.")
    name_glob: str | None = Field(
        default=None, description="Filter: only datafiles whose file name matches this pattern, e.g. '*.csv'."
    )
    add_labels: list[Label] = Field(default_factory=list, description="Labels to add.")
    remove_labels: list[Label] = Field(default_factory=list, description="Labels to remove.")
    set_tags: Tags = Field(default_factory=dict, description="Tags to set (name: value).")
    remove_tags: list[TagName] = Field(default_factory=list, description="Names of tags to remove.")
    resource_key: ResourceKey = Field(default="datafiles", description="The key of the DatafileResource the job uses.")
    description: str | None = Field(default=None, description="The job's description in the UI.")

    @model_validator(mode="after")
    def _changes_something(self) -> "RetagComponent":
        if not (self.add_labels or self.remove_labels or self.set_tags or self.remove_tags):
            raise InvalidInputError(
                f"RetagComponent {self.job_name!r} changes nothing: set add_labels, remove_labels, set_tags or "
                f"remove_tags."
            )
        self.spec  # the library's own checks of the whole spec (e.g. name_glob), at load time
        return self

    @property
    def spec(self) -> RetagSpec:
        """The filter and change as the library's `RetagSpec`."""
        return RetagSpec(
            labels=self.labels,
            tags=self.tags,
            name_glob=self.name_glob,
            add_labels=self.add_labels,
            remove_labels=self.remove_labels,
            set_tags=self.set_tags,
            remove_tags=tuple(self.remove_tags),
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        job = build_retag_job(
            self.job_name, self.prefix, self.spec, resource_key=self.resource_key, description=self.description
        )
        return dg.Definitions(jobs=[job], schedules=self.schedules_for(job))


__all__ = ["RetagComponent"]
