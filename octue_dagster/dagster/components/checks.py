"""`DatafileChecks`: the asset checks on stored objects (`build_datafile_asset_checks`), declared as the `checks`
attribute of `DatafileIOManagerComponent`, with an optional job and schedule that run them."""

import re
from typing import Annotated

import dagster as dg
from pydantic import Field

from octue_dagster.dagster.asset_checks import build_datafile_asset_checks
from octue_dagster.dagster.components.fields import (
    AssetKeyString,
    Documented,
    Label,
    ScheduleFields,
    TagName,
    checked,
)
from octue_dagster.exceptions import InvalidInputError

def _job_name(value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_]+", value):
        raise InvalidInputError(
            f"{value!r} is not a job name: use letters, digits and '_' only, such as 'check_stored_objects'."
        )
    return value


#: A job name, or none. (A rule on the whole optional type, as Dagster lets every attribute also be a template string,
#: which would skip a pattern on the inner type when the attribute sits in a nested model.)
OptionalJobName = Annotated[str | None, checked(_job_name)]

#: The checks job's name when `cron_schedule` is given without `job_name`.
DEFAULT_CHECKS_JOB_NAME = "check_stored_objects"


class CheckedAssets(Documented, dg.Model):
    """Assets whose stored objects must carry the same labels and tags."""

    assets: list[AssetKeyString] = Field(
        default_factory=list,
        description="Asset keys (parts joined by '/', e.g. 'raw_readings' or 'turbines/summary') of Datafile or "
        "Dataset assets this I/O manager stores; a partitioned asset's partitions are read from its materializations.",
    )
    required_labels: list[Label] = Field(
        default_factory=list, description="Labels every stored object (each file of a dataset) must carry."
    )
    required_tags: list[TagName] = Field(
        default_factory=list, description="Names of tags every stored object (each file of a dataset) must carry."
    )


class DatafileChecks(CheckedAssets, ScheduleFields):
    """Asset checks on the assets' stored objects: `stored_object_intact` (still the generation and crc32c the latest
    materialization recorded, still carrying the I/O manager's owner mark) and, when labels or tags are required,
    `required_labels_and_tags`. They read metadata only, through this I/O manager's client.

    Example (the `checks` attribute of ``octue_dagster.DatafileIOManagerComponent``)::

        checks:
          assets: [raw_readings, cleaned_readings]
          required_labels: [turbine-readings]
          groups:
            - assets: [turbine_summary]
              required_labels: [turbine-summary]
          cron_schedule: "30 4 * * *"
    """

    groups: list[CheckedAssets] = Field(
        default_factory=list,
        description="More assets, each group with labels and tags of its own (checked by the same job and schedule).",
    )
    blocking: bool = Field(
        default=False, description="Failed checks stop downstream assets of the same run from materializing."
    )
    concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests in flight at once when checking a partitioned asset (default: the I/O manager's).",
    )
    job_name: OptionalJobName = Field(
        default=None,
        description=f"Make a job of these checks with this name, to launch by hand or on cron_schedule (with a "
        f"cron_schedule, default '{DEFAULT_CHECKS_JOB_NAME}').",
    )
    description: str | None = Field(default=None, description="The checks job's description in the UI.")

    def check_assets(self) -> None:
        """Raise `InvalidInputError` unless some asset is listed, and each only once.

        (The component calls this from its own validator: pydantic then reports it against `defs.yaml`, where an
        error raised while Dagster resolves a nested attribute would only be a resolution traceback.)
        """
        seen: set[str] = set()
        for group in self.all_groups():
            for key in group.assets:
                if "{{" in key:
                    continue  # a template: checked once rendered
                normalised = key.strip("/")
                if normalised in seen:
                    raise InvalidInputError(
                        f"checks: the asset {key!r} is listed twice; list each asset once (in `assets` or in one "
                        f"of `groups`)."
                    )
                seen.add(normalised)
        if not any(group.assets for group in self.all_groups()):
            raise InvalidInputError(
                "checks: no assets to check; list asset keys in `assets` (or in `groups`), e.g. assets: [raw_readings]."
            )

    def all_groups(self) -> list[CheckedAssets]:
        """The top-level assets and every group, each with its requirements."""
        return [self, *self.groups]

    def build_defs(self, resource_key: str) -> dg.Definitions:
        """The checks (read through the resource bound under `resource_key`) and, if asked for, their job and
        schedule."""
        checks = [
            check
            for group in self.all_groups()
            if group.assets
            for check in build_datafile_asset_checks(
                group.assets,
                required_labels=group.required_labels,
                required_tags=group.required_tags,
                resource_key=resource_key,
                concurrency=self.concurrency,
                blocking=self.blocking,
            )
        ]
        job_name = self.job_name or (DEFAULT_CHECKS_JOB_NAME if self.cron_schedule is not None else None)
        if job_name is None:
            return dg.Definitions(asset_checks=checks)
        job = dg.define_asset_job(
            job_name,
            selection=dg.AssetSelection.checks(*checks),
            description=self.description
            or "Check each asset's stored objects against its latest materialization (metadata only; no download).",
        )
        return dg.Definitions(asset_checks=checks, jobs=[job], schedules=self.schedules_for(job))


__all__ = ["CheckedAssets", "DatafileChecks", "DEFAULT_CHECKS_JOB_NAME"]
